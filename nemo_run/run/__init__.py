"""Running tasks. The module itself is callable, so `run.run(task, executor=...)` works whether
`nemo_run.run` names this package or the function (both stay importable as paths)."""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # not at the top: importing any `nemo_run.run.*` module (torchx loads the schedulers by
        # entry point) must not load the whole run layer, and `api` imports this package
        from nemo_run.run.api import run  # noqa: PLC0415

        return run(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        """`inspect.signature(run.run)` shows the function's parameters, as in 0.11.1."""
        from nemo_run.run.api import run  # noqa: PLC0415 - as in __call__

        return inspect.signature(run)


sys.modules[__name__].__class__ = _CallableModule
