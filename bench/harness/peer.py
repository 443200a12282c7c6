"""The peer's venv (`bench/.peer-venv`), created on first use with the pinned packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from harness.procs import BENCH_DIR, BenchError, log

PEER_VENV = BENCH_DIR / ".peer-venv"
RESULTS_DIR = BENCH_DIR / "results"
PEER_VERSION = "0.11.1"
PEER_REQUIREMENTS = [f"nemo-run=={PEER_VERSION}", "leptonai==0.27.3"]  # newer leptonai breaks it


def peer_version(python: str) -> str | None:
    """The nemo-run version `python` has installed, or None."""
    try:
        proc = subprocess.run(
            [python, "-c", "import importlib.metadata as m; print(m.version('nemo-run'))"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tempfile.gettempdir(),
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_peer_venv() -> str:
    """The peer venv's interpreter, installing the venv first when it is missing or wrong."""
    python = PEER_VENV / "bin" / "python"
    if python.exists() and peer_version(str(python)) == PEER_VERSION:
        return str(python)
    RESULTS_DIR.mkdir(exist_ok=True)
    install_log = RESULTS_DIR / "peer-venv-install.log"
    log(f"creating the peer venv at {PEER_VENV} (log: {install_log}); this takes a while ...")
    with open(install_log, "w") as out:
        if not python.exists():
            creator = shutil.which("python3") or sys.executable
            subprocess.run(
                [creator, "-m", "venv", str(PEER_VENV)],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = subprocess.run(
            [str(PEER_VENV / "bin" / "pip"), "install", *PEER_REQUIREMENTS],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    version = peer_version(str(python))
    if proc.returncode != 0 or version != PEER_VERSION:
        raise BenchError(f"peer venv install failed (pip rc={proc.returncode}); see {install_log}")
    return str(python)
