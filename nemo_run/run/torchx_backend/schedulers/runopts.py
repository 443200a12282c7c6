"""torchx's side of an executor: its run options, the executor built back from them, and the
dry run that carries the executor to `schedule`.

Every backend's run options come from its executor dataclass, derived once per class: each
init field becomes an option with a torchx cfg type taken from its annotation, its default and
the help in its `metadata["help"]`. So `torchx runopts <backend>` documents exactly what the
executor accepts, and `torchx run -cfg ...` builds the same executor, through the same
validation, as Python code does. Fields torchx cannot carry are left out (`packager` objects)
or travel as text: a name (`launcher=torchrun`), a size (`shm_size=16g`), or JSON for nested
values (`pvcs=[{"claimName": "c", "path": "/p"}]`).

Secret fields (`repr=False`) show no default and are never required: they come from the
environment or a profile when not given.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, Union

from torchx.schedulers.api import AppDryRunInfo
from torchx.specs import runopts
from torchx.util.types import to_dict

from nemo_run.core.execution.base import Executor, launch_command
from nemo_run.core.execution.fields import type_hints
from nemo_run.core.packaging.base import Packager
from nemo_run.exceptions import ConfigError

if TYPE_CHECKING:
    from torchx.specs import AppDef

T = TypeVar("T")
# torchx compares cfg types by identity with typing's List[str] / Dict[str, str] (its CLI and
# .torchxconfig parsers), so these spellings are required here, not list[str] / dict[str, str].
STR_LIST: Any = typing.List[str]  # noqa: UP006
STR_DICT: Any = typing.Dict[str, str]  # noqa: UP006
NOT_OPTIONS = frozenset({"experiment_id"})  # set by the experiment that places a task
_UNION_TYPE = type(int | str)
_NONE = type(None)
_CONTAINERS = (list, tuple, set, frozenset)


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One executor field as a torchx run option."""

    name: str
    opt_type: Any  # str, int, float, bool, List[str] or Dict[str, str]
    default: Any  # None when required, secret, or carried as JSON
    required: bool
    help: str
    secret: bool = False
    as_json: bool = False  # the value is JSON text on the command line


# -- derivation ---------------------------------------------------------------------------------
_option_specs: dict[type, tuple[OptionSpec, ...]] = {}


def option_specs(executor_cls: type) -> tuple[OptionSpec, ...]:
    """The run options of `executor_cls`, derived from its dataclass fields (once per class)."""
    found = _option_specs.get(executor_cls)
    if found is None:
        found = _option_specs[executor_cls] = _derive_specs(executor_cls)
    return found


def _derive_specs(executor_cls: type) -> tuple[OptionSpec, ...]:
    hints = type_hints(executor_cls)  # as the executor's own type check (`check_field_types`)
    specs = []
    for f in dataclasses.fields(executor_cls):
        if not f.init or f.name.startswith("_") or f.name in NOT_OPTIONS:
            continue
        carried = cfg_type(hints.get(f.name, Any))
        if carried is None:  # e.g. a Packager object: Python only
            continue
        opt_type, as_json = carried
        secret = not f.repr  # a credential: from the environment or a profile
        required = not secret and _has_no_default(f)
        default = None if required or secret or as_json else _default_of(f, opt_type)
        help_text = f.metadata.get("help") or f"{executor_cls.__name__}.{f.name}"
        if as_json:
            help_text += " [JSON]"
        if secret:
            help_text += " [secret: prefer the environment or profile]"
        specs.append(OptionSpec(f.name, opt_type, default, required, help_text, secret, as_json))
    return tuple(specs)


def cfg_type(annotation: Any) -> tuple[Any, bool] | None:
    """(torchx cfg type, carried as JSON) for a field annotation; None when torchx cannot carry
    it. A union that admits a string is a string (a name, a size, '4+'); None is dropped."""
    options = [a for a in _alternatives(annotation) if a is not _NONE and a is not None]
    if str in options:
        return str, False
    if len(options) > 1 and all(typing.get_origin(a) in _CONTAINERS for a in options):
        options = options[:1]  # list[X] | tuple[X, ...]: the list form
    if options == [float, int] or options == [int, float]:
        return float, False
    scalars = [a for a in options if typing.get_origin(a) not in _CONTAINERS]
    if len(options) > 1 and len(scalars) == 1:
        options = scalars  # X | list[X] (a list: any one of them): the single value form
    if len(options) != 1:
        return None
    tp = options[0]
    if tp in (int, float, bool):
        return tp, False
    origin, args = typing.get_origin(tp) or tp, typing.get_args(tp)
    if origin in _CONTAINERS:
        element = _alternatives(args[0]) if args else (Any,)
        return (STR_LIST, False) if str in element else (str, True)
    if origin is dict:
        return (STR_DICT, False) if args == (str, str) else (str, True)
    return None


def _alternatives(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    return typing.get_args(tp) if origin is Union or origin is _UNION_TYPE else (tp,)


def _has_no_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _default_of(f: dataclasses.Field[Any], opt_type: Any) -> Any:
    """The field's default as torchx shows it; None where it has no cfg form."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return None
    if opt_type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value if value is None or runopts.is_type(value, opt_type) else None


# -- the runopts object torchx asks for ---------------------------------------------------------
class ExecutorOpts(runopts):
    """The run options of one executor class. Parses `-cfg` text strictly: an unknown key or a
    value that is not of the option's type is a ConfigError naming the executor field (torchx
    itself drops unknown keys and reads any bool other than 'true' as False)."""

    def __init__(self, executor_cls: type) -> None:
        super().__init__()
        self.executor_cls = executor_cls
        self.specs = {s.name: s for s in option_specs(executor_cls)}
        for s in self.specs.values():
            default = copy.deepcopy(s.default)  # a caller may mutate what resolve() hands out
            self.add(s.name, type_=s.opt_type, help=s.help, default=default, required=s.required)

    def cfg_from_str(self, cfg_str: str) -> dict[str, Any]:
        try:
            pairs = to_dict(cfg_str)
        except ValueError:  # the text may hold a secret: not echoed
            raise ConfigError(
                f"malformed run options for {self.executor_cls.__name__}; write "
                "key=value pairs separated by ',' (list items by ';' or ',')"
            ) from None
        for key, text in pairs.items():
            _check_text(self.executor_cls, spec_named(self.executor_cls, key), text)
        return super().cfg_from_str(cfg_str)


def executor_runopts(executor_cls: type) -> ExecutorOpts:
    """A fresh runopts for `executor_cls` (torchx may `update()` the one it is given)."""
    return ExecutorOpts(executor_cls)


def spec_named(executor_cls: type, name: str) -> OptionSpec:
    """The option `name` of `executor_cls`; a ConfigError suggesting the closest name if none."""
    specs = {s.name: s for s in option_specs(executor_cls)}
    spec = specs.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, specs, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"{executor_cls.__name__} has no run option {name!r}; {hint}"
            f"`torchx runopts` lists them: {', '.join(sorted(specs))}"
        )
    return spec


def _check_text(executor_cls: type, spec: OptionSpec, text: str) -> None:
    """Refuse command-line text torchx would misread or fail on without naming the field."""
    where = f"{executor_cls.__name__}.{spec.name}"
    shown = "(not shown)" if spec.secret else repr(text)
    if spec.opt_type is bool and text.lower() not in ("true", "false"):
        raise ConfigError(f"{where} must be true or false, got {shown}")
    if spec.opt_type is STR_DICT and not all(
        ":" in item for item in text.replace(";", ",").split(",")
    ):
        raise ConfigError(f"{where} takes KEY:VALUE items separated by ';', got {shown}")
    if spec.opt_type in (int, float):
        try:
            spec.opt_type(text)
        except ValueError:
            kind = "an integer" if spec.opt_type is int else "a number"
            raise ConfigError(f"{where} must be {kind}, got {shown}") from None


# -- from run options back to an executor -------------------------------------------------------
def executor_from_cfg(executor_cls: type[Executor], cfg: Mapping[str, Any]) -> Executor:
    """Build `executor_cls` from torchx run options (given or resolved by `runopts.resolve`).
    None means not given (the field's default applies); JSON text is decoded; the executor
    then validates every value, so errors name `Class.field` as they do in Python code."""
    kwargs: dict[str, Any] = {}
    for name, value in cfg.items():
        if value is None:
            continue
        spec = spec_named(executor_cls, name)
        if spec.as_json and isinstance(value, str):
            value = _from_json(executor_cls, spec, value)
        kwargs[name] = copy.deepcopy(value)  # never share a runopts default with an executor
    missing = [s.name for s in option_specs(executor_cls) if s.required and s.name not in kwargs]
    if missing:
        given = ",".join(f"{m}=..." for m in missing)
        raise ConfigError(
            f"{executor_cls.__name__} needs {', '.join(missing)}: give them as run options "
            f"(torchx run -cfg {given})"
        )
    # a torchx component brings its own command and no code (no workspace): ship nothing, as
    # before executors defaulted to GitArchivePackager (which needs a git repository)
    return executor_cls(packager=Packager(), **kwargs)


def apply_to_roles(app: AppDef, executor: Executor) -> None:
    """Apply to a torchx component's roles what nemo_run applies when it builds an app from a
    task (`packaging.package`), so no option is silently ignored: the executor's environment
    (a role's own values win), its retries and its launcher. The replica count stays the
    component's, so a spawning executor (local, Docker) must leave ntasks_per_node at 1 unless a
    launcher fans out per node."""
    launcher = executor.get_launcher()
    per_task = executor.nnodes() * executor.nproc_per_node()
    if executor.spawns_replicas and not launcher.fans_out and per_task != 1:
        raise ConfigError(
            f"{type(executor).__name__}.ntasks_per_node={per_task}: a torchx component sets its "
            f"own replica count; leave ntasks_per_node at 1 and pass the count to the component "
            f"(e.g. utils.sh --num_replicas {per_task}), or add launcher=torchrun"
        )
    macros = executor.macro_values()
    for role in app.roles:
        command = launch_command(
            executor,
            role.entrypoint,
            list(role.args),
            {**executor.env_vars, **role.env},
            is_python=False,
        )
        role.entrypoint, role.args, role.env = command.entrypoint, command.args, command.env
        role.port_map = {**role.port_map, **command.port_map}
        role.max_retries = max(role.max_retries, executor.retries)
        if macros is not None:
            applied = macros.apply(role)
            role.args, role.env = applied.args, applied.env


def _from_json(executor_cls: type, spec: OptionSpec, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        shown = "" if spec.secret else f" {text!r}"
        raise ConfigError(
            f"{executor_cls.__name__}.{spec.name} takes JSON on the command line; "
            f"could not read{shown}: {e.msg} at position {e.pos}"
        ) from None


# -- the dry run ---------------------------------------------------------------------------------
class DryRun(AppDryRunInfo[T]):
    """A scheduler's request for one app plus what `schedule` and the runner need, as public
    fields of our own: the app (roles, retries), the executor and the scheduler's name."""

    def __init__(
        self, info: AppDryRunInfo[T], *, app: AppDef, executor: Executor, scheduler: str
    ) -> None:
        super().__init__(info.request, lambda _request: repr(info))  # the request's own text
        self.app = app
        self.executor = executor
        self.scheduler = scheduler
        # torchx's own Runner (the `torchx` CLI) reads the app back from here; torchx's
        # Scheduler.submit_dryrun would set it, ours returns this object instead.
        self._app = app
