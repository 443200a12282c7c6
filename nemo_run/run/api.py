"""`run.run(fn_or_script, executor=...)`: one task, as 0.11.1 runs it, with its outcome returned.

With an executor the task is a one-task Experiment; without one (or with `direct=True`) a
Partial/Config runs in this process and a Script as a child of it, as in 0.11.1. Unlike 0.11.1
(which returns None), every call returns a `RunResult`; attached runs that do not succeed raise
`JobFailedError`.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import IO, Any

from torchx.specs import AppState

from nemo_run.config import get_type_namespace as get_type_namespace
from nemo_run.core.execution.base import Executor
from nemo_run.core.redact import MASK, is_secret_name, redact_args, redact_text
from nemo_run.core.runners.partial import refuse_launch_while_loading_main
from nemo_run.core.script import Script
from nemo_run.exceptions import ConfigError, JobFailedError
from nemo_run.run.experiment import Experiment
from nemo_run.run.plugin import ExperimentPlugin, plugin_list
from nemo_run.run.plugin import Plugin as Plugin
from nemo_run.run.torchx_backend.packaging import task_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What `run.run` returns: the handle to follow the job with and the state it reached."""

    handle: str
    state: AppState
    log_dir: str | None = None
    dryrun: str | None = None
    roles: tuple[str, ...] = ()
    experiment_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == AppState.SUCCEEDED

    def __str__(self) -> str:
        return self.handle


def run(
    fn_or_script: Any,
    executor: Executor | None = None,
    plugins: ExperimentPlugin | list[ExperimentPlugin] | None = None,
    name: str = "",
    dryrun: bool = False,
    direct: bool = False,
    detach: bool = False,
    tail_logs: bool = True,
    log_level: str = "INFO",
) -> RunResult:
    """Run a configured function (run.Partial / run.Config) or a run.Script.

    Without an executor, or with `direct=True`, a Partial is called in this process and a
    Script runs as a child of it (its output streamed). With an executor the task runs as a
    one-task Experiment: attached (the default) it waits, streams the task's output while
    `tail_logs`, and raises `JobFailedError` unless the job SUCCEEDED; `detach=True` returns
    once the job started. `plugins` edit the task and executor first. `dryrun=True` prints
    what would run and starts nothing.
    """
    refuse_launch_while_loading_main()
    _set_log_level(log_level)
    if executor is not None and not isinstance(executor, Executor):
        raise ConfigError(
            f"executor must be a run.Executor (e.g. run.LocalExecutor()), got {type(executor).__name__}"
        )
    hooks = plugin_list(plugins)
    if getattr(fn_or_script, "is_lazy", False):
        fn_or_script = fn_or_script.resolve()
    name = name or task_name(fn_or_script)  # also refuses something that is not a task
    if direct or executor is None:
        if hooks:
            log.warning("run.run: plugins apply to runs on an executor; a direct run ignores them")
        if dryrun:
            return _dryrun_direct(fn_or_script)
        return _run_direct(fn_or_script, name, tail_logs)

    exp = Experiment(name, executor=executor)
    task_id = exp.add(fn_or_script, name=name, plugins=hooks)
    if dryrun:
        text = exp.dryrun(log=False)[task_id]
        print(f"Experiment {exp.id} dryrun...\nTask {task_id}\n\n{text}")
        return RunResult(handle="", state=AppState.UNSUBMITTED, dryrun=text)
    return _launch(exp, task_id, detach, tail_logs and not detach)


def _set_log_level(level: str) -> None:
    """Apply 0.11.1's `log_level` to this package's loggers (only those: never the root)."""
    value = logging.getLevelName(str(level).upper())
    if not isinstance(value, int):
        raise ConfigError(
            f"log_level={level!r} is not a logging level; use DEBUG, INFO, WARNING or ERROR"
        )
    logging.getLogger("nemo_run").setLevel(value)


def _launch(exp: Experiment, task_id: str, detach: bool, tail_logs: bool) -> RunResult:
    """Run the one-task experiment; its status as a RunResult (JobFailedError if attached and
    not SUCCEEDED)."""
    exp.run(detach=detach, tail_logs=tail_logs)
    if task_id in exp.launch_errors:
        raise exp.launch_errors[task_id]
    status = exp.status(return_dict=True)[task_id]
    state = (
        AppState[status["state"]] if status["state"] in AppState.__members__ else AppState.UNKNOWN
    )
    record = exp._current_record().task(task_id)
    result = RunResult(
        status["handle"] or "",
        state,
        status["job_dir"],
        roles=tuple(record.roles),
        experiment_id=exp.id,
    )
    if not detach and state != AppState.SUCCEEDED:
        where = f"; logs in {status['job_dir']}" if status["job_dir"] else ""
        raise JobFailedError(result.handle, state.name, (status["reason"] or "") + where)
    return result


# -- direct runs: in this process (Partial/Config) or as its child (Script) --------------------
def direct_run_fn(task: Any, dryrun: bool = False) -> None:
    """0.11.1's direct run of a task: a Partial/Config is built and called in this process, a
    Script runs as a child of it (its output on ours); `dryrun` only shows what would run."""
    if dryrun:
        _dryrun_direct(task)
        return
    name = task.get_name() if isinstance(task, Script) else task_name(task)
    _run_direct(task, name, tail_logs=True)


def _run_direct(task: Any, name: str, tail_logs: bool) -> RunResult:
    if isinstance(task, Script):
        return _run_script_child(task, name, tail_logs)
    import fiddle as fdl  # noqa: PLC0415 - fiddle (~0.3 s), only where a task is a Partial/Config

    built = fdl.build(task)
    if isinstance(task, fdl.Partial):
        built()
    return RunResult(handle=f"direct://{name}", state=AppState.SUCCEEDED)


def _script_argv(script: Script) -> list[str]:
    """The child's command line: like a job's, inline text as one argument (quotes survive)."""
    entrypoint = sys.executable if script.entrypoint == "python" else script.entrypoint
    if script.inline:
        name = [] if script.is_python() else [script.name]  # bash's $0, then $1...
        return [entrypoint, "-c", script.inline, *name, *script.args]
    return [entrypoint, *(["-m"] if script.m else []), script.path, *script.args]


def _run_script_child(script: Script, name: str, tail_logs: bool) -> RunResult:
    """Run the Script as a child of this process with its env added; its output goes through
    `sys.stdout`/`sys.stderr` (so notebooks and captured streams see it) unless `tail_logs`
    is False. A non-zero exit raises JobFailedError."""
    argv = _script_argv(script)
    try:
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **script.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if tail_logs else subprocess.DEVNULL,
            stderr=subprocess.PIPE if tail_logs else subprocess.DEVNULL,
        )
    except OSError as e:
        raise ConfigError(
            f"cannot start {script.entrypoint!r} for Script {script.get_name()!r}: "
            f"{e.strerror or e}; check Script.entrypoint and that it is on PATH"
        ) from e
    copiers = [
        threading.Thread(target=_copy, args=(pipe, out), daemon=True)
        for pipe, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr))
        if pipe is not None
    ]
    for thread in copiers:
        thread.start()
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.kill()
        proc.wait()
        raise
    for thread in copiers:
        thread.join()
    handle = f"direct://{name}"
    if code != 0:
        raise JobFailedError(handle, AppState.FAILED.name, f"exited with code {code}")
    return RunResult(handle=handle, state=AppState.SUCCEEDED)


def _copy(pipe: IO[bytes], out: IO[str]) -> None:
    """Copy a child's stream line by line into one of ours."""
    with pipe:
        for line in iter(pipe.readline, b""):
            out.write(line.decode(errors="replace"))
            out.flush()


def _dryrun_direct(task: Any) -> RunResult:
    """0.11.1's dry run of a direct task (its name and resolved arguments), then ours: what
    would run, where. Secret-looking arguments are masked."""
    if isinstance(task, Script):
        command = redact_text(shlex.join(redact_args(_script_argv(task))))
        text = f"Dry run for script {task.get_name()}\nWould run in a child process: {command}"
        print(text)
        return RunResult(handle="", state=AppState.UNSUBMITTED, dryrun=text)
    import fiddle as fdl  # noqa: PLC0415 - fiddle (~0.3 s), only where a task is a Partial/Config

    fdl.build(task)  # as 0.11.1: a task that cannot be built fails its dry run
    fn = fdl.get_callable(task)
    where = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
    arguments = {arg: _shown(arg, getattr(task, arg)) for arg in dir(task)}
    _print_arguments(where, arguments)
    call = ", ".join(f"{k}={v}" for k, v in arguments.items())
    text = f"Would call {where}({call}) in this process (direct run, no executor)"
    print(text)
    return RunResult(handle="", state=AppState.UNSUBMITTED, dryrun=text)


def _shown(arg: str, value: Any) -> str:
    return MASK if is_secret_name(arg) and value not in (None, "") else redact_text(repr(value))


def _print_arguments(where: str, arguments: dict[str, str]) -> None:
    """0.11.1's dry-run header and argument table."""
    from rich.console import Console  # noqa: PLC0415 - rich loads only when printing
    from rich.table import Table  # noqa: PLC0415 - rich loads only when printing

    console = Console(file=sys.stdout)
    console.print(f"[bold cyan]Dry run for task {where}[/bold cyan]")
    table = Table(show_header=True, header_style="bold magenta")
    table.add_column("Argument Name", style="dim", width=20)
    table.add_column("Resolved Value", width=60)
    for arg, value in arguments.items():
        table.add_row(arg, value)
    console.print("[bold green]Resolved Arguments[/bold green]")
    console.print(table)
