"""Data migrations of the job store that SQL alone does not express, by schema version.

Version 2 gives every remote backend's records the same keys for the same concepts, so code
that reads records (the poller, the CLI, a dashboard) needs no per-backend spelling.
"""

from __future__ import annotations

import json
import sqlite3

from nemo_run.core.store.records import NODES, REMOTE_DIR, REMOTE_ID, REMOTE_STATE

# backend -> {key as written before schema 2: common key}
RENAMES_V2: dict[str, dict[str, str]] = {
    "dgx_cloud": {"workload_id": REMOTE_ID, "phase": REMOTE_STATE, "pvc_job_dir": REMOTE_DIR},
    "lepton": {"job_id": REMOTE_ID, "lepton_state": REMOTE_STATE, "job_dir": REMOTE_DIR},
    "skypilot": {"job_id": REMOTE_ID, "sky_status": REMOTE_STATE, "num_nodes": NODES},
}


def rename_keys(data: dict, renames: dict[str, str]) -> dict:
    """`data` with the old keys renamed; a common key already present wins."""
    out = dict(data)
    for old, new in renames.items():
        if old in out:
            value = out.pop(old)
            out.setdefault(new, value)
    return out


def common_record_keys(conn: sqlite3.Connection) -> None:
    """Schema 2: rename each remote backend's own keys to the common ones (in the caller's
    transaction). Rows whose data is not a JSON object are left as they are."""
    for backend, renames in RENAMES_V2.items():
        rows = conn.execute(
            "SELECT app_id, data FROM jobs WHERE backend = ?", (backend,)
        ).fetchall()
        for app_id, raw in rows:
            try:
                data = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(data, dict) or not set(renames) & set(data):
                continue
            conn.execute(
                "UPDATE jobs SET data = ? WHERE backend = ? AND app_id = ?",
                (json.dumps(rename_keys(data, renames), sort_keys=True), backend, app_id),
            )
