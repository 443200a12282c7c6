"""0.11.1's `nemo_run.api`: `autoconvert` (functions that return configs instead of objects)
and `dryrun_fn` (print a configured task's resolved arguments without running it).

Only code that names these imports this module: it loads fiddle's auto_config and rich.
"""

from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Callable
from typing import Any

import fiddle as fdl
from fiddle.experimental import auto_config
from rich.console import Console
from rich.table import Table
from rich.text import Text

from nemo_run.core.configurable import Config, Partial
from nemo_run.core.execution.base import Executor
from nemo_run.core.frontend.console.api import CONSOLE as CONSOLE
from nemo_run.core.frontend.console.api import CustomConfigRepr as CustomConfigRepr
from nemo_run.core.redact import MASK, is_secret_name, redact, redact_env, redact_text

# 0.11.1's names of the CLI registry (entry-point namespaces) and of what autoconvert builds
ROOT_TASK_NAMESPACE = "nemo_run.task"
ROOT_TASK_FACTORY_NAMESPACE = "nemo_run.task_factory"
ROOT_TYPER_NAMESPACE = "nemo_run.typer"
DEFAULT_NAME = "default"
AUTOBUILD_CLASSES = (Executor,)


def default_autoconfig_buildable(
    fn: Callable[..., Any], cls: type[Config[Any]] | type[Partial[Any]], *args: Any, **kwargs: Any
) -> Any:
    """What `fn(*args, **kwargs)` would build, as a `cls` (`Config` or `Partial`): fiddle's
    auto_config reads `fn`'s body and records its calls instead of making them. A list
    returned becomes a list of `cls`."""
    built = auto_config.auto_config(fn).as_buildable(*args, **kwargs)
    if isinstance(built, list):
        return [_as(cls, item) for item in built]
    return _as(cls, built)


def _as(cls: type[Any], built: Any) -> Any:
    """`built` (a fiddle buildable) as a `cls`; a `cls` already is returned as it is, and so
    is a recorded call of `run.Config(...)`/`run.Partial(...)` once made."""
    if isinstance(built, fdl.Buildable):
        fn = fdl.get_callable(built)
        if isinstance(fn, type) and issubclass(fn, fdl.Buildable):
            built = fdl.build(built)  # `fn` returned a config itself: make that call
    if isinstance(built, cls) or not isinstance(built, fdl.Buildable):
        return built
    new = cls(fdl.get_callable(built), bind_args=False)
    new.__arguments__.update(built.__arguments__)  # positional ones too (int keys)
    return new


def autoconvert(
    fn: Callable[..., Any] | None = None,
    *,
    partial: bool = False,
    to_buildable_fn: Callable[..., Any] = default_autoconfig_buildable,
) -> Any:
    """Make `fn` return a `run.Config` (`partial=True`: a `run.Partial`) of what it returns,
    built by `to_buildable_fn(fn, Config|Partial, *args, **kwargs)`. Use as `@autoconvert`,
    `@autoconvert(partial=True)` or `autoconvert(partial=True)(fn)`."""
    kind: type[Any] = Partial if partial else Config

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return to_buildable_fn(func, kind, *args, **kwargs)

        return wrapper

    return decorate if fn is None else decorate(fn)


def dryrun_fn(
    configured_fn: Partial[Any], executor: Executor | None = None, build: bool = False
) -> None:
    """Print the task (`module:name`) and its arguments, and the executor when given, without
    running anything; `build=True` also builds the config, so a config that cannot be built
    fails here. Secret-looking arguments are masked."""
    if not isinstance(configured_fn, fdl.Buildable):
        raise TypeError(
            f"dryrun_fn needs a run.Partial or run.Config, got {type(configured_fn).__name__}; "
            "wrap the function: run.Partial(fn, **kwargs)"
        )
    fn = fdl.get_callable(configured_fn)
    where = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
    console = Console(file=sys.stdout)
    console.print(f"[bold cyan]Dry run for task {where}[/bold cyan]")
    table = Table(show_header=True, header_style="bold magenta")
    table.add_column("Argument Name", style="dim", width=20)
    table.add_column("Resolved Value", width=60)
    for name in sorted(configured_fn.__arguments__):
        table.add_row(str(name), _shown(str(name), configured_fn.__arguments__[name]))
    console.print("[bold green]Resolved Arguments[/bold green]")
    console.print(table)
    if executor is not None:
        console.print("[bold green]Executor[/bold green]")
        console.print(Text(_executor_text(executor)))
    if build:
        fdl.build(configured_fn)


def _shown(name: str, value: Any) -> Text:
    """An argument as the table shows it (never as markup): secrets masked, configs as
    `Fn(args)`."""
    return Text(_value_text(name, value))


def _value_text(name: str, value: Any) -> str:
    if is_secret_name(name) and value not in (None, ""):
        return MASK
    if isinstance(value, fdl.Buildable):
        fn = fdl.get_callable(value)
        inner = ", ".join(f"{k}={_value_text(str(k), v)}" for k, v in value.__arguments__.items())
        return f"{getattr(fn, '__name__', repr(fn))}({inner})"
    return redact_text(repr(redact(value)))


def _executor_text(executor: Executor) -> str:
    """The executor's repr with secret-looking environment values masked."""
    shown = copy.copy(executor)
    env = getattr(executor, "env_vars", None)
    if isinstance(env, dict):
        object.__setattr__(shown, "env_vars", redact_env(env))
    return redact_text(repr(shown))
