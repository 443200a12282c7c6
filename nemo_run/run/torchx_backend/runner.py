"""A torchx Runner whose `cfg` is an Executor, with our schedulers loaded on first use.

torchx's own `dryrun`/`schedule` resolve `cfg` against run options and JSON-dump it; here the
Executor passes through to `SchedulerMixin.submit_dryrun`, which validates it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from torchx.runner import Runner as TorchxRunner
from torchx.runner.api import ENV_TORCHX_JOB_ID
from torchx.schedulers.api import AppDryRunInfo
from torchx.specs import AppDef, AppState, AppStatus, is_terminal, macros, make_app_handle

from nemo_run.core.execution.base import Executor
from nemo_run.exceptions import ConfigError
from nemo_run.run.torchx_backend.schedulers.api import BACKENDS, Backend, backend_for_executor

DEFAULT_SESSION = "nemo_run"


def _factory(backend: Backend) -> Any:
    def create(session_name: str, **kwargs: Any) -> Any:
        return backend.create_scheduler(session_name, **kwargs)

    return create


class Runner(TorchxRunner):
    """Schedules AppDefs with Executors; status, logs, cancel and list come from torchx."""

    def __init__(self, name: str = DEFAULT_SESSION) -> None:
        super().__init__(name, {b.scheduler: _factory(b) for b in BACKENDS})

    def dryrun(  # type: ignore[override]
        self,
        app: AppDef,
        scheduler: str,
        cfg: Executor,
        workspace: str | None = None,
        parent_run_id: str | None = None,
    ) -> AppDryRunInfo:
        if not app.roles:
            raise ConfigError(f"app {app.name!r} has no roles")
        for role in app.roles:
            if not role.entrypoint:
                raise ConfigError(f"role {role.name!r} has no entrypoint")
            if role.num_replicas < 1:
                raise ConfigError(
                    f"role {role.name!r} needs num_replicas >= 1, got {role.num_replicas}"
                )
            role.env[ENV_TORCHX_JOB_ID] = make_app_handle(scheduler, self._name, macros.app_id)
        sched = self._scheduler(scheduler)
        sched._validate(app, scheduler)
        dryrun_info = sched.submit_dryrun(app, cfg)
        dryrun_info._scheduler = scheduler
        return dryrun_info

    def dryrun_for(self, app: AppDef, executor: Executor) -> AppDryRunInfo:
        """Dry run on whichever scheduler runs this executor."""
        return self.dryrun(app, backend_for_executor(executor).scheduler, executor)

    def planned_handle(self, dryrun_info: AppDryRunInfo) -> str:
        """The handle `schedule(dryrun_info)` will return, known before anything starts."""
        scheduler = dryrun_info._scheduler
        if scheduler is None:
            raise ConfigError("dryrun_info did not come from Runner.dryrun: it names no scheduler")
        app_id = self._scheduler(scheduler).planned_app_id(dryrun_info)
        return make_app_handle(scheduler, self._name, app_id)

    def schedule(self, dryrun_info: AppDryRunInfo) -> str:
        scheduler = dryrun_info._scheduler
        if scheduler is None:
            raise ConfigError("dryrun_info did not come from Runner.dryrun: it names no scheduler")
        app_id = self._scheduler(scheduler).schedule(dryrun_info)
        handle = make_app_handle(scheduler, self._name, app_id)
        if dryrun_info._app is not None:
            self._apps[handle] = dryrun_info._app
        return handle

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
