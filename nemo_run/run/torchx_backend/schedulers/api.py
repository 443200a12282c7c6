"""What every nemo_run scheduler shares: the executor <-> scheduler map and `SchedulerMixin`.

The map below is the only place that ties an executor class to a scheduler name; the CLI,
the runner and the mixin's type check all read it. Entries name modules as strings so that
nothing backend-specific is imported until that backend is used.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nemo_run.exceptions import ConfigError, UnknownJobError

if TYPE_CHECKING:
    from torchx.schedulers.api import AppDryRunInfo, DescribeAppResponse, Scheduler
    from torchx.specs import AppDef, AppState, Role, runopts

    from nemo_run.core.execution.base import Executor
    from nemo_run.core.store.base import JobStore
    from nemo_run.core.store.records import JobRecord
    from nemo_run.run.torchx_backend.runopts import DryRun

log = logging.getLogger(__name__)

SCHEDULERS_PACKAGE = "nemo_run.run.torchx_backend.schedulers"
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")
ACTIVE_STATES = ("UNSUBMITTED", "SUBMITTED", "PENDING", "RUNNING", "UNKNOWN")
# Record data keys every backend shares.
CANCEL_REQUESTED = (
    "cancel_requested_at"  # set before a stop is sent; a FAILED end then reads CANCELLED
)
LAUNCH = "launch"  # pending (intent recorded, not started yet) | done | unconfirmed
LAUNCH_PENDING, LAUNCH_DONE, LAUNCH_UNCONFIRMED = "pending", "done", "unconfirmed"
LAUNCHER = "launcher"  # pid, start ticks and boot id of the process that recorded the intent
NEVER_STARTED = "never started: its launcher exited before starting it"


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


def unique_name(app_name: str, limit: int) -> str:
    """A job name remote platforms accept: a DNS label (lowercase letters, digits, '-') starting
    with a letter, at most `limit` characters, made unique by a random 8-character suffix."""
    base = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", app_name.lower()))
    base = re.sub(r"^[^a-z]+", "", base).strip("-") or "job"
    suffix = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
    return f"{base[: limit - 9].rstrip('-')}-{suffix}"


def map_state(table: Mapping[str, AppState], value: Any, backend: str) -> AppState:
    """A backend state through its table; a value the table lacks reads UNKNOWN, with a warning."""
    from torchx.specs import AppState

    key = str(getattr(value, "value", value) if not isinstance(value, str) else value)
    state = table.get(key) or table.get(str(getattr(value, "name", "")))
    if state is None:
        log.warning("unmapped %s state %r; reporting UNKNOWN", backend, key)
        return AppState.UNKNOWN
    return state


def unanswered(resp: DescribeAppResponse, reason: str) -> DescribeAppResponse:
    """Mark a describe answered from the store because the backend did not answer (a timeout,
    5xx, a dropped connection): the state is the last one recorded, not a confirmed one."""
    resp.unanswered = reason  # type: ignore[attr-defined]
    if not resp.msg or resp.msg == "<NONE>":
        resp.msg = f"backend not answering: {reason}"
    return resp


def single_role_response(
    record: JobRecord,
    state: AppState,
    msg: str,
    *,
    nodes: int,
    entrypoint: str,
    args: list[str],
    ui_url: str | None = None,
    hostname: str = "",
) -> DescribeAppResponse:
    """The torchx view of a one-role job whose nodes the platform reports as one state."""
    from torchx.schedulers.api import DescribeAppResponse
    from torchx.specs import ReplicaStatus, Role, RoleStatus

    role = record.data.get("role", "main")
    resp = DescribeAppResponse(app_id=record.app_id, state=state, msg=msg)
    resp.roles = [Role(name=role, image="", entrypoint=entrypoint, args=args, num_replicas=nodes)]
    resp.roles_statuses = [
        RoleStatus(
            role,
            [ReplicaStatus(id=k, state=state, role=role, hostname=hostname) for k in range(nodes)],
        )
    ]
    resp.ui_url = ui_url
    return resp


class SchedulerMixin:
    """Mixed in before the torchx base: the dry-run `cfg` is an Executor (nemo_run's own path)
    or torchx run options (torchx's Runner and CLI), from which the executor is built.

    Subclasses set `backend` to their scheduler name (e.g. 'local_persistent') and implement
    `_submit_dryrun(app, executor)`; `schedule` receives a `DryRun` carrying the app and the
    executor as public fields.
    """

    backend: str

    @property
    def executor_type(self) -> type[Executor]:
        return backend_named(self.backend).executor_class()

    def _check_executor(self, cfg: Any) -> None:
        if not isinstance(cfg, self.executor_type):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.executor_type.__name__}, "
                f"got {type(cfg).__name__}"
            )

    # -- run options and dry run ------------------------------------------------------------
    def _run_opts(self) -> runopts:
        """The executor's fields as run options: what `torchx runopts <backend>` shows and
        `torchx run -cfg` accepts."""
        from nemo_run.run.torchx_backend.runopts import executor_runopts

        return executor_runopts(self.executor_type)

    def submit_dryrun(  # type: ignore[override]
        self, app: AppDef, cfg: Executor | Mapping[str, Any] | None
    ) -> DryRun:
        """Build the backend request for `app` without side effects; runs each role's pre_proc.
        Run options (torchx's path, where a component built `app`) become an executor first,
        with the executor's own validation, and its env, retries and launcher apply to `app`."""
        from nemo_run.run.torchx_backend.runopts import DryRun, apply_to_roles, executor_from_cfg

        if cfg is None or isinstance(cfg, Mapping):
            executor = executor_from_cfg(self.executor_type, cfg or {})
            apply_to_roles(app, executor)
        else:
            executor = cfg
        self._check_executor(executor)
        dryrun_info = self._submit_dryrun(app, executor)  # type: ignore[attr-defined]
        for role in app.roles:
            dryrun_info = role.pre_proc(self.backend, dryrun_info)
        return DryRun(dryrun_info, app=app, executor=executor, scheduler=self.backend)

    def submit(
        self, app: AppDef, cfg: Executor | Mapping[str, Any] | None, workspace: str | None = None
    ) -> str:
        """torchx's one-call submit, for an Executor as well as run options."""
        return self.schedule(self.submit_dryrun(app, cfg))  # type: ignore[attr-defined]

    def _validate(self, app: AppDef, scheduler: str) -> None:
        """torchx's Runner calls this before `submit_dryrun`. Resources are executor fields
        here, so torchx's per-role resource check does not apply; executors validate their own
        settings on creation."""

    # -- torchx workspaces (docker_persistent's torchx base is a workspace scheduler) ---------
    def workspace_opts(self) -> runopts:
        """No workspace options: code reaches a job through the executor's packager."""
        from torchx.specs import runopts

        return runopts()

    def build_workspace_and_update_role(self, role: Role, workspace: str, cfg: Any) -> None:
        """Nothing to build: jobs run the executor's image with the packager's code, so a torchx
        workspace image (the CLI passes the current folder by default) would go unused."""

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

    def _known_record(self, app_id: str) -> JobRecord:
        """The stored record of a job any backend call may name; UnknownJobError otherwise."""
        self._require_known(app_id)
        record = self._store().get(self.backend, app_id)
        if (
            record is None
        ):  # describe found it on the backend only (e.g. a container without a record)
            raise UnknownJobError(
                f"{self.backend} job {app_id!r} has no record in {self._store().location}"
            )
        return record

    @staticmethod
    def _check_replica(app_id: str, counts: dict[str, int], role_name: str, k: int) -> None:
        """A clear error for a role or replica index the job does not have."""
        if role_name not in counts:
            raise ConfigError(
                f"job {app_id} has no role {role_name!r}; its roles: {sorted(counts)}"
            )
        if not 0 <= k < counts[role_name]:
            raise ConfigError(
                f"role {role_name!r} of job {app_id} has replicas 0..{counts[role_name] - 1}, not {k}"
            )

    @staticmethod
    def _matching(lines: Iterable[str], regex: str | None) -> Iterable[str]:
        if not regex:
            return lines
        pattern = re.compile(regex)
        return (line for line in lines if pattern.search(line))

    def _finished(self, app_id: str) -> bool:
        """For log tails: the job has ended (or is no longer known). Asked of this process's
        watcher, so a follower costs the backend nothing beyond the shared refreshes."""
        from nemo_run.run.torchx_backend.poller import GONE, watcher

        seen = watcher(self.backend).poll([app_id])[app_id]
        return seen.done or seen is GONE

    def _record_final(self, app_id: str, state: str, **data: Any) -> JobRecord:
        """Store a terminal state once; a state recorded first (e.g. a cancel) wins. A job that
        ends FAILED after a cancel was requested ended by that cancel, so it reads CANCELLED."""
        if state == "FAILED":
            current = self._store().get(self.backend, app_id)
            if current is not None and current.data.get(CANCEL_REQUESTED):
                state = "CANCELLED"
        return self._store().update(
            self.backend,
            app_id,
            state=state,
            if_state_in=ACTIVE_STATES,
            data={"ended_at": time.time(), **data},
        )

    # -- launch: an intent record first, so no job ever runs without a record ---------------
    def planned_app_id(self, dryrun_info: AppDryRunInfo) -> str:
        """The app id `schedule(dryrun_info)` will return, known before anything starts."""
        return self._app_id_of(dryrun_info.request)  # type: ignore[attr-defined]

    def _put_intent(
        self,
        app_id: str,
        *,
        experiment_id: str | None,
        log_dir: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> JobRecord:
        """Record a job about to start (state SUBMITTED, `launch: pending`) before any process,
        container or remote call can start it; `_launch_confirmed` or `_launch_failed` follow."""
        from nemo_run.core import processes
        from nemo_run.core.store.records import JobRecord

        me = processes.proc_stat(os.getpid())
        launcher = {
            "pid": os.getpid(),
            "start_ticks": me.start_ticks if me else None,
            "boot_id": processes.boot_id(),
        }
        record = JobRecord(
            backend=self.backend,
            app_id=app_id,
            session=self.session_name,  # type: ignore[attr-defined]
            state="SUBMITTED",
            experiment_id=experiment_id,
            log_dir=log_dir,
            data={**(data or {}), LAUNCH: LAUNCH_PENDING, LAUNCHER: launcher},
        )
        self._store().put(record)
        return record

    @staticmethod
    def _launcher_alive(record: JobRecord) -> bool:
        """True while the process that recorded the intent still lives (it may still start it)."""
        from nemo_run.core import processes

        who = record.data.get(LAUNCHER) or {}
        return bool(who) and processes.is_same_process_alive(
            who["pid"], who.get("start_ticks") or -1, who.get("boot_id", "")
        )

    def _launch_confirmed(self, app_id: str, *, state: str = "SUBMITTED", **data: Any) -> JobRecord:
        """The backend accepted the job: keep what identifies it there."""
        return self._store().update(
            self.backend,
            app_id,
            state=state,
            if_state_in=ACTIVE_STATES,
            data={**data, LAUNCH: LAUNCH_DONE},
        )

    def _launch_unconfirmed(self, app_id: str, reason: str) -> JobRecord:
        """The start may or may not have happened: keep the record (UNKNOWN) for describe/list
        to reconcile with the backend, rather than lose a job that might be running."""
        log.warning(
            "launch of %s %s could not be confirmed (%s); describe will reconcile it",
            self.backend,
            app_id,
            reason,
        )
        return self._store().update(
            self.backend,
            app_id,
            state="UNKNOWN",
            if_state_in=ACTIVE_STATES,
            data={LAUNCH: LAUNCH_UNCONFIRMED, "msg": f"launch not confirmed: {reason}"},
        )

    def _launch_failed(self, app_id: str) -> None:
        """Nothing started (the backend refused, or we failed before asking): drop the intent."""
        self._store().delete(self.backend, app_id)

    # -- cancel: stop first, record after ---------------------------------------------------
    def _cancel_existing(self, app_id: str) -> None:
        """A finished job stays as it ended. Otherwise note the request, ask the backend to stop,
        and only once it accepted record CANCELLED; a failed stop raises (BackendError), leaves
        the real state in place, and a later cancel tries again."""
        from torchx.specs import is_terminal

        desc = self.describe(app_id)  # type: ignore[attr-defined]
        if desc is None or is_terminal(desc.state):
            return
        record = self._store().update(self.backend, app_id, data={CANCEL_REQUESTED: time.time()})
        try:
            self._stop(record)
        except BaseException:
            self._store().update(self.backend, app_id, data={CANCEL_REQUESTED: None})
            raise
        record = self._record_final(app_id, "CANCELLED", msg="cancelled")
        self._after_stop(record)

    def _stop(self, record: JobRecord) -> None:
        """Ask the backend to stop the job; raise BackendError unless it accepted."""
        raise NotImplementedError(f"{type(self).__name__} cannot stop jobs")

    def _after_stop(self, record: JobRecord) -> None:
        """Anything to do once the cancel is recorded (e.g. keep the logs of removed containers)."""

    def cancel(self, app_id: str) -> None:
        """Cancel a job; a finished job stays as it ended; an unknown id raises UnknownJobError."""
        self._require_known(app_id)
        self._cancel_existing(app_id)  # type: ignore[attr-defined]
