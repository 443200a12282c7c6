"""`run.run(task, executor=...)`: launch one task, wait for it (or not), and report how it ended."""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from typing import Any

from torchx.specs import AppState, parse_app_handle

from nemo_run.core.execution.base import Executor
from nemo_run.exceptions import ConfigError, JobFailedError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What `run.run` returns: the handle to follow the job with and the state it reached."""

    handle: str
    state: AppState
    log_dir: str | None = None
    dryrun: str | None = None
    roles: tuple[str, ...] = ()

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
    from nemo_run.run.torchx_backend.packaging import package, task_name

    if executor is None:
        from nemo_run.core.execution.local import LocalExecutor

        executor = LocalExecutor()
    if not isinstance(executor, Executor):
        raise ConfigError(f"executor must be a run.Executor (e.g. run.LocalExecutor()), got {type(executor).__name__}")
    if detach and tail_logs:
        raise ConfigError("tail_logs=True needs an attached run; drop detach=True or tail_logs=True")
    name = name or task_name(task)
    if direct:
        return _run_direct(task, name)

    from nemo_run.run.torchx_backend.runner import get_runner

    app = package(name, task, executor)
    runner = get_runner()
    info = runner.dryrun_for(app, executor)
    roles = tuple(role.name for role in app.roles)
    if dryrun:
        text = str(info)
        print(text)
        return RunResult(handle="", state=AppState.UNSUBMITTED, dryrun=text, roles=roles)

    handle = runner.schedule(info)
    log_dir = getattr(info.request, "log_dir", None)
    if detach:
        status = runner.status(handle)
        return RunResult(handle, status.state if status else AppState.UNKNOWN, log_dir, roles=roles)

    tailers = _start_tailing(runner, handle, app) if tail_logs else []
    try:
        status = runner.wait_until_done(handle)
    except KeyboardInterrupt:
        print(f"\ninterrupted: cancelling {handle}", file=sys.stderr)
        runner.cancel(handle)
        raise
    for thread in tailers:
        thread.join()
    state = status.state if status else AppState.UNKNOWN
    if state != AppState.SUCCEEDED:
        where = f"; logs in {log_dir}" if log_dir else ""
        raise JobFailedError(handle, state.name, (status.msg if status else "") + where)
    return RunResult(handle, state, log_dir, roles=roles)


def _run_direct(task: Any, name: str) -> RunResult:
    from nemo_run.config import Script

    if isinstance(task, Script):
        raise ConfigError("direct=True runs a run.Partial/run.Config in this process; a Script needs an executor")
    import fiddle as fdl

    built = fdl.build(task)
    if isinstance(task, fdl.Partial):
        built()
    return RunResult(handle=f"direct://{name}", state=AppState.SUCCEEDED)


def _start_tailing(runner: Any, handle: str, app: Any) -> list[threading.Thread]:
    """Print every replica's combined log as it grows, prefixed when there is more than one."""
    _, _, app_id = parse_app_handle(handle)
    threads = []
    many = sum(r.num_replicas for r in app.roles) > 1
    for role in app.roles:
        for k in range(role.num_replicas):
            prefix = f"[{role.name}:{k}] " if many else ""

            def pump(role_name: str = role.name, k: int = k, prefix: str = prefix) -> None:
                for line in runner.log_lines(handle, role_name, k, should_tail=True):
                    sys.stdout.write(prefix + line)
                    sys.stdout.flush()

            thread = threading.Thread(target=pump, name=f"tail-{role.name}-{k}", daemon=True)
            thread.start()
            threads.append(thread)
    return threads
