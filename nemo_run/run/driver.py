"""The experiment driver: launches each task once its dependencies SUCCEEDED, skips the rest.

It runs inside the launching process for attached runs, or as a detached process
(`python -m nemo_run.run.driver`, plan pickled on stdin, never on disk) for a detached
experiment whose tasks wait on others.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from torchx.specs import AppState, is_terminal

from nemo_run.core import processes
from nemo_run.run.experiment_files import ExperimentRecord, TaskEntry
from nemo_run.run.job import stored_record
from nemo_run.run.plan import is_external_dependency
from nemo_run.run.torchx_backend.poller import poll_handles, seconds_to_next
from nemo_run.run.torchx_backend.runner import get_runner

log = logging.getLogger(__name__)

MAX_PARALLEL_LAUNCHES = 8
# Backends whose scheduler makes a job wait on others itself (Slurm's `--dependency`): a task
# on one of them launches as soon as its dependencies on the same backend are launched, with
# their handles in `executor.dependencies`, so no driver has to stay alive to start it.
NATIVE_DEPENDENCIES = frozenset({"slurm_tunnel"})
IDLE_STEP_S = 0.5  # how often a waiting driver looks at cancel requests and blocked tasks


def identity_of_this_process() -> dict[str, Any]:
    stat = processes.proc_stat(os.getpid())
    return {
        "pid": os.getpid(),
        "start_ticks": stat.start_ticks if stat else None,
        "boot_id": processes.boot_id(),
    }


def driver_alive(record: ExperimentRecord) -> bool:
    d = record.driver
    return bool(d) and processes.is_same_process_alive(
        d["pid"], d.get("start_ticks") or -1, d.get("boot_id", "")
    )


def internal_dependencies(entry: TaskEntry) -> list[str]:
    return [d for d in entry.dependencies if not is_external_dependency(d)]


def waits_natively(entry: TaskEntry, dep: TaskEntry) -> bool:
    """The backend of `entry` can make it wait on `dep` itself (same backend, one that can)."""
    return entry.backend in NATIVE_DEPENDENCIES and dep.backend == entry.backend


def needs_no_driver(record: ExperimentRecord) -> bool:
    """Every dependency is one the backends wait on themselves: a detached run can launch
    everything now (in dependency order) and leave no process behind."""
    return all(
        not is_external_dependency(d) and waits_natively(entry, record.task(d))
        for entry in record.tasks
        for d in entry.dependencies
    )


class Driver:
    """Moves an experiment's tasks from planned to launched to finished."""

    def __init__(
        self,
        record: ExperimentRecord,
        prepare: Callable[[str], Any],
        runner: Any,
        on_launch: Callable[[TaskEntry], None] | None = None,
        max_parallel: int = MAX_PARALLEL_LAUNCHES,
    ) -> None:
        self.record = record
        self.prepare = prepare  # task id -> AppDryRunInfo
        self.runner = runner
        self.on_launch = on_launch
        self.max_parallel = max(1, max_parallel)
        self.states: dict[str, AppState] = {}  # by task id, and by handle for other experiments'
        self.gone: set[str] = set()  # handles of other experiments' jobs no store knows
        self.launch_errors: dict[str, Exception] = {}  # kept for callers that re-raise them

    def _blocked_reason(self, entry: TaskEntry) -> str | None | bool:
        """A reason it can never run, True when it may launch now, None while it must wait."""
        for dep_id in entry.dependencies:
            if is_external_dependency(dep_id):
                verdict = self._external_verdict(dep_id)
                if verdict is True:
                    continue
                return verdict
            dep = self.record.task(dep_id)
            if dep.skipped or dep.error:
                return f"dependency {dep_id!r} did not run"
            state = self.states.get(dep_id)
            if (
                dep.handle
                and waits_natively(entry, dep)
                and (state is None or not is_terminal(state))
            ):
                continue  # the backend holds it until the dependency succeeded
            if dep.handle is None or state is None or not is_terminal(state):
                return None
            if state != AppState.SUCCEEDED:
                return f"dependency {dep_id!r} ended {state.name}"
        return True

    def _external_verdict(self, handle: str) -> str | None | bool:
        """Like `_blocked_reason` for one job of another experiment, by its app handle."""
        if handle in self.gone:
            return f"dependency {handle} is unknown to the job store"
        state = self.states.get(handle)
        if state is None or not is_terminal(state):
            return None
        return True if state == AppState.SUCCEEDED else f"dependency {handle} ended {state.name}"

    def _poll_external(self) -> bool:
        """Refresh the other experiments' jobs that waiting tasks depend on (through the same
        watchers as our own jobs, so every backend works); returns whether any state changed."""
        handles = {
            dep
            for entry in self.record.tasks
            if not (entry.handle or entry.skipped or entry.error)
            for dep in entry.dependencies
            if is_external_dependency(dep)
            and dep not in self.gone
            and not is_terminal(self.states.get(dep, AppState.UNKNOWN))
        }
        if not handles:
            return False
        changed = False
        for handle, seen in poll_handles(handles).items():
            if (
                seen.state == AppState.UNKNOWN
                and not seen.unanswered
                and not self._has_record(handle)
            ):
                self.gone.add(handle)
                changed = True
                continue
            changed |= seen.state != self.states.get(handle)
            self.states[handle] = seen.state
        return changed

    def _plan(self, entry: TaskEntry) -> Any | None:
        """Dry-run the task and note the handle it will get, before anything starts, so the
        experiment file names every job that may run even if this process dies mid-launch."""
        try:
            info = self.prepare(entry.id)
            entry.handle = self.runner.planned_handle(info)
        except Exception as e:  # recorded on the task; the experiment goes on
            self._failed(entry, e)
            return None
        return info

    def _launch(self, entry: TaskEntry, info: Any) -> None:
        native = [
            dep.handle
            for dep in map(self.record.task, internal_dependencies(entry))
            if dep.handle and waits_natively(entry, dep)
        ]
        if native:  # 0.11.1's way: the handles of what it waits on, for its scheduler
            info.executor.dependencies = native
        try:
            handle = self.runner.schedule(info)
        except Exception as e:
            if entry.handle and not self._has_record(entry.handle):
                entry.handle = None  # nothing started: the scheduler dropped its intent record
            self._failed(entry, e)
            return
        entry.handle = handle
        entry.job_dir = getattr(info.request, "log_dir", None) or getattr(
            info.executor, "job_dir", None
        )
        entry.launched_at = time.time()
        self.states[entry.id] = AppState.SUBMITTED
        if self.on_launch is not None:
            self.on_launch(entry)

    def _failed(self, entry: TaskEntry, error: Exception) -> None:
        log.error("launching task %s failed: %s", entry.id, error)
        entry.error = f"launch failed: {error}"
        self.launch_errors[entry.id] = error

    @staticmethod
    def _has_record(handle: str) -> bool:
        try:
            return stored_record(handle) is not None
        except Exception:  # noqa: BLE001 - an unreadable store: keep the handle, to be safe
            return True

    def step(self) -> tuple[bool, bool]:
        """One pass; returns (anything still pending or running, anything changed)."""
        changed = False
        watched = self._watched()
        if watched:
            seen = poll_handles(e.handle for e in watched if e.handle)
            for entry in watched:
                new = seen[entry.handle].state if entry.handle else AppState.UNKNOWN
                changed |= new != self.states.get(entry.id)
                self.states[entry.id] = new
        changed |= self._poll_external()
        ready = []
        for entry in self.record.tasks:
            if entry.handle or entry.skipped or entry.error:
                continue
            if self.record.cancel_requested(entry.id):
                entry.skipped, changed = "cancelled before launch", True
                continue
            verdict = self._blocked_reason(entry)
            if verdict is True:
                ready.append(entry)
            elif verdict:
                entry.skipped, changed = f"not run: {verdict}", True
        if ready:
            planned = [(entry, self._plan(entry)) for entry in ready]
            planned = [(entry, info) for entry, info in planned if info is not None]
            self.record.save()  # every handle is on disk before its job can start
            with ThreadPoolExecutor(
                max_workers=min(self.max_parallel, max(len(planned), 1))
            ) as pool:
                list(pool.map(lambda pair: self._launch(*pair), planned))
            changed = True
        pending = any(not (e.handle or e.skipped or e.error) for e in self.record.tasks)
        running = any(
            e.handle and not is_terminal(self.states.get(e.id, AppState.UNKNOWN))
            for e in self.record.tasks
        )
        if not pending and not self.record.launch_done:
            self.record.launch_done, changed = True, True
        if changed:
            self.record.save()
        return pending or running, changed

    def launch_all(self) -> None:
        """Launch every task that can be launched now, layer by layer (a detached run whose
        dependencies the backends wait on themselves); stops when a step launches nothing."""
        while any(not (e.handle or e.skipped or e.error) for e in self.record.tasks):
            if not self.step()[1]:
                break

    def _watched(self) -> list[TaskEntry]:
        """Launched tasks whose job has not ended (as far as this driver has seen)."""
        return [
            e
            for e in self.record.tasks
            if e.handle and not is_terminal(self.states.get(e.id, AppState.UNKNOWN))
        ]

    def run(self, timeout: float | None = None) -> bool:
        """Drive until every task ended or was skipped; False if `timeout` ran out first.
        Between steps it sleeps until the jobs' watchers refresh next (the poller decides how
        often a backend is asked), waking at least every `IDLE_STEP_S` for cancel requests."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            busy, changed = self.step()
            if not busy:
                return True
            if deadline is not None and time.monotonic() > deadline:
                return False
            handles = [e.handle for e in self._watched() if e.handle]
            wait = seconds_to_next(handles) if handles else IDLE_STEP_S
            time.sleep(0.005 if changed else min(max(wait, 0.005), IDLE_STEP_S))

    def interrupt(self) -> list[str]:
        """Skip what has not launched and cancel what runs; returns the cancelled task ids."""
        cancelled = []
        for entry in self.record.tasks:
            if not (entry.handle or entry.skipped or entry.error):
                entry.skipped = "not run: experiment interrupted"
            elif entry.handle and not is_terminal(self.states.get(entry.id, AppState.UNKNOWN)):
                self.runner.cancel(entry.handle)
                self.states[entry.id] = AppState.CANCELLED
                cancelled.append(entry.id)
        self.record.launch_done = True
        self.record.save()
        return cancelled


def main() -> int:
    """Detached driver: plan on stdin as pickle {"dir": ..., "apps": {task_id: (AppDef, Executor)}}."""
    plan = pickle.load(sys.stdin.buffer)
    sys.stdin.close()
    record = ExperimentRecord.load(plan["dir"])
    record.driver = identity_of_this_process()
    record.save()
    runner = get_runner()
    apps = plan["apps"]
    Driver(record, lambda task_id: runner.dryrun_for(*apps[task_id]), runner).run()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(main())
