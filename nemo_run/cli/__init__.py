"""`run.cli`: 0.11.1's command-line framework for scripts (`@run.cli.entrypoint`,
`@run.cli.factory`, `run.cli.main(fn)`, ...), beside the `nemorun` command (`nemo_run.cli.nemorun`).

Names load on first use (module `__getattr__`): `import nemo_run` and `nemorun job list` pay
nothing for them, and `--help` of a script loads neither fiddle nor torchx.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "entrypoint": "nemo_run.cli.api",
    "factory": "nemo_run.cli.api",
    "main": "nemo_run.cli.api",
    "resolve_factory": "nemo_run.cli.api",
    "list_entrypoints": "nemo_run.cli.api",
    "list_factories": "nemo_run.cli.api",
    "create_cli": "nemo_run.cli.api",
    "RunContext": "nemo_run.cli.api",
    "parse_cli_args": "nemo_run.cli.cli_parser",
    "parse_config": "nemo_run.cli.cli_parser",
    "parse_partial": "nemo_run.cli.cli_parser",
}
__all__ = sorted(_EXPORTS)
_SUBMODULES = frozenset({"api", "cli_parser", "errors", "help", "launch", "registry"})


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        if name in _SUBMODULES:
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
