"""Describe a package's public API as JSON: the half of `bench/api_diff.py` that runs under each
side's interpreter (ours and the peer `nemo-run==0.11.1`), so both are read by the same code.

Only the standard library is used here, and the package under test is imported inside
`describe_scope`: this module must import cleanly under either interpreter.

The names of a module are those of its namespace, its `__all__`, and what its own `__dir__()`
lists: a name served by a module-level `__getattr__` (PEP 562) counts when `__dir__` lists it,
as `from module import NAME` works for it. Which of them are "public" (the same rule on both
sides):
- names in the module's `__all__`, if it has one, always count;
- otherwise a name counts unless it starts with `_`, or is a module (`os`, `fdl`, ...), or is a
  class or function defined outside the package (`Path`, `dataclass`, torchx's `AppDef`: an
  import, not part of this module's API), or is a typing construct (`Optional`, `TypeVar`s,
  aliases such as `list[str]`, `TYPE_CHECKING`, `from __future__ import annotations`);
- data (constants, loggers, dicts) always counts, wherever its value came from.
Names left out are listed under `skipped` with the reason, so the comparison can tell
"missing" from "present here but only as an import".
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import os
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

PACKAGE = "nemo_run"
TYPING_MODULES = frozenset({"typing", "typing_extensions", "types", "__future__"})
TYPING_NAMES = frozenset({"TYPE_CHECKING"})
# bases that say nothing about what user code can rely on
IGNORED_BASES = frozenset({"builtins.object", "typing.Generic", "typing.Protocol", "abc.ABC"})
# members inherited from these modules are the same everywhere (str, Enum, ABC machinery)
STDLIB_MEMBER_MODULES = frozenset({"builtins", "enum", "abc", "typing"})
DUNDER_MEMBERS = ("__call__", "__enter__", "__exit__")
SECRET_NAME = re.compile(r"token|secret|password|api_?key|credential", re.IGNORECASE)
ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
MAX_REPR = 1000


def qualified(obj: Any) -> str:
    """`module.qualname` of a class or function: the id both sides use for one object."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"


def in_package(module: str | None, package: str = PACKAGE) -> bool:
    return module is not None and (module == package or module.startswith(package + "."))


def value_repr(value: Any, depth: int = 0) -> str:
    """A repr that is the same in two processes: no addresses, sorted sets and dicts, classes
    and functions by qualified name, `~` for the (temporary) home folder."""
    text = _repr(value, depth)
    home = os.environ.get("HOME", "")
    if len(home) > 1:
        text = text.replace(home.rstrip("/"), "~")
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."


def _repr(value: Any, depth: int) -> str:
    if depth > 4:
        return "..."
    if value is None or isinstance(value, (bool, int, float, str, bytes, enum.Enum)):
        return ADDRESS.sub("", repr(value))
    if inspect.isclass(value):
        return f"<class {qualified(value)}>"
    if inspect.isroutine(value):
        return f"<function {qualified(value)}>"
    if isinstance(value, (list, tuple)):
        items = ", ".join(_repr(v, depth + 1) for v in value)
        return f"[{items}]" if isinstance(value, list) else f"({items})"
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(_repr(v, depth + 1) for v in value)) + "}"
    if isinstance(value, dict):
        pairs = sorted(f"{_repr(k, depth + 1)}: {_repr(v, depth + 1)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    if dataclasses.is_dataclass(value):
        shown = [f for f in dataclasses.fields(value) if f.repr and not f.name.startswith("_")]
        args = ", ".join(
            f"{f.name}={_repr(getattr(value, f.name, None), depth + 1)}" for f in shown
        )
        return f"{type(value).__qualname__}({args})"
    if type(value).__module__ == "pathlib":
        return repr(value)
    return f"<{qualified(type(value))}>"


def masked(name: str, text: str | None) -> str | None:
    """Defaults of secret-looking names never reach the report, whatever they hold."""
    if text is None or not SECRET_NAME.search(name) or text in ("None", "''", '""'):
        return text
    return "'***'"


def param_name(param: inspect.Parameter) -> str:
    """`*args` / `**kwargs` whatever they are called: only their presence matters."""
    if param.kind is inspect.Parameter.VAR_POSITIONAL:
        return "*args"
    if param.kind is inspect.Parameter.VAR_KEYWORD:
        return "**kwargs"
    return param.name


def describe_params(
    sig: inspect.Signature, factories: dict[str, str] | None = None, drop_first: bool = False
) -> list[dict[str, Any]]:
    """Name, kind, default and requiredness of each parameter; `factories` gives the defaults
    that `inspect` only shows as `<factory>` (dataclass `default_factory` fields)."""
    params = list(sig.parameters.values())
    if (
        drop_first
        and params
        and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD)
    ):
        params = params[1:]
    out = []
    for p in params:
        variadic = p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        default = None
        if p.default is not p.empty:
            default = value_repr(p.default)
            if repr(p.default) == "<factory>" and factories and p.name in factories:
                default = factories[p.name]
        out.append(
            {
                "name": param_name(p),
                "kind": p.kind.name,
                "default": masked(p.name, default),
                "required": p.default is p.empty and not variadic,
            }
        )
    return out


def signature_of(
    obj: Any, factories: dict[str, str] | None = None, drop_first: bool = False
) -> dict[str, Any]:
    """`{"params": [...]}`, or `{"error": ...}` when Python cannot tell (some builtins)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"params": describe_params(sig, factories, drop_first)}


def field_default(field: dataclasses.Field[Any]) -> str | None:
    """The default a fresh instance gets: the value, or what the factory makes (called once)."""
    if field.default is not dataclasses.MISSING:
        return masked(field.name, value_repr(field.default))
    if field.default_factory is not dataclasses.MISSING:
        try:
            return masked(field.name, value_repr(field.default_factory()))
        except Exception as exc:  # a factory that needs more than a bare call
            return f"<factory: {type(exc).__name__}>"
    return None


def place(cls: type) -> list[str]:
    """[module, qualname] of a class: where a member or field is declared."""
    return [cls.__module__, cls.__qualname__]


def field_owner(cls: type, name: str) -> type:
    """The class whose own annotations declare dataclass field `name`."""
    for klass in cls.__mro__:
        if name in vars(klass).get("__annotations__", {}):
            return klass
    return cls


def describe_fields(cls: type) -> dict[str, dict[str, Any]]:
    """Public dataclass fields with their default, whether `__init__` takes them, and the
    class that declares them."""
    out: dict[str, dict[str, Any]] = {}
    for field in dataclasses.fields(cls):
        if field.name.startswith("_"):
            continue
        out[field.name] = {
            "owner": place(field_owner(cls, field.name)),
            "default": field_default(field),
            "required": field.init
            and field.default is dataclasses.MISSING
            and field.default_factory is dataclasses.MISSING,
            "init": field.init,
            "kw_only": getattr(field, "kw_only", False) is True,
        }
    return out


def defining_class(cls: type, name: str) -> type | None:
    """The first class of the MRO whose own namespace holds `name`."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    return None


def member_names(cls: type) -> list[str]:
    """Public members, plus a few dunders user code calls, minus what builtins and the stdlib
    machinery (str, Enum, ABC) add to every such class."""
    names = [n for n in dir(cls) if not n.startswith("_")]
    names += [n for n in DUNDER_MEMBERS if hasattr(cls, n)]
    kept = []
    for name in names:
        owner = defining_class(cls, name)
        if owner is None or owner.__module__ in STDLIB_MEMBER_MODULES:
            if not (isinstance(cls, enum.EnumMeta) and name in cls.__members__):
                continue
        kept.append(name)
    return sorted(set(kept))


def describe_member(cls: type, name: str) -> dict[str, Any]:
    """Kind (method, classmethod, staticmethod, property, attribute), signature or value, and
    the class that defines it."""
    owner = defining_class(cls, name) or cls
    where = {"owner": place(owner)}
    raw = vars(owner)[name] if name in vars(owner) else getattr(cls, name, None)
    if isinstance(raw, staticmethod):
        return {"kind": "staticmethod", **signature_of(getattr(cls, name)), **where}
    if isinstance(raw, classmethod):
        return {"kind": "classmethod", **signature_of(getattr(cls, name)), **where}
    if isinstance(raw, property) or type(raw).__name__ == "cached_property":
        return {"kind": "property", **where}
    if inspect.isfunction(raw) or inspect.isroutine(raw):
        return {"kind": "method", **signature_of(raw, drop_first=True), **where}
    return {"kind": "attribute", "value": masked(name, value_repr(raw)), **where}


def init_owner(cls: type) -> type:
    """The class whose `__init__` (or `__new__`) builds instances: the dataclass itself, or
    the nearest class that defines one."""
    if dataclasses.is_dataclass(cls):
        return cls
    for klass in cls.__mro__:
        if "__init__" in vars(klass) or "__new__" in vars(klass):
            return klass
    return cls


# modules whose public classes may be re-exports of classes defined elsewhere in the package:
# a class counts as an ancestor under each public name it has (0.11.1 defines
# `ConfigurableMixin` in `nemo_run.config`; here that name re-exports it)
ALIAS_MODULES = ("nemo_run", "nemo_run.config")


def public_aliases(cls: type) -> list[str]:
    names = []
    for module_name in ALIAS_MODULES:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for name in dir(module):
            if not name.startswith("_"):
                try:
                    value = getattr(module, name)
                except Exception:  # noqa: BLE001 - a lazy name that cannot load is no alias
                    continue
                if value is cls and qualified(cls) != f"{module_name}.{name}":
                    names.append(f"{module_name}.{name}")
    return names


def mro_names(cls: type) -> list[str]:
    found = []
    for klass in cls.__mro__[1:]:
        found += [qualified(klass), *public_aliases(klass)]
    return [n for n in found if n not in IGNORED_BASES]


def describe_class(cls: type) -> dict[str, Any]:
    """Constructor, dataclass fields, members and ancestors of one class."""
    is_dc = dataclasses.is_dataclass(cls)
    fields = describe_fields(cls) if is_dc else {}
    is_enum = isinstance(cls, enum.EnumMeta)
    factories = {k: v["default"] for k, v in fields.items() if v["default"] is not None}
    return {
        "kind": "class",
        "id": qualified(cls),
        "module": cls.__module__,
        "qualname": cls.__qualname__,
        "bases": [qualified(b) for b in cls.__bases__],
        "mro": mro_names(cls),
        "dataclass": is_dc,
        "enum": is_enum,
        "init": None if is_enum else signature_of(cls, factories),
        "init_owner": place(init_owner(cls)),
        "fields": fields,
        "members": {n: describe_member(cls, n) for n in member_names(cls) if n not in fields},
    }


def describe_function(func: Any) -> dict[str, Any]:
    return {
        "kind": "function",
        "id": qualified(func),
        "module": getattr(func, "__module__", "?"),
        "qualname": getattr(func, "__qualname__", "?"),
        **signature_of(func),
    }


def is_function(obj: Any) -> bool:
    return inspect.isroutine(obj) or (callable(obj) and hasattr(obj, "__wrapped__"))


def skip_reason(name: str, obj: Any, package: str = PACKAGE) -> str | None:
    """Why a module-level name is not part of the module's own API, or None when it is."""
    if inspect.ismodule(obj):
        return f"a module ({obj.__name__})"
    if name in TYPING_NAMES or type(obj).__module__ in TYPING_MODULES:
        return "a typing construct"
    if inspect.isclass(obj) or is_function(obj):
        module = getattr(obj, "__module__", None)
        if not in_package(module, package):
            return f"an import from {module}"
    return None


def module_names(mod: Any, declared: Any = None) -> list[str]:
    """Every name `from mod import NAME` can find: the module's namespace, the names its own
    `__dir__()` lists (PEP 562: names a module-level `__getattr__` serves, such as a table built
    from an optional SDK on first access, are in no namespace until then) and `__all__`."""
    found = set(vars(mod)) | set(declared or ())
    lister = vars(mod).get("__dir__")
    if callable(lister):
        try:
            found.update(name for name in lister() if isinstance(name, str))
        except Exception:  # noqa: BLE001 - a broken __dir__ hides its names, nothing else
            pass
    return sorted(found)


class Describer:
    """Collects module descriptions; each class or function is described once, by id."""

    def __init__(self, package: str = PACKAGE) -> None:
        self.package = package
        self.objects: dict[str, dict[str, Any]] = {}

    def entry(self, name: str, obj: Any) -> dict[str, Any]:
        """What a module holds under a name: a reference to an object, or a data value."""
        if inspect.ismodule(obj) and callable(obj):
            return self.callable_module(obj)
        if inspect.isclass(obj) or is_function(obj):
            oid = qualified(obj)
            if oid not in self.objects:
                self.objects[oid] = (
                    describe_class(obj) if inspect.isclass(obj) else describe_function(obj)
                )
            return {"kind": self.objects[oid]["kind"], "id": oid}
        return {
            "kind": "data",
            "type": qualified(type(obj)),
            "value": masked(name, value_repr(obj)),
        }

    def callable_module(self, mod: Any) -> dict[str, Any]:
        """A module whose class defines `__call__` (`nemo_run.run` here, where 0.11.1 has the
        function `run`): what user code relies on is the call, so it is described as a
        function with the signature `inspect` gives it, under the module's name."""
        oid = mod.__name__
        if oid not in self.objects:
            self.objects[oid] = {
                "kind": "function",
                "id": oid,
                "module": oid,
                "qualname": "",
                **signature_of(mod),
            }
        return {"kind": "function", "id": oid}

    def module(self, name: str, only: list[str] | None = None) -> dict[str, Any]:
        """Public names of one module (or just `only`, for the top-level package)."""
        try:
            mod = importlib.import_module(name)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        declared = getattr(mod, "__all__", None)
        names: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        candidates = only if only is not None else module_names(mod, declared)
        for attr in candidates:
            if only is None and attr.startswith("_"):
                continue
            try:
                obj = getattr(mod, attr)
            except AttributeError:
                continue
            except Exception as exc:  # a lazy name whose import fails
                names[attr] = {"kind": "error", "error": f"{type(exc).__name__}: {exc}"}
                continue
            listed = only is not None or attr in (declared or ())
            reason = None if listed else skip_reason(attr, obj, self.package)
            if reason:
                skipped[attr] = reason
                continue
            try:
                names[attr] = self.entry(attr, obj)
            except Exception as exc:  # describing must not stop at one odd object
                names[attr] = {"kind": "error", "error": f"{type(exc).__name__}: {exc}"}
        return {
            "all": sorted(declared) if declared is not None and only is None else None,
            "names": names,
            "skipped": skipped,
        }


def package_info(package: str = PACKAGE) -> dict[str, Any]:
    """Which package answered: its file (the peer must not be our checkout) and version."""
    try:
        dist_version: str | None = version("nemo-run")
    except PackageNotFoundError:
        dist_version = None
    pkg = sys.modules.get(package)
    return {
        "python": sys.version.split()[0],
        "file": getattr(pkg, "__file__", None),
        "version": getattr(pkg, "__version__", None),
        "dist_version": dist_version,
    }


def describe_scope(
    top_level: list[str], modules: list[str], package: str = PACKAGE
) -> dict[str, Any]:
    """The whole description: the top-level names asked for, every module, and the objects."""
    describer = Describer(package)
    described = {package: describer.module(package, only=top_level)}
    for name in modules:
        described[name] = describer.module(name)
    return {"info": package_info(package), "modules": described, "objects": describer.objects}
