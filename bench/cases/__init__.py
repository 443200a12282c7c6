"""One module per case group; importing a module registers its group.

To add a group, add a module here that calls `harness.registry.register(Group(...))`:
`load()` imports every module of this package, so the harness needs no change.
"""

from __future__ import annotations

import importlib
import pkgutil

from harness.registry import Group, registered


def load() -> list[Group]:
    """Every registered group, in run order."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    return registered()
