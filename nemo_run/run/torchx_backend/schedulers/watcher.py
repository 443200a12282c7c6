"""One watcher per backend and process: everything in this process that waits on jobs of a
backend (the poller's callers, and log followers inside the schedulers) asks it for states
instead of polling the backend itself.

A watcher refreshes all the jobs it tracks with one call (`refresh_states`: one list request per
project or cluster where the backend can list), at most once per interval, and the interval
grows while it waits: 0, 2, 4, 8, 16, then every 30 s for remote APIs (rate-limited clouds),
much faster for local processes and Docker. Waiting on one 20 s cloud job costs a handful of
requests; a hundred jobs cost one list request per interval, not a hundred.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torchx.specs import AppState, is_terminal

from nemo_run.exceptions import ConfigError
from nemo_run.run.torchx_backend.schedulers.backends import backend_named


@dataclass(frozen=True)
class Schedule:
    """Delays between refreshes: `first`, growing by `factor` up to `cap` (seconds)."""

    first: float
    factor: float
    cap: float

    def next(self, delay: float | None) -> float:
        return self.first if delay is None else min(max(delay, self.first) * self.factor, self.cap)


LOCAL = Schedule(first=0.01, factor=1.5, cap=0.5)  # reading a status file costs microseconds
DOCKER = Schedule(first=0.05, factor=1.5, cap=1.0)  # an engine call on this machine
REMOTE = Schedule(first=2.0, factor=2.0, cap=30.0)  # a rate-limited cloud API
SCHEDULES = {"local_persistent": LOCAL, "docker_persistent": DOCKER}
# "FIRST,FACTOR,CAP" seconds for remote backends instead of REMOTE (e.g. a private API server
# that does not mind being asked often, or tests against the emulators)
REMOTE_POLL_ENV = "NEMORUN_REMOTE_POLL"


def schedule_for(scheduler_name: str) -> Schedule:
    """The refresh schedule of a backend: its own, or REMOTE (overridable by environment)."""
    if scheduler_name in SCHEDULES:
        return SCHEDULES[scheduler_name]
    setting = os.environ.get(REMOTE_POLL_ENV, "")
    if not setting:
        return REMOTE
    try:
        first, factor, cap = (float(v) for v in setting.split(","))
    except ValueError:
        raise ConfigError(
            f"{REMOTE_POLL_ENV}={setting!r}: write FIRST,FACTOR,CAP in seconds, e.g. 2,2,30"
        ) from None
    if not (first > 0 and factor >= 1 and cap >= first):
        raise ConfigError(
            f"{REMOTE_POLL_ENV}={setting!r}: need FIRST > 0, FACTOR >= 1, CAP >= FIRST"
        )
    return Schedule(first, factor, cap)


@dataclass(frozen=True)
class Seen:
    """A job's state as last refreshed."""

    state: AppState
    msg: str = ""
    unanswered: str | None = None

    @property
    def done(self) -> bool:
        return is_terminal(self.state)


GONE = Seen(AppState.UNKNOWN, "no such job in the job store")


class Watcher:
    """The jobs of one backend this process waits on, refreshed together."""

    def __init__(self, scheduler: Any, schedule: Schedule) -> None:
        self.scheduler = scheduler
        self.schedule = schedule
        self._lock = threading.RLock()
        self._seen: dict[str, Seen] = {}
        self._due = 0.0  # monotonic time of the next refresh
        self._delay: float | None = None
        self.refreshes = 0  # how many refresh calls this watcher made (for tests and benches)

    def track(self, app_ids: Iterable[str]) -> None:
        """Start watching these jobs; a job not seen before makes the next refresh due now."""
        with self._lock:
            new = [a for a in app_ids if a not in self._seen]
            for app_id in new:
                self._seen[app_id] = Seen(AppState.UNKNOWN, "not refreshed yet")
            if new:
                self._due = 0.0

    def poll(self, app_ids: Iterable[str]) -> dict[str, Seen]:
        """The states of these jobs, refreshing every tracked one first if a refresh is due."""
        wanted = list(app_ids)
        self.track(wanted)
        with self._lock:
            if time.monotonic() >= self._due:
                self._refresh()
            return {a: self._seen[a] for a in wanted}

    def seconds_to_next(self) -> float:
        with self._lock:
            return max(0.0, self._due - time.monotonic())

    def _refresh(self) -> None:
        active = [a for a, seen in self._seen.items() if not seen.done]
        if active:
            self.refreshes += 1
            for app_id, resp in refresh_states(self.scheduler, active).items():
                self._seen[app_id] = _seen_of(resp)
        self._delay = self.schedule.next(self._delay)
        self._due = time.monotonic() + self._delay


def refresh_states(scheduler: Any, app_ids: list[str]) -> dict[str, Any]:
    """Describe responses of many jobs: one backend call where the scheduler can batch
    (`refresh_states`, e.g. one list per project), else a describe each (local, Docker)."""
    batch = getattr(scheduler, "refresh_states", None)
    if batch is not None:
        return batch(app_ids)
    return {app_id: scheduler.describe(app_id) for app_id in app_ids}


def _seen_of(resp: Any) -> Seen:
    if resp is None:
        return GONE
    msg = resp.msg if resp.msg and resp.msg != "<NONE>" else ""
    return Seen(resp.state, msg, getattr(resp, "unanswered", None))


_watchers: dict[tuple[int, str], Watcher] = {}
_watchers_lock = threading.Lock()


def watcher(scheduler_name: str) -> Watcher:
    """This process's watcher of one backend (by torchx scheduler name)."""
    key = (os.getpid(), scheduler_name)
    with _watchers_lock:
        found = _watchers.get(key)
        if found is None:
            backend = backend_named(scheduler_name)
            found = _watchers[key] = Watcher(
                backend.create_scheduler("nemo_run"), schedule_for(backend.scheduler)
            )
        return found
