"""A small SQLite cache of the experiment folders, so a page of the experiment list is one
indexed query instead of reading every `experiment.json` under the home.

The cache (`$NEMORUN_HOME/dashboard/index.db`) is only ever derived from the folders: it can be
deleted at any time and is rebuilt on the next start. It is refreshed incrementally: a title
folder is listed again only when its mtime changed (an experiment was created or removed in
it), and an experiment file is re-read only while its experiment is still launching (its file
mtime changed). Finished experiments cost nothing per refresh, so 100,000 jobs list as fast
as ten.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nemo_run.exceptions import UnknownExperimentError
from nemo_run.run.experiment_files import (
    EXPERIMENT_FILE,
    ExperimentRecord,
    TaskEntry,
    experiments_root,
)
from nemo_run.run.legacy_experiments import is_legacy_folder

log = logging.getLogger(__name__)

INDEX_DIR = "dashboard"
INDEX_FILE = "index.db"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS titles (name TEXT PRIMARY KEY, mtime REAL NOT NULL);
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, dir TEXT NOT NULL, created_at REAL NOT NULL,
    mtime REAL NOT NULL, settled INTEGER NOT NULL, launch_done INTEGER NOT NULL,
    written_by TEXT, n_tasks INTEGER NOT NULL, backends TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS experiments_created ON experiments (created_at);
CREATE TABLE IF NOT EXISTS tasks (
    exp_id TEXT NOT NULL, task_id TEXT NOT NULL, pos INTEGER NOT NULL, backend TEXT NOT NULL,
    handle TEXT, app_id TEXT, entry TEXT NOT NULL, PRIMARY KEY (exp_id, task_id)
);
CREATE INDEX IF NOT EXISTS tasks_job ON tasks (backend, app_id);
"""


@dataclass
class IndexedExperiment:
    """One row of the experiment list, as the cache holds it."""

    id: str
    title: str
    dir: str
    created_at: float
    launch_done: bool
    written_by: str | None
    n_tasks: int
    backends: list[str]


def index_path(home: str) -> str:
    return os.path.join(home, INDEX_DIR, INDEX_FILE)


def _app_id(handle: str | None) -> str | None:
    """The app id of `scheduler://session/app_id` (no torchx import needed for a split)."""
    return handle.rsplit("/", 1)[-1] if handle and "://" in handle else None


def _settled(record: ExperimentRecord) -> bool:
    """Whether its file can no longer change: launching is over (0.11.1's folders never do)."""
    return bool(record.written_by) or record.launch_done


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


class ExperimentIndex:
    """The cache of one home folder; thread-safe (one connection, one lock)."""

    def __init__(self, home: str) -> None:
        self.home = os.path.abspath(home)
        self.root = experiments_root(self.home)
        path = index_path(self.home)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")  # readers never wait for a refresh
        self._db.execute("PRAGMA synchronous = OFF")  # a cache: a lost write is re-derived
        self._db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- refresh ------------------------------------------------------------------------
    def refresh(self) -> int:
        """Bring the cache up to date with the folders; returns how many files were read."""
        read = 0
        titles = self._title_mtimes()
        with self._tx() as db:
            known = dict(db.execute("SELECT name, mtime FROM titles").fetchall())
            for gone in set(known) - set(titles):
                self._drop_title(db, gone)
            for title, mtime in titles.items():
                if known.get(title) != mtime:
                    read += self._rescan_title(db, title)
                    db.execute("REPLACE INTO titles VALUES (?, ?)", (title, mtime))
            read += self._reread_unsettled(db)
        return read

    def _title_mtimes(self) -> dict[str, float]:
        out: dict[str, float] = {}
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root):
                if entry.is_dir(follow_symlinks=False):
                    out[entry.name] = entry.stat().st_mtime
        return out

    def _drop_title(self, db: sqlite3.Connection, title: str) -> None:
        prefix = os.path.join(self.root, title) + os.sep
        ids = [
            r[0] for r in db.execute("SELECT id FROM experiments WHERE dir LIKE ?", (prefix + "%",))
        ]
        for exp_id in ids:
            self._drop(db, exp_id)
        db.execute("DELETE FROM titles WHERE name = ?", (title,))

    def _drop(self, db: sqlite3.Connection, exp_id: str) -> None:
        db.execute("DELETE FROM experiments WHERE id = ?", (exp_id,))
        db.execute("DELETE FROM tasks WHERE exp_id = ?", (exp_id,))

    def _rescan_title(self, db: sqlite3.Connection, title: str) -> int:
        """Add the new folders of a title, drop the removed ones."""
        folder = os.path.join(self.root, title)
        try:
            present = {e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)}
        except OSError:
            present = set()
        prefix = folder + os.sep
        rows = db.execute(
            "SELECT id, dir FROM experiments WHERE dir LIKE ?", (prefix + "%",)
        ).fetchall()
        indexed = {os.path.basename(d): i for i, d in rows}
        for name in set(indexed) - present:
            self._drop(db, indexed[name])
        read = 0
        for name in sorted(present - set(indexed)):
            read += self._load(db, os.path.join(folder, name))
        return read

    def _reread_unsettled(self, db: sqlite3.Connection) -> int:
        read = 0
        rows = db.execute("SELECT id, dir, mtime FROM experiments WHERE settled = 0").fetchall()
        for exp_id, folder, mtime in rows:
            now = _mtime(os.path.join(folder, EXPERIMENT_FILE))
            if now is None and not os.path.isdir(folder):
                self._drop(db, exp_id)
            elif now != mtime:
                read += self._load(db, folder)
        return read

    def _load(self, db: sqlite3.Connection, folder: str) -> int:
        """(Re)index one experiment folder; an unreadable one is left out, with a warning."""
        path = os.path.join(folder, EXPERIMENT_FILE)
        if not os.path.isfile(path) and not is_legacy_folder(folder):
            return 0
        try:
            record = ExperimentRecord.load(folder)
        except UnknownExperimentError as e:
            log.warning("dashboard: skipping %s", e)
            return 1
        self._drop(db, record.id)
        backends = sorted({t.backend for t in record.tasks if t.backend})
        db.execute(
            "INSERT OR REPLACE INTO experiments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.title,
                record.dir,
                record.created_at,
                _mtime(path) or 0.0,
                int(_settled(record)),
                int(record.launch_done),
                record.written_by,
                len(record.tasks),
                "," + ",".join(backends) + ",",
            ),
        )
        db.executemany(
            "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    record.id,
                    t.id,
                    pos,
                    t.backend,
                    t.handle,
                    _app_id(t.handle),
                    json.dumps(_entry_fields(t), default=str),
                )
                for pos, t in enumerate(record.tasks)
            ],
        )
        return 1

    # -- queries ------------------------------------------------------------------------
    def page(
        self,
        *,
        title: str | None = None,
        backend: str | None = None,
        ids: list[str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[IndexedExperiment], int]:
        """A page of experiments newest first, and how many match in all."""
        where: list[str] = ["1"]
        args: list[str] = []
        if title:
            where.append("title LIKE ? ESCAPE '\\'")
            args.append(
                "%" + title.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            )
        if backend:
            where.append("backends LIKE ?")
            args.append(f"%,{backend},%")
        if ids is not None:
            where.append("id IN (SELECT value FROM json_each(?))")
            args.append(json.dumps(ids))
        clause = " AND ".join(where)
        with self._lock:
            total = self._db.execute(f"SELECT count(*) FROM experiments WHERE {clause}", args)
            count = total.fetchone()[0]
            rows = self._db.execute(
                "SELECT id, title, dir, created_at, launch_done, written_by, n_tasks, backends "
                f"FROM experiments WHERE {clause} ORDER BY created_at DESC, id DESC "
                "LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [_indexed(r) for r in rows], count

    def tasks_of(self, exp_ids: list[str]) -> dict[str, list[TaskEntry]]:
        """Each experiment's task entries, in their order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT exp_id, entry FROM tasks WHERE exp_id IN (SELECT value FROM json_each(?)) "
                "ORDER BY exp_id, pos",
                (json.dumps(exp_ids),),
            ).fetchall()
        out: dict[str, list[TaskEntry]] = {i: [] for i in exp_ids}
        for exp_id, entry in rows:
            out[exp_id].append(TaskEntry(**json.loads(entry)))
        return out

    def unlaunched_entries(self) -> list[tuple[str, TaskEntry]]:
        """(experiment id, entry) of every task without a handle: their state comes from the
        experiment file, not the store."""
        with self._lock:
            rows = self._db.execute(
                "SELECT exp_id, entry FROM tasks WHERE handle IS NULL"
            ).fetchall()
        return [(exp_id, TaskEntry(**json.loads(entry))) for exp_id, entry in rows]

    def experiment_of_jobs(self, jobs: list[tuple[str, str]]) -> set[str]:
        """The experiments owning these (backend, app id) jobs."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT t.exp_id FROM json_each(?) j JOIN tasks t "
                "ON t.backend = json_extract(j.value, '$[0]') "
                "AND t.app_id = json_extract(j.value, '$[1]')",
                (json.dumps(jobs),),
            ).fetchall()
        return {r[0] for r in rows}

    def get(self, exp_id: str) -> IndexedExperiment | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, title, dir, created_at, launch_done, written_by, n_tasks, backends "
                "FROM experiments WHERE id = ?",
                (exp_id,),
            ).fetchone()
        return _indexed(row) if row else None

    def experiment_of(self, backend: str, app_id: str) -> tuple[str, str] | None:
        """(experiment id, task id) of a job, when an indexed experiment launched it."""
        with self._lock:
            row = self._db.execute(
                "SELECT exp_id, task_id FROM tasks WHERE backend = ? AND app_id = ?",
                (backend, app_id),
            ).fetchone()
        return (row[0], row[1]) if row else None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _entry_fields(entry: TaskEntry) -> dict[str, Any]:
    """The fields of a task entry the pages show (the executor settings are left out: they
    are read from the file when one experiment is shown)."""
    return {
        "id": entry.id,
        "backend": entry.backend,
        "roles": entry.roles,
        "dependencies": entry.dependencies,
        "handle": entry.handle,
        "job_dir": entry.job_dir,
        "launched_at": entry.launched_at,
        "skipped": entry.skipped,
        "error": entry.error,
    }


def _indexed(row: tuple[Any, ...]) -> IndexedExperiment:
    exp_id, title, folder, created, done, written_by, n_tasks, backends = row
    return IndexedExperiment(
        exp_id,
        title,
        folder,
        created,
        bool(done),
        written_by,
        n_tasks,
        [b for b in backends.split(",") if b],
    )
