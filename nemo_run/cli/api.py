"""0.11.1's `run.cli`: `@entrypoint`, `@factory`, `main`, `RunContext` and the registry
queries, for scripts such as `python pretrain.py --factory llama3_8b trainer.max_steps=10
executor=local --yes`.

Imports stay light (no fiddle, no torchx): a script's `--help` costs at most 0.3 s over its
own imports. Parsing (`cli_parser`, fiddle) and running (`launch`, through `run.run` and
`Experiment`) load only when a command actually runs. Exit statuses: 0 done (or declined at
the prompt), 1 the job failed, 2 bad input (one message on stderr, no traceback).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import logging
import os
import sys
import typing
from collections.abc import Callable
from typing import Any, Literal, TypedDict, TypeVar

from nemo_run.cli import registry
from nemo_run.cli.errors import ArgumentParsingError
from nemo_run.cli.help import BOX_STYLE as BOX_STYLE
from nemo_run.cli.help import RECURSIVE_TYPES as RECURSIVE_TYPES
from nemo_run.cli.help import TABLE_STYLES as TABLE_STYLES
from nemo_run.cli.help import render as render_help
from nemo_run.cli.registry import DEFAULT_NAME as DEFAULT_NAME
from nemo_run.cli.registry import ROOT_ENTRYPOINT_NAMESPACE as ROOT_ENTRYPOINT_NAMESPACE
from nemo_run.cli.registry import ROOT_FACTORY_NAMESPACE as ROOT_FACTORY_NAMESPACE
from nemo_run.cli.registry import FactoryRegistration as FactoryRegistration
from nemo_run.exceptions import ConfigError, JobFailedError

F = TypeVar("F", bound=Callable[..., Any])
EntrypointType = Literal["task", "experiment"]
MAIN_ENTRYPOINT = None
NEMORUN_SKIP_CONFIRMATION: bool | None = None
EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
_ENTRYPOINT_TYPES = ("task", "experiment")
logger = logging.getLogger(__name__)
log = logger
# 0.11.1's switches, read from the environment the same way
INCLUDE_WORKSPACE_FILE = os.environ.get("INCLUDE_WORKSPACE_FILE", "true").lower() == "true"
NEMORUN_PRETTY_EXCEPTIONS = os.environ.get("NEMORUN_PRETTY_EXCEPTIONS", "false").lower() == "true"

# 0.11.1's re-exports, loaded on first use: `--help` must not load fiddle, torchx or executors
_LAZY_NAMES: dict[str, tuple[str, str]] = {
    "Config": ("nemo_run.config", "Config"),
    "Partial": ("nemo_run.config", "Partial"),
    "Executor": ("nemo_run.core.execution.base", "Executor"),
    "LocalExecutor": ("nemo_run.core.execution.local", "LocalExecutor"),
    "SkypilotExecutor": ("nemo_run.core.execution.skypilot", "SkypilotExecutor"),
    "SlurmExecutor": ("nemo_run.core.execution.slurm", "SlurmExecutor"),
    "Experiment": ("nemo_run.run.experiment", "Experiment"),
    "Plugin": ("nemo_run.run.plugin", "ExperimentPlugin"),
    "get_nemorun_home": ("nemo_run.config", "get_nemorun_home"),
    "get_type_namespace": ("nemo_run.config", "get_type_namespace"),
    "parse_cli_args": ("nemo_run.cli.cli_parser", "parse_cli_args"),
    "parse_factory": ("nemo_run.cli.cli_parser", "parse_factory"),
}
_LAZY_BUILT = ("EXECUTOR_CLASSES", "PLUGIN_CLASSES")


def __getattr__(name: str) -> Any:
    """A re-export or table of 0.11.1's, imported on first access and then kept."""
    if name in _LAZY_NAMES:
        module, attr = _LAZY_NAMES[name]
        value = getattr(importlib.import_module(module), attr)
    elif name == "EXECUTOR_CLASSES":
        value = [__getattr__(n) for n in _EXECUTOR_NAMES]
    elif name == "PLUGIN_CLASSES":
        plugin = __getattr__("Plugin")
        value = [plugin, typing.List[plugin]]  # type: ignore[valid-type]  # noqa: UP006
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_NAMES, *_LAZY_BUILT])


_EXECUTOR_NAMES = ("Executor", "LocalExecutor", "SkypilotExecutor", "SlurmExecutor")


class RunContextError(ConfigError):
    """Base exception for RunContext related errors (0.11.1's name): bad command-line input."""


class InvalidOptionError(RunContextError):
    """Raised when an invalid option is provided."""


class MissingRequiredOptionError(RunContextError):
    """Raised when a required option is missing."""


class CommandDefaults(TypedDict, total=False):
    """Defaults for a command's options (`main(fn, cmd_defaults={"skip_confirmation": True})`)."""

    direct: bool
    dryrun: bool
    load: str
    yaml: str
    repl: bool
    detach: bool
    skip_confirmation: bool
    tail_logs: bool
    rich_exceptions: bool
    rich_traceback: bool
    rich_locals: bool
    rich_theme: str
    verbose: bool


@dataclasses.dataclass(kw_only=True)
class RunContext:
    """Represents the context for executing a run: the command's options, and (after
    `parse_args`) the executor and plugins the command line chose."""

    name: str
    direct: bool = False
    dryrun: bool = False
    factory: str | None = None
    load: str | None = None
    repl: bool = False
    detach: bool = False
    skip_confirmation: bool = False
    tail_logs: bool = False
    yaml: str | None = None
    to_yaml: str | None = None
    to_toml: str | None = None
    to_json: str | None = None
    # set by parse_args (0.11.1's fields without a default); None and [] until then
    executor: Any = dataclasses.field(init=False, repr=False, compare=False)
    plugins: list[Any] = dataclasses.field(init=False, repr=False, compare=False)
    verbose: bool = dataclasses.field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Readable before `parse_args`: no executor, no plugins."""
        self.executor = None
        self.plugins = []

    @classmethod
    def cli_command(
        cls,
        parent: Any,
        name: str,
        fn: Callable[..., Any],
        default_factory: Callable[..., Any] | None = None,
        default_executor: Any = None,
        default_plugins: Any = None,
        type: EntrypointType = "task",  # noqa: A002 - 0.11.1's parameter name
        command_kwargs: dict[str, Any] = {},  # noqa: B006 - 0.11.1's default; never mutated
        is_main: bool = False,
        cmd_defaults: dict[str, Any] | None = None,
    ) -> Callable[..., Any]:
        """Add command `name` running `fn` to the typer app `parent` (options and KEY=VALUE
        arguments as `run.cli.main`, this class as its run context); returns the command."""
        entry = Entrypoint(
            fn,
            getattr(fn, "__module__", "__main__"),
            default_factory=default_factory,
            default_executor=default_executor,
            default_plugins=default_plugins,
            name=name,
            type=type,
            run_ctx_cls=cls,
        )
        return _add_command(parent, name, entry, cmd_defaults, dict(command_kwargs))

    @classmethod
    def get_help(cls) -> str:
        """The class docstring (0.11.1's help for the context)."""
        return cls.__doc__ or ""

    def cli_execute(
        self, fn: Callable[..., Any], args: list[str], entrypoint_type: EntrypointType = "task"
    ) -> None:
        """Run `fn` with the command-line `args` (overrides, `executor=...`, `plugins=...`)."""
        if entrypoint_type not in _ENTRYPOINT_TYPES:
            raise ConfigError(
                f"entrypoint type {entrypoint_type!r} is unknown; use 'task' or 'experiment'"
            )
        entry = getattr(fn, "cli_entrypoint", None)
        if not isinstance(entry, Entrypoint):
            entry = Entrypoint(fn, fn.__module__, type=entrypoint_type)
        _launch().execute(self, entry, list(args))

    def parse_args(self, args: list[str], lazy: bool = False) -> list[str]:
        """Set the executor and plugins from `executor=...`/`plugins=...` arguments; returns
        the other arguments (the function's)."""
        return list(_launch().parse_run_args(self, list(args), None))

    def parse_executor(self, name: str, *args: str) -> Any:
        """The executor `name` (built in, registered or a dotted path) with `args` applied,
        as a run.Config (built when the run starts)."""
        return _launch().parse_executor(name, *args)

    def parse_plugin(self, name: str, *args: str) -> Any:
        """The plugin factory `name` with `args` applied, as a run.Config."""
        return _launch().parse_plugin(name, *args)

    def parse_fn(self, fn: Any, args: list[str], **default_kwargs: Any) -> Any:
        """`fn` as a run.Partial: the `--factory` (if set) or `default_kwargs`, then `args`."""
        return _launch().parse_fn(self, fn, list(args), default_kwargs)

    def launch(self, experiment: Any, sequential: bool = False) -> None:
        """Run (or with `dryrun`, dry-run) `experiment` with this context's options."""
        _launch().launch_experiment(self, experiment, sequential)

    def to_config(self) -> Any:
        """This context as a run.Config."""
        return _launch().context_config(self)


class Entrypoint:
    """A function registered as a command, with the defaults its command starts from."""

    def __init__(
        self,
        fn: Callable[..., Any],
        namespace: str,
        default_factory: Callable[..., Any] | None = None,
        default_executor: Any = None,
        default_plugins: Any = None,
        env: Any = None,
        name: str | None = None,
        help_str: str | None = None,
        enable_executor: bool = True,
        skip_confirmation: bool = False,
        type: EntrypointType = "task",  # noqa: A002 - 0.11.1's parameter name
        run_ctx_cls: type[RunContext] = RunContext,
    ) -> None:
        if type not in _ENTRYPOINT_TYPES:
            raise ConfigError(
                f"entrypoint type={type!r} is unknown; use type='task' or type='experiment'"
            )
        if not callable(fn):
            raise ConfigError(f"an entrypoint must be a function, got {fn!r}")
        self.fn = fn
        self.namespace = namespace
        self.name: str = name or str(getattr(fn, "__name__", "main"))
        self.help_str = help_str if help_str is not None else (fn.__doc__ or "")
        self.default_factory = default_factory
        self.default_executor = default_executor
        self.default_plugins = default_plugins
        self.env = env
        self.enable_executor = enable_executor
        self.skip_confirmation = skip_confirmation
        self.type = type
        self.run_ctx_cls = run_ctx_cls
        if type == "experiment":
            self.context_param()  # refuses a function without one, at decoration

    @property
    def path(self) -> str:
        """`namespace.name`, as `list_entrypoints` nests it."""
        return f"{self.namespace}.{self.name}"

    def context_param(self) -> str:
        """The parameter an experiment entrypoint receives its RunContext in: the one annotated
        RunContext, else the first."""
        params = registry.signature_params(self.fn)
        hints = registry.type_hints(self.fn)
        for key in params:
            hint = hints.get(key)
            if isinstance(hint, type) and issubclass(hint, RunContext):
                return key
        if not params:
            raise ConfigError(
                f"experiment entrypoint {self.name} must take the run context: "
                f"def {self.name}(ctx: run.cli.RunContext, ...)"
            )
        return next(iter(params))

    def help(self, console: Any = None, with_docs: bool = True) -> None:
        """Print the `--help` text (0.11.1's signature; `console` is a rich Console or None
        for stdout; the entrypoint's doc line is part of the text either way)."""
        text = self.help_text()
        if console is None:
            sys.stdout.write(text)
        else:
            console.print(text, markup=False, highlight=False)

    def help_text(self, prog: str | None = None) -> str:
        """The `--help` text."""
        skip = (self.context_param(),) if self.type == "experiment" else ()
        return render_help(
            self.fn,
            self.name,
            self.help_str,
            prog or os.path.basename(sys.argv[0] or self.name),
            skip,
            self.enable_executor,
        )

    def main(
        self, cmd_defaults: CommandDefaults | None = None, args: list[str] | None = None
    ) -> int:
        """Run the command for `args` (default: `sys.argv[1:]`); the exit status."""
        argv = list(sys.argv[1:] if args is None else args)
        verbose = "-v" in argv or "--verbose" in argv
        try:
            ctx, overrides, wants_help = parse_options(self, argv, cmd_defaults)
            if wants_help:
                sys.stdout.write(self.help_text())
                return EXIT_OK
            ctx.cli_execute(self.fn, overrides, self.type)
        except JobFailedError as e:
            _error(e, verbose)
            return EXIT_FAILED
        except ConfigError as e:
            _error(e, verbose)
            return EXIT_INVALID
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        return EXIT_OK

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function itself, as if undecorated."""
        return self.fn(*args, **kwargs)

    def configure(self, **fn_kwargs: Any) -> None:
        """Keep `run.Config(fn, **fn_kwargs)` on the entrypoint (0.11.1's `_configured_fn`)."""
        self._configured_fn = __getattr__("Config")(self.fn, **fn_kwargs)

    def parse_partial(self, args: list[str], **default_args: Any) -> Any:
        """`fn` as a run.Partial: `default_args` first, then the KEY=VALUE `args` (which win)."""
        partial = __getattr__("Partial")(self.fn, **default_args)
        return __getattr__("parse_cli_args")(partial, list(args))

    def cli(self, parent: Any) -> None:
        """Add this entrypoint as command `name` of the typer app `parent`."""
        _add_command(parent, self.name, self)

    def __repr__(self) -> str:
        return f"Entrypoint({self.path}, type={self.type!r})"


def _error(e: Exception, verbose: bool) -> None:
    """One line per message on stderr (with the traceback when --verbose)."""
    if verbose:
        log.exception("command failed")
    print(f"error: {e}", file=sys.stderr)


def _launch() -> Any:
    # not at the top: launching loads fiddle, torchx and the executors (~0.4 s) that --help
    # and the registry never need
    from nemo_run.cli import launch  # noqa: PLC0415

    return launch


# -- options --------------------------------------------------------------------------------
_VALUE_OPTIONS = {
    "--name": "name",
    "-n": "name",
    "--factory": "factory",
    "-f": "factory",
    "--load": "load",
    "-l": "load",
    "--yaml": "yaml",
    "--to-yaml": "to_yaml",
    "--to-toml": "to_toml",
    "--to-json": "to_json",
    "--rich-theme": "",
}
_FLAG_OPTIONS: dict[str, tuple[str, bool]] = {
    "--direct": ("direct", True),
    "--no-direct": ("direct", False),
    "--dryrun": ("dryrun", True),
    "--detach": ("detach", True),
    "--yes": ("skip_confirmation", True),
    "-y": ("skip_confirmation", True),
    "--no-confirm": ("skip_confirmation", True),
    "--tail-logs": ("tail_logs", True),
    "--no-tail-logs": ("tail_logs", False),
    "--repl": ("repl", True),
    "-r": ("repl", True),
    "--verbose": ("verbose", True),
    "-v": ("verbose", True),
    # accepted for 0.11.1's command lines; errors here are one line either way
    "--rich-exceptions": ("", True),
    "--no-rich-exceptions": ("", False),
    "--rich-traceback-short": ("", True),
    "--rich-traceback-full": ("", False),
    "--rich-show-locals": ("", True),
    "--rich-hide-locals": ("", False),
}
_UNSUPPORTED = {
    "repl": "--repl (an interactive shell) is not available; set values as KEY=VALUE",
    "load": "--load is not available; use --factory NAME or KEY=VALUE overrides",
    "yaml": "--yaml is not available; use --factory NAME or KEY=VALUE overrides",
    "to_yaml": "--to-yaml is not available; --dryrun prints the resolved configuration",
    "to_toml": "--to-toml is not available; --dryrun prints the resolved configuration",
    "to_json": "--to-json is not available; --dryrun prints the resolved configuration",
}


def parse_options(
    entry: Entrypoint, argv: list[str], defaults: CommandDefaults | None = None
) -> tuple[RunContext, list[str], bool]:
    """(the run context, the KEY=VALUE arguments, whether help was asked for)."""
    values: dict[str, Any] = {"name": entry.name, "skip_confirmation": entry.skip_confirmation}
    values.update({k: v for k, v in dict(defaults or {}).items() if k in _CONTEXT_FIELDS})
    verbose = bool(dict(defaults or {}).get("verbose", False))
    overrides: list[str] = []
    wants_help = False
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            overrides += argv[index:]
            break
        if not arg.startswith("-") or _is_negative_override(arg):
            overrides.append(arg)
            continue
        option, has_value, value = arg.partition("=")
        if option in ("-h", "--help"):
            wants_help = True
        elif option in _VALUE_OPTIONS:
            if not has_value:
                if index >= len(argv):
                    raise ArgumentParsingError(f"{option} needs a value: {option} VALUE", arg)
                value = argv[index]
                index += 1
            if _VALUE_OPTIONS[option]:
                values[_VALUE_OPTIONS[option]] = value
        elif option in _FLAG_OPTIONS and not has_value:
            key, flag = _FLAG_OPTIONS[option]
            if key == "verbose":
                verbose = flag
            elif key:
                values[key] = flag
        else:
            raise ArgumentParsingError(_unknown_option(option), arg)
    for key, message in _UNSUPPORTED.items():
        if values.get(key):
            raise ArgumentParsingError(message, key)
    ctx = entry.run_ctx_cls(**values)
    ctx.verbose = verbose
    if verbose:
        logging.getLogger("nemo_run").setLevel(logging.DEBUG)
    return ctx, overrides, wants_help


_CONTEXT_FIELDS = frozenset(f.name for f in dataclasses.fields(RunContext) if f.init)


def _is_negative_override(arg: str) -> bool:
    """`-1` is no option (a stray value), but `-x=1` would be; only options start with a letter."""
    return len(arg) > 1 and not (arg[1].isalpha() or arg[1] == "-")


def _unknown_option(option: str) -> str:
    known = [*_VALUE_OPTIONS, *_FLAG_OPTIONS, "--help"]
    close = [k for k in _close(option, known)]
    hint = f"; did you mean {' or '.join(close)}?" if close else "; see --help"
    return f"no option {option}{hint}"


def _close(word: str, choices: list[str]) -> list[str]:
    return difflib.get_close_matches(word, choices, n=2, cutoff=0.6)


# -- decorators and queries -----------------------------------------------------------------
def entrypoint(
    fn: F | None = None,
    *,
    name: str | None = None,
    namespace: str | None = None,
    help: str | None = None,  # noqa: A002 - 0.11.1's parameter name
    skip_confirmation: bool = False,
    enable_executor: bool = True,
    default_factory: Callable[..., Any] | None = None,
    default_executor: Any = None,
    default_plugins: Any = None,
    entrypoint_cls: type[Entrypoint] | None = None,
    type: EntrypointType = "task",  # noqa: A002 - 0.11.1's parameter name
    run_ctx_cls: type[RunContext] | None = None,
) -> Any:
    """Register `fn` as a command: `python script.py key=value ... [executor=local] --yes`
    (with `run.cli.main(fn)` at the end of the script). `type="experiment"` entrypoints take
    a `RunContext` first and launch their own `run.Experiment` with `ctx.launch(exp)`."""

    def register(func: F) -> F:
        space = namespace or func.__module__
        entry = (entrypoint_cls or Entrypoint)(
            func,
            space,
            default_factory=default_factory,
            default_executor=default_executor,
            default_plugins=default_plugins,
            name=name,
            help_str=help,
            enable_executor=enable_executor,
            skip_confirmation=skip_confirmation,
            type=type,
            run_ctx_cls=run_ctx_cls or RunContext,
        )
        func.cli_entrypoint = entry  # type: ignore[attr-defined]
        registry.add_entrypoint(space, entry.name, entry)
        return func

    return register if fn is None else register(fn)


def factory(
    fn: F | None = None,
    target: Any = None,
    *,
    target_arg: str | None = None,
    is_target_default: bool = False,
    name: str | None = None,
    namespace: str | None = None,
) -> Any:
    """Register `fn` as a factory: `model=<name>` (or `<name>(k=v)`) on the command line
    for a parameter of its return type (`-> run.Config[Model]`), of `target` (for its
    `target_arg`), or `--factory <name>` when `target` is the entrypoint itself.
    `is_target_default=True` makes it the value of a parameter left unset."""
    if target_arg is not None and target is None:
        raise ConfigError(
            f"factory {name or getattr(fn, '__name__', '')}: target_arg needs target="
        )
    if target is not None and target_arg is not None:
        params = registry.signature_params(target)
        if params and target_arg not in params:
            raise ConfigError(
                f"factory target_arg={target_arg!r}: {getattr(target, '__qualname__', target)} "
                f"has no such parameter; its parameters are {', '.join(params)}"
            )

    def register(func: F) -> F:
        if not callable(func):
            raise ConfigError(f"a factory must be a function, got {func!r}")
        reg = FactoryRegistration(
            namespace,
            name or func.__name__,
            fn=func,
            target=target,
            target_arg=target_arg,
            is_target_default=is_target_default,
        )
        registry.add_factory(reg)
        func.__factory__ = reg  # type: ignore[attr-defined]
        return func

    return register if fn is None else register(fn)


def resolve_factory(target: Any, name: str) -> Callable[..., Any]:
    """The factory registered as `name` for `target` (a type, function or namespace string)."""
    if isinstance(target, str):
        registry.load_entry_points()
        found = [r for r in registry.factories_in(target) if r.name == name]
        reg = found[-1] if found else None
    else:
        reg = registry.find_factory(name, target)
    if reg is None:
        known = sorted({r.name for r in _registrations(target)})
        raise ConfigError(
            f"no factory {name!r} for {getattr(target, '__qualname__', target)}; "
            f"registered: {', '.join(known) or '(none)'}"
        )
    return reg.fn


def _registrations(target: Any) -> list[FactoryRegistration]:
    if isinstance(target, str):
        return registry.factories_in(target)
    return registry.factories_for(target)


def list_factories(type_or_namespace: Any) -> list[Callable[..., Any]]:
    """The factories registered for a type (or under a namespace string)."""
    registry.load_entry_points()
    return [r.fn for r in _registrations(type_or_namespace)]


def list_entrypoints(namespace: str | None = None) -> dict[str, Any]:
    """Registered entrypoints nested by namespace (`{"pkg": {"mod": {"train": Entrypoint}}}`);
    with `namespace`, only those under it, nested from there."""
    out: dict[str, Any] = {}
    for (space, entry_name), entry in registry.entrypoints().items():
        if namespace and not (space == namespace or space.startswith(namespace + ".")):
            continue
        rest = space[len(namespace) :].lstrip(".") if namespace else space
        level = out
        for part in [p for p in rest.split(".") if p]:
            level = level.setdefault(part, {})
        level[entry_name] = entry
    return out


def main(
    fn: Callable[..., Any],
    default_factory: Callable[..., Any] | None = None,
    default_executor: Any = None,
    default_plugins: Any = None,
    cmd_defaults: CommandDefaults | None = None,
    **kwargs: Any,
) -> None:
    """Run `fn` as the script's command with `sys.argv` and exit with its status:
    `if __name__ == "__main__": run.cli.main(train)`. The keyword arguments are those of
    `@entrypoint`; given here they override the decorator's."""
    entry = getattr(fn, "cli_entrypoint", None)
    settings: dict[str, Any] = {}
    if isinstance(entry, Entrypoint):
        settings = {
            "name": entry.name,
            "namespace": entry.namespace,
            "help": entry.help_str,
            "skip_confirmation": entry.skip_confirmation,
            "enable_executor": entry.enable_executor,
            "default_factory": entry.default_factory,
            "default_executor": entry.default_executor,
            "default_plugins": entry.default_plugins,
            "type": entry.type,
            "run_ctx_cls": entry.run_ctx_cls,
            "entrypoint_cls": type(entry),
        }
    given = {
        "default_factory": default_factory,
        "default_executor": default_executor,
        "default_plugins": default_plugins,
    }
    settings.update({k: v for k, v in given.items() if v is not None})
    settings.update(kwargs)
    entry_cls = settings.pop("entrypoint_cls", None) or Entrypoint
    entry = entry_cls(
        fn,
        settings.pop("namespace", None) or fn.__module__,
        help_str=settings.pop("help", None),
        **settings,
    )
    sys.exit(entry.main(cmd_defaults))


def create_cli(add_verbose_callback: bool = False, nested_entrypoints_creation: bool = True) -> Any:
    """A typer app with one command per registered entrypoint (nested by namespace), each
    taking the same options and KEY=VALUE arguments as `run.cli.main`."""
    import typer  # noqa: PLC0415 - typer and click (~50 ms) only for an app built on request

    app = typer.Typer(no_args_is_help=True, add_completion=False)
    groups: dict[str, Any] = {}
    for (space, entry_name), entry in registry.entrypoints().items():
        parent = app
        if nested_entrypoints_creation:
            for part in [p for p in space.split(".") if p and p != "__main__"]:
                key = f"{id(parent)}.{part}"
                if key not in groups:
                    groups[key] = typer.Typer(no_args_is_help=True)
                    parent.add_typer(groups[key], name=part)
                parent = groups[key]
        _add_command(parent, entry_name, entry)
    return app


def _add_command(
    parent: Any,
    name: str,
    entry: Entrypoint,
    cmd_defaults: CommandDefaults | dict[str, Any] | None = None,
    command_kwargs: dict[str, Any] | None = None,
) -> Callable[..., Any]:
    """One typer command that hands its raw arguments to the entrypoint's own parser."""

    def command(ctx: Any) -> None:
        code = entry.main(typing.cast(CommandDefaults, cmd_defaults), args=list(ctx.args))
        if code:
            raise SystemExit(code)

    command.__doc__ = entry.help_str or None
    import typer  # noqa: PLC0415 - as in create_cli

    command.__annotations__ = {"ctx": typer.Context, "return": None}
    settings = {
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "help_option_names": [],
    }
    extra = dict(command_kwargs or {})
    settings.update(extra.pop("context_settings", {}))
    parent.command(name, context_settings=settings, **extra)(command)
    return command


def add_global_options(app: Any) -> Callable[..., None]:
    """Give the typer app `app` 0.11.1's global options (`-v/--verbose` and the accepted
    `--rich-*` switches) as its callback; returns the callback."""
    import typer  # noqa: PLC0415 - as in create_cli

    def global_options(
        verbose: bool = typer.Option(False, "-v", "--verbose"),
        rich_exceptions: bool = typer.Option(False, "--rich-exceptions/--no-rich-exceptions"),
        rich_traceback: bool = typer.Option(False, "--rich-traceback-short/--rich-traceback-full"),
        rich_locals: bool = typer.Option(True, "--rich-show-locals/--rich-hide-locals"),
        rich_theme: str | None = typer.Option(None, "--rich-theme"),
    ) -> None:
        configure_logging(verbose)

    app.callback()(global_options)
    return global_options


def configure_logging(verbose: bool) -> None:
    """torchx's messages at INFO with --verbose, WARNING without (0.11.1); ours at DEBUG too."""
    logging.getLogger("torchx").setLevel(logging.INFO if verbose else logging.WARNING)
    if verbose:
        logging.getLogger("nemo_run").setLevel(logging.DEBUG)


def extract_constituent_types(type_hint: Any) -> set[Any]:
    """Every type a hint involves, generics with their arguments: `Union[int, str]` gives
    {int, str}, `List[int]` {List[int], list, int}, `Annotated[X, ...]` X's; None left out."""
    if inspect.isfunction(type_hint) or inspect.isclass(type_hint):
        return {type_hint} if type_hint is not type(None) else set()
    origin = typing.get_origin(type_hint)
    if origin is typing.Annotated:
        return extract_constituent_types(typing.get_args(type_hint)[0])
    if origin in _UNION_ORIGINS:
        return {t for a in typing.get_args(type_hint) for t in extract_constituent_types(a)}
    if origin is None:
        return {type_hint} if type_hint is not None else set()
    found: set[Any] = {type_hint}
    if origin is Literal:
        return found
    found |= extract_constituent_types(origin)
    for arg in typing.get_args(type_hint):
        for item in arg if isinstance(arg, list) else [arg]:
            if item is not Ellipsis:
                found |= extract_constituent_types(item)
    return found


_UNION_ORIGINS: tuple[Any, ...] = (typing.Union, type(int | str))
