"""Command-line overrides (`a.b=1`, `a.b+=1`, `a='[1,2]'`, `model=llama3_8b(seq_length=4096)`)
applied to a `run.Partial`/`run.Config` of a function, each value read by the type its
parameter is annotated with.

Unlike 0.11.1 every annotation users write reads correctly: bare `list`/`dict`, `Optional[X]`,
`Union[list, str]` (a list when the text is one), `Literal`, enums, `Path`, dataclasses and
classes (through factories or their own constructor). A mistake raises a `CLIException`
(a `ConfigError`) naming the parameter, the type expected and close matches.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import enum
import functools
import inspect
import logging
import operator
import re
import typing
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar

import fiddle as fdl

from nemo_run.cli import registry
from nemo_run.cli.errors import (
    ArgumentParsingError as ArgumentParsingError,
)
from nemo_run.cli.errors import (
    ArgumentValueError,
    CLIException,
    CollectionParseError,
    DictParseError,
    ListParseError,
    LiteralParseError,
    OperationError,
    TypeParsingError,
    UndefinedVariableError,
    UnknownTypeError,
)
from nemo_run.cli.errors import ParseError as ParseError
from nemo_run.cli.registry import signature_params as signature_params
from nemo_run.cli.registry import strip_hint as _strip
from nemo_run.cli.registry import type_hints as type_hints
from nemo_run.cli.registry import type_name as type_name
from nemo_run.core.configurable import Config, Partial, dataclass_to_config

OutputT = TypeVar("OutputT")
logger = logging.getLogger(__name__)

# 0.11.1's tables between builtin collection types and their `typing` aliases
BUILTIN_TO_TYPING: dict[Any, Any] = {
    list: typing.List,  # noqa: UP006 - the typing alias is the value
    dict: typing.Dict,  # noqa: UP006
    tuple: tuple,
    set: set,
    type: typing.Type,  # noqa: UP006
}
TYPING_TO_BUILTIN: dict[Any, Any] = {v: k for k, v in BUILTIN_TO_TYPING.items()}

_UNIONS: tuple[Any, ...] = (typing.Union, type(int | str))
_NONE = type(None)
_NONE_TEXT = frozenset({"None", "none", "null", "Null", "NULL"})
_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0"})
_COLLECTIONS = (list, tuple, set, frozenset, dict)
_KEY = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[-?\d+\])*"
_OVERRIDE = re.compile(rf"^(?P<key>{_KEY})(?P<op>\+=|-=|\*=|/=|\|=|&=|=)(?P<value>.*)$", re.S)
_STEP = re.compile(r"\.?([A-Za-z_]\w*)|\[(-?\d+)\]")


class Operation(enum.Enum):
    """How an override combines its value with the parameter's current one."""

    ASSIGN = "="
    ADD = "+="
    SUBTRACT = "-="
    MULTIPLY = "*="
    DIVIDE = "/="
    OR = "|="
    AND = "&="


_APPLY: dict[Operation, Callable[[Any, Any], Any]] = {
    Operation.ADD: operator.add,
    Operation.SUBTRACT: operator.sub,
    Operation.MULTIPLY: operator.mul,
    Operation.DIVIDE: operator.truediv,
    Operation.OR: operator.or_,
    Operation.AND: operator.and_,
}


@dataclasses.dataclass(frozen=True)
class _Where:
    """The parameter a value is read for: its dotted label (for messages) and, for factory
    lookups, the callable that takes it and its name."""

    label: str
    owner: Any = None
    arg: str | None = None

    def item(self, suffix: str) -> _Where:
        return _Where(f"{self.label}{suffix}", None, None)


# -- public entry points (0.11.1's names) --------------------------------------------------
def parse_cli_args(fn: Any, args: list[str], output_type: Any = Partial) -> Any:
    """`fn` as an `output_type` (run.Partial by default; a buildable is edited in place) with
    every `key[op]=value` of `args` applied in order."""
    root = fn if isinstance(fn, fdl.Buildable) else output_type(fn)
    for arg in args:
        apply_override(root, arg)
    return root


def parse_config(fn: Callable[..., Any], *args: str) -> Config[Any]:
    """`run.Config(fn)` with the overrides applied."""
    return typing.cast(Config[Any], parse_cli_args(fn, list(args), Config))


def parse_partial(fn: Callable[..., Any], *args: str) -> Partial[Any]:
    """`run.Partial(fn)` with the overrides applied."""
    return typing.cast(Partial[Any], parse_cli_args(fn, list(args), Partial))


def parse_value(value: str, annotation: Any = None) -> Any:
    """`value` (command-line text) read as `annotation`; any factory registered for the type
    may be named."""
    return convert(value, annotation, _Where("value"))


def parse_factory(parent: Any, arg_name: str, arg_type: Any, value: str) -> Any:
    """`value` (a factory name, `name(k=v, ...)`, a list of those or a dotted import path)
    for parameter `arg_name` of `parent`, as what the factory returns (a config)."""
    return convert(value, arg_type, _Where(arg_name, parent, arg_name))


# -- overrides -----------------------------------------------------------------------------
def split_override(text: str) -> tuple[list[str | int], Operation, str]:
    """`"a.b[0]+=3"` as (["a", "b", 0], ADD, "3")."""
    match = _OVERRIDE.match(text)
    if match is None:
        raise ArgumentParsingError(
            f"cannot read argument {text!r}: write key=value (also key+=value, key*=value, ...) "
            "with a dotted key such as trainer.max_steps=10",
            text,
        )
    steps: list[str | int] = []
    for step in _STEP.finditer(match["key"]):
        steps.append(step[1] if step[1] is not None else int(step[2]))
    return steps, Operation(match["op"]), match["value"]


def apply_override(root: fdl.Buildable, text: str) -> None:
    """Apply one `key[op]=value` to `root`; nested configs along the key are created from
    defaults, default factories or the annotated class when missing."""
    steps, op, raw = split_override(text)
    node: Any = root
    label: list[str] = []
    for position, step in enumerate(steps[:-1]):
        node = _descend(node, step, label, steps[position + 1])
        label.append(f"[{step}]" if isinstance(step, int) else step)
    last = steps[-1]
    where_text = _join(label)
    if isinstance(last, int):
        _set_item(node, last, op, raw, _join([*label, f"[{last}]"]))
        return
    hint, default = param_info(node, last, where_text)
    where = _Where(_join([*label, last]), fdl.get_callable(node), last)
    if op is Operation.ASSIGN:
        value = convert(raw, _admit_default(hint, default), where)
    else:
        current = node.__arguments__.get(last, default)
        if current is inspect.Parameter.empty:
            raise UndefinedVariableError(
                f"{where.label} has no value for {op.value} to act on; set it with "
                f"{where.label}=... first",
                text,
            )
        value = _operate(current, op, raw, hint, where)
    setattr(node, last, value)


def _join(parts: list[str]) -> str:
    return "".join(p if p.startswith("[") or i == 0 else f".{p}" for i, p in enumerate(parts))


def _descend(node: Any, step: str | int, label: list[str], following: str | int) -> Any:
    """The config at `step` under `node`, made editable (a copy of a default, a dataclass
    value or an empty config of the annotated class put in its place)."""
    here = _join([*label, f"[{step}]" if isinstance(step, int) else step])
    if isinstance(step, int):
        if not isinstance(node, list):
            raise ArgumentValueError(f"{_join(label)} is not a list; {here} cannot be indexed")
        try:
            child = node[step]
        except IndexError:
            raise ArgumentValueError(
                f"{here} is out of range: {_join(label)} has {len(node)} items"
            ) from None
        editable = _editable(child, None, here, following)
        node[step] = editable
        return editable
    if not isinstance(node, fdl.Buildable):
        raise ArgumentValueError(
            f"cannot set {here}: {_join(label) or 'the value'} is a {type(node).__name__}, "
            "not a config"
        )
    hint, default = param_info(node, step, _join(label))
    child = node.__arguments__.get(step, inspect.Parameter.empty)
    if child is inspect.Parameter.empty:
        child = copy.deepcopy(default)
    if isinstance(child, list):
        node.__arguments__[step] = child
        return child
    editable = _editable(child, hint, here, following, fdl.get_callable(node), step)
    setattr(node, step, editable)
    return editable


def _editable(
    value: Any,
    hint: Any,
    here: str,
    following: str | int,
    owner: Any = None,
    arg: str | None = None,
) -> Any:
    if isinstance(value, fdl.Buildable):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclass_to_config(value)
    if value is None or value is inspect.Parameter.empty:
        made = _empty_config(hint, owner, arg)
        if made is not None:
            return made
        raise ArgumentValueError(
            f"cannot set {here}.{following}: {here} has no value yet; give one first, "
            f"e.g. {here}=<factory>" + _choices_hint(hint, owner, arg)
        )
    raise ArgumentValueError(
        f"cannot set {here}.{following}: {here} is a {type(value).__name__} value, not a config"
    )


def _empty_config(hint: Any, owner: Any, arg: str | None) -> Any:
    """A config for a parameter with no value: its default factory's, else the annotated
    class with no arguments (its own defaults apply)."""
    default = registry.default_factory(hint, owner, arg)
    if default is not None:
        return _as_config(default.fn())
    if registry.is_executor_type(hint):
        return None  # the base class is no executor: the user names one
    target = _single_class(hint)
    if target is not None:
        return Config(target, bind_args=False)
    return None


def _single_class(hint: Any) -> type | None:
    hint = registry.unwrap_buildable(hint)
    if typing.get_origin(hint) in _UNIONS:
        members = [a for a in typing.get_args(hint) if a is not _NONE]
        hint = members[0] if len(members) == 1 else None
    if isinstance(hint, type) and _is_config_type(hint):
        return hint
    return None


def _set_item(node: Any, index: int, op: Operation, raw: str, label: str) -> None:
    if not isinstance(node, list):
        raise ArgumentValueError(f"cannot set {label}: it is not a list item")
    try:
        current = node[index]
    except IndexError:
        raise ArgumentValueError(
            f"{label} is out of range: the list has {len(node)} items"
        ) from None
    where = _Where(label)
    node[index] = (
        convert(raw, Any, where)
        if op is Operation.ASSIGN
        else _operate(current, op, raw, Any, where)
    )


def _operate(current: Any, op: Operation, raw: str, hint: Any, where: _Where) -> Any:
    """`current <op> value`: lists grow by a list or an item, numbers by a number."""
    if isinstance(current, fdl.Buildable):
        raise OperationError(
            f"{where.label}{op.value}{raw}: {where.label} is a config; set its fields instead",
            raw,
        )
    if isinstance(current, list) and op is Operation.ADD:
        item_hint = _item_hint(hint)
        text = raw.strip()
        if text.startswith("["):
            return current + list(convert(text, list[item_hint], where))  # type: ignore[valid-type]
        return [*current, convert(text, item_hint, where)]
    operand_hint = hint if not _is_missing(hint) else type(current)
    operand = convert(raw, operand_hint, where)
    try:
        result = _APPLY[op](current, operand)
    except (TypeError, ZeroDivisionError) as e:
        raise OperationError(
            f"{where.label}{op.value}{raw}: cannot apply {op.value} to {current!r}: {e}", raw
        ) from e
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(result, float):
        if result.is_integer() and (hint is int or _is_missing(hint)):
            return int(result)
    return result


def _item_hint(hint: Any) -> Any:
    args = typing.get_args(_strip(hint))
    return args[0] if args else Any


# -- parameters of a callable --------------------------------------------------------------
def param_info(node: Any, name: str, owner_label: str) -> tuple[Any, Any]:
    """(annotation, default) of parameter `name` of the buildable `node`'s callable; an
    unknown name raises ArgumentValueError with the close matches."""
    fn = fdl.get_callable(node)
    params = signature_params(fn)
    if name not in params:
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return Any, inspect.Parameter.empty
        raise ArgumentValueError(unknown_param_message(name, params, owner_label or _name(fn)))
    hints = type_hints(fn)
    param = params[name]
    return hints.get(name, Any), param.default


def unknown_param_message(name: str, params: Any, owner: str) -> str:
    """ "no parameter max_stpes on trainer; did you mean max_steps?" (or the list of them)."""
    names = [n for n, p in dict(params).items() if getattr(p, "kind", None) not in _VAR_KINDS]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        return f"no parameter {name} on {owner}; did you mean {' or '.join(close)}?"
    return f"no parameter {name} on {owner}; its parameters are {', '.join(names) or '(none)'}"


_VAR_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))


def _admit_default(hint: Any, default: Any) -> Any:
    """`x: int = None` admits None (users write it without Optional); an unannotated parameter
    reads as the type of its default."""
    if _is_missing(hint):
        if default is not inspect.Parameter.empty and default is not None:
            kind = type(default)
            if kind in (bool, int, float, str, list, dict, tuple) or issubclass(
                kind, (enum.Enum, PurePath)
            ):
                return kind
        return Any
    if default is None and not _allows_none(hint):
        return typing.Optional[hint]  # noqa: UP045 - built at run time from a hint object
    return hint


def _is_missing(hint: Any) -> bool:
    return hint in (Any, None, inspect.Parameter.empty, object)


def _allows_none(hint: Any) -> bool:
    hint = _strip(hint)
    if _is_missing(hint) or hint is _NONE:
        return True
    return typing.get_origin(hint) in _UNIONS and _NONE in typing.get_args(hint)


# -- values --------------------------------------------------------------------------------
def convert(text: str, hint: Any, where: _Where) -> Any:
    """Command-line `text` as a value of type `hint` for the parameter `where`."""
    hint = _strip(hint)
    text = text.strip()
    custom = _custom_parser(hint)
    if custom is not None:
        return custom(text, hint)
    if _is_missing(hint):
        return _guess(text)
    if text in _NONE_TEXT and _allows_none(hint):
        return None
    origin = typing.get_origin(hint)
    if origin in _UNIONS:
        return _convert_union(text, hint, where)
    if origin is Literal:
        return _convert_literal(text, hint, where)
    if hint is _NONE:
        raise TypeParsingError(f"{where.label}: expected None, got {text!r}", text)
    if hint in _COLLECTIONS or origin in _COLLECTIONS:
        return _convert_collection(text, hint, where)
    if hint is str:
        return _unquote(text)
    if hint is bool:
        return _convert_bool(text, where)
    if hint in (int, float, complex):
        return _convert_number(text, hint, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _convert_enum(text, hint, where)
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return hint(_unquote(text))
    if hint is bytes:
        return _unquote(text).encode()
    if _is_config_type(hint) or callable(hint):
        return _convert_factory(text, hint, where)
    raise UnknownTypeError(
        text,
        hint,
        f"{where.label}: cannot read values of type {type_name(hint)} from the command line",
    )


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _guess(text: str) -> Any:
    """A value with no annotation: a Python literal when it reads as one (numbers, lists with
    bare words as strings, ...), else the text itself."""
    if text in _NONE_TEXT:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return text
    if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
        try:
            return _convert_collection(text, type(_literal_kind(node)), _Where("value"))
        except CLIException:
            return text
    return text


def _literal_kind(node: ast.AST) -> Any:
    return {ast.List: [], ast.Tuple: (), ast.Set: set(), ast.Dict: {}}[type(node)]


def _convert_bool(text: str, where: _Where) -> bool:
    lowered = _unquote(text).lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise TypeParsingError(f"{where.label}: expected bool (true or false), got {text!r}", text)


def _convert_number(text: str, hint: type, where: _Where) -> Any:
    try:
        return hint(_unquote(text))
    except ValueError:
        raise TypeParsingError(
            f"{where.label}: expected {hint.__name__}, got {text!r}", text
        ) from None


def _convert_enum(text: str, hint: type[enum.Enum], where: _Where) -> enum.Enum:
    raw = _unquote(text)
    if raw.startswith(f"{hint.__name__}."):
        raw = raw[len(hint.__name__) + 1 :]
    members = hint.__members__
    if raw in members:
        return members[raw]
    for name, member in members.items():
        if name.lower() == raw.lower() or str(member.value) == raw:
            return member
    close = difflib.get_close_matches(raw, list(members), n=1)
    hint_text = f"; did you mean {close[0]}?" if close else ""
    raise TypeParsingError(
        f"{where.label}: expected {hint.__name__} (one of {', '.join(members)}), got {text!r}"
        + hint_text,
        text,
    )


def _convert_literal(text: str, hint: Any, where: _Where) -> Any:
    choices = typing.get_args(hint)
    raw = _unquote(text)
    for choice in choices:
        if isinstance(choice, enum.Enum) and (raw == choice.name or raw == str(choice.value)):
            return choice
        if isinstance(choice, str) and raw == choice:
            return choice
        if not isinstance(choice, str) and text == repr(choice):
            return choice
    shown = ", ".join(repr(c) for c in choices)
    raise LiteralParseError(text, hint, f"{where.label}: expected one of {shown}, got {text!r}")


def _convert_union(text: str, hint: Any, where: _Where) -> Any:
    """The first member of the Union that reads `text`, tried from the most specific kind: a
    text that looks like a list is a list when a list is allowed, a bare word a string last."""
    members = [m for m in typing.get_args(hint) if m is not _NONE]
    if len(members) == 1:  # Optional[X]: X's own message says more
        return convert(text, members[0], where)
    looks = text[:1]
    ordered = sorted(members, key=lambda m: _rank(_strip(m), looks))
    for member in ordered:
        try:
            return convert(text, member, where)
        except CLIException:
            continue
    raise TypeParsingError(f"{where.label}: expected {type_name(hint)}, got {text!r}", text)


def _rank(member: Any, looks: str) -> int:
    origin = typing.get_origin(member) or member
    if looks in "[(" and looks and origin in (list, tuple, set, frozenset):
        return 0
    if looks == "{" and origin is dict:
        return 0
    if origin is Literal or (isinstance(member, type) and issubclass(member, enum.Enum)):
        return 1
    if member in (bool, int, float, complex):
        return 2 + (bool, int, float, complex).index(member)
    if origin in _COLLECTIONS:
        return 6
    if member is str or (isinstance(member, type) and issubclass(member, PurePath)):
        return 9
    return 7  # configs: a factory name before a plain string


def _convert_collection(text: str, hint: Any, where: _Where) -> Any:
    origin = typing.get_origin(hint) or hint
    args = typing.get_args(hint)
    error = DictParseError if origin is dict else ListParseError
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError as e:
        raise error(
            text, hint, f"{where.label}: expected {type_name(hint)}, got {text!r} ({e.msg})"
        ) from None
    if origin is dict:
        if not isinstance(node, ast.Dict):
            raise DictParseError(
                text,
                hint,
                f"{where.label}: expected {type_name(hint)} like {{'k': 1}}, got {text!r}",
            )
        key_hint, value_hint = args if len(args) == 2 else (Any, Any)
        out = {}
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            if key_node is None:
                raise DictParseError(text, hint, f"{where.label}: ** is not allowed in {text!r}")
            key = convert(_segment(text, key_node), key_hint, where.item("[key]"))
            out[key] = convert(_segment(text, value_node), value_hint, where.item(f"[{key!r}]"))
        return out
    if not isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        if _is_config_type(_item_hint(hint)) and origin is list:
            return [convert(text, _item_hint(hint), where.item("[0]"))]  # one factory: a list of it
        raise ListParseError(
            text, hint, f"{where.label}: expected {type_name(hint)} like [1, 2], got {text!r}"
        )
    items = []
    for index, elt in enumerate(node.elts):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(node.elts):
                raise CollectionParseError(
                    text, hint, f"{where.label}: expected {len(args)} items, got {len(node.elts)}"
                )
            item_hint = args[index]
        else:
            item_hint = args[0] if args else Any
        items.append(
            convert(
                _segment(text, elt),
                item_hint,
                _Where(f"{where.label}[{index}]", where.owner, where.arg),
            )
        )
    return origin(items) if origin in (tuple, set, frozenset) else items


def _segment(text: str, node: ast.AST) -> str:
    segment = ast.get_source_segment(text, node)
    if segment is None:  # pragma: no cover - only for nodes without positions
        return ast.unparse(node)
    return segment


# -- factories -----------------------------------------------------------------------------
def _is_config_type(hint: Any) -> bool:
    """Whether values of `hint` come from a factory or a constructor call rather than text."""
    if _is_missing(hint):
        return False
    if not isinstance(hint, type):
        return callable(hint) and not typing.get_origin(hint)
    if hint in (str, bytes, bool, int, float, complex, *_COLLECTIONS):
        return False
    return not issubclass(hint, (enum.Enum, PurePath))


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _choices_hint(hint: Any, owner: Any, arg: str | None) -> str:
    names = sorted({reg.name for reg in registry.factories_for(hint, owner, arg)})
    if registry.is_executor_type(hint):
        names = [*registry.BUILTIN_EXECUTORS, *names]
    return f" (registered: {', '.join(names)})" if names else ""


def _convert_factory(text: str, hint: Any, where: _Where) -> Any:
    """`name`, `name(k=v, ...)` or `pkg.mod.fn(...)`: the registered factory (or the class of
    the annotation, or an importable callable) called with its arguments read by its own
    annotations; a list of those for a list."""
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        node = None
    call_args: list[ast.expr] = []
    keywords: list[ast.keyword] = []
    if isinstance(node, ast.Call):
        name = _dotted(node.func)
        call_args, keywords = list(node.args), list(node.keywords)
    elif node is not None:
        name = _dotted(node)
    else:
        name = None
    if not name:
        raise TypeParsingError(
            f"{where.label}: expected {type_name(hint)}: a factory name such as "
            f"{where.label}=my_factory or my_factory(key=value), got {text!r}"
            + _choices_hint(hint, where.owner, where.arg),
            text,
        )
    fn = _find_callable(name, hint, where)
    kwargs = _call_arguments(fn, name, text, call_args, keywords, where)
    if isinstance(fn, type) and _is_config_type(fn):
        return Config(fn, bind_args=False, **kwargs)
    try:
        return _as_config(fn(**kwargs))
    except CLIException:
        raise
    except Exception as e:
        raise ArgumentValueError(
            f"{where.label}: factory {name} failed: {type(e).__name__}: {e}", text
        ) from e


def _as_config(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclass_to_config(value)
    return value


def _find_callable(name: str, hint: Any, where: _Where) -> Any:
    found = registry.find_factory(name, hint, where.owner, where.arg)
    if found is not None:
        return found.fn
    target = _single_class(hint)
    if target is not None and name in (target.__name__, target.__qualname__):
        return target
    if "." in name:
        module_name, _, attr = name.rpartition(".")
        try:
            module = __import__(module_name, fromlist=[attr])
            return getattr(module, attr)
        except (ImportError, AttributeError):
            pass
    if registry.is_executor_type(hint):
        cls = registry.builtin_executor(name)
        if cls is not None:
            return cls
    known = sorted({reg.name for reg in registry.factories_for(hint, where.owner, where.arg)})
    if registry.is_executor_type(hint):
        known = sorted({*known, *registry.BUILTIN_EXECUTORS})
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    message = f"{where.label}: no factory {name} for {type_name(hint)}"
    if close:
        message += f"; did you mean {' or '.join(close)}?"
    elif known:
        message += f"; registered: {', '.join(known)}"
    else:
        message += "; register one with @run.cli.factory or give a dotted path (pkg.module.fn)"
    raise ArgumentValueError(message, name)


def _call_arguments(
    fn: Any,
    name: str,
    text: str,
    call_args: list[ast.expr],
    keywords: list[ast.keyword],
    where: _Where,
) -> dict[str, Any]:
    """The arguments of `name(...)` read by `fn`'s annotations; unknown names refused with
    the close matches."""
    params = signature_params(fn)
    hints = type_hints(fn)
    positional = [
        n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if len(call_args) > len(positional):
        raise ArgumentValueError(
            f"{where.label}: {name} takes {len(positional)} positional arguments, "
            f"{len(call_args)} given in {text!r}",
            text,
        )
    pairs = [(positional[i], arg) for i, arg in enumerate(call_args)]
    for keyword in keywords:
        if keyword.arg is None:
            raise ArgumentValueError(f"{where.label}: ** is not allowed in {text!r}", text)
        if keyword.arg not in params and not takes_any:
            raise ArgumentValueError(
                f"{where.label}: " + unknown_param_message(keyword.arg, params, name), text
            )
        pairs.append((keyword.arg, keyword.value))
    kwargs = {}
    for arg_name, value_node in pairs:
        param = params.get(arg_name)
        default = param.default if param is not None else inspect.Parameter.empty
        hint = _admit_default(hints.get(arg_name, Any), default)
        kwargs[arg_name] = convert(
            _segment(text, value_node), hint, _Where(f"{where.label}.{arg_name}", fn, arg_name)
        )
    return kwargs


# -- completeness --------------------------------------------------------------------------
def missing_arguments(root: fdl.Buildable, label: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted name, annotation, owner) of every required parameter left unset in `root` and
    the configs under it: what fiddle would refuse only when the job builds them."""
    found: list[tuple[str, Any, Any]] = []
    fn = fdl.get_callable(root)
    params = signature_params(fn)
    hints = type_hints(fn) if params else {}
    for name, param in params.items():
        if param.kind is param.VAR_KEYWORD:
            continue
        here = f"{label}.{name}" if label else name
        value = root.__arguments__.get(name, inspect.Parameter.empty)
        if value is inspect.Parameter.empty and param.default is param.empty:
            found.append((here, hints.get(name, Any), fn))
        elif isinstance(value, fdl.Buildable):
            found += missing_arguments(value, here)
    return found


def fill_defaults(root: fdl.Buildable) -> None:
    """Give each unset required parameter its registered default factory's value."""
    fn = fdl.get_callable(root)
    hints = type_hints(fn)
    for name, param in signature_params(fn).items():
        if name in root.__arguments__ or param.default is not param.empty:
            continue
        if param.kind is param.VAR_KEYWORD:
            continue
        default = registry.default_factory(hints.get(name, Any), fn, name)
        if default is not None:
            setattr(root, name, _as_config(default.fn()))


def missing_message(missing: list[tuple[str, Any, Any]]) -> str:
    """One line per missing parameter, with the factories that could fill it."""
    lines = []
    for label, hint, owner in missing:
        arg = label.rsplit(".", 1)[-1]
        lines.append(
            f"missing a value for {label} ({type_name(hint)}): pass {label}=..."
            + _choices_hint(hint, owner, arg)
        )
    return "\n".join(lines)


# -- 0.11.1's type-parser API (`type_parser.parse(value, annotation)`), on the converter above
class TypeParser:
    """Reads command-line text as a value of an annotation (0.11.1's class): every `parse_*`
    goes through this module's converter, so it reads what an override would.
    `strict_mode=False` returns the text unchanged for a type it cannot read;
    `register_parser(T)` decorates a `fn(value, annotation)` used for `T` everywhere, overrides
    on the command line included when registered on the module's `type_parser`."""

    __slots__ = ("custom_parsers", "parsers", "strict_mode")

    def __init__(self, strict_mode: bool = True) -> None:
        self.strict_mode = strict_mode
        self.custom_parsers: dict[Any, Callable[[str, Any], Any]] = {}
        self.parsers: dict[Any, Callable[[str, Any], Any]] = {
            int: self.parse_int,
            float: self.parse_float,
            str: self.parse_str,
            bool: self.parse_bool,
            list: self.parse_list,
            dict: self.parse_dict,
            PurePath: self.parse_path,
            typing.Any: self.parse_any,
            Literal: self.parse_literal,
            typing.Union: self.parse_union,
        }

    def register_parser(self, type_: Any) -> Callable[[Callable[[str, Any], Any]], Any]:
        """Decorator: `fn(value, annotation)` reads values of `type_` from now on."""

        def add(fn: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
            self.custom_parsers[type_] = fn
            return fn

        return add

    def get_parser(self, annotation: Any) -> Callable[[str, Any], Any]:
        """The function that reads values of `annotation` (custom ones first)."""
        custom = _lookup(self.custom_parsers, annotation)
        if custom is not None:
            return custom
        origin = typing.get_origin(annotation)
        if origin in _UNIONS:
            return self.parse_union
        if isinstance(annotation, type) and issubclass(annotation, PurePath):
            return self.parse_path
        return _lookup(self.parsers, origin or annotation) or self._parse_any_kind

    def parse(self, value: str, annotation: Any) -> Any:
        """`value` read as `annotation`; a CLIException (ParseError) when it does not fit."""
        return self.get_parser(annotation)(value, annotation)

    def _parse_any_kind(self, value: str, annotation: Any) -> Any:
        if isinstance(annotation, (str, typing.ForwardRef)):
            return self.parse_forward_ref(value, annotation)
        return self._convert(value, annotation)

    def _convert(self, value: str, annotation: Any) -> Any:
        try:
            return convert(value, annotation, _Where("value"))
        except UnknownTypeError:
            if self.strict_mode:
                raise
            return value

    def parse_buildable(self, value: str, annotation: Any) -> Any:
        """A factory name or call (`llama3(seq=8)`) for a `run.Config[T]`/`run.Partial[T]`."""
        return _convert_factory(value.strip(), _strip(annotation), _Where("value"))

    def parse_int(self, value: str, _: Any) -> int:
        return typing.cast(int, self._convert(value, int))

    def parse_float(self, value: str, _: Any) -> float:
        return typing.cast(float, self._convert(value, float))

    def parse_str(self, value: str, _: Any) -> str:
        return typing.cast(str, self._convert(value, str))

    def parse_bool(self, value: str, _: Any) -> bool:
        return typing.cast(bool, self._convert(value, bool))

    def parse_list(self, value: str, annotation: Any) -> list[Any]:
        return typing.cast(list[Any], self._convert(value, annotation))

    def parse_dict(self, value: str, annotation: Any) -> dict[Any, Any]:
        return typing.cast(dict[Any, Any], self._convert(value, annotation))

    def parse_optional(self, value: str, annotation: Any) -> Any:
        return self._convert(value, annotation)

    def parse_union(self, value: str, annotation: Any) -> Any:
        return self._convert(value, annotation)

    def parse_unknown(self, value: str, annotation: Any) -> Any:
        """0.11.1's fallback: refused in strict mode, the text itself otherwise."""
        if self.strict_mode:
            raise UnknownTypeError(value, annotation, f"Unsupported type: {annotation}")
        return value

    def parse_any(self, value: str, _: Any) -> Any:
        return _guess(value.strip())

    def parse_literal(self, value: str, annotation: Any) -> Any:
        return self._convert(value, annotation)

    def parse_path(self, value: str, _: Any) -> Path:
        """A `pathlib.Path` (or the `Path` subclass annotated)."""
        kind = _ if isinstance(_, type) and issubclass(_, Path) else Path
        return typing.cast(Path, self._convert(value, kind))

    def parse_forward_ref(self, value: str, annotation: Any) -> Any:
        """A string annotation (`"int"`, `"list[int]"`): evaluated among builtins and typing."""
        text = (
            annotation.__forward_arg__ if isinstance(annotation, typing.ForwardRef) else annotation
        )
        try:
            resolved = eval(text, {**vars(typing), "__builtins__": __builtins__})  # noqa: S307
        except Exception:  # noqa: BLE001 - a name the parser cannot see
            return self.parse_unknown(value, annotation)
        return self.parse(value, resolved)

    def infer_type(self, value: str) -> type:
        """The type `value` reads as without an annotation (`"1"` int, `"[1]"` list, ...)."""
        return type(_guess(value.strip()))


def _lookup(table: dict[Any, Any], key: Any) -> Any:
    """`table[key]`, None for an unhashable key."""
    try:
        return table.get(key)
    except TypeError:
        return None


def _custom_parser(hint: Any) -> Callable[[str, Any], Any] | None:
    try:
        return type_parser.custom_parsers.get(hint)
    except TypeError:  # an unhashable annotation
        return None


type_parser = TypeParser()


def parse_attribute(attr: str, nested: Any) -> Any:
    """`nested.attr` for one dotted step with indexes (`layers[0]`): what an override key
    walks through; ArgumentValueError naming the step when it is not there."""
    result = nested
    for step in _STEP.finditer(attr):
        name, index = step[1], step[2]
        try:
            result = getattr(result, name) if name is not None else result[int(index)]
        except (AttributeError, IndexError, KeyError, TypeError) as e:
            what = f"attribute {name!r}" if name is not None else f"index [{index}]"
            raise ArgumentValueError(
                f"invalid {what} in {attr!r}: {type(result).__name__} has none", attr
            ) from e
    return result


def cli_exception_handler(func: Callable[..., OutputT]) -> Callable[..., OutputT]:
    """Decorator: a CLIException is logged (its message) and re-raised; any other error is
    logged and raised as a CLIException caused by it, so callers catch one kind."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> OutputT:
        try:
            return func(*args, **kwargs)
        except CLIException as e:
            logger.error(e.user_friendly_message())
            raise
        except Exception as e:
            logger.error("unexpected error: %s", e)
            raise CLIException(f"An unexpected error occurred: {e}", "", {}) from e

    return wrapper
