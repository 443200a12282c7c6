"""Check an executor's field values against their annotations, on creation.

One mechanism for every executor: a wrong type (`num_gpus=True`, `volumes='/a:/b'`,
`packager='git'`) fails with a `ConfigError` naming `Class.field`, what was expected and the
fix, before any process, container or remote call starts. The annotations are the contract:
`int` means a count, so `bool` is refused even though Python treats it as an int.

Completeness and consistency (a field left empty, a value out of range, two fields that
contradict) are checked at dry run instead, with the helpers below (`check_required`,
`check_at_least`, `check_choice`, `check_url`): nemo-run 0.11.1 lets users build an executor
and set its fields afterwards, so only what was given can be judged on creation.

Predicates are compiled once per class (the check runs at every executor construction);
messages are built only on the error path. Values of `repr=False` or secret-looking fields
never appear in a message.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import shlex
import sys
import typing
from typing import TYPE_CHECKING, Any, Literal, Union

from nemo_run.core.redact import ARG_ENV_PREFIX, is_secret_name
from nemo_run.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

    Accepts = Callable[[Any], bool]

_UNION_TYPE = type(int | str)  # types.UnionType, without importing `types`
_NONE = type(None)
_MAX_REPR = 40
_URL = re.compile(r"^https?://[^/\s?#]+(/[^\s]*)?$")


@dataclasses.dataclass(frozen=True)
class _FieldCheck:
    name: str
    annotation: Any
    accepts: Accepts
    hidden: bool  # repr=False or secret-looking name: never show the value


def check_field_types(obj: Any) -> None:
    """Raise ConfigError for the first init field of dataclass `obj` whose value does not fit
    its annotation; `int` refuses bool and float, containers are checked one level deep."""
    for check in _checks_for(type(obj)):
        value = getattr(obj, check.name)
        if not check.accepts(value):
            raise ConfigError(_explain(type(obj).__name__, check, value))


def check_at_least(obj: Any, name: str, minimum: int, *, expected: str = "") -> None:
    """Range check of an integer field (None passes); refuses bool itself, so it stays correct
    even where it runs without `check_field_types`."""
    value = getattr(obj, name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        want = expected or f"an integer >= {minimum}"
        raise ConfigError(f"{type(obj).__name__}.{name} must be {want}, got {_short_repr(value)}")


def check_required(obj: Any, *names: str) -> None:
    """Fields a launch needs that 0.11.1 lets users fill in after construction: checked at dry
    run, naming every empty one at once."""
    missing = [n for n in names if getattr(obj, n, None) in (None, "", [], {})]
    if not missing:
        return
    owner = type(obj).__name__
    listed = ", ".join(f"{owner}.{n}" for n in missing)
    verb = "is" if len(missing) == 1 else "are"
    raise ConfigError(
        f"{listed} {verb} required to launch; set {'it' if len(missing) == 1 else 'them'} "
        f"when creating the executor or before the run (executor.{missing[0]} = ...)"
    )


def check_choice(obj: Any, name: str, choices: Collection[Any]) -> None:
    """A field that must be one of a few names (e.g. a framework)."""
    value = getattr(obj, name)
    if value not in choices:
        raise ConfigError(
            f"{type(obj).__name__}.{name}={_short_repr(value)} is not supported; use one of "
            + ", ".join(repr(c) for c in choices)
        )


def check_url(obj: Any, name: str, example: str) -> str:
    """An http(s) URL field with a host; returns it without trailing slashes."""
    value = getattr(obj, name)
    text = value.strip().rstrip("/") if isinstance(value, str) else ""
    if not _URL.match(text):
        raise ConfigError(
            f"{type(obj).__name__}.{name}={_short_repr(value)} is not an http(s) URL; "
            f"write e.g. {name}={example!r}"
        )
    return text


def check_positive_seconds(obj: Any, name: str) -> None:
    """A duration in seconds that must be more than zero (e.g. an HTTP timeout)."""
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(
            f"{type(obj).__name__}.{name} must be a number of seconds > 0, got "
            f"{_short_repr(value)}; e.g. {name}=30"
        )


# -- shared by the executors ------------------------------------------------------------------
CONFIGS_DIR = "/nemo_run/configs"  # where a job reads the files of `package_configs`


def in_job_paths(job_dir: str, written: list[str]) -> list[str]:
    """Files `Executor.package_configs` wrote under `<job_dir>/configs`, as the job sees them
    (`/nemo_run/configs/<name>`, where 0.11.1's container executors put them)."""
    base = os.path.join(job_dir, "configs")
    return [posixpath.join(CONFIGS_DIR, *os.path.relpath(p, base).split(os.sep)) for p in written]


def shell_join(
    args: list[str], expand: Collection[str] = (), secret_env: Mapping[str, str] | None = None
) -> str:
    """A shell command line for `args`: every word quoted, except references to the variables
    named in `expand` (the executor's macros: `--rdzv-endpoint $MASTER_ADDR:29500`,
    `${RANK}`) and argument i's own secret reference `${NEMORUN_ARG_<i>}` (see
    `redact.split_secret_args`), which the shell on the node expands, each as one word.
    A word with blanks in it (an inline script) keeps its `$` as written, for its own shell."""
    words = []
    for index, arg in enumerate(args):
        names = set() if any(c.isspace() for c in arg) else set(expand)
        own = f"{ARG_ENV_PREFIX}{index}"
        if secret_env and own in secret_env:
            names.add(own)
        words.append(_quote_expanding(arg, names))
    return " ".join(words)


def _quote_expanding(arg: str, names: set[str]) -> str:
    if not names or "$" not in arg:
        return shlex.quote(arg)
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    pattern = re.compile(rf"\$(?:\{{({alternatives})\}}|({alternatives})(?![A-Za-z0-9_]))")
    out, last = "", 0
    for match in pattern.finditer(arg):
        if match.start() > last:
            out += shlex.quote(arg[last : match.start()])
        out += f'"${{{match.group(1) or match.group(2)}}}"'
        last = match.end()
    if last < len(arg):
        out += shlex.quote(arg[last:])
    return out or "''"


# -- compiling annotations to predicates ------------------------------------------------------
_checks: dict[type, tuple[_FieldCheck, ...]] = {}  # per class: compiled once


def _checks_for(cls: type) -> tuple[_FieldCheck, ...]:
    found = _checks.get(cls)
    if found is None:
        found = _checks[cls] = _compile_checks(cls)
    return found


def _compile_checks(cls: type) -> tuple[_FieldCheck, ...]:
    hints = type_hints(cls)
    checks = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        annotation = hints.get(f.name, Any)
        hidden = not f.repr or is_secret_name(f.name)
        checks.append(_FieldCheck(f.name, annotation, _accepts(annotation, deep=True), hidden))
    return tuple(checks)


def type_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations; one that cannot be resolved (a TYPE_CHECKING-only name in a user
    subclass) is treated as Any rather than making the class unusable."""
    try:
        return typing.get_type_hints(cls)
    except Exception:
        pass
    hints: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        module_globals = (
            vars(sys.modules[base.__module__]) if base.__module__ in sys.modules else {}
        )
        for name, annotation in base.__dict__.get("__annotations__", {}).items():
            if isinstance(annotation, str):
                try:
                    annotation = eval(annotation, dict(module_globals), dict(vars(base)))
                except Exception:
                    annotation = Any
            hints[name] = annotation
    return hints


def _accepts(tp: Any, *, deep: bool) -> Accepts:
    """A fast predicate for `tp`; with deep=False a container type checks only the container."""
    try:
        simple = _SIMPLE.get(tp)
    except TypeError:  # an unhashable annotation object
        simple = None
    if simple is not None:
        return simple
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union or origin is _UNION_TYPE:
        options = tuple(_accepts(a, deep=deep) for a in args)
        return lambda v: any(ok(v) for ok in options)
    if origin is Literal:
        return lambda v: any(type(v) is type(a) and v == a for a in args)
    if origin in (list, set, frozenset) or (origin is tuple and len(args) == 2 and args[1] is ...):
        return _sequence_accepts(origin, args[0] if args and deep else Any)
    if origin is dict:
        key_tp, value_tp = args if args and deep else (Any, Any)
        return _dict_accepts(_accepts(key_tp, deep=False), _accepts(value_tp, deep=False))
    if isinstance(origin, type):  # tuple[int, str], type[X], collections.abc generics
        return lambda v: isinstance(v, origin)
    if isinstance(tp, type):
        return lambda v: isinstance(v, tp)
    return _accept_any  # TypeVar, NewType, unresolved strings: nothing to check against


def _sequence_accepts(container: type[Collection[Any]], element: Any) -> Accepts:
    ok = _accepts(element, deep=False)
    if ok is _accept_any:
        return lambda v: isinstance(v, container)
    return lambda v: isinstance(v, container) and all(ok(x) for x in v)


def _dict_accepts(key_ok: Accepts, value_ok: Accepts) -> Accepts:
    if key_ok is _accept_any and value_ok is _accept_any:
        return lambda v: isinstance(v, dict)
    return lambda v: isinstance(v, dict) and all(key_ok(k) and value_ok(x) for k, x in v.items())


def _accept_any(value: Any) -> bool:
    return True


_SIMPLE: dict[Any, Accepts] = {
    Any: _accept_any,
    object: _accept_any,
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),  # True is not a count
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    bool: lambda v: isinstance(v, bool),
    str: lambda v: isinstance(v, str),
    None: lambda v: v is None,
    _NONE: lambda v: v is None,
}


# -- messages (error path only) ---------------------------------------------------------------
def _explain(owner: str, check: _FieldCheck, value: Any) -> str:
    """One line: `Class.field must be <words>, got <what>; <fix>`, or the same for the first
    bad element of a list or dict whose container type is right."""
    name, tp = check.name, check.annotation
    container = next((a for a in _alternatives(tp) if _container_fits(a, value)), None)
    if container is not None:
        element = _element_problem(owner, name, container, value, check.hidden)
        if element:
            return element
    expected = _words(tp)
    got = _given(value, check.hidden)
    return f"{owner}.{name} must be {expected}, got {got}; {_fix(name, tp, value, check.hidden)}"


def _container_fits(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin in (list, set, frozenset, tuple, dict) and isinstance(value, origin)


def _element_problem(owner: str, name: str, tp: Any, value: Any, hidden: bool) -> str | None:
    """Describe the first element of `value` that does not fit container type `tp`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    whole = f"{name} is {_words(tp)}"
    if origin is dict and args:
        key_tp, value_tp = args
        for key, item in value.items():
            if not _accepts(key_tp, deep=False)(key):
                fix = _suggest(key_tp, key)
                how = (
                    f"use the key {fix}"
                    if fix
                    else f"use keys that are {_words(key_tp, plural=True)}"
                )
                return f"{owner}.{name} has the key {_given(key, False)}, but {whole}; {how}"
            if not _accepts(value_tp, deep=False)(item):
                secret = hidden or _secret_key(key)
                path = f"{name}[{_short_repr(key)}]"
                return (
                    f"{owner}.{path} must be {_words(value_tp)} ({whole}), "
                    f"got {_given(item, secret)}; {_fix(path, value_tp, item, secret)}"
                )
        return None
    if args and origin is not dict:
        element_tp = args[0]
        for i, item in enumerate(value):
            if not _accepts(element_tp, deep=False)(item):
                path = f"{name}[{i}]"
                return (
                    f"{owner}.{path} must be {_words(element_tp)} ({whole}), "
                    f"got {_given(item, hidden)}; {_fix(path, element_tp, item, hidden)}"
                )
    return None


def _secret_key(key: Any) -> bool:
    return isinstance(key, str) and is_secret_name(key)


def _given(value: Any, hidden: bool) -> str:
    kind = type(value).__name__
    if hidden:
        return f"a value of type {kind} (not shown)"
    if isinstance(value, (dict, list, tuple, set, frozenset)) and value:
        return (
            f"a {kind} with {len(value)} item{'s' if len(value) != 1 else ''}"  # may hold secrets
        )
    return f"{_short_repr(value)} ({kind})"


def _short_repr(value: Any) -> str:
    try:
        text = repr(value).replace("\n", " ")
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _fix(path: str, tp: Any, value: Any, hidden: bool) -> str:
    suggestion = None if hidden else _suggest(tp, value)
    return f"write {path}={suggestion}" if suggestion else f"pass {_words(tp)}"


def _suggest(tp: Any, value: Any) -> str | None:
    """The corrected value as source text, where the intent is plain (True -> 1, 8 -> '8')."""
    options = set(_alternatives(tp))
    origins = {typing.get_origin(a) for a in options}
    number = int if int in options else float if float in options else None
    if number is not None and isinstance(value, (bool, float, str)):
        converted = _as_number(value, number)
        if converted is not None:
            return repr(converted)
    if bool in options and isinstance(value, (int, str)) and not isinstance(value, bool):
        flag = {0: False, 1: True, "false": False, "true": True}.get(
            value.lower() if isinstance(value, str) else value
        )
        if flag is not None:
            return repr(flag)
    scalars = {a for a in options if isinstance(a, type) and a is not _NONE}
    only_str = scalars == {str}  # besides None and containers (e.g. `str | list[str]`)
    if only_str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(str(value))
    if list in origins and isinstance(value, (str, tuple)):
        text = repr([value] if isinstance(value, str) else list(value))
        return text if len(text) <= _MAX_REPR else None
    return None


def _as_number(value: bool | float | str, number: type) -> int | float | None:
    if isinstance(value, bool):
        return number(value)
    if isinstance(value, float):
        return int(value) if number is int and value.is_integer() else None
    try:
        converted = number(value.strip())
    except ValueError:
        return None
    return converted


def _alternatives(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    return typing.get_args(tp) if origin is Union or origin is _UNION_TYPE else (tp,)


def _words(tp: Any, plural: bool = False) -> str:
    """`int | None` -> 'an integer (or None)'; `list[str]` -> 'a list of strings'."""
    options = _alternatives(tp)
    rest = [a for a in options if a is not _NONE and a is not None]
    if not rest:
        return "None"
    text = _join_or([_word(a, plural) for a in rest])
    return f"{text} (or None)" if len(rest) < len(options) else text


_WORDS: dict[Any, tuple[str, str]] = {
    Any: ("anything", "any values"),
    object: ("anything", "any values"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    bool: ("True or False", "booleans"),
}


def _word(tp: Any, plural: bool) -> str:
    if tp in _WORDS:
        return _WORDS[tp][plural]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is dict:
        kind = "dicts" if plural else "a dict"
        return f"{kind} of {_short(args[0])} to {_short(args[1])}" if args else kind
    if origin in (list, set, frozenset, tuple):
        kind = f"{origin.__name__}s" if plural else f"a {origin.__name__}"
        return f"{kind} of {_words(args[0], plural=True)}" if args else kind
    name = getattr(origin or tp, "__name__", str(tp))
    if plural:
        return f"{name} objects"
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _short(tp: Any) -> str:
    """A type's name for 'a dict of str to str'."""
    if tp is Any:
        return "any value"
    options = _alternatives(tp)
    if len(options) > 1:
        return " or ".join(_short(a) for a in options)
    if tp is _NONE or tp is None:
        return "None"
    return getattr(typing.get_origin(tp) or tp, "__name__", str(tp))


def _join_or(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]
