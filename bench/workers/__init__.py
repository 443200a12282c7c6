"""The worker side of each case group: commands run by `bench/worker.py` under either
implementation's interpreter.

Each module maps command names to functions in `COMMANDS`; `commands()` gathers them all, so a
new module needs no change elsewhere. Modules import only the standard library at import time:
the package under test (ours or the peer) is imported inside the commands.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

Command = Callable[[argparse.Namespace], dict[str, Any]]


def commands() -> dict[str, Command]:
    found: dict[str, Command] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, fn in getattr(module, "COMMANDS", {}).items():
            if name in found:
                raise ValueError(f"worker command {name!r} defined twice")
            found[name] = fn
    return found
