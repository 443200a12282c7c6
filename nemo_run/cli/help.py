"""`python script.py --help` for an entrypoint: its parameters with types and defaults, the
factories registered for each, the `--factory` choices, the executors and the options.

Plain text and light imports only (no fiddle, no rich, no executors): help must cost at most
0.3 s over the script's own imports.
"""

from __future__ import annotations

import enum
import inspect
import os
import shutil
import textwrap
import typing
from collections.abc import Callable
from typing import Any

from nemo_run.cli import registry

# 0.11.1's styles of its rich help tables (`box` name, `Table` keywords), kept as plain data
# here so `run.help` and `nemo_run.cli.api` share them without loading rich at start-up
BOX_STYLE = ""
TABLE_STYLES: dict[str, Any] = {
    "show_lines": False,
    "leading": 0,
    "border_style": None,
    "row_styles": None,
    "pad_edge": False,
    "padding": (0, 1),
}
# hints whose members the help looks through for factories
RECURSIVE_TYPES: tuple[Any, ...] = (typing.Union, typing.Optional)

# (flags, metavar, text) in the order shown
OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("-n, --name", "TEXT", "name of the run (default: the entrypoint's name)"),
    ("-f, --factory", "NAME", "start from a factory of the entrypoint: NAME or NAME(k=v, ...)"),
    ("-y, --yes, --no-confirm", "", "skip the confirmation before running"),
    ("--dryrun", "", "print what would run and start nothing"),
    ("--detach", "", "return once the job started (with an executor)"),
    ("--direct / --no-direct", "", "run in this process, ignoring the executor"),
    ("--tail-logs / --no-tail-logs", "", "stream the job's output while it runs"),
    ("-v, --verbose", "", "debug logging, and tracebacks with errors"),
    ("-h, --help", "", "show this message and exit"),
)


def _width() -> int:
    return max(60, min(shutil.get_terminal_size((100, 20)).columns, 120))


def _default_text(param: inspect.Parameter) -> str:
    if param.default is param.empty:
        return "(required)"
    value = param.default
    text = str(value) if isinstance(value, enum.Enum) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _factory_line(reg: registry.FactoryRegistration) -> str:
    fn = inspect.unwrap(reg.fn)
    hints = registry.type_hints(fn)
    shown = []
    for key, p in registry.signature_params(fn).items():
        kind = f": {registry.type_name(hints[key])}" if key in hints else ""
        default = "" if p.default is p.empty else f" = {p.default!r}"
        shown.append(f"{'**' if p.kind is p.VAR_KEYWORD else ''}{key}{kind}{default}")
    params = f"({', '.join(shown)})"
    where = os.path.basename(getattr(inspect.getmodule(fn), "__file__", "") or "") or fn.__module__
    line = reg.line
    return (
        f"{reg.name}{params if params != '()' else ''}  [{where}{f' line {line}' if line else ''}]"
    )


def render(
    fn: Callable[..., Any],
    name: str,
    doc: str | None,
    prog: str,
    skip: tuple[str, ...] = (),
    with_executor: bool = True,
) -> str:
    """The help text of entrypoint `fn` (parameters in `skip`, e.g. an experiment's run
    context, left out)."""
    width = _width()
    out = [f"Usage: {prog} [OPTIONS] [KEY=VALUE ...]", "", f"[Entrypoint] {name}"]
    if doc:
        out += ["", *_wrap(inspect.cleandoc(doc), width, "")]
    params = {k: p for k, p in registry.signature_params(fn).items() if k not in skip}
    hints = registry.type_hints(fn)
    rows = [
        (
            key if p.kind is not p.VAR_KEYWORD else f"**{key}",
            registry.type_name(hints.get(key, p.annotation)),
            _default_text(p),
        )
        for key, p in params.items()
    ]
    out += ["", "Arguments (KEY=VALUE; nested KEY.FIELD=VALUE; also +=, -=, *=, /=):"]
    out += _table(rows) if rows else ["  (none)"]
    for key, p in params.items():
        regs = registry.factories_for(hints.get(key, p.annotation), fn, key)
        if regs:
            title = registry.type_name(hints.get(key, p.annotation))
            out += ["", f"Factories for {key} ({title}):"]
            out += [f"  {_factory_line(r)}" for r in _unique(regs)]
    own = [r for r in registry.factories_for(fn) if r.resolve()[1] is fn]
    if own:
        out += ["", "Factories of the entrypoint (--factory NAME):"]
        out += [f"  {_factory_line(r)}" for r in _unique(own)]
    if with_executor:
        out += ["", "Executors (executor=NAME, then executor.FIELD=VALUE):"]
        out += [f"  built in: {', '.join(registry.BUILTIN_EXECUTORS)}"]
        registered = registry.registered_executors()
        out += [f"  {_factory_line(r)}" for r in _unique(registered)]
        out += ["  plugins=NAME or plugins=[NAME, NAME(k=v)]: factories of run.Plugin"]
    out += ["", "Options:"]
    out += _table([(flags, metavar, text) for flags, metavar, text in OPTIONS])
    return "\n".join(out) + "\n"


def _unique(regs: list[registry.FactoryRegistration]) -> list[registry.FactoryRegistration]:
    """One line per name: a later registration of a name replaces an earlier one."""
    by_name = {r.name: r for r in regs}
    return list(by_name.values())


def _table(rows: list[tuple[str, str, str]]) -> list[str]:
    first = min(max(len(r[0]) for r in rows), 30)
    second = min(max(len(r[1]) for r in rows), 36)
    return [f"  {a:<{first}}  {b:<{second}}  {c}".rstrip() for a, b, c in rows]


def _wrap(text: str, width: int, indent: str) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines():
        lines += textwrap.wrap(paragraph, width - len(indent)) or [""]
    return [indent + line for line in lines]
