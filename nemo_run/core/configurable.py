"""`Config` and `Partial`: fiddle buildables that name a Python callable to run as a task."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import fiddle as fdl

T = TypeVar("T")


class Config(Generic[T], fdl.Config[T]):
    """Configured call of `fn_or_cls(**kwargs)`; `fdl.build` returns the object it builds."""


class Partial(Generic[T], fdl.Partial[T]):
    """Configured function whose call is the task: building yields a `functools.partial` to call."""


def task_name(task: Any) -> str:
    """The callable's name, used to name jobs that run this buildable."""
    fn = fdl.get_callable(task)
    return getattr(fn, "__name__", type(fn).__name__)
