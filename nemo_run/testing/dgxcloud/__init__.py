"""An emulator of the NVIDIA Run:ai REST API (what DGX Cloud exposes), for tests.

Start it as a process of its own::

    python -m nemo_run.testing.dgxcloud --port 0 --mode subprocess --data-dir /tmp/emu

It prints ``RUNAI_EMULATOR_URL=http://127.0.0.1:<port>``; the API base URL is
``<url>/api/v1``. ``launch()`` does the same from Python and returns a handle.
See ``server.py`` for the endpoints, ``validate.py`` for request validation and
``workloads.py`` for how workloads run.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from nemo_run.testing.common.process import ProcessHandle, environ_with, start_emulator

URL_PREFIX = "RUNAI_EMULATOR_URL="


@dataclass
class EmulatorProcess(ProcessHandle):
    """A running emulator process started by ``launch``."""

    url: str
    process: subprocess.Popen
    data_dir: Path | None

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"


def launch(
    *args: str,
    data_dir: Path | str | None = None,
    client_secret: str | None = None,
    timeout: float = 30.0,
    python: str | None = None,
    stderr=None,
) -> EmulatorProcess:
    """Start ``python -m nemo_run.testing.dgxcloud --port 0 [args]`` and wait for its URL line."""
    env = environ_with("RUNAI_EMULATOR_CLIENT_SECRET", client_secret)
    url, proc = start_emulator(
        "nemo_run.testing.dgxcloud", URL_PREFIX, args, data_dir, env, timeout, python, stderr
    )
    return EmulatorProcess(url, proc, Path(data_dir) if data_dir else None)


__all__ = ["EmulatorProcess", "launch", "URL_PREFIX"]
