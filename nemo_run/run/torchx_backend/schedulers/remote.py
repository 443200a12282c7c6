"""State rules every remote backend shares (DGX Cloud / Run:ai, Lepton): one place decides
what an answer, a missing answer or a 404 means for a job record.

* An answer maps to a state; a terminal one is recorded once (`_record_final`).
* No answer (timeout, 5xx, 429, dropped connection) keeps the last recorded state and marks
  the describe `unanswered`; it never becomes a terminal state.
* Only a confirmed absence means gone: a GET 404 counts once a lookup by the job's unique name
  also lacks it, and a job missing from a list counts once its GET says 404.
* A launch writes an intent record before anything remote can start the job; one whose
  create could not be confirmed is found later by its unique name, its id adopted; when the
  name lookup answers without it after `NEVER_CREATED_GRACE_S`, it reads FAILED
  ("never created: ...").
* Helper jobs (the data mover) that could not be deleted stay in the record
  (`leftover_helpers`) until a later describe or cancel deletes them.

A backend mixes in `RemoteSchedulerMixin` and fills in the small hooks below (one GET, one
lookup by name, one list, one stop, one helper delete, and how to read an answer).
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchx.schedulers.api import DescribeAppResponse, ListAppResponse
from torchx.specs import AppState, is_terminal

from nemo_run.core.clients.datamover import delete_leftovers
from nemo_run.core.clients.http import UnconfirmedError, is_transient
from nemo_run.core.store.records import REMOTE_ID, REMOTE_STATE
from nemo_run.exceptions import BackendError, ConfigError
from nemo_run.run.torchx_backend.schedulers.api import (
    ACTIVE_STATES,
    LAUNCH,
    LAUNCH_DONE,
    LAUNCH_PENDING,
    TERMINAL_STATES,
    SchedulerMixin,
    unanswered,
)

if TYPE_CHECKING:
    from nemo_run.core.store.records import JobRecord

log = logging.getLogger(__name__)

NEVER_CREATED_GRACE_S = 60.0  # an unconfirmed job not found by name after this reads FAILED
HEARTBEAT = "launch_heartbeat"  # last sign of a launch in progress (intent, helpers, create)
HEARTBEAT_EVERY_S = 10.0
LEFTOVERS = "leftover_helpers"
TIMEOUT = "timeout"  # the executor's timeout: later processes use it for every call
NEVER_CREATED = "never created"
_NOT_LISTED = object()  # `_refresh` without a list call
RemoteId = str | int  # the backend's own id of a job (SkyPilot's are numbers)


@dataclass
class Seen:
    """What one refresh concluded: the record after it, the state and message to show, and
    why the backend did not answer (None when it did)."""

    record: JobRecord
    state: AppState
    msg: str
    unanswered: str | None = None


class RemoteSchedulerMixin(SchedulerMixin):
    """describe / list / cancel / launch for a backend reached over a remote API."""

    label: str  # "DGX Cloud", "Lepton"
    deleted_msg: str  # the message of a job confirmed deleted on the server
    # how long a launch may take to show up by name (None: NEVER_CREATED_GRACE_S)
    never_created_grace_s: float | None = None

    # -- hooks: one backend call each ----------------------------------------------------------
    def _get(self, record: JobRecord) -> Any | None:
        """The job by id, None on a 404; raises BackendError otherwise."""
        raise NotImplementedError

    def _lookup(self, record: JobRecord) -> Any | None:
        """The job by its unique name (the app id), None when the lookup answered without it."""
        raise NotImplementedError

    def _list_key(self, record: JobRecord) -> tuple[Any, ...]:
        """Records with the same key are refreshed by one `_list_live` call."""
        raise NotImplementedError

    def _list_live(self, record: JobRecord) -> list[Any]:
        """The jobs one list call returns for the records sharing `record`'s key."""
        raise NotImplementedError

    def _id_of(self, job: Any) -> RemoteId:
        raise NotImplementedError

    def _name_of(self, job: Any) -> str:
        raise NotImplementedError

    def _observe(self, job: Any) -> tuple[AppState, str, str]:
        """(state, the backend's own state, message) of an answer."""
        raise NotImplementedError

    def _stop_remote(self, record: JobRecord) -> bool:
        """Ask the backend to stop: True once accepted, False on a 404; BackendError otherwise."""
        raise NotImplementedError

    def _delete_helper(self, record: JobRecord, entry: dict[str, Any]) -> None:
        """Delete one leftover helper (found by name when its id is None); no error when it is
        already gone; BackendError when it could not."""
        raise NotImplementedError

    def _response(self, record: JobRecord, state: AppState, msg: str) -> DescribeAppResponse:
        raise NotImplementedError

    # -- describe ----------------------------------------------------------------------------
    def describe(self, app_id: str) -> DescribeAppResponse | None:
        """One GET in the normal case; a lookup only after a 404 or for an unconfirmed launch."""
        record = self._store().get(self.backend, app_id)
        if record is None:
            return None
        if record.state in TERMINAL_STATES:
            if record.data.get(LEFTOVERS):
                record = self._cleanup(record)
            return self._response(record, AppState[record.state], record.data.get("msg", ""))
        seen = self._refresh(record)
        if seen.unanswered is None and seen.record.data.get(LEFTOVERS):
            self._cleanup(seen.record)
        resp = self._response(seen.record, seen.state, seen.msg)
        return unanswered(resp, seen.unanswered) if seen.unanswered else resp

    def _refresh(self, record: JobRecord, listed: Any = _NOT_LISTED) -> Seen:
        """Bring one active record up to date. `listed` is what a successful list call
        returned for it (None: the list lacked it); by default no list call was made."""
        try:
            job_id = record.data.get(REMOTE_ID)
            if not job_id:
                return self._reconcile(record, None if listed is _NOT_LISTED else listed)
            job = listed
            if job is None or job is _NOT_LISTED:
                job = self._get(record)
                if job is None and listed is _NOT_LISTED:  # a 404: does a lookup agree?
                    found = self._lookup(record)
                    job = found if found is not None and self._id_of(found) == job_id else None
                if job is None:
                    return self._gone(record)
            return self._apply(record, job)
        except BackendError as e:
            if not is_transient(e):
                raise
            return self._stale(record, e)

    def _reconcile(self, record: JobRecord, listed: Any | None) -> Seen:
        """A launch not confirmed (or still pending): find the job by its unique name."""
        job = listed if listed is not None else self._lookup(record)
        if job is not None:
            log.info(
                "%s %s found by name; adopting id %s", self.label, record.app_id, self._id_of(job)
            )
            record = self._store().update(
                self.backend,
                record.app_id,
                if_state_in=ACTIVE_STATES,
                data={REMOTE_ID: self._id_of(job), LAUNCH: LAUNCH_DONE},
            )
            return self._apply(record, job)
        if self._launch_may_come(record):
            msg = f"launch not confirmed yet: {self.label} has no job named {record.app_id} so far"
            return Seen(record, AppState[record.state], msg)
        since = time.time() - self._launch_time(record)
        why = record.data.get("msg") or "its launch did not finish"
        msg = (
            f"{NEVER_CREATED}: {self.label} has no job named {record.app_id} {since:.0f} s "
            f"after its launch ({why})"
        )
        record = self._record_final(record.app_id, "FAILED", msg=msg)
        return Seen(record, AppState[record.state], record.data.get("msg", msg))

    def _launch_may_come(self, record: JobRecord) -> bool:
        """True while a job not found by name may still appear: its launcher is still at work,
        or the last sign of the launch is younger than the grace period."""
        alive = getattr(self, "_launcher_alive", None)
        if record.data.get(LAUNCH) == LAUNCH_PENDING and alive is not None and alive(record):
            return True
        grace = self.never_created_grace_s or NEVER_CREATED_GRACE_S
        return time.time() - self._launch_time(record) < grace

    @staticmethod
    def _launch_time(record: JobRecord) -> float:
        return max(record.created_at, float(record.data.get(HEARTBEAT) or 0))

    def _apply(self, record: JobRecord, job: Any) -> Seen:
        """Record what an answer says: a terminal state once, an active one when it changed."""
        state, native, msg = self._observe(job)
        if is_terminal(state):
            record = self._record_final(
                record.app_id, state.name, **{REMOTE_STATE: native, "msg": msg}
            )
        elif native != record.data.get(REMOTE_STATE) or state.name != record.state:
            record = self._store().update(
                self.backend,
                record.app_id,
                state=state.name,
                if_state_in=ACTIVE_STATES,
                data={REMOTE_STATE: native},
            )
        if record.state in TERMINAL_STATES:  # recorded first (e.g. a cancel) wins
            return Seen(record, AppState[record.state], record.data.get("msg") or msg)
        return Seen(record, state, msg)

    def _gone(self, record: JobRecord) -> Seen:
        record = self._record_final(
            record.app_id, "CANCELLED", **{REMOTE_STATE: "Deleted", "msg": self.deleted_msg}
        )
        return Seen(record, AppState[record.state], record.data.get("msg") or self.deleted_msg)

    def _stale(self, record: JobRecord, error: BaseException) -> Seen:
        reason = f"{self.label} not answering: {error}"
        msg = f"{self.label} not answering; showing the last known state {record.state} ({error})"
        return Seen(record, AppState[record.state], msg, reason)

    # -- list and batch refresh ------------------------------------------------------------------
    def list(self) -> list[ListAppResponse]:  # below, `builtins.list` is the type
        """One list call per group of active records; a job missing from it is looked at by
        GET before it counts as gone, and an unanswered list leaves the states as they were."""
        records = self._store().list(self.backend)
        seen = self._refresh_listed([r for r in records if r.state not in TERMINAL_STATES])
        for record in records:
            if record.app_id in seen:
                record.state = seen[record.app_id].state.name
        return [
            ListAppResponse(app_id=r.app_id, state=AppState[r.state], app_handle=r.handle)
            for r in records
        ]

    def refresh_states(self, app_ids: builtins.list[str]) -> dict[str, DescribeAppResponse | None]:
        """Describe many jobs at once for the poller: one list call per group of active jobs
        (e.g. per project), never a GET per job unless one is missing from the list."""
        out: dict[str, DescribeAppResponse | None] = {}
        active = []
        for app_id in app_ids:
            record = self._store().get(self.backend, app_id)
            if record is None or record.state in TERMINAL_STATES:
                out[app_id] = self.describe(app_id)  # served from the store
            else:
                active.append(record)
        for app_id, seen in self._refresh_listed(active).items():
            resp = self._response(seen.record, seen.state, seen.msg)
            out[app_id] = unanswered(resp, seen.unanswered) if seen.unanswered else resp
        return out

    def _refresh_listed(self, records: builtins.list[JobRecord]) -> dict[str, Seen]:
        """Refresh active records with one list call per group of them."""
        groups: dict[tuple[Any, ...], list[JobRecord]] = {}
        for record in records:
            groups.setdefault(self._list_key(record), []).append(record)
        out: dict[str, Seen] = {}
        for members in groups.values():
            try:
                live = self._list_live(members[0])
            except (ConfigError, BackendError) as e:
                log.warning("%s states not refreshed: %s", self.label, e)
                for record in members:
                    out[record.app_id] = self._stale(record, e)
                continue
            by_id = {self._id_of(j): j for j in live}
            by_name = {self._name_of(j): j for j in live}
            for record in members:
                job_id = record.data.get(REMOTE_ID)
                listed = by_id.get(job_id) if job_id else by_name.get(record.app_id)
                try:
                    out[record.app_id] = self._refresh(record, listed)
                except (ConfigError, BackendError) as e:
                    log.warning("%s state of %s not refreshed: %s", self.label, record.app_id, e)
                    out[record.app_id] = self._stale(record, e)
        return out

    # -- cancel ------------------------------------------------------------------------------
    def _stop(self, record: JobRecord) -> None:
        """Stop, or raise BackendError: a 404 counts as stopped only once a lookup by name
        also lacks the job."""
        job_id = record.data.get(REMOTE_ID)
        if not job_id:
            raise BackendError(
                f"{self.label} job {record.app_id} is not confirmed yet (no job of that name was "
                "found): nothing to stop now; cancel again in a moment"
            )
        if self._stop_remote(record):
            return
        try:
            found = self._lookup(record)
        except BackendError as e:
            raise BackendError(
                f"stopping {record.app_id}: {self.label} answered 404 and could not confirm the "
                f"job is gone ({e}); cancel again",
                status=e.status,
            ) from e
        if found is not None and self._id_of(found) == job_id:
            raise BackendError(
                f"stopping {record.app_id}: {self.label} answered 404 but still lists the job; "
                "cancel again",
                status=404,
            )

    def _after_stop(self, record: JobRecord) -> None:
        if record.data.get(LEFTOVERS):
            self._cleanup(record)

    # -- helpers left behind -------------------------------------------------------------------
    def _cleanup(self, record: JobRecord) -> JobRecord:
        """Try again to delete helpers a launch left; drop the ones gone from the record."""
        entries = list(record.data.get(LEFTOVERS) or [])
        try:
            remaining = delete_leftovers(entries, lambda e: self._delete_helper(record, e))
        except ConfigError as e:
            log.warning("helpers of %s not deleted: %s", record.app_id, e)
            return record
        if len(remaining) == len(entries):
            return record
        return self._store().update(
            self.backend, record.app_id, data={LEFTOVERS: remaining or None}
        )

    # -- launch ------------------------------------------------------------------------------
    def _launch_remote(
        self,
        app_id: str,
        *,
        experiment_id: str | None,
        log_dir: str | None,
        data: dict[str, Any],
        ship: Callable[[builtins.list[dict[str, Any]], Callable[[], None]], dict[str, Any]],
        create: Callable[[], RemoteId],
    ) -> str:
        """Intent record, then `ship(leftovers, heartbeat)` (code onto the shared storage;
        returns data to record), then `create()` (returns the backend's id). A definite failure
        drops the intent (or, with helpers left, records FAILED to keep them) and raises; an
        unclear create keeps the record UNKNOWN for describe to reconcile, and returns."""
        self._put_intent(
            app_id,
            experiment_id=experiment_id,
            log_dir=log_dir,
            data={**data, HEARTBEAT: time.time()},
        )
        leftovers: list[dict[str, Any]] = []
        try:
            extra = ship(leftovers, self._heartbeat(app_id))
        except BaseException as e:
            self._abandon(app_id, e, leftovers)
            raise
        self._store().update(
            self.backend,
            app_id,
            data={**extra, HEARTBEAT: time.time(), LEFTOVERS: leftovers or None},
        )
        if leftovers:
            log.warning(
                "%d helper(s) of %s could not be deleted; they stay in its record and later "
                "describe/cancel calls delete them",
                len(leftovers),
                app_id,
            )
        try:
            job_id = create()
        except UnconfirmedError as e:
            self._launch_unconfirmed(app_id, str(e))
            return app_id
        except Exception as e:
            self._abandon(app_id, e, leftovers)
            raise
        except BaseException as e:  # interrupted during the create: it may have gone through
            self._launch_unconfirmed(app_id, f"interrupted ({type(e).__name__})")
            raise
        confirmed: dict[str, Any] = {REMOTE_ID: job_id}
        record = self._launch_confirmed(app_id, **confirmed)
        if record.state in TERMINAL_STATES and str(record.data.get("msg", "")).startswith(
            NEVER_CREATED
        ):
            # another process gave up on it while the create was in flight: it exists after all
            self._store().update(
                self.backend,
                app_id,
                state="SUBMITTED",
                data={REMOTE_ID: job_id, LAUNCH: LAUNCH_DONE, "msg": None, "ended_at": None},
            )
        return app_id

    def _abandon(
        self, app_id: str, error: BaseException, leftovers: builtins.list[dict[str, Any]]
    ) -> None:
        """Nothing was created: drop the intent, unless helpers are left to delete later."""
        if not leftovers:
            self._launch_failed(app_id)
            return
        self._record_final(
            app_id, "FAILED", msg=f"launch failed: {error}", **{LEFTOVERS: leftovers}
        )
        log.warning(
            "launch of %s failed with %d helper(s) left; kept in its record", app_id, len(leftovers)
        )

    def _heartbeat(self, app_id: str) -> Callable[[], None]:
        """A callback for long launch steps: notes progress at most every HEARTBEAT_EVERY_S."""
        last = [time.monotonic()]

        def beat() -> None:
            if time.monotonic() - last[0] >= HEARTBEAT_EVERY_S:
                last[0] = time.monotonic()
                self._store().update(self.backend, app_id, data={HEARTBEAT: time.time()})

        return beat
