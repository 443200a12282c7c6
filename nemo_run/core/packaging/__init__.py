"""Packagers decide how a task's code reaches where it runs (nothing, a git archive, patterns).

Loaded lazily: every executor imports the base `Packager`, few need git or tarfile.
"""

from __future__ import annotations

import importlib
from typing import Any

from nemo_run.core.packaging.base import Packager

_LAZY = {
    "GitArchivePackager": "nemo_run.core.packaging.git",
    "HybridPackager": "nemo_run.core.packaging.hybrid",
    "PatternPackager": "nemo_run.core.packaging.pattern",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["GitArchivePackager", "HybridPackager", "Packager", "PatternPackager"]
