"""An emulator of the NVIDIA DGX Cloud Lepton workspace API, for tests.

Start it as a process of its own (it needs the ``leptonai`` package: requests are validated
with the SDK's own models)::

    python -m nemo_run.testing.lepton --port 0 --mode subprocess --data-dir /tmp/emu

It prints ``LEPTON_EMULATOR_URL=http://127.0.0.1:<port>/api/v2/workspaces/<ws>``: use that as
``LEPTON_WORKSPACE_URL`` (or ``APIClient(url=...)``) with ``LEPTON_WORKSPACE_ID=<ws>``
(default ``emuws``) and ``LEPTON_WORKSPACE_TOKEN`` = ``LEPTON_EMULATOR_TOKEN`` (default
``emulator-token``). ``launch()`` does that from Python and returns a handle. See
``server.py`` for the endpoints, ``validate.py`` for request validation and ``jobs.py`` for
how jobs run.

This module does not import ``leptonai``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

URL_PREFIX = "LEPTON_EMULATOR_URL="
DEFAULT_TOKEN = "emulator-token"


@dataclass
class EmulatorProcess:
    """A running emulator process started by ``launch``."""

    url: str  # the workspace URL: LEPTON_WORKSPACE_URL
    token: str
    process: subprocess.Popen
    data_dir: Path | None

    @property
    def origin(self) -> str:
        """``http://host:port``: where ``/_emulator/...`` lives."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def workspace_id(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def pid(self) -> int:
        return self.process.pid

    def env(self) -> dict[str, str]:
        """The ``LEPTON_WORKSPACE_*`` variables that point the SDK at this emulator."""
        return {
            "LEPTON_WORKSPACE_ID": self.workspace_id,
            "LEPTON_WORKSPACE_TOKEN": self.token,
            "LEPTON_WORKSPACE_URL": self.url,
        }

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM the emulator (it cleans up its jobs) and wait; SIGKILL as a last resort."""
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
    token: str | None = None,
    timeout: float = 30.0,
    python: str | None = None,
    stderr=None,
) -> EmulatorProcess:
    """Start ``python -m nemo_run.testing.lepton --port 0 [args]`` and wait for its URL line."""
    argv = [python or sys.executable, "-m", "nemo_run.testing.lepton", "--port", "0"]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    argv += list(args)
    env = dict(os.environ)
    if token is not None:
        env["LEPTON_EMULATOR_TOKEN"] = token
    token = env.get("LEPTON_EMULATOR_TOKEN", DEFAULT_TOKEN)
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
    return EmulatorProcess(
        line[len(URL_PREFIX) :], token, proc, Path(data_dir) if data_dir else None
    )


__all__ = ["EmulatorProcess", "launch", "URL_PREFIX", "DEFAULT_TOKEN"]
