"""What every nemo_run scheduler shares: the executor <-> scheduler map and `SchedulerMixin`.

The map below is the only place that ties an executor class to a scheduler name; the CLI,
the runner and the mixin's type check all read it. Entries name modules as strings so that
nothing backend-specific is imported until that backend is used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nemo_run.exceptions import ConfigError, UnknownJobError

if TYPE_CHECKING:
    from torchx.schedulers.api import AppDryRunInfo, Scheduler
    from torchx.specs import AppDef

    from nemo_run.core.execution.base import Executor
    from nemo_run.core.store.base import JobStore

SCHEDULERS_PACKAGE = "nemo_run.run.torchx_backend.schedulers"


@dataclass(frozen=True)
class Backend:
    """One backend: its torchx scheduler name, short CLI name, executor class and module."""

    scheduler: str
    short: str
    executor: str  # "module:Class"
    module: str
    supports_groups: bool = False  # several roles (a task group) in one job

    def executor_class(self) -> type[Executor]:
        module, _, cls = self.executor.partition(":")
        return getattr(importlib.import_module(module), cls)

    def create_scheduler(self, session_name: str, **kwargs: Any) -> Scheduler:
        return importlib.import_module(self.module).create_scheduler(session_name, **kwargs)


BACKENDS: tuple[Backend, ...] = (
    Backend("local_persistent", "local", "nemo_run.core.execution.local:LocalExecutor", f"{SCHEDULERS_PACKAGE}.local", True),
    Backend("docker_persistent", "docker", "nemo_run.core.execution.docker:DockerExecutor", f"{SCHEDULERS_PACKAGE}.docker", True),
    Backend("skypilot", "skypilot", "nemo_run.core.execution.skypilot:SkypilotExecutor", f"{SCHEDULERS_PACKAGE}.skypilot"),
    Backend("dgx_cloud", "dgxcloud", "nemo_run.core.execution.dgxcloud:DGXCloudExecutor", f"{SCHEDULERS_PACKAGE}.dgxcloud"),
    Backend("lepton", "lepton", "nemo_run.core.execution.lepton:LeptonExecutor", f"{SCHEDULERS_PACKAGE}.lepton"),
)


def backend_named(name: str) -> Backend:
    """The backend for a scheduler name ('local_persistent') or short name ('local')."""
    for backend in BACKENDS:
        if name in (backend.scheduler, backend.short):
            return backend
    known = ", ".join(f"{b.short} ({b.scheduler})" for b in BACKENDS)
    raise ConfigError(f"unknown backend {name!r}; known backends: {known}")


def backend_for_executor(executor: Executor) -> Backend:
    """The backend that runs `executor` (subclasses of a known executor count as it)."""
    by_class = {b.executor: b for b in BACKENDS}
    for cls in type(executor).__mro__:
        backend = by_class.get(f"{cls.__module__}:{cls.__qualname__}")
        if backend is not None:
            return backend
    raise ConfigError(
        f"no scheduler runs a {type(executor).__name__}; use one of "
        + ", ".join(b.executor.rpartition(":")[2] for b in BACKENDS)
    )


class SchedulerMixin:
    """Mixed in before the torchx base: accepts an Executor as the dry-run `cfg`.

    Subclasses set `backend` to their scheduler name (e.g. 'local_persistent') and implement
    `_submit_dryrun(app, executor)`.
    """

    backend: str

    @property
    def executor_type(self) -> type[Executor]:
        return backend_named(self.backend).executor_class()

    def _check_executor(self, cfg: Any) -> None:
        if not isinstance(cfg, self.executor_type):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.executor_type.__name__}, got {type(cfg).__name__}"
            )

    def submit_dryrun(self, app: AppDef, cfg: Executor) -> AppDryRunInfo:  # type: ignore[override]
        """Build the backend request for `app` without side effects; runs each role's pre_proc."""
        self._check_executor(cfg)
        dryrun_info = self._submit_dryrun(app, cfg)  # type: ignore[attr-defined]
        for role in app.roles:
            dryrun_info = role.pre_proc(self.backend, dryrun_info)
        dryrun_info._app = app
        dryrun_info._cfg = cfg
        return dryrun_info

    def _validate(self, app: AppDef, scheduler: str) -> None:
        """Executors validate their own settings on creation; torchx's per-role resource check
        (resources are executor fields here) does not apply."""

    def _store(self) -> JobStore:
        from nemo_run.core.store import get_store

        return get_store()

    def _require_known(self, app_id: str) -> None:
        """Raise a clear error for an app id that neither the store nor the backend knows."""
        if self.describe(app_id) is None:  # type: ignore[attr-defined]
            raise UnknownJobError(
                f"no {self.backend} job {app_id!r} is known (job store: {self._store().location}); "
                "`nemorun job list` shows the known jobs"
            )

    def cancel(self, app_id: str) -> None:
        """Cancel a job; a finished job stays as it ended; an unknown id raises UnknownJobError."""
        self._require_known(app_id)
        self._cancel_existing(app_id)  # type: ignore[attr-defined]
