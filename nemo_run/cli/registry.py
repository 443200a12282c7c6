"""Where `@run.cli.entrypoint` and `@run.cli.factory` record what they decorate, and how a
factory is found for a parameter.

Light on purpose (no fiddle, no executors): `python script.py --help` reads it. Namespaces are
0.11.1's: a factory registered without `target` sits under its return type's
`module.QualifiedName`, with `target` under the target's, with `target_arg` under
`<target>.<arg>`. Packages register modules under the entry-point group `nemo_run.cli`; those
are imported only when a lookup misses or everything is listed, never at start-up.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import logging
import typing
from collections.abc import Callable
from typing import Any

from nemo_run.config import get_type_namespace
from nemo_run.exceptions import ConfigError
from nemo_run.run.torchx_backend.schedulers.backends import BACKENDS

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nemo_run.cli"
ROOT_ENTRYPOINT_NAMESPACE = "nemo_run.cli.entrypoints"
ROOT_FACTORY_NAMESPACE = "nemo_run.cli.factories"
DEFAULT_NAME = "default"

# `executor=<name>` works without registering anything for the backends' short names (a
# registered factory wins): local, docker, skypilot, dgxcloud, lepton, slurm
BUILTIN_EXECUTORS: dict[str, tuple[str, str]] = {
    b.short: tuple(b.executor.split(":", 1))  # type: ignore[misc]
    for b in BACKENDS
}

_UNIONS: tuple[Any, ...] = (typing.Union, type(int | str))
_NONE = type(None)


def _no_function(*args: Any, **kwargs: Any) -> Any:
    """The `fn` of a registration made without one (0.11.1's `FactoryRegistration(ns, name)`)."""
    raise ConfigError(
        "this factory registration has no function; register one with @run.cli.factory"
    )


@dataclasses.dataclass
class FactoryRegistration:
    """One `@run.cli.factory`, 0.11.1's `(namespace, name)` first: `namespace=None` means
    worked out on first use from the target or the return type, so a return annotation naming
    a class defined further down the module (`from __future__ import annotations`) still
    resolves."""

    namespace: str | None
    name: str
    fn: Callable[..., Any] = _no_function
    target: Any = None
    target_arg: str | None = None
    is_target_default: bool = False
    _resolved: tuple[str, Any] | None = dataclasses.field(default=None, repr=False)

    def resolve(self) -> tuple[str, Any]:
        """(namespace, the type or function it produces); NameError while a forward reference
        cannot be read yet."""
        if self._resolved is None:
            produced = self.target
            if produced is None and self.fn is not _no_function:
                produced = return_target(self.fn)
            if self.namespace:
                space = self.namespace
            elif produced is None:
                raise NameError(f"factory registration {self.name!r} names no namespace")
            else:
                space = get_type_namespace(produced)
                if self.target_arg:
                    space = f"{space}.{self.target_arg}"
            self._resolved = (space, produced)
        return self._resolved

    @property
    def line(self) -> int | None:
        """The line the factory is defined on (shown by `--help`)."""
        try:
            return inspect.getsourcelines(inspect.unwrap(self.fn))[1]
        except (OSError, TypeError):
            return None


_FACTORIES: list[FactoryRegistration] = []
_ENTRYPOINTS: dict[tuple[str, str], Any] = {}
_entry_points_loaded = False


def unwrap_buildable(hint: Any) -> Any:
    """`Config[X]`/`Partial[X]`/`Annotated[X, ...]`/`list[Config[X]]` as `X`; the hint itself
    otherwise. Recognised without importing fiddle: a buildable's class comes from fiddle."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return unwrap_buildable(typing.get_args(hint)[0])
    if origin in (list, tuple) and typing.get_args(hint):
        return unwrap_buildable(typing.get_args(hint)[0])
    if origin in _UNIONS:
        members = [a for a in typing.get_args(hint) if a is not _NONE]
        return unwrap_buildable(members[0]) if len(members) == 1 else hint
    if isinstance(origin, type) and is_buildable_class(origin):
        args = typing.get_args(hint)
        return args[0] if args else typing.Any
    return hint


def is_buildable_class(cls: type) -> bool:
    """Whether `cls` is a fiddle buildable (run.Config, run.Partial, fdl.Config, ...)."""
    return any(getattr(c, "__module__", "").startswith("fiddle") for c in cls.__mro__[1:])


def return_target(fn: Callable[..., Any]) -> Any:
    """What `fn` produces according to its return annotation (`-> run.Config[Model]` gives
    Model); ConfigError-free: a missing annotation raises NameError like an unreadable one."""
    hints = typing.get_type_hints(inspect.unwrap(fn), include_extras=True)
    if "return" not in hints:
        raise NameError(
            f"factory {fn.__qualname__} has no return annotation; annotate it (-> run.Config[X]) "
            "or register it with target=X"
        )
    return unwrap_buildable(hints["return"])


def add_factory(registration: FactoryRegistration) -> None:
    _FACTORIES.append(registration)


def add_entrypoint(namespace: str, name: str, entrypoint: Any) -> None:
    _ENTRYPOINTS[(namespace, name)] = entrypoint


def entrypoints() -> dict[tuple[str, str], Any]:
    """Every entrypoint registered, packages' entry points loaded first."""
    load_entry_points()
    return dict(_ENTRYPOINTS)


def load_entry_points() -> None:
    """Import the modules that packages register under `nemo_run.cli` (once); a module that
    fails to import is logged and skipped, so one broken package does not break every CLI."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:  # noqa: BLE001 - a third-party module may fail any way
            log.warning(
                "cannot load %s = %s (entry point group %s): %s",
                ep.name,
                ep.value,
                ENTRY_POINT_GROUP,
                e,
            )


def _resolved() -> list[tuple[str, Any, FactoryRegistration]]:
    out = []
    for reg in _FACTORIES:
        try:
            space, produced = reg.resolve()
        except NameError:
            continue
        out.append((space, produced, reg))
    return out


def factories_in(namespace: str) -> list[FactoryRegistration]:
    """The factories registered under exactly `namespace`, latest registration of a name last."""
    return [reg for space, _, reg in _resolved() if space == namespace]


def factories_for(
    hint: Any, owner: Any = None, arg: str | None = None
) -> list[FactoryRegistration]:
    """Factories that can fill a parameter `arg` of `owner` annotated `hint`: registered for
    that argument, for the type (or a member of its Union), or for a subclass of it."""
    load_entry_points()
    return _candidates(hint, owner, arg)


def _candidates(hint: Any, owner: Any, arg: str | None) -> list[FactoryRegistration]:
    spaces = []
    if owner is not None and arg:
        spaces.append(f"{get_type_namespace(owner)}.{arg}")
    types = _types_of(hint)
    spaces += [get_type_namespace(t) for t in types]
    found: list[FactoryRegistration] = []
    for space, produced, reg in _resolved():
        if space in spaces or (
            isinstance(produced, type)
            and any(isinstance(t, type) and _subclass(produced, t) for t in types)
        ):
            found.append(reg)
    return found


def _subclass(a: type, b: type) -> bool:
    try:
        return issubclass(a, b)
    except TypeError:
        return False


def _types_of(hint: Any) -> list[Any]:
    """The types a (possibly Optional/Union/list/Config[...]) hint admits, None left out."""
    hint = unwrap_buildable(hint)
    if typing.get_origin(hint) in _UNIONS:
        return [t for a in typing.get_args(hint) for t in _types_of(a)]
    if hint is _NONE or hint is typing.Any:
        return []
    return [hint]


def find_factory(
    name: str, hint: Any, owner: Any = None, arg: str | None = None
) -> FactoryRegistration | None:
    """The factory called `name` for the parameter, looked up locally first and in packages'
    entry points only on a miss; the most specific registration (for the argument) wins."""
    for attempt in range(2):
        found = [reg for reg in _candidates(hint, owner, arg) if reg.name == name]
        if found:
            return found[0] if owner is not None and arg else found[-1]
        if attempt == 0:
            load_entry_points()
    return None


def default_factory(
    hint: Any, owner: Any = None, arg: str | None = None
) -> FactoryRegistration | None:
    """The factory registered with `is_target_default=True` for the parameter, if any."""
    defaults = [reg for reg in _candidates(hint, owner, arg) if reg.is_target_default]
    return defaults[0] if defaults else None


def builtin_executor(name: str) -> type | None:
    """The executor class `executor=<name>` means when no factory of that name is registered."""
    where = BUILTIN_EXECUTORS.get(name)
    if where is None:
        return None
    module = importlib.import_module(where[0])
    cls: type = getattr(module, where[1])
    return cls


# -- introspection shared by the parser and the help ---------------------------------------
_VAR_POSITIONAL = inspect.Parameter.VAR_POSITIONAL


def signature_params(fn: Any) -> dict[str, inspect.Parameter]:
    """The named parameters of `fn` (a class: of its constructor), `*args` left out."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {n: p for n, p in params.items() if p.kind is not _VAR_POSITIONAL}


def type_hints(fn: Any) -> dict[str, Any]:
    """Evaluated annotations of `fn`'s parameters (a dataclass: of its fields); annotations
    that cannot be evaluated count as Any rather than failing the command."""
    target = fn
    if isinstance(fn, type) and not dataclasses.is_dataclass(fn):
        target = vars(fn).get("__init__") or next(
            (vars(c)["__init__"] for c in fn.__mro__ if "__init__" in vars(c)), fn
        )
    target = inspect.unwrap(target)
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - NameError, TypeError...: read what can be read
        raw = getattr(target, "__annotations__", {}) or {}
        return {k: (typing.Any if isinstance(v, str) else v) for k, v in raw.items()}


def strip_hint(hint: Any) -> Any:
    """Annotated[X, ...] as X; `run.Config[X]` as X (a config of X is what is set anyway)."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return strip_hint(typing.get_args(hint)[0])
    if isinstance(origin, type) and is_buildable_class(origin):
        args = typing.get_args(hint)
        return args[0] if args else typing.Any
    if isinstance(hint, type) and is_buildable_class(hint):
        return typing.Any
    return hint


def type_name(hint: Any) -> str:
    """A hint as people write it: `int`, `list[int]`, `Optional[Model]`, `Literal['a', 'b']`."""
    hint = strip_hint(hint)
    if hint is _NONE:
        return "None"
    if hint is inspect.Parameter.empty:
        return "Any"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and not args:
        return hint.__qualname__
    if origin in _UNIONS:
        members = [a for a in args if a is not _NONE]
        inner = " | ".join(type_name(a) for a in members)
        return f"Optional[{inner}]" if len(members) < len(args) else inner
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is not None:
        base = getattr(origin, "__name__", str(origin))
        return f"{base}[{', '.join('...' if a is Ellipsis else type_name(a) for a in args)}]"
    if callable(hint) and hasattr(hint, "__qualname__"):
        return str(hint.__qualname__)
    return str(hint).replace("typing.", "")


def is_executor_type(hint: Any) -> bool:
    """Whether `hint` is (or admits) a run.Executor, told without importing the executors."""
    return any(
        isinstance(t, type)
        and any(
            c.__name__ == "Executor" and c.__module__ == "nemo_run.core.execution.base"
            for c in t.__mro__
        )
        for t in _types_of(hint)
    )


def registered_executors() -> list[FactoryRegistration]:
    """Every factory that produces an executor (shown by `--help`)."""
    load_entry_points()
    return [reg for _, produced, reg in _resolved() if is_executor_type(produced)]
