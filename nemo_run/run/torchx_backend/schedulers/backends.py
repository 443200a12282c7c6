"""The executor <-> scheduler map: the only place that ties an executor class to a backend.

The CLI, the runner, the poller and the schedulers' own type checks all read it. Entries
name modules as strings, so nothing backend-specific (nor torchx) is imported until a backend
is used: `nemorun job list --backend local` stays a store read.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nemo_run.exceptions import ConfigError

if TYPE_CHECKING:
    from torchx.schedulers.api import Scheduler

    from nemo_run.core.execution.base import Executor

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
    Backend(
        "local_persistent",
        "local",
        "nemo_run.core.execution.local:LocalExecutor",
        f"{SCHEDULERS_PACKAGE}.local",
        True,
    ),
    Backend(
        "docker_persistent",
        "docker",
        "nemo_run.core.execution.docker:DockerExecutor",
        f"{SCHEDULERS_PACKAGE}.docker",
        True,
    ),
    Backend(
        "skypilot",
        "skypilot",
        "nemo_run.core.execution.skypilot:SkypilotExecutor",
        f"{SCHEDULERS_PACKAGE}.skypilot",
    ),
    Backend(
        "dgx_cloud",
        "dgxcloud",
        "nemo_run.core.execution.dgxcloud:DGXCloudExecutor",
        f"{SCHEDULERS_PACKAGE}.dgxcloud",
    ),
    Backend(
        "lepton",
        "lepton",
        "nemo_run.core.execution.lepton:LeptonExecutor",
        f"{SCHEDULERS_PACKAGE}.lepton",
    ),
    Backend(
        "slurm_tunnel",
        "slurm",
        "nemo_run.core.execution.slurm:SlurmExecutor",
        f"{SCHEDULERS_PACKAGE}.slurm",
        True,
    ),
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
