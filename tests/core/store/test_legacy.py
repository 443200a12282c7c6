"""One-time import of the JSON job files nemo-run 0.11.1 left in the home folder."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from nemo_run.core.store import STORE_FILENAME, JobRecord, get_store
from nemo_run.core.store import legacy as legacy_mod
from tests.core.store._helpers import (
    CHILD_TIMEOUT,
    run_child,
    run_together,
    start_child,
    watchdog,
)

SECRET = "LEGACY-SECRET-7d41c0e2"
# nemo-run 0.11.1 kept whole serialized executors (credentials included) in these files
EXECUTOR_BLOB = (
    f"eJyrVkrOz0vOLEpVsFIqzs9NVdJRUCpJLS5RslIwNDIxMDA3MlXSUSrJz05VslIK9vcNBsm4+AcDAJ0xDPk{SECRET}=="
)

LEGACY = {
    ".local_jobs.json": {
        "local-1": ["RUNNING", "local-1", "/logs/local-1", ["trainer", "evaluator"]],
        "local-2": ["AppState.SUCCEEDED", "local-2", "/logs/local-2", []],
    },
    ".docker_jobs.json": {"docker-1": EXECUTOR_BLOB},
    ".skypilot_jobs.json": {
        "sky-1": {"job_status": "FAILED", "log_dir": "/logs/sky-1"},
    },
    ".dgx_jobs.json": {
        "dgx-1": {"job_status": "Running", "job_id": "dgx-job-42", "executor": EXECUTOR_BLOB},
    },
    ".lepton_jobs.json": {
        "lepton-1": {"job_status": "Starting", "executor": EXECUTOR_BLOB},
        "lepton-2": {"job_status": "CANCELLED", "executor": EXECUTOR_BLOB},
    },
}
ALL_IDS = {app_id for apps in LEGACY.values() for app_id in apps}


def write_legacy(home: Path, files: dict[str, object] | None = None) -> dict[str, bytes]:
    """Write legacy files as 0.11.1 did and return their exact bytes."""
    written = {}
    for name, content in (files or LEGACY).items():
        raw = content if isinstance(content, bytes) else json.dumps(content, indent=2).encode()
        (home / name).write_bytes(raw)
        written[name] = raw
    return written


def store_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(home.glob(STORE_FILENAME + "*")))


def test_import_maps_every_backend(nemorun_home):
    write_legacy(nemorun_home)
    store = get_store()
    by_key = {(r.backend, r.app_id): r for r in store.list()}
    assert set(by_key) == {
        ("local_persistent", "local-1"),
        ("local_persistent", "local-2"),
        ("docker_persistent", "docker-1"),
        ("skypilot", "sky-1"),
        ("dgx_cloud", "dgx-1"),
        ("lepton", "lepton-1"),
        ("lepton", "lepton-2"),
    }

    local1 = by_key["local_persistent", "local-1"]
    assert (local1.state, local1.log_dir) == ("RUNNING", "/logs/local-1")
    assert local1.data["roles"] == ["trainer", "evaluator"]
    local2 = by_key["local_persistent", "local-2"]
    assert (local2.state, local2.log_dir) == ("SUCCEEDED", "/logs/local-2")

    sky = by_key["skypilot", "sky-1"]
    assert (sky.state, sky.log_dir) == ("FAILED", "/logs/sky-1")

    dgx = by_key["dgx_cloud", "dgx-1"]
    assert dgx.state == "UNKNOWN"  # a backend phase, not an AppState name: kept for the backend
    assert dgx.data["backend_status"] == "Running"
    assert dgx.data["remote_id"] == "dgx-job-42"

    lepton1, lepton2 = by_key["lepton", "lepton-1"], by_key["lepton", "lepton-2"]
    assert (lepton1.state, lepton1.data["backend_status"]) == ("UNKNOWN", "Starting")
    assert lepton2.state == "CANCELLED" and "backend_status" not in lepton2.data

    for record in by_key.values():
        assert "executor" not in record.data
        assert record.handle.startswith(f"{record.backend}://")


def test_executor_blobs_are_never_written(nemorun_home):
    write_legacy(nemorun_home)
    store = get_store()
    assert len(store.list()) == len(ALL_IDS)
    assert (nemorun_home / (STORE_FILENAME + "-wal")).exists()
    content = store_bytes(nemorun_home)
    assert b"dgx-job-42" in content  # the check below can see imported data
    assert SECRET.encode() not in content
    assert EXECUTOR_BLOB[:40].encode() not in content


def test_legacy_files_are_left_untouched(nemorun_home):
    before = write_legacy(nemorun_home)
    stats = {name: (nemorun_home / name).stat() for name in before}
    get_store().list()
    get_store().put(JobRecord("local_persistent", "new"))
    for name, raw in before.items():
        path = nemorun_home / name
        assert path.read_bytes() == raw, name
        assert path.stat().st_mtime_ns == stats[name].st_mtime_ns, name


def test_import_happens_once(nemorun_home, reopen):
    write_legacy(nemorun_home)
    store = get_store()
    assert len(store.list()) == len(ALL_IDS)
    assert store.delete("dgx_cloud", "dgx-1")
    store.update("local_persistent", "local-1", state="SUCCEEDED")

    assert "dgx-1" not in run_child(nemorun_home, "-", "ids").split()  # a new process
    store = reopen()  # and a fresh connection in this one
    assert store.get("dgx_cloud", "dgx-1") is None
    assert store.get("local_persistent", "local-1").state == "SUCCEEDED"
    assert len(store.list()) == len(ALL_IDS) - 1


def test_existing_records_win_over_legacy_ones(nemorun_home, reopen):
    store = get_store()  # the store exists before the legacy file shows up
    mine = JobRecord(
        "local_persistent", "local-1", state="CANCELLED", log_dir="/mine", data={"owner": "store"}
    )
    store.put(mine)
    write_legacy(nemorun_home, {".local_jobs.json": LEGACY[".local_jobs.json"]})

    store = reopen()
    assert store.get("local_persistent", "local-1") == mine
    assert store.get("local_persistent", "local-2").state == "SUCCEEDED"  # the rest is imported


def test_file_appearing_later_is_imported_once(nemorun_home, reopen):
    write_legacy(nemorun_home, {".skypilot_jobs.json": LEGACY[".skypilot_jobs.json"]})
    assert {r.app_id for r in get_store().list()} == {"sky-1"}
    write_legacy(nemorun_home, {".dgx_jobs.json": LEGACY[".dgx_jobs.json"]})
    assert {r.app_id for r in reopen().list()} == {"sky-1", "dgx-1"}
    reopen().delete("skypilot", "sky-1")
    assert {r.app_id for r in reopen().list()} == {"dgx-1"}


@pytest.mark.parametrize(
    "name, raw",
    [
        (".skypilot_jobs.json", b'{"sky-1": {"job_status": "RUNN'),
        (".skypilot_jobs.json", b"[1, 2, 3]"),
        (".dgx_jobs.json", b'{"dgx-1": {"job_status": "Running", "job_id": "\xff\xfe"}}'),
        (".local_jobs.json", b'{"local-1": 17}'),
        (".skypilot_jobs.json", b'{"sky-1": {"job_status": "RUNNING", "log_dir": {"oops": 1}}}'),
        (".local_jobs.json", b'{"local-1": ["RUNNING", "local-1", ["not", "a", "path"], []]}'),
    ],
    ids=[
        "truncated",
        "top-level-list",
        "not-utf8",
        "wrong-entry-type",
        "log-dir-object",
        "local-log-dir-list",
    ],
)
def test_malformed_file_is_skipped_with_a_warning(nemorun_home, reopen, caplog, name, raw):
    good = {".lepton_jobs.json": LEGACY[".lepton_jobs.json"]}
    write_legacy(nemorun_home, {**good, name: raw})

    with caplog.at_level(logging.WARNING, logger=legacy_mod.__name__):
        store = get_store()
        records = store.list()
    assert {r.app_id for r in records} == {"lepton-1", "lepton-2"}
    assert any(name in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert (nemorun_home / name).read_bytes() == raw

    store.put(JobRecord("local_persistent", "after"))
    assert store.get("local_persistent", "after") is not None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=legacy_mod.__name__):
        assert len(reopen().list()) == 3  # not retried, no new warning on the next open
    assert not caplog.records


def test_empty_legacy_file_imports_nothing(nemorun_home):
    (nemorun_home / ".local_jobs.json").write_text("")
    assert get_store().list() == []


def _assert_imported_once(outputs: list[str]) -> None:
    imports = [line for out in outputs for line in out.splitlines() if "imported" in line]
    for name in LEGACY:
        assert sum(name in line for line in imports) == 1, (name, imports)
    assert len(imports) == len(LEGACY)


def test_processes_opening_a_new_store_at_once_import_exactly_once(nemorun_home, tmp_path):
    write_legacy(nemorun_home)
    outputs = run_together(nemorun_home, tmp_path / "go", [["open"]] * 4)
    _assert_imported_once(outputs)
    assert {r.app_id for r in get_store().list()} == ALL_IDS


def test_processes_queued_on_the_lock_import_exactly_once(nemorun_home, reopen):
    """Every process sees the files as pending, then they take the write lock in turn."""
    get_store().list()  # the store exists, no legacy file yet
    reopen()
    write_legacy(nemorun_home)

    blocker = sqlite3.connect(nemorun_home / STORE_FILENAME, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # hold the write lock until all children queue on it
        procs = [start_child(nemorun_home, "-", "open") for _ in range(4)]
        with watchdog(procs):
            for proc in procs:
                line = proc.stdout.readline()
                assert line == "lock-wait\n", (
                    line,
                    proc.stderr.read() if proc.poll() is not None else "",
                )
            blocker.execute("ROLLBACK")
            outputs = []
            for proc in procs:
                out, err = proc.communicate(timeout=CHILD_TIMEOUT)
                assert proc.returncode == 0, err
                outputs.append(out)
    finally:
        blocker.close()
    _assert_imported_once(outputs)
    assert {r.app_id for r in reopen().list()} == ALL_IDS
