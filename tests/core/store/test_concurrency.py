"""Several processes share one store: no lost writes, and kill -9 never loses an acked record."""

from __future__ import annotations

import random
import signal
import sqlite3
import threading

import pytest

from nemo_run.core.store import STORE_FILENAME, JobRecord, get_store
from nemo_run.core.store import sqlite as sqlite_mod
from tests.core.store._helpers import (
    close_thread_connections,
    run_child,
    run_together,
    start_child,
    wait_until,
    watchdog,
)

BACKEND = "local_persistent"


def test_concurrent_puts_from_many_processes(nemorun_home, tmp_path):
    writers, per_writer = 8, 25
    run_together(
        nemorun_home, tmp_path / "go", [["put", f"w{i}", str(per_writer)] for i in range(writers)]
    )

    records = get_store().list()
    expected = {f"w{i}-{k}" for i in range(writers) for k in range(per_writer)}
    assert len(records) == writers * per_writer
    assert {r.app_id for r in records} == expected
    assert all(
        r.data == {"writer": r.app_id.rsplit("-", 1)[0], "k": int(r.app_id.rsplit("-", 1)[1])}
        for r in records
    )


def test_concurrent_updates_of_one_record_lose_nothing(nemorun_home, tmp_path):
    workers, per_worker = 4, 25
    get_store().put(JobRecord(BACKEND, "shared", data={"initial": True}))
    run_together(
        nemorun_home,
        tmp_path / "go",
        [["update", "shared", str(i), str(per_worker)] for i in range(workers)],
    )

    data = get_store().get(BACKEND, "shared").data
    expected = {f"p{i}_{j}": 1 for i in range(workers) for j in range(per_worker)}
    missing = set(expected) - set(data)
    assert not missing, f"{len(missing)} updates lost, e.g. {sorted(missing)[:5]}"
    assert data == {"initial": True, **expected}


def test_opening_waits_for_a_writer_instead_of_failing(nemorun_home, monkeypatch):
    """Switching to WAL while another connection writes reports "locked" at once, without
    SQLite's busy handler: opening the store must wait for the writer like any other write."""
    db = nemorun_home / STORE_FILENAME
    db.touch(mode=0o600)
    writer = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")  # e.g. another process converting the new file to WAL

    attempts: list[str] = []
    retried, finished = threading.Event(), threading.Event()
    real_connect = sqlite3.connect

    def traced_connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)

        def trace(sql: str) -> None:
            if "journal_mode" in sql.lower():
                attempts.append(sql)
                if len(attempts) > 1:
                    retried.set()

        conn.set_trace_callback(trace)
        return conn

    monkeypatch.setattr(sqlite_mod.sqlite3, "connect", traced_connect)
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            get_store().put(JobRecord(BACKEND, "after-wait"))
        except BaseException as e:
            errors.append(e)
        finally:
            close_thread_connections()
            finished.set()

    thread = threading.Thread(target=open_store)
    try:
        thread.start()
        wait_until(lambda: retried.is_set() or finished.is_set(), what="the store to retry")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        thread.join(timeout=30)
    assert not errors, errors
    assert get_store().get(BACKEND, "after-wait") is not None


def _integrity(db) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_kill_9_never_loses_an_acknowledged_record(nemorun_home):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    acked: set[str] = set()
    for round_ in range(5):
        proc = start_child(nemorun_home, "-", "put_forever", f"r{round_}")
        with watchdog([proc]):
            for _ in range(rng.randint(1, 40)):
                line = proc.stdout.readline()
                if not line.endswith("\n"):
                    proc.wait()
                    pytest.fail(f"child stopped early (seed {seed}): {proc.stderr.read()}")
                acked.add(line.strip())
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            # acks the child printed before it died count too; a torn last line does not
            acked.update(line for line in proc.stdout.read().split("\n")[:-1] if line)
        assert proc.returncode == -signal.SIGKILL

        stored = {r.app_id for r in get_store().list()}
        lost = acked - stored
        assert not lost, f"round {round_} (seed {seed}): acknowledged but lost: {sorted(lost)}"
        assert _integrity(nemorun_home / STORE_FILENAME) == "ok"

    # a brand-new process sees everything too
    in_child = set(run_child(nemorun_home, "-", "ids").split())
    assert acked <= in_child
    assert _integrity(nemorun_home / STORE_FILENAME) == "ok"
