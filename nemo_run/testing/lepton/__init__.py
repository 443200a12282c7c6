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

import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from nemo_run.testing.common.process import ProcessHandle, environ_with, start_emulator

URL_PREFIX = "LEPTON_EMULATOR_URL="
DEFAULT_TOKEN = "emulator-token"


@dataclass
class EmulatorProcess(ProcessHandle):
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

    def env(self) -> dict[str, str]:
        """The ``LEPTON_WORKSPACE_*`` variables that point the SDK at this emulator."""
        return {
            "LEPTON_WORKSPACE_ID": self.workspace_id,
            "LEPTON_WORKSPACE_TOKEN": self.token,
            "LEPTON_WORKSPACE_URL": self.url,
        }


def launch(
    *args: str,
    data_dir: Path | str | None = None,
    token: str | None = None,
    timeout: float = 30.0,
    python: str | None = None,
    stderr=None,
) -> EmulatorProcess:
    """Start ``python -m nemo_run.testing.lepton --port 0 [args]`` and wait for its URL line."""
    env = environ_with("LEPTON_EMULATOR_TOKEN", token)
    token = env.get("LEPTON_EMULATOR_TOKEN", DEFAULT_TOKEN)
    url, proc = start_emulator(
        "nemo_run.testing.lepton", URL_PREFIX, args, data_dir, env, timeout, python, stderr
    )
    return EmulatorProcess(url, token, proc, Path(data_dir) if data_dir else None)


__all__ = ["EmulatorProcess", "launch", "URL_PREFIX", "DEFAULT_TOKEN"]
