"""A torchx Runner that also takes an Executor as `cfg`, with our schedulers loaded on first use.

Run options (a dict) take torchx's own `dryrun`. An Executor cannot (torchx resolves `cfg`
against run options and JSON-logs it), so it goes straight to the scheduler's
`submit_dryrun`. Either way the result is a `DryRun` that names its scheduler, so `schedule`
and `planned_handle` need nothing torchx keeps privately on the dry-run info.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from torchx.runner import Runner as TorchxRunner
from torchx.runner.api import ENV_TORCHX_JOB_ID
from torchx.schedulers.api import AppDryRunInfo
from torchx.specs import AppDef, AppState, AppStatus, is_terminal, macros, make_app_handle

from nemo_run.core.execution.base import Executor
from nemo_run.exceptions import ConfigError
from nemo_run.run.torchx_backend.schedulers.api import SchedulerMixin
from nemo_run.run.torchx_backend.schedulers.backends import BACKENDS, Backend, backend_for_executor
from nemo_run.run.torchx_backend.schedulers.runopts import DryRun

DEFAULT_SESSION = "nemo_run"


def _factory(backend: Backend) -> Any:
    def create(session_name: str, **kwargs: Any) -> Any:
        return backend.create_scheduler(session_name, **kwargs)

    return create


def _check_roles(app: AppDef) -> None:
    """What torchx checks with ValueErrors, as ConfigErrors (still ValueErrors)."""
    if not app.roles:
        raise ConfigError(f"app {app.name!r} has no roles")
    for role in app.roles:
        if not role.entrypoint:
            raise ConfigError(f"role {role.name!r} has no entrypoint")
        if role.num_replicas < 1:
            raise ConfigError(
                f"role {role.name!r} needs num_replicas >= 1, got {role.num_replicas}"
            )


def _ours(dryrun_info: AppDryRunInfo) -> DryRun:
    if not isinstance(dryrun_info, DryRun):
        raise ConfigError(
            f"a {type(dryrun_info).__name__} did not come from Runner.dryrun: it names no scheduler"
        )
    return dryrun_info


class Runner(TorchxRunner):
    """Schedules AppDefs with Executors or run options; status, logs, cancel and list come
    from torchx."""

    def __init__(self, name: str = DEFAULT_SESSION) -> None:
        super().__init__(name, {b.scheduler: _factory(b) for b in BACKENDS})

    def dryrun(
        self,
        app: AppDef,
        scheduler: str,
        cfg: Executor | Mapping[str, Any] | None = None,
        workspace: str | None = None,
        parent_run_id: str | None = None,
    ) -> DryRun:
        _check_roles(app)
        if not isinstance(cfg, Executor):
            return _ours(super().dryrun(app, scheduler, cfg, workspace, parent_run_id))
        for role in app.roles:
            role.env[ENV_TORCHX_JOB_ID] = make_app_handle(scheduler, self.name(), macros.app_id)
        return _ours(self._scheduler(scheduler).submit_dryrun(app, cfg))

    def _nemo_scheduler(self, name: str) -> SchedulerMixin:
        """This runner's scheduler `name` (every one it has is a nemo_run scheduler)."""
        scheduler = self._scheduler(name)
        if not isinstance(scheduler, SchedulerMixin):
            raise ConfigError(f"scheduler {name!r} is not a nemo_run scheduler")
        return scheduler

    def dryrun_for(self, app: AppDef, executor: Executor) -> DryRun:
        """Dry run on whichever scheduler runs this executor."""
        return self.dryrun(app, backend_for_executor(executor).scheduler, executor)

    def planned_handle(self, dryrun_info: AppDryRunInfo) -> str:
        """The handle `schedule(dryrun_info)` will return, known before anything starts."""
        info = _ours(dryrun_info)
        app_id = self._nemo_scheduler(info.scheduler).planned_app_id(info)
        return make_app_handle(info.scheduler, self.name(), app_id)

    def schedule(self, dryrun_info: AppDryRunInfo) -> str:
        info = _ours(dryrun_info)
        app_id = self._scheduler(info.scheduler).schedule(info)
        return make_app_handle(info.scheduler, self.name(), app_id)

    def run(
        self,
        app: AppDef,
        scheduler: str,
        cfg: Executor | Mapping[str, Any] | None = None,
        workspace: str | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        return self.schedule(self.dryrun(app, scheduler, cfg, workspace, parent_run_id))

    def wait_until_done(self, app_handle: str, timeout: float | None = None) -> AppStatus | None:
        """Poll status with a short, growing interval (torchx's `wait` sleeps 10 s per poll)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while True:
            status = self.status(app_handle)
            if status is None or is_terminal(status.state):
                return status
            if deadline is not None and time.monotonic() >= deadline:
                return status
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)


_runners: dict[tuple[int, str], Runner] = {}


def get_runner(name: str = DEFAULT_SESSION) -> Runner:
    """A process-wide runner per session name (schedulers are cached inside it)."""
    key = (os.getpid(), name)
    runner = _runners.get(key)
    if runner is None:
        runner = _runners[key] = Runner(name)
    return runner


__all__ = ["Runner", "get_runner", "AppState"]
