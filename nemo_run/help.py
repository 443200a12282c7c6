"""0.11.1's `nemo_run.help`: `run.help(fn)` prints a callable's arguments and, for each
argument, the `@run.cli.factory` functions that can fill it (name, where, line, first doc
line), so a user finds the factories a CLI command accepts."""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from nemo_run.api import help as print_arguments
from nemo_run.cli.registry import factories_for, factories_in, type_hints, type_name
from nemo_run.config import get_type_namespace


def help(  # noqa: A001 - 0.11.1's name: `run.help(fn)`
    entity: Callable[..., Any],
    with_docs: bool = True,
    console: Console | None = None,
    namespace: str | None = None,
) -> None:
    """Print `entity`'s arguments, then a "Factory for <arg>" panel per argument that
    registered factories can fill; with `namespace`, the factories registered under it."""
    out = console or Console(file=sys.stdout)
    print_arguments(entity, with_docs=with_docs, console=out)
    fn = _callable(entity)
    if namespace:
        _print_factories(out, f"Factories in {namespace}", factories_in(namespace), with_docs)
        return
    hints = type_hints(fn)
    for name in _parameters(fn):
        if name not in hints:
            continue
        found = factories_for(hints[name], fn, name)
        if found:
            hint = hints[name]
            shown = get_type_namespace(hint) if isinstance(hint, type) else type_name(hint)
            title = f"Factory for {name}: {shown}"
            _print_factories(out, title, found, with_docs)


def _callable(entity: Any) -> Any:
    """The function or class behind a config (fiddle only when it is one)."""
    if type(entity).__module__.startswith(("fiddle", "nemo_run.core.configurable")):
        import fiddle as fdl  # noqa: PLC0415 - only for a Config/Partial, which loaded it

        if isinstance(entity, fdl.Buildable):
            return fdl.get_callable(entity)
    return entity


def _parameters(fn: Any) -> list[str]:
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


def _print_factories(out: Console, title: str, registrations: list[Any], with_docs: bool) -> None:
    table = Table(show_header=False, box=None, expand=True)
    for _ in range(4):
        table.add_column(ratio=1)
    for reg in registrations:
        fn = reg.fn
        where = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', reg.name)}"
        try:
            line = f"line {inspect.getsourcelines(fn)[1]}"
        except (OSError, TypeError):
            line = ""
        doc = (inspect.getdoc(fn) or "No docs").splitlines()[0] if with_docs else ""
        table.add_row(Text(reg.name), Text(where), Text(line), Text(doc))
    out.print(Panel(table, title=title, title_align="left"))


class _CallableModule(types.ModuleType):
    """`import nemo_run.help` binds this module as the package's `help` attribute, where
    0.11.1's callers write `run.help(fn)`: calling the module is that call."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        help(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
