"""0.11.1's `nemo_run.help`: `run.help(fn)` prints a callable's arguments and, for each
argument, the `@run.cli.factory` functions that can fill it (name, where, line, first doc
line), so a user finds the factories a CLI command accepts."""

from __future__ import annotations

import inspect
import os
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from nemo_run.cli.help import BOX_STYLE as BOX_STYLE
from nemo_run.cli.help import RECURSIVE_TYPES as RECURSIVE_TYPES
from nemo_run.cli.help import TABLE_STYLES as TABLE_STYLES
from nemo_run.cli.registry import (
    factories_for,
    factories_in,
    registered_executors,
    type_hints,
)
from nemo_run.config import get_underlying_types as get_underlying_types
from nemo_run.core.frontend.console.api import CONSOLE as CONSOLE


def help(  # noqa: A001 - 0.11.1's name: `run.help(fn)`
    entity: Callable[..., Any],
    with_docs: bool = True,
    console: Console | None = None,
    namespace: str | None = None,
) -> None:
    """Print `entity`'s arguments, then a "Factory for <arg>" panel per argument that
    registered factories can fill; with `namespace`, the factories registered under it."""
    _help(entity, with_docs, console or Console(file=sys.stdout), namespace, False)


def help_for_callable(
    entity: Callable[..., Any],
    with_docs: bool = True,
    namespace: str | None = None,
    display_executors: bool = True,
) -> None:
    """`run.help` on the shared console (0.11.1's name), the registered executors too."""
    if not callable(entity):
        CONSOLE.print(f"Help unavailable for {entity}: it is not callable.", markup=False)
        return
    _help(entity, with_docs, CONSOLE, namespace, display_executors)


def help_for_type(
    entity: Any,
    console: Console,
    with_docs: bool = True,
    arg_name: str | None = None,
    title: str | None = None,
) -> None:
    """A panel of the factories registered for type `entity` (a Union's members too);
    nothing when there are none."""
    found = factories_for(entity)
    if not found:
        return
    shown = class_to_str(entity)
    _print_factories(
        console,
        title or f"Factory for {f'{arg_name}: ' if arg_name else ''}{shown}",
        found,
        with_docs,
    )


def class_to_str(class_obj: Any) -> str:
    """A type as the help shows it: builtins by name, classes as `module.Name` (a script's
    by its file name), `Optional[X]`, `X | Y`, `list[int]`, `Callable[..., X]`."""
    origin = typing.get_origin(class_obj)
    args = typing.get_args(class_obj)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        inner = " | ".join(class_to_str(a) for a in members)
        return f"Optional[{inner}]" if len(members) < len(args) else inner
    if origin is not None:
        base = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        if base == "Callable" and len(args) == 2:
            first = args[0]
            if first is Ellipsis:
                params = "..."
            elif isinstance(first, list):
                params = f"[{', '.join(class_to_str(a) for a in first)}]"
            else:
                params = class_to_str(first)
            return f"Callable[{params}, {class_to_str(args[1])}]"
        if origin is typing.Literal:
            return f"Literal[{', '.join(repr(a) for a in args)}]"
        return f"{base}[{', '.join(class_to_str(a) for a in args)}]" if args else base
    if isinstance(class_obj, type):
        if class_obj.__module__ == "builtins":
            return class_obj.__name__
        return f"{_module_of(class_obj)}.{class_obj.__name__}"
    return str(class_obj)


def _module_of(cls: type) -> str:
    """`cls`'s module, a script run as `__main__` named by its file."""
    if cls.__module__ != "__main__":
        return cls.__module__
    path = getattr(sys.modules.get("__main__"), "__file__", None) or "__main__"
    return os.path.splitext(os.path.basename(path))[0]


def _help(
    entity: Callable[..., Any],
    with_docs: bool,
    out: Console,
    namespace: str | None,
    display_executors: bool,
) -> None:
    """The arguments, then factories per argument (or under `namespace`), then executors."""
    fn = _callable(entity)
    _print_arguments(fn, with_docs, out)
    if namespace:
        _print_factories(out, f"Factories in {namespace}", factories_in(namespace), with_docs)
        return
    hints = type_hints(fn)
    for name in [p.name for p in _signature_parameters(fn)]:
        if name not in hints:
            continue
        found = factories_for(hints[name], fn, name)
        if found:
            hint = hints[name]
            shown = class_to_str(hint)
            title = f"Factory for {name}: {shown}"
            _print_factories(out, title, found, with_docs)
    if display_executors:
        executors = registered_executors()
        if executors:
            _print_factories(out, "Registered executors", executors, with_docs)


def _print_arguments(fn: Any, with_docs: bool, out: Console) -> None:
    """The docstring (with `with_docs`), then an "Arguments" panel: name, type, default."""
    doc = inspect.getdoc(fn) if with_docs else None
    if doc:
        out.print(Text(doc))
    table = Table(show_header=False, box=None, expand=True)
    for _ in range(3):
        table.add_column(ratio=1)
    for p in _signature_parameters(fn):
        kind = "" if p.annotation is p.empty else class_to_str(p.annotation)
        default = "" if p.default is p.empty else repr(p.default)
        table.add_row(Text(p.name), Text(kind), Text(default))
    out.print(Panel(table, title="Arguments", title_align="left"))


def _signature_parameters(fn: Any) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        return []


def _callable(entity: Any) -> Any:
    """The function or class behind a config (fiddle only when it is one)."""
    if type(entity).__module__.startswith(("fiddle", "nemo_run.core.configurable")):
        import fiddle as fdl  # noqa: PLC0415 - only for a Config/Partial, which loaded it

        if isinstance(entity, fdl.Buildable):
            return fdl.get_callable(entity)
    return entity


def _print_factories(out: Console, title: str, registrations: list[Any], with_docs: bool) -> None:
    table = Table(show_header=False, box=None, expand=True)
    for _ in range(4):
        table.add_column(ratio=1)
    for reg in registrations:
        fn = reg.fn
        where = f"{_module_of(fn)}.{getattr(fn, '__qualname__', reg.name)}"
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
