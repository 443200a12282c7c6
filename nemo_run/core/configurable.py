"""`Config` and `Partial`: fiddle buildables that name a Python callable to run as a task.

On top of fiddle they carry 0.11.1's helpers: `clone`, `walk`, `broadcast`, graphs
(`visualize`, `diff`, `save_config_img`), arguments checked against the callable's signature
when given (`bind_args`) with dataclass objects turned into configs, and the module helpers
`set_value`, `from_dict`, `get_underlying_types`.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Generic, TypeVar, Union

import fiddle as fdl
from typing_extensions import Self

from nemo_run.core.config_mixin import render_graph, render_graph_diff, save_graph, svg_or_repr
from nemo_run.exceptions import BindArgumentsError, ConfigError, SetValueError

T = TypeVar("T")
_T = TypeVar("_T")


class _BuildableHelpers:
    """What `Config` and `Partial` add to fiddle's buildables (0.11.1's mixins)."""

    def clone(self) -> Self:
        """A deep copy: changing the copy, or anything inside it, leaves this one as it was."""
        return copy.deepcopy(self)

    def walk(self, **kwargs: Callable[[Any], Any]) -> Self:
        """Set, in this config and every config nested in its arguments, each argument named in
        `kwargs` to `fn(node)`, where node is the config holding it; configs without such an
        argument are left alone. Changes this config in place and returns it."""
        return _set_everywhere(self, kwargs, call=True)

    def broadcast(self, **kwargs: Any) -> Self:
        """Set, in this config and every config nested in its arguments, each argument named in
        `kwargs` to its value; configs without such an argument are left alone. Changes this
        config in place and returns it."""
        return _set_everywhere(self, kwargs, call=False)

    def visualize(self, **kwargs: Any) -> Any:
        """This config as a `graphviz.Graph` (fiddle's rendering; needs the graphviz package)."""
        return render_graph(self, **kwargs)

    def diff(self, old: Self, trim: bool = True, **kwargs: Any) -> Any:
        """A `graphviz.Graph` of what changed from `old` to this config."""
        return render_graph_diff(old, self, trim=trim, **kwargs)

    def save_config_img(self, path_str: str) -> None:
        """Write the graph to `path_str` in the format its extension names (.png, .svg)."""
        save_graph(self.visualize(), path_str)

    def _repr_svg_(self) -> str:
        """The graph in notebooks; the plain repr when it cannot be rendered."""
        return svg_or_repr(self)


class Config(Generic[T], fdl.Config[T], _BuildableHelpers):
    """Configured call of `fn_or_cls(**kwargs)`; `fdl.build` returns the object it builds.

    With `bind_args` (the default) the arguments are checked against the callable's
    signature, and dataclass objects given by keyword become `Config`s of their fields."""

    def __init__(self, fn_or_cls: Any, *args: Any, bind_args: bool = True, **kwargs: Any) -> None:
        if bind_args:
            kwargs = bind_arguments(fn_or_cls, *args, **kwargs)
        super().__init__(fn_or_cls, *args, **kwargs)


class Partial(Generic[T], fdl.Partial[T], _BuildableHelpers):
    """Configured function whose call is the task: building yields a `functools.partial` to call.

    `bind_args` works as for `Config`."""

    def __init__(self, fn_or_cls: Any, *args: Any, bind_args: bool = True, **kwargs: Any) -> None:
        if bind_args:
            kwargs = bind_arguments(fn_or_cls, *args, **kwargs)
        super().__init__(fn_or_cls, *args, **kwargs)


# An optional argument whose default, when built from the command line, is a Config/Partial.
OptionalDefaultConfig = Annotated[_T | None, Config[_T]]
OptionalDefaultPartial = Annotated[_T | None, Partial[_T]]


def task_name(task: Any) -> str:
    """The callable's name, used to name jobs that run this buildable."""
    fn = fdl.get_callable(task)
    return getattr(fn, "__name__", type(fn).__name__)


# -- arguments -------------------------------------------------------------------------------
def bind_arguments(fn_or_cls: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """`kwargs` checked against `fn_or_cls`'s signature (with `args` before them), the
    dataclass objects given for its named parameters turned into `Config`s. Mistakes surface
    here, where the config is written, rather than when a job builds it."""
    if isinstance(fn_or_cls, fdl.Buildable):
        return kwargs  # fiddle itself explains that a buildable cannot be re-wrapped
    try:
        signature = inspect.signature(fn_or_cls)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return kwargs
    try:
        signature.bind_partial(*args, **kwargs)
    except TypeError as e:
        raise BindArgumentsError(
            f"Cannot bind arguments to {fn_or_cls}: {e}; its parameters are "
            f"{', '.join(signature.parameters) or '(none)'}"
        ) from e
    named = {
        name
        for name, p in signature.parameters.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    return {k: dataclass_to_config(v) if k in named else v for k, v in kwargs.items()}


def dataclass_to_config(value: Any) -> Any:
    """A dataclass object as a `Config` of its init fields (nested dataclasses too); any other
    value as it is."""
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return value
    fields = {
        f.name: dataclass_to_config(getattr(value, f.name))
        for f in dataclasses.fields(value)
        if f.init
    }
    return Config(type(value), bind_args=False, **fields)


def _nodes(root: fdl.Buildable) -> Iterator[fdl.Buildable]:
    """`root` and every buildable held directly by an argument of one, each once."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        stack.extend(v for v in node.__arguments__.values() if isinstance(v, fdl.Buildable))


def _accepts(node: fdl.Buildable, name: str) -> bool:
    """Whether `name` is an argument `node`'s callable takes."""
    info = node.__signature_info__
    if name in info.valid_param_names:
        return True
    return bool(info.has_var_keyword) and name.isidentifier()


def _set_everywhere(root: Any, values: dict[str, Any], *, call: bool) -> Any:
    """`walk`/`broadcast`: set each named argument on every buildable under `root` that
    takes it, to `value(node)` when `call`, else to `value`."""
    for node in list(_nodes(root)):
        for name, value in values.items():
            if _accepts(node, name):
                setattr(node, name, value(node) if call else value)
    return root


# -- set_value ------------------------------------------------------------------------------
_STEP = re.compile(r"\.([A-Za-z_]\w*)|\[(-?\d+)\]|\[(['\"])(.*?)\3\]")


def _parse_path(key: str) -> list[str | int]:
    """`"a.b[0]['k']"` as `["a", "b", 0, "k"]`: attribute names are `str`, list indexes `int`,
    quoted keys `str` looked up with `[]`."""
    text, steps, pos = "." + key, [], 0
    while pos < len(text):
        match = _STEP.match(text, pos)
        if match is None:
            raise SetValueError(
                f'Invalid path "{key}": cannot parse it at {text[pos:]!r}; write attribute '
                "names joined by dots, with [0] for list items and ['key'] for dict keys"
            )
        attr, index, _, dict_key = match.groups()
        steps.append(
            ("attr", attr) if attr is not None else ("item", int(index) if index else dict_key)
        )
        pos = match.end()
    return steps  # type: ignore[return-value]


def _step(obj: Any, step: tuple[str, Any]) -> Any:
    kind, name = step
    return getattr(obj, name) if kind == "attr" else obj[name]


def set_value(cfg: fdl.Buildable, key: str, value: Any) -> None:
    """Set the argument at dotted path `key` (e.g. `"model.layers[0].size"`) of `cfg` to
    `value`. Raises `SetValueError` naming the path when it does not lead to a settable place."""
    steps: list[Any] = _parse_path(key)
    parent: Any = cfg
    try:
        for step in steps[:-1]:
            parent = _step(parent, step)
    except (AttributeError, KeyError, IndexError, TypeError) as e:
        raise SetValueError(f'Invalid path "{key}": {e}') from e
    kind, name = steps[-1]
    try:
        if kind == "attr":
            setattr(parent, name, value)
        else:
            parent[name] = value
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as e:
        raise SetValueError(f'Could not set "{key}" to "{value}": {e}') from e


# -- types and dicts -------------------------------------------------------------------------
_UNIONS: tuple[Any, ...] = (Union, types.UnionType) if hasattr(types, "UnionType") else (Union,)


def get_underlying_types(type_hint: Any) -> set[Any]:
    """The types a hint stands for: the members of a `Union`/`Optional` (nested ones
    flattened), else the hint itself."""
    if typing.get_origin(type_hint) in _UNIONS:
        found: set[Any] = set()
        for arg in typing.get_args(type_hint):
            found |= get_underlying_types(arg)
        return found
    return {type_hint}


def from_dict(raw_data: dict[str, Any] | list[Any] | str | float | int | bool, cls: Any) -> Any:
    """`raw_data` (parsed JSON/YAML) as an object of type `cls`: dataclasses built from dicts
    field by field, lists and dicts by their item types; fields left out take their default.
    A key that is no field raises `ConfigError` naming it."""
    return _from_dict(raw_data, cls, cls.__name__ if hasattr(cls, "__name__") else str(cls))


def _from_dict(raw: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _from_dict(raw, args[0], where)
    if origin in _UNIONS:
        if raw is None and type(None) in args:
            return None
        dataclass_args = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(raw, dict) and len(dataclass_args) == 1:
            return _from_dict(raw, dataclass_args[0], where)
        return raw
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(raw, dict):
        return _dataclass_from_dict(raw, hint, where)
    if origin in (list, tuple, set) and isinstance(raw, (list, tuple)):
        item = args[0] if args else Any
        return origin(_from_dict(v, item, f"{where}[{i}]") for i, v in enumerate(raw))
    if origin is dict and isinstance(raw, dict) and len(args) == 2:
        return {k: _from_dict(v, args[1], f"{where}[{k!r}]") for k, v in raw.items()}
    return raw


def _dataclass_from_dict(raw: dict[str, Any], cls: type, where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: {', '.join(map(repr, unknown))} is no field of {cls.__name__}; "
            f"its fields are {', '.join(fields)}"
        )
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable forward references: take the values as they are
        hints = {}
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in raw:
            kwargs[name] = _from_dict(raw[name], hints.get(name, Any), f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs[name] = None  # as 0.11.1: a required field left out is None
    return cls(**kwargs)
