"""A store written before schema 2 opens with every remote backend's records in the common
shape (remote_id, remote_state, remote_dir, nodes), in place, once."""

from __future__ import annotations

import json
import sqlite3

from nemo_run.core.store import get_store
from nemo_run.core.store.sqlite import _MIGRATIONS, SCHEMA_VERSION

# data as the schema-1 code (the main of 2026-12-01) wrote it, one record per backend
V1_ROWS = {
    ("dgx_cloud", "w-1"): {
        "workload_id": "abc",
        "phase": "Running",
        "pvc_job_dir": "/pvc/w-1",
        "kind": "trainings",
        "nodes": 2,
    },
    ("lepton", "l-1"): {"job_id": "l-1-x", "lepton_state": "Completed", "job_dir": "/mnt/l-1"},
    ("skypilot", "s-1"): {"job_id": 3, "sky_status": "RUNNING", "num_nodes": 2, "cluster": "c"},
    ("local_persistent", "p-1"): {"pid": 123, "job_dir": "untouched: not a remote backend"},
    ("dgx_cloud", "broken"): "not json at all",
}


def _write_v1_store(path) -> None:
    conn = sqlite3.connect(path)
    for statement in _MIGRATIONS[1].split(";"):
        if statement.strip():
            conn.execute(statement)
    for (backend, app_id), data in V1_ROWS.items():
        raw = data if isinstance(data, str) else json.dumps(data)
        conn.execute(
            "INSERT INTO jobs (backend, app_id, session, state, experiment_id, log_dir, "
            "created_at, updated_at, data) VALUES (?,?,?,?,?,?,?,?,?)",
            (backend, app_id, "nemo_run", "RUNNING", None, None, 1.0, 1.0, raw),
        )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_a_schema_1_store_is_migrated_to_the_common_keys(nemorun_home):
    _write_v1_store(nemorun_home / "jobs.db")
    store = get_store()
    assert store.get("dgx_cloud", "w-1").data == {
        "remote_id": "abc",
        "remote_state": "Running",
        "remote_dir": "/pvc/w-1",
        "kind": "trainings",
        "nodes": 2,
    }
    assert store.get("lepton", "l-1").data == {
        "remote_id": "l-1-x",
        "remote_state": "Completed",
        "remote_dir": "/mnt/l-1",
    }
    assert store.get("skypilot", "s-1").data == {
        "remote_id": 3,
        "remote_state": "RUNNING",
        "nodes": 2,
        "cluster": "c",
    }
    assert store.get("local_persistent", "p-1").data == V1_ROWS[("local_persistent", "p-1")]
    assert store.get("dgx_cloud", "broken").data == {}  # read as empty, left on disk as it was
    conn = sqlite3.connect(nemorun_home / "jobs.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    raw = conn.execute("SELECT data FROM jobs WHERE app_id = 'broken'").fetchone()[0]
    assert raw == "not json at all"


def test_a_migrated_job_is_still_described_from_its_record(nemorun_home):
    _write_v1_store(nemorun_home / "jobs.db")
    store = get_store()
    store.update("lepton", "l-1", state="SUCCEEDED")
    from nemo_run.run.torchx_backend.schedulers.lepton import create_scheduler

    desc = create_scheduler("t").describe("l-1")
    assert desc.state.name == "SUCCEEDED"
