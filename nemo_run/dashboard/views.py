"""What the pages show, as plain data: read from the experiment index and the job store only,
never from a backend (live states reach the store through the shared poller, see
`server.Refresher`), so a page costs the same whatever the backends are doing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from nemo_run.core.redact import redact, redact_text
from nemo_run.core.states import FINAL_JOB_STATES, State
from nemo_run.core.store import JobRecord, get_store
from nemo_run.dashboard.index import ExperimentIndex, IndexedExperiment
from nemo_run.exceptions import ConfigError, UnknownExperimentError, UnknownJobError
from nemo_run.run.driver import driver_alive
from nemo_run.run.experiment_files import CANCEL_DIR, ExperimentRecord, TaskEntry
from nemo_run.run.job import parse_handle
from nemo_run.run.torchx_backend.schedulers.backends import backend_named

PAGE_SIZE = 50
TASK_STATES = tuple(s.value for s in State)
# data keys some backend keeps that show how the job was launched (script, spec, command)
LAUNCH_KEYS = ("script", "sbatch", "dryrun", "spec", "body", "workload", "containers", "roles")
LAUNCH_FILE_SUFFIXES = (".sbatch", ".sh", ".yaml", ".yml")
LAUNCH_FILE_MAX = 64 * 1024
INTEREST_S = 60.0  # a job shown on a page is polled this long after it was last shown


@dataclass
class TaskRow:
    """One task as the experiment page shows it."""

    id: str
    state: str
    backend: str
    handle: str | None
    dependencies: list[str]
    launched_at: float | None
    ended_at: float | None = None
    exit_code: int | None = None
    reason: str | None = None

    @property
    def duration(self) -> float | None:
        if self.launched_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else time.time()
        return max(0.0, end - self.launched_at)


@dataclass
class ExperimentRow:
    experiment: IndexedExperiment
    counts: dict[str, int]


@dataclass
class ListPage:
    rows: list[ExperimentRow]
    total: int
    page: int
    pages: int
    filters: dict[str, str] = field(default_factory=dict)


class Interest:
    """Handles of unfinished jobs some page showed lately: the refresher polls only these."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}

    def note(self, handles: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            self._seen.update(dict.fromkeys(handles, now))

    def current(self) -> list[str]:
        cutoff = time.monotonic() - INTEREST_S
        with self._lock:
            self._seen = {h: t for h, t in self._seen.items() if t >= cutoff}
            return list(self._seen)


def _records_of(entries: list[TaskEntry], exp_id: str) -> dict[str, JobRecord]:
    """The store's record of each launched task, by handle: one indexed query per experiment,
    a lookup per job the query missed (a record without the experiment id)."""
    store = get_store()
    by_key = {(r.backend, r.app_id): r for r in store.list(experiment_id=exp_id)}
    out: dict[str, JobRecord] = {}
    for entry in entries:
        if not entry.handle:
            continue
        backend, _, app_id = entry.handle.partition("://")
        app_id = app_id.rsplit("/", 1)[-1]
        found = by_key.get((backend, app_id)) or store.get(backend, app_id)
        if found is not None:
            out[entry.handle] = found
    return out


def task_row(
    entry: TaskEntry, record: JobRecord | None, folder: str, launcher_gone: bool
) -> TaskRow:
    """A task's state from its job record, or (not launched) from the experiment file."""
    row = TaskRow(
        entry.id,
        "WAITING",
        entry.backend,
        entry.handle,
        list(entry.dependencies),
        entry.launched_at,
    )
    if entry.error:
        row.state, row.reason = "FAILED", entry.error
    elif entry.skipped:
        cancelled = entry.skipped == "cancelled before launch"
        row.state, row.reason = ("CANCELLED" if cancelled else "SKIPPED"), entry.skipped
    elif entry.handle and record is not None:
        row.state = record.state
        row.ended_at = record.data.get("ended_at")
        row.exit_code = record.data.get("exit_code")
        msg = record.data.get("msg")
        row.reason = msg if msg and msg != "<NONE>" else None
        row.launched_at = row.launched_at or record.created_at
    elif entry.handle:
        row.state, row.reason = (
            ("SKIPPED", "never started") if launcher_gone else ("WAITING", "launching")
        )
    elif os.path.exists(os.path.join(folder, CANCEL_DIR, entry.id)):
        row.state, row.reason = "CANCELLED", "cancelled before launch"
    elif launcher_gone:
        row.state, row.reason = "SKIPPED", "not run: its launcher exited before starting it"
    elif entry.dependencies:
        row.reason = "waiting for " + ", ".join(entry.dependencies)
    return row


class Views:
    """The data of the three pages, for one home folder."""

    def __init__(self, index: ExperimentIndex, interest: Interest) -> None:
        self.index = index
        self.interest = interest

    def _unfinished(self, rows: list[TaskRow]) -> None:
        self.interest.note([r.handle for r in rows if r.handle and r.state not in FINAL_JOB_STATES])

    # -- the experiment list ------------------------------------------------------------
    def experiments(
        self, title: str = "", backend: str = "", state: str = "", page: int = 1
    ) -> ListPage:
        """A page of experiments, newest first, with task counts by state."""
        scheduler = backend_named(backend).scheduler if backend else None
        wanted = _state_filter(state)
        ids = sorted(self._with_state(wanted)) if wanted else None
        page = max(1, page)
        found, total = self.index.page(
            title=title or None,
            backend=scheduler,
            ids=ids,
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
        )
        tasks = self.index.tasks_of([e.id for e in found])
        rows = []
        for exp in found:
            entries = tasks.get(exp.id, [])
            records = _records_of(entries, exp.id)
            task_rows = [task_row(e, records.get(e.handle or ""), exp.dir, False) for e in entries]
            self._unfinished(task_rows)
            rows.append(ExperimentRow(exp, dict(Counter(r.state for r in task_rows))))
        pages = max(1, -(-total // PAGE_SIZE))
        filters = {"title": title, "backend": backend, "state": wanted or ""}
        return ListPage(rows, total, page, pages, filters)

    def _with_state(self, state: str) -> set[str]:
        """Experiments with at least one task in this state (store jobs + unlaunched tasks)."""
        out: set[str] = set()
        if state not in ("WAITING", "SKIPPED"):
            jobs = [
                (r.backend, r.app_id) for r in get_store().list(state=state, include_data=False)
            ]
            out |= self.index.experiment_of_jobs(jobs)
        for exp_id, entry in self.index.unlaunched_entries():
            if task_row(entry, None, "", False).state == state:
                out.add(exp_id)
        return out

    # -- one experiment -----------------------------------------------------------------
    def experiment(self, exp_id: str) -> tuple[ExperimentRecord, list[TaskRow]]:
        """The record (read from its folder: one file) and each task's row."""
        indexed = self.index.get(exp_id)
        if indexed is None:
            raise UnknownExperimentError(f"no experiment {exp_id!r} under {self.index.root}")
        record = ExperimentRecord.load(indexed.dir)
        launcher_gone = not record.launch_done and not driver_alive(record)
        records = _records_of(record.tasks, record.id)
        rows = [
            task_row(e, records.get(e.handle or ""), record.dir, launcher_gone)
            for e in record.tasks
        ]
        self._unfinished(rows)
        return record, rows

    # -- one job ------------------------------------------------------------------------
    def job(self, handle: str) -> dict[str, Any]:
        """The job's record (masked), its launch text, its replicas and its experiment."""
        scheduler, _, app_id = parse_handle(handle)
        record = get_store().get(scheduler, app_id)
        if record is None:
            raise UnknownJobError(f"no record of {handle} in the job store {get_store().location}")
        if record.state not in FINAL_JOB_STATES:
            self.interest.note([handle])
        owner = self.index.experiment_of(scheduler, app_id)
        shown = redact(dataclasses.asdict(record))  # the store masked it; mask again on the way out
        return {
            "handle": handle,
            "record": record,
            "record_json": json.dumps(shown, indent=1, sort_keys=True, default=str),
            "launch": launch_texts(record),
            "replicas": replicas_of(record),
            "experiment": owner,
        }


def _state_filter(state: str) -> str | None:
    if not state:
        return None
    wanted = state.strip().upper()
    if wanted not in TASK_STATES:
        raise ConfigError(f"state {state!r} is not a state; states: {', '.join(TASK_STATES)}")
    return wanted


def replicas_of(record: JobRecord) -> list[str]:
    """`role:k` of every replica the record names (roles with their replica counts)."""
    roles = record.data.get("roles")
    out: list[str] = []
    if isinstance(roles, list):
        for role in roles:
            if isinstance(role, dict) and isinstance(role.get("name"), str):
                count = role.get("num_replicas") or 1
                out += [f"{role['name']}:{k}" for k in range(int(count))]
    return out


def _command_of(role: Any) -> str:
    """A role as the shell line it runs (`# role: bash -c ...`)."""
    if not isinstance(role, dict):
        return json.dumps(redact(role), default=str)
    argv = [str(role.get("entrypoint") or "")] + [str(a) for a in role.get("args") or []]
    replicas = role.get("num_replicas") or 1
    return f"# {role.get('name', '')} (x{replicas})\n" + shlex.join(redact(argv))  # type: ignore[arg-type]


def launch_texts(record: JobRecord) -> list[tuple[str, str]]:
    """(what, text) of everything kept that shows how the job was launched: the dry-run
    pieces in the record's data (sbatch script, workload spec, containers, commands) and
    script/spec files in its job folder; masked."""
    out: list[tuple[str, str]] = []
    for key in LAUNCH_KEYS:
        value = record.data.get(key)
        if value in (None, "", [], {}):
            continue
        if key == "roles" and isinstance(value, list):
            text = "\n".join(_command_of(role) for role in value)
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(redact(value), indent=1, default=str)
        out.append((key, redact_text(text)))
    folder = record.log_dir
    if folder and os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.endswith(LAUNCH_FILE_SUFFIXES) and os.path.isfile(path):
                if os.path.getsize(path) <= LAUNCH_FILE_MAX:
                    with open(path, encoding="utf-8", errors="replace") as fh:
                        out.append((name, redact_text(fh.read())))
    return out
