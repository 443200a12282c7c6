"""`run.run(task, executor=...)`: one task as a one-task Experiment, with its outcome returned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchx.specs import AppState

from nemo_run.core.execution.base import Executor
from nemo_run.core.runners.partial import refuse_launch_while_loading_main
from nemo_run.core.script import Script
from nemo_run.exceptions import ConfigError, JobFailedError
from nemo_run.run.experiment import Experiment
from nemo_run.run.torchx_backend.packaging import task_name


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
    task: Any,
    executor: Executor | None = None,
    name: str = "",
    dryrun: bool = False,
    direct: bool = False,
    detach: bool = False,
    tail_logs: bool = False,
) -> RunResult:
    """Run `task` (a Script, Partial or Config) on `executor` (default: a LocalExecutor).

    Attached (the default), waits for the job and raises `JobFailedError` unless it SUCCEEDED.
    `detach=True` returns as soon as the job started; `dryrun=True` returns the request text
    without starting anything; `direct=True` runs a Partial/Config in this process.
    """
    refuse_launch_while_loading_main()
    if executor is not None and not isinstance(executor, Executor):
        raise ConfigError(
            f"executor must be a run.Executor (e.g. run.LocalExecutor()), got {type(executor).__name__}"
        )
    if detach and tail_logs:
        raise ConfigError(
            "tail_logs=True needs an attached run; drop detach=True or tail_logs=True"
        )
    name = name or task_name(task)
    if direct:
        return _run_direct(task, name)

    exp = Experiment(name, executor=executor)
    task_id = exp.add(task, name=name)
    if dryrun:
        text = exp.dryrun()[task_id]
        print(text)
        return RunResult(handle="", state=AppState.UNSUBMITTED, dryrun=text)

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


def _run_direct(task: Any, name: str) -> RunResult:
    if isinstance(task, Script):
        raise ConfigError(
            "direct=True runs a run.Partial/run.Config in this process; a Script needs an executor"
        )
    import fiddle as fdl  # noqa: PLC0415 - fiddle (~0.3 s), only where a task is a Partial/Config

    built = fdl.build(task)
    if isinstance(task, fdl.Partial):
        built()
    return RunResult(handle=f"direct://{name}", state=AppState.SUCCEEDED)
