"""`info`: which implementation this interpreter imports, so a side cannot measure the other."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from workers.common import is_ours, stored_ids


def cmd_info(_: argparse.Namespace) -> dict[str, Any]:
    import nemo_run

    try:
        from importlib.metadata import version

        dist_version = version("nemo_run")
    except Exception:
        dist_version = None
    return {
        "implementation": "ours" if is_ours() else "peer",
        "nemo_run_file": getattr(nemo_run, "__file__", None),
        "nemo_run_version": getattr(nemo_run, "__version__", None) or dist_version,
        "python": sys.version.split()[0],
        "executable": sys.executable,
    }


def cmd_count(_: argparse.Namespace) -> dict[str, Any]:
    """How many local jobs the store holds."""
    return {"count": len(stored_ids())}


COMMANDS = {"info": cmd_info, "count": cmd_count}
