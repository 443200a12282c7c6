"""SQLite job store: WAL on local disks, a rollback journal on network filesystems.

One connection per (thread, process, file); every write is one `BEGIN IMMEDIATE` transaction,
so concurrent processes serialise on SQLite's lock and no update is lost or torn.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from nemo_run.core.diskerrors import raise_if_disk_trouble
from nemo_run.core.store.base import JobStore
from nemo_run.core.store.fs import filesystem_type, is_network_filesystem
from nemo_run.core.store.legacy import import_legacy_records
from nemo_run.core.store.migrations import common_record_keys
from nemo_run.core.store.records import JobRecord, mask_secrets
from nemo_run.exceptions import StoreError, UnknownJobError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 30_000
_COLUMNS = (
    "backend",
    "app_id",
    "session",
    "state",
    "experiment_id",
    "log_dir",
    "created_at",
    "updated_at",
    "data",
)
_UPDATABLE = frozenset(_COLUMNS) - {"backend", "app_id", "data"}
_MIGRATIONS: dict[int, str | Callable[[sqlite3.Connection], None]] = {
    1: """
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS jobs (
        backend TEXT NOT NULL,
        app_id TEXT NOT NULL,
        session TEXT NOT NULL,
        state TEXT NOT NULL,
        experiment_id TEXT,
        log_dir TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (backend, app_id)
    );
    CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
    CREATE INDEX IF NOT EXISTS jobs_backend_created ON jobs (backend, created_at);
    CREATE INDEX IF NOT EXISTS jobs_app_id ON jobs (app_id);
    CREATE INDEX IF NOT EXISTS jobs_experiment ON jobs (experiment_id) WHERE experiment_id IS NOT NULL;
    """,
    2: common_record_keys,
}

_local = threading.local()


_unreadable_rows: set[tuple[str, str]] = set()  # warned about once per process


def _row_data(text: Any, backend: str, app_id: str) -> dict[str, Any]:
    """A row's `data`; one that is not a JSON object (a hand edit, another tool) reads as empty,
    with a warning naming the job, so one bad row never hides or breaks the others."""
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            return data
        problem = f"a JSON {type(data).__name__}, not an object"
    except (TypeError, ValueError) as e:
        problem = f"not valid JSON ({e})"
    if (backend, app_id) not in _unreadable_rows:
        _unreadable_rows.add((backend, app_id))
        log.warning(
            "job store row %s %s: its data is %s; reading it as empty", backend, app_id, problem
        )
    return {}


def _row_to_record(row: tuple[Any, ...]) -> JobRecord:
    """Columns in `_COLUMNS` order; `data` (last) is JSON, or absent when not selected."""
    backend, app_id, session, state, experiment_id, log_dir, created_at, updated_at = row[:8]
    return JobRecord(
        backend,
        app_id,
        session,
        state,
        experiment_id,
        log_dir,
        created_at,
        updated_at,
        _row_data(row[8], backend, app_id) if len(row) == len(_COLUMNS) else {},
    )


def _record_to_row(record: JobRecord) -> tuple[Any, ...]:
    return tuple(
        json.dumps(mask_secrets(record.data), sort_keys=True) if c == "data" else getattr(record, c)
        for c in _COLUMNS
    )


class SqliteJobStore(JobStore):
    """The default store, a single SQLite file (`jobs.db`) in the home folder."""

    def __init__(self, path: str, *, import_legacy_from: str | None = None) -> None:
        self.location = os.path.abspath(path)
        self._legacy_home = import_legacy_from

    # -- connection -------------------------------------------------------------------------
    def _recovery_hint(self) -> str:
        p = self.location
        return (
            f"move it aside to start a fresh store (mv {p} {p}.broken), and try "
            f"`sqlite3 {p}.broken .recover | sqlite3 {p}` to salvage its records"
        )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as e:
            raise_if_disk_trouble(e, self.location, "writing the job store")
            if "locked" in str(e) or "busy" in str(e):
                raise StoreError(
                    f"job store {self.location} stayed locked for {BUSY_TIMEOUT_MS // 1000} s "
                    "by another process; retry, or look for a hung nemo_run process"
                ) from e
            raise StoreError(
                f"job store {self.location} cannot be used: {e}; {self._recovery_hint()}"
            ) from e
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"job store {self.location} is corrupt ({e}); {self._recovery_hint()}"
            ) from e

    def _conn(self) -> sqlite3.Connection:
        cache: dict[tuple[str, int], sqlite3.Connection] = getattr(_local, "conns", None) or {}
        _local.conns = cache
        key = (self.location, os.getpid())
        conn = cache.get(key)
        if conn is None:
            conn = self._open()
            cache[key] = conn
        return conn

    def _open(self) -> sqlite3.Connection:
        folder = os.path.dirname(self.location)
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            if not os.path.exists(self.location):
                os.close(os.open(self.location, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as e:
            raise_if_disk_trouble(e, self.location, "creating the job store")
            raise StoreError(f"cannot create the job store {self.location}: {e}") from e
        with self._errors():
            conn = sqlite3.connect(
                self.location,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            wal = self._set_journal_mode(conn)
            conn.execute(f"PRAGMA synchronous = {self._sync_level(wal)}")
            self._migrate(conn)
        if self._legacy_home:
            import_legacy_records(self, conn, self._legacy_home)
        return conn

    @staticmethod
    def _sync_level(wal: bool) -> str:
        """NORMAL with WAL: a commit is in the WAL (page cache) before we return, so it survives
        kill -9 of any process; only an OS crash or power cut can drop the last commits, and the
        file stays consistent. `NEMORUN_STORE_SYNC=full` adds an fsync per commit for that case.
        A rollback journal (network filesystems) always uses FULL."""
        wanted = os.environ.get("NEMORUN_STORE_SYNC", "").upper()
        if wanted in ("FULL", "NORMAL", "EXTRA"):
            return wanted
        return "NORMAL" if wal else "FULL"

    def _set_journal_mode(self, conn: sqlite3.Connection) -> bool:
        wanted = os.environ.get("NEMORUN_STORE_JOURNAL", "").lower()
        if not wanted:
            wanted = "delete" if is_network_filesystem(self.location) else "wal"
            if wanted == "delete":
                log.warning(
                    "job store %s is on a network filesystem (%s): using a rollback journal; "
                    "concurrent writers on several hosts rely on the server's POSIX locks",
                    self.location,
                    filesystem_type(self.location),
                )
        # Changing the mode while another connection writes (e.g. another process switching a
        # new file to WAL) fails with "locked" at once, bypassing the busy handler: wait here.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                mode = conn.execute(f"PRAGMA journal_mode = {wanted}").fetchone()[0]
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        if mode.lower() != wanted:
            log.debug("journal_mode %s requested, %s in use for %s", wanted, mode, self.location)
        return mode.lower() == "wal"

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"job store {self.location} has schema {version}, newer than this nemo_run "
                f"understands ({SCHEMA_VERSION}); upgrade nemo_run"
            )
        with self.transaction(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for step in range(version + 1, SCHEMA_VERSION + 1):
                migration = _MIGRATIONS[step]
                if callable(migration):
                    migration(conn)
                    continue
                for statement in migration.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def transaction(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from its start (no upgrade deadlock)."""
        conn = conn or self._conn()
        with self._errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- meta (used by the legacy import) ---------------------------------------------------
    def get_meta(self, conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # -- JobStore ---------------------------------------------------------------------------
    def put(self, record: JobRecord) -> None:
        self.put_many([record])

    def put_many(self, records: Iterable[JobRecord], *, replace: bool = True) -> int:
        rows = [_record_to_row(r) for r in records]
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        sql = f"{verb} INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
        with self.transaction() as conn:
            before = conn.total_changes
            conn.executemany(sql, rows)
            return conn.total_changes - before

    def get(self, backend: str, app_id: str) -> JobRecord | None:
        with self._errors():
            row = (
                self._conn()
                .execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE backend = ? AND app_id = ?",
                    (backend, app_id),
                )
                .fetchone()
            )
        return _row_to_record(row) if row else None

    def update(
        self,
        backend: str,
        app_id: str,
        *,
        data: dict[str, Any] | None = None,
        if_state_in: Iterable[str] | None = None,
        **fields: Any,
    ) -> JobRecord:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise TypeError(f"cannot update {sorted(unknown)}; updatable: {sorted(_UPDATABLE)}")
        with self.transaction() as conn:
            row = conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE backend = ? AND app_id = ?",
                (backend, app_id),
            ).fetchone()
            if row is None:
                raise UnknownJobError(
                    f"no {backend} job {app_id!r} in the job store {self.location}"
                )
            record = _row_to_record(row)
            if if_state_in is not None and record.state not in set(if_state_in):
                return record  # someone else already moved it on (e.g. cancelled): leave it
            for name, value in fields.items():
                setattr(record, name, value)
            if data:
                record.data.update(data)
            record.updated_at = fields.get("updated_at", time.time())
            conn.execute(
                f"REPLACE INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                _record_to_row(record),
            )
        return record

    def list(
        self,
        backend: str | None = None,
        *,
        state: str | None = None,
        experiment_id: str | None = None,
        limit: int | None = None,
        include_data: bool = True,
    ) -> list[JobRecord]:
        where: list[str] = []
        args: list[str | int] = []
        for column, value in (
            ("backend", backend),
            ("state", state),
            ("experiment_id", experiment_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        columns = ", ".join(_COLUMNS if include_data else _COLUMNS[:-1])
        sql = f"SELECT {columns} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._errors():
            rows = self._conn().execute(sql, args).fetchall()
        return [_row_to_record(r) for r in rows]

    def find(self, app_id: str) -> builtins.list[JobRecord]:  # `list` is a method here
        with self._errors():
            rows = (
                self._conn()
                .execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE app_id = ?", (app_id,))
                .fetchall()
            )
        return [_row_to_record(r) for r in rows]

    def delete(self, backend: str, app_id: str) -> bool:
        with self.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM jobs WHERE backend = ? AND app_id = ?", (backend, app_id)
            )
            return cur.rowcount > 0
