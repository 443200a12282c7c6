"""An emulator of the NVIDIA Run:ai REST API (what DGX Cloud exposes), for tests.

Start it as a process of its own::

    python -m nemo_run.testing.dgxcloud --port 0 --mode subprocess --data-dir /tmp/emu

It prints ``RUNAI_EMULATOR_URL=http://127.0.0.1:<port>``; the API base URL is
``<url>/api/v1``. ``launch()`` does the same from Python and returns a handle.
See ``server.py`` for the endpoints, ``validate.py`` for request validation and
``workloads.py`` for how workloads run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

URL_PREFIX = "RUNAI_EMULATOR_URL="


@dataclass
class EmulatorProcess:
    """A running emulator process started by ``launch``."""

    url: str
    process: subprocess.Popen
    data_dir: Path | None

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM the emulator (it cleans up its workloads) and wait; SIGKILL as a last resort."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def launch(
    *args: str,
    data_dir: Path | str | None = None,
    client_secret: str | None = None,
    timeout: float = 30.0,
    python: str | None = None,
    stderr=None,
) -> EmulatorProcess:
    """Start ``python -m nemo_run.testing.dgxcloud --port 0 [args]`` and wait for its URL line."""
    argv = [python or sys.executable, "-m", "nemo_run.testing.dgxcloud", "--port", "0"]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    argv += list(args)
    env = dict(os.environ)
    if client_secret is not None:
        env["RUNAI_EMULATOR_CLIENT_SECRET"] = client_secret
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, env=env, text=True
    )
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    line = found[0].strip() if found else ""
    if not line.startswith(URL_PREFIX):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the emulator did not print its URL (got {line!r}, argv {argv})")
    return EmulatorProcess(line[len(URL_PREFIX) :], proc, Path(data_dir) if data_dir else None)


__all__ = ["EmulatorProcess", "launch", "URL_PREFIX"]
