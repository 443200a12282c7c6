"""0.11.1's console helpers (`nemo_run.core.frontend.console.api`): the shared rich console,
logging through it, and a plain repr for configs shown on it.

Importing this module loads rich; nothing in `import nemo_run` does.
"""

from __future__ import annotations

import logging
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from nemo_run.core.redact import redact, redact_text

CONSOLE = Console()
_HANDLER_MARK = "_nemo_run_console"  # marks the handlers configure_logging installed


def configure_logging(level: str) -> None:
    """Log through the shared console at `level` (a name such as "INFO"), as 0.11.1 does:
    one rich handler on the root logger, replacing any this function installed before."""
    value = logging.getLevelName(str(level).upper())
    if not isinstance(value, int):
        raise ValueError(
            f"level={level!r} is not a logging level; use DEBUG, INFO, WARNING or ERROR"
        )
    deconfigure_logging()
    handler = RichHandler(console=CONSOLE, show_path=False)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(value)


def deconfigure_logging() -> None:
    """Remove what `configure_logging` installed (other handlers stay)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)


class CustomConfigRepr:
    """Shows a config (or any object) on the console by its repr, secrets masked."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __repr__(self) -> str:
        return redact_text(repr(redact(self.obj)))
