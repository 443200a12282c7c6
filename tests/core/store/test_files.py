"""The store file on disk: permissions, journal mode, corruption and schema versions."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat

import pytest

from nemo_run.core.store import STORE_FILENAME, JobRecord, get_store, store_path
from nemo_run.core.store import sqlite as sqlite_mod
from nemo_run.core.store.fs import is_network_filesystem
from nemo_run.exceptions import StoreError


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _journal_mode(path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def umask():
    """Set a umask for the test and restore the previous one afterwards."""
    previous = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(previous)


# -- permissions ------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_store_files_are_private_whatever_the_umask(mask, umask, nemorun_home):
    umask(mask)
    store = get_store()
    store.put(JobRecord("local_persistent", "a"))
    store.update("local_persistent", "a", state="RUNNING")

    db = nemorun_home / STORE_FILENAME
    wal, shm = db.with_name(STORE_FILENAME + "-wal"), db.with_name(STORE_FILENAME + "-shm")
    assert wal.exists() and shm.exists(), "expected WAL mode on a local disk"
    for path in (db, wal, shm):
        assert _mode(path) == 0o600, f"{path.name} is {oct(_mode(path))}"


def test_new_home_folder_is_private(umask, tmp_path, monkeypatch):
    umask(0o000)
    home = tmp_path / "new-home"
    monkeypatch.setenv("NEMORUN_HOME", str(home))
    get_store().put(JobRecord("local_persistent", "a"))
    assert _mode(home) == 0o700
    assert _mode(home / STORE_FILENAME) == 0o600


# -- journal mode ------------------------------------------------------------------------------
def test_wal_by_default_on_a_local_disk(nemorun_home):
    if is_network_filesystem(str(nemorun_home)):
        pytest.skip("the test home is on a network filesystem here")
    get_store().put(JobRecord("local_persistent", "a"))
    assert _journal_mode(store_path()) == "wal"


def test_journal_mode_from_environment(monkeypatch, nemorun_home):
    monkeypatch.setenv("NEMORUN_STORE_JOURNAL", "delete")
    store = get_store()
    store.put(JobRecord("local_persistent", "a"))
    store.update("local_persistent", "a", state="RUNNING")

    assert _journal_mode(store_path()) == "delete"
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not (nemorun_home / (STORE_FILENAME + "-wal")).exists()
    assert store.get("local_persistent", "a").state == "RUNNING"


def test_rollback_journal_on_a_network_filesystem(monkeypatch, caplog):
    monkeypatch.delenv("NEMORUN_STORE_JOURNAL", raising=False)
    monkeypatch.setattr(sqlite_mod, "is_network_filesystem", lambda path: True)
    monkeypatch.setattr(sqlite_mod, "filesystem_type", lambda path: "nfs4")
    with caplog.at_level(logging.WARNING, logger=sqlite_mod.__name__):
        get_store().put(JobRecord("local_persistent", "a"))
    assert _journal_mode(store_path()) == "delete"
    assert any(
        "network filesystem" in r.getMessage() and "nfs4" in r.getMessage() for r in caplog.records
    )


def test_environment_overrides_network_detection(monkeypatch):
    monkeypatch.setenv("NEMORUN_STORE_JOURNAL", "WAL")
    monkeypatch.setattr(sqlite_mod, "is_network_filesystem", lambda path: True)
    get_store().put(JobRecord("local_persistent", "a"))
    assert _journal_mode(store_path()) == "wal"


# -- corruption --------------------------------------------------------------------------------
GARBAGE = (b"this is certainly not an SQLite database \x00\xff\x13" * 200)[:8192]


def test_garbage_file_gives_store_error_and_is_left_alone(nemorun_home):
    db = nemorun_home / STORE_FILENAME
    db.write_bytes(GARBAGE)

    for attempt in (lambda s: s.list(), lambda s: s.put(JobRecord("local_persistent", "a"))):
        with pytest.raises(StoreError) as excinfo:
            attempt(get_store())
        message = str(excinfo.value)
        assert str(db) in message
        assert "mv" in message

    assert db.read_bytes() == GARBAGE


def test_corrupt_pages_give_store_error(nemorun_home, reopen):
    store = get_store()
    store.put_many(
        [JobRecord("local_persistent", f"app-{i}", data={"pad": "x" * 200}) for i in range(200)]
    )
    reopen()  # closing the only connection checkpoints the WAL into jobs.db
    db = nemorun_home / STORE_FILENAME
    content = db.read_bytes()
    assert len(content) > 8 * 4096 and not (nemorun_home / (STORE_FILENAME + "-wal")).exists()
    damaged = content[:4096] + GARBAGE * (len(content) // len(GARBAGE) + 1)
    db.write_bytes(damaged[: len(content)])

    with pytest.raises(StoreError) as excinfo:
        reopen().list()
    assert str(db) in str(excinfo.value) and "mv" in str(excinfo.value)


def test_newer_schema_version_is_refused(nemorun_home):
    db = nemorun_home / STORE_FILENAME
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE future (x)")
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()

    with pytest.raises(StoreError, match="upgrade") as excinfo:
        get_store().list()
    assert str(db) in str(excinfo.value)
    with pytest.raises(StoreError, match="upgrade"):  # still refused: nothing was cached
        get_store().put(JobRecord("local_persistent", "a"))

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert tables == {"future"}  # no migration ran on the newer file


def test_new_store_records_its_schema_version():
    get_store().list()
    conn = sqlite3.connect(store_path())
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_mod.SCHEMA_VERSION
    finally:
        conn.close()
