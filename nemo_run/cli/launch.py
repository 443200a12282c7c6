"""Running an entrypoint's command: the arguments become a `run.Partial` (and an executor and
plugins), checked complete before anything starts, shown and confirmed, then run through
`run.run` (a task) or handed to the function with its `RunContext` (an experiment, which
launches its own `run.Experiment` with `ctx.launch`).
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from typing import TYPE_CHECKING, Any

import fiddle as fdl

from nemo_run.api import dryrun_fn
from nemo_run.cli import cli_parser, registry
from nemo_run.cli.errors import ArgumentValueError
from nemo_run.core.configurable import Config, Partial, dataclass_to_config
from nemo_run.core.execution.base import Executor
from nemo_run.exceptions import ConfigError
from nemo_run.run.api import run as run_task
from nemo_run.run.experiment import Experiment
from nemo_run.run.plugin import ExperimentPlugin

if TYPE_CHECKING:
    from nemo_run.cli.api import Entrypoint, RunContext

_RUN_KEYS = ("executor", "plugins")


def run_options(
    executor: Executor | None = None, plugins: list[ExperimentPlugin] | None = None
) -> None:
    """Holds `executor=...`/`plugins=...` of a command line: they are parsed onto a Partial of
    this function like any other parameters (so `executor.ntasks_per_node=2` reads by type)."""


def execute(ctx: RunContext, entry: Entrypoint, args: list[str]) -> None:
    """Run `entry` for the command-line `args` (KEY=VALUE)."""
    rest = parse_run_args(ctx, args, entry)
    if entry.type == "experiment":
        _execute_experiment(ctx, entry, rest)
    else:
        _execute_task(ctx, entry, rest)


def parse_run_args(ctx: RunContext, args: list[str], entry: Entrypoint | None) -> list[str]:
    """Set `ctx.executor`/`ctx.plugins` from the arguments that name them (unless the function
    has parameters of those names: then they are its own); the other arguments."""
    fn_params = registry.signature_params(entry.fn) if entry is not None else {}
    enabled = entry is None or entry.enable_executor
    own, run_args = [], []
    for arg in args:
        steps, _, _ = cli_parser.split_override(arg)
        head = steps[0]
        if enabled and head in _RUN_KEYS and head not in fn_params:
            run_args.append(arg)
        else:
            own.append(arg)
    holder: Partial[Any] = Partial(run_options, bind_args=False)
    default_executor = entry.default_executor if entry is not None else None
    if default_executor is not None:
        holder.executor = _editable(default_executor)
    default_plugins = entry.default_plugins if entry is not None else None
    if default_plugins is not None:
        items = default_plugins if isinstance(default_plugins, list) else [default_plugins]
        holder.plugins = [_editable(p) for p in items]
    for arg in run_args:
        cli_parser.apply_override(holder, arg)
    ctx.executor = _build("executor", holder.__arguments__.get("executor"))
    plugins = _build("plugins", holder.__arguments__.get("plugins")) or []
    ctx.plugins = plugins if isinstance(plugins, list) else [plugins]
    if ctx.executor is not None and not isinstance(ctx.executor, Executor):
        raise ConfigError(
            f"executor must be a run.Executor, got {type(ctx.executor).__name__}; name one "
            f"with executor=NAME ({', '.join(registry.BUILTIN_EXECUTORS)} or a registered factory)"
        )
    return own


def _editable(value: Any) -> Any:
    """A default (object or config) as a fresh config the command line can edit."""
    if isinstance(value, fdl.Buildable):
        return copy.deepcopy(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclass_to_config(value)
    return value


def _build(label: str, value: Any) -> Any:
    """Build a config of the executor or plugins now, so a missing or bad field is reported
    before anything starts."""
    if value is None:
        return None
    missing = _missing_in(value, label)
    if missing:
        raise ArgumentValueError(cli_parser.missing_message(missing))
    try:
        return fdl.build(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{label}: {e}") from e


def _missing_in(value: Any, label: str) -> list[tuple[str, Any, Any]]:
    if isinstance(value, fdl.Buildable):
        return cli_parser.missing_arguments(value, label)
    if isinstance(value, list):
        return [m for i, v in enumerate(value) for m in _missing_in(v, f"{label}[{i}]")]
    return []


def parse_executor(name: str, *args: str) -> Any:
    """`executor=name` then `executor.<arg>` for each of `args`, as a config."""
    holder: Partial[Any] = Partial(run_options, bind_args=False)
    cli_parser.apply_override(holder, f"executor={name}")
    for arg in args:
        cli_parser.apply_override(holder, f"executor.{arg}")
    return holder.executor


def parse_plugin(name: str, *args: str) -> Any:
    """The plugin factory `name` then `<arg>` of it for each of `args`, as a config."""
    holder: Partial[Any] = Partial(run_options, bind_args=False)
    cli_parser.apply_override(holder, f"plugins={name}")
    for arg in args:
        cli_parser.apply_override(holder, f"plugins[0].{arg}")
    plugins = holder.plugins
    return plugins[0] if plugins else None


def parse_fn(ctx: RunContext, fn: Any, args: list[str], defaults: dict[str, Any]) -> Partial[Any]:
    """`fn` as a Partial: its `--factory` (or the registered default), `defaults`, then `args`."""
    root = _start(ctx, fn, None)
    for key, value in defaults.items():
        if key not in root.__arguments__:
            setattr(root, key, value)
    return typing_cast_partial(cli_parser.parse_cli_args(root, args))


def typing_cast_partial(value: Any) -> Partial[Any]:
    if not isinstance(value, Partial):
        raise ConfigError(f"expected a run.Partial, got {type(value).__name__}")
    return value


def _start(ctx: RunContext, fn: Any, entry: Entrypoint | None) -> Partial[Any]:
    """The Partial the overrides apply to: `--factory NAME`, the entrypoint's default
    factory, a factory registered as the default for it, or an empty `run.Partial(fn)`."""
    made: Any = None
    if ctx.factory:
        made = cli_parser.convert(ctx.factory, fn, cli_parser._Where("--factory"))
    elif entry is not None and entry.default_factory is not None:
        made = entry.default_factory()
    else:
        default = registry.default_factory(fn)
        if default is not None and default.resolve()[1] is fn:
            made = default.fn()
    if made is None:
        return Partial(fn, bind_args=False)
    if isinstance(made, fdl.Buildable) and fdl.get_callable(made) is fn:
        if isinstance(made, Partial):
            return made
        arguments = {str(k): v for k, v in made.__arguments__.items()}
        return Partial(fn, bind_args=False, **arguments)
    raise ConfigError(
        f"--factory {ctx.factory or ''}: the factory must return "
        f"run.Partial({getattr(fn, '__name__', fn)}, ...), got {made!r}"
    )


def _complete(root: Partial[Any], skip: tuple[str, ...] = ()) -> None:
    """Fill unset required parameters from default factories; refuse the run if any is left."""
    cli_parser.fill_defaults(root)
    missing = [m for m in cli_parser.missing_arguments(root) if m[0] not in skip]
    if missing:
        raise ArgumentValueError(cli_parser.missing_message(missing))


def _confirm(ctx: RunContext) -> bool:
    """Ask before running unless --yes; no answer (end of input) is no."""
    if ctx.skip_confirmation or ctx.dryrun:
        return True
    print("Continue? [y/N]: ", end="", flush=True)
    answer = sys.stdin.readline()
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("Exiting...")
    return False


def _execute_task(ctx: RunContext, entry: Entrypoint, args: list[str]) -> None:
    root = _start(ctx, entry.fn, entry)
    cli_parser.parse_cli_args(root, args)
    _complete(root)
    executor = None if ctx.direct else ctx.executor
    if ctx.dryrun or not ctx.skip_confirmation:
        dryrun_fn(root, executor=executor)
    if not _confirm(ctx):
        return
    if ctx.dryrun and executor is None:
        return
    print(f"Dry run for {ctx.name}:" if ctx.dryrun else f"Launching {ctx.name}...", flush=True)
    result = run_task(
        root,
        executor=executor,
        plugins=ctx.plugins or None,
        name=ctx.name,
        dryrun=ctx.dryrun,
        direct=ctx.direct,
        detach=ctx.detach,
        tail_logs=ctx.tail_logs or executor is None,
    )
    if not ctx.dryrun:
        where = f" (logs: {result.log_dir})" if result.log_dir else ""
        print(f"{ctx.name}: {result.state.name} {result.handle}{where}", flush=True)


def _execute_experiment(ctx: RunContext, entry: Entrypoint, args: list[str]) -> None:
    key = entry.context_param()
    root = _start(ctx, entry.fn, entry)
    cli_parser.parse_cli_args(root, args)
    if key in root.__arguments__:
        raise ArgumentValueError(
            f"{key} is the run context; it cannot be set from the command line"
        )
    _complete(root, skip=(key,))
    if not ctx.skip_confirmation or ctx.dryrun:
        dryrun_fn(root, executor=ctx.executor)
    if not _confirm(ctx):
        return
    built = fdl.build(root)
    built(**{key: ctx})


def launch_experiment(ctx: RunContext, experiment: Experiment, sequential: bool) -> None:
    """`ctx.launch(exp)`: dry-run it, or run it (direct when --direct) with the context's
    detach and tail-logs options."""
    if not isinstance(experiment, Experiment):
        raise ConfigError(f"ctx.launch needs a run.Experiment, got {type(experiment).__name__}")
    if ctx.dryrun:
        experiment.dryrun()
        return
    experiment.run(
        sequential=sequential, detach=ctx.detach, tail_logs=ctx.tail_logs, direct=ctx.direct
    )


def context_config(ctx: RunContext) -> Config[Any]:
    """`ctx` as a run.Config of its class and init fields."""
    fields = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx) if f.init}
    return Config(type(ctx), **fields)
