"""Where experiments live on disk and the record that lets any process reopen one.

`$NEMORUN_HOME/experiments/<title>/<id>/experiment.json` holds the plan (tasks, dependencies,
backends, public executor settings) and, once launched, each task's app handle. Only the
launching process (or its detached driver) writes it, atomically; other processes read it
and ask the job store and backends for live states. A cancel request for a task that has
not launched yet is a marker file `cancel/<task id>` the driver honours.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from nemo_run.config import get_nemorun_home
from nemo_run.exceptions import UnknownExperimentError

EXPERIMENTS_DIR = "experiments"
EXPERIMENT_FILE = "experiment.json"
CANCEL_DIR = "cancel"
FORMAT_VERSION = 1


@dataclass
class TaskEntry:
    """One task of an experiment as recorded on disk."""

    id: str
    backend: str
    roles: list[str]
    dependencies: list[str] = field(default_factory=list)
    executor: dict[str, Any] = field(default_factory=dict)
    handle: str | None = None
    job_dir: str | None = None
    launched_at: float | None = None
    skipped: str | None = None  # why it never ran (a dependency failed, cancelled, ...)
    error: str | None = None  # why launching it failed


@dataclass
class ExperimentRecord:
    id: str
    title: str
    dir: str
    created_at: float = field(default_factory=time.time)
    tasks: list[TaskEntry] = field(default_factory=list)
    driver: dict[str, Any] = field(default_factory=dict)  # pid, start_ticks, boot_id
    launch_done: bool = False

    def task(self, task_id: str) -> TaskEntry:
        for entry in self.tasks:
            if entry.id == task_id:
                return entry
        raise UnknownExperimentError(
            f"experiment {self.id} has no task {task_id!r}; its tasks: {', '.join(t.id for t in self.tasks)}"
        )

    def save(self) -> None:
        """Write atomically (temp file + rename), 0600, so readers never see half a file."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        path = os.path.join(self.dir, EXPERIMENT_FILE)
        tmp = f"{path}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"version": FORMAT_VERSION, **asdict(self)}, fh, indent=1, default=repr)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, folder: str) -> ExperimentRecord:
        path = os.path.join(folder, EXPERIMENT_FILE)
        try:
            with open(path, encoding="utf-8") as fh:
                raw = json.load(fh)
        except FileNotFoundError as e:
            raise UnknownExperimentError(f"no experiment at {folder} (missing {EXPERIMENT_FILE})") from e
        except ValueError as e:
            raise UnknownExperimentError(f"experiment file {path} is unreadable: {e}") from e
        raw.pop("version", None)
        raw["tasks"] = [TaskEntry(**t) for t in raw.get("tasks", [])]
        return cls(**raw)

    # -- cancel requests for tasks not yet launched -------------------------------------
    def request_cancel(self, task_id: str) -> None:
        os.makedirs(os.path.join(self.dir, CANCEL_DIR), mode=0o700, exist_ok=True)
        open(os.path.join(self.dir, CANCEL_DIR, task_id), "a").close()

    def cancel_requested(self, task_id: str) -> bool:
        return os.path.exists(os.path.join(self.dir, CANCEL_DIR, task_id))


def experiments_root(base_dir: str | None = None) -> str:
    return os.path.join(base_dir or get_nemorun_home(), EXPERIMENTS_DIR)


def _records(title: str | None = None, base_dir: str | None = None) -> list[ExperimentRecord]:
    root = experiments_root(base_dir)
    titles = [title] if title else (sorted(os.listdir(root)) if os.path.isdir(root) else [])
    out = []
    for name in titles:
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        for exp_id in os.listdir(folder):
            if os.path.isfile(os.path.join(folder, exp_id, EXPERIMENT_FILE)):
                try:
                    out.append(ExperimentRecord.load(os.path.join(folder, exp_id)))
                except UnknownExperimentError:
                    continue  # a broken record is reported when opened by id, not while listing
    return sorted(out, key=lambda r: r.created_at)


def list_experiments(title: str | None = None, base_dir: str | None = None) -> list[ExperimentRecord]:
    """Experiments oldest first, optionally only one title."""
    return _records(title, base_dir)


def _known(base_dir: str | None) -> str:
    recent = [r.id for r in _records(base_dir=base_dir)][-10:]
    return ", ".join(recent) if recent else "none (nothing launched from this home folder yet)"


def find_by_id(exp_id: str, base_dir: str | None = None) -> ExperimentRecord:
    root = experiments_root(base_dir)
    if os.path.isdir(root) and "/" not in exp_id:
        for title in os.listdir(root):
            folder = os.path.join(root, title, exp_id)
            if os.path.isfile(os.path.join(folder, EXPERIMENT_FILE)):
                return ExperimentRecord.load(folder)
    raise UnknownExperimentError(f"no experiment with id {exp_id!r} in {root}; recent ids: {_known(base_dir)}")


def find_latest(title: str, base_dir: str | None = None) -> ExperimentRecord:
    records = _records(title, base_dir) if "/" not in title else []
    if not records:
        titles = sorted({r.title for r in _records(base_dir=base_dir)})
        raise UnknownExperimentError(
            f"no experiment titled {title!r}; known titles: {', '.join(titles) or 'none'}"
        )
    return records[-1]
