"""What every nemo_run scheduler shares: `SchedulerMixin` (executor or run options in, an
intent record before any launch, stop-then-record cancels) and the helpers backends use to
answer torchx (state tables, single-role responses, unique job names).

Which scheduler runs which executor is `backends.py`; the run options are `runopts.py`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchx.schedulers.api import AppDryRunInfo, DescribeAppResponse, Scheduler
from torchx.specs import (
    AppDef,
    AppState,
    ReplicaStatus,
    Role,
    RoleStatus,
    is_terminal,
    runopts,
)

from nemo_run.core import processes
from nemo_run.core.execution.base import Executor
from nemo_run.core.store import get_store
from nemo_run.core.store.base import JobStore
from nemo_run.core.store.records import JobRecord
from nemo_run.exceptions import ConfigError, UnknownJobError
from nemo_run.run.torchx_backend.schedulers.backends import backend_named
from nemo_run.run.torchx_backend.schedulers.runopts import (
    DryRun,
    apply_to_roles,
    executor_from_cfg,
    executor_runopts,
)
from nemo_run.run.torchx_backend.schedulers.watcher import GONE, watcher

log = logging.getLogger(__name__)

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


def unique_name(app_name: str, limit: int) -> str:
    """A job name remote platforms accept: a DNS label (lowercase letters, digits, '-') starting
    with a letter, at most `limit` characters, made unique by a random 8-character suffix."""
    base = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", app_name.lower()))
    base = re.sub(r"^[^a-z]+", "", base).strip("-") or "job"
    suffix = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
    return f"{base[: limit - 9].rstrip('-')}-{suffix}"


def map_state(table: Mapping[str, AppState], value: Any, backend: str) -> AppState:
    """A backend state through its table; a value the table lacks reads UNKNOWN, with a warning."""
    key = str(getattr(value, "value", value) if not isinstance(value, str) else value)
    state = table.get(key) or table.get(str(getattr(value, "name", "")))
    if state is None:
        log.warning("unmapped %s state %r; reporting UNKNOWN", backend, key)
        return AppState.UNKNOWN
    return state


@dataclass
class UnansweredResponse(DescribeAppResponse):
    """A describe answered from the store because the backend did not answer: the state is
    the last one recorded, not a confirmed one; `unanswered` says why (readers that take any
    response ask `getattr(resp, "unanswered", None)`)."""

    unanswered: str = ""


def unanswered(resp: DescribeAppResponse, reason: str) -> UnansweredResponse:
    """`resp` marked as answered from the store because the backend did not answer (a timeout,
    5xx, a dropped connection)."""
    fields = {f.name: getattr(resp, f.name) for f in dataclasses.fields(DescribeAppResponse)}
    out = UnansweredResponse(**fields, unanswered=reason)
    if not out.msg or out.msg == "<NONE>":
        out.msg = f"backend not answering: {reason}"
    return out


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


if TYPE_CHECKING:  # to the type checker, the mixin is the torchx scheduler it is mixed into
    _SchedulerBase = Scheduler[Any]
else:
    _SchedulerBase = object


class SchedulerMixin(_SchedulerBase):
    """Mixed in before the torchx base: the dry-run `cfg` is an Executor (nemo_run's own path)
    or torchx run options (torchx's Runner and CLI), from which the executor is built.

    Subclasses set `backend` to their scheduler name (e.g. 'local_persistent') and implement
    `_submit_dryrun(app, executor)`; `schedule` receives a `DryRun` carrying the app and the
    executor as public fields. Where torchx's own scheduler types those as its run options and
    its plain dry-run info, the override says `# type: ignore[override]`.
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
        return executor_runopts(self.executor_type)

    def submit_dryrun(self, app: AppDef, cfg: Executor | Mapping[str, Any] | None) -> DryRun:
        """Build the backend request for `app` without side effects; runs each role's pre_proc.
        Run options (torchx's path, where a component built `app`) become an executor first,
        with the executor's own validation, and its env, retries and launcher apply to `app`."""
        if cfg is None or isinstance(cfg, Mapping):
            executor = executor_from_cfg(self.executor_type, cfg or {})
            apply_to_roles(app, executor)
        else:
            executor = cfg
        self._check_executor(executor)
        dryrun_info = self._submit_dryrun(app, executor)
        for role in app.roles:
            dryrun_info = role.pre_proc(self.backend, dryrun_info)
        return DryRun(dryrun_info, app=app, executor=executor, scheduler=self.backend)

    def submit(
        self, app: AppDef, cfg: Executor | Mapping[str, Any] | None, workspace: str | None = None
    ) -> str:
        """torchx's one-call submit, for an Executor as well as run options."""
        return self.schedule(self.submit_dryrun(app, cfg))

    def _validate(self, app: AppDef, scheduler: str) -> None:
        """torchx's Runner calls this before `submit_dryrun`. Resources are executor fields
        here, so torchx's per-role resource check does not apply; executors validate their own
        settings on creation."""

    # -- torchx workspaces (docker_persistent's torchx base is a workspace scheduler) ---------
    def workspace_opts(self) -> runopts:
        """No workspace options: code reaches a job through the executor's packager."""
        return runopts()

    def build_workspace_and_update_role(self, role: Role, workspace: str, cfg: Any) -> None:
        """Nothing to build: jobs run the executor's image with the packager's code, so a torchx
        workspace image (the CLI passes the current folder by default) would go unused."""

    def _store(self) -> JobStore:
        return get_store()

    def _require_known(self, app_id: str) -> None:
        """Raise a clear error for an app id that neither the store nor the backend knows."""
        if self.describe(app_id) is None:
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
        return self._app_id_of(dryrun_info.request)

    def _app_id_of(self, request: Any) -> str:
        """The app id the backend request will get; each backend knows its own."""
        raise NotImplementedError(f"{type(self).__name__} names no app ids")

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
        me = processes.proc_stat(os.getpid())
        launcher = {
            "pid": os.getpid(),
            "start_ticks": me.start_ticks if me else None,
            "boot_id": processes.boot_id(),
        }
        record = JobRecord(
            backend=self.backend,
            app_id=app_id,
            session=self.session_name,
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
        desc = self.describe(app_id)
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
        self._cancel_existing(app_id)
