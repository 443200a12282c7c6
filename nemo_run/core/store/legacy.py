"""One-time import of the JSON job files nemo-run 0.11.1 left in the home folder.

Each file is read once (a `meta` row remembers it), inside the store's write lock so two
processes never import twice, and left untouched. Records already in the store win. The
peer's DGX Cloud / Lepton / Docker files embed whole serialized executors, credentials
included; only ids and states are kept from them.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from nemo_run.core.states import JOB_STATES
from nemo_run.core.store.records import REMOTE_ID, JobRecord

if TYPE_CHECKING:
    from nemo_run.core.store.sqlite import SqliteJobStore

log = logging.getLogger(__name__)

APP_STATES = frozenset(s.value for s in JOB_STATES)


def _state_of(raw: Any) -> tuple[str, dict[str, Any]]:
    """(AppState name, extra data): backend phases are kept raw for the backend to map later."""
    text = str(raw or "")
    name = text.rsplit(".", 1)[-1]  # "AppState.RUNNING" or "RUNNING"; not a phase like "Running"
    if name in APP_STATES:
        return name, {}
    return "UNKNOWN", {"backend_status": text}


def _local(apps: dict[str, Any]) -> Iterator[JobRecord]:
    for app_id, value in apps.items():
        state_name, _id, log_dir, roles = (list(value) + [None] * 4)[:4]
        state, extra = _state_of(state_name)
        yield JobRecord(
            "local_persistent",
            app_id,
            state=state,
            log_dir=log_dir,
            data={"roles": list(roles or []), "legacy": True, **extra},
        )


def _status_dicts(
    backend: str, keep: dict[str, str]
) -> Callable[[dict[str, Any]], Iterator[JobRecord]]:
    """Records from the peer's status dicts; `keep` maps their keys to ours."""

    def convert(apps: dict[str, Any]) -> Iterator[JobRecord]:
        for app_id, value in apps.items():
            value = value if isinstance(value, dict) else {}
            state, extra = _state_of(value.get("job_status"))
            data = {ours: value[theirs] for theirs, ours in keep.items() if theirs in value}
            yield JobRecord(
                backend,
                app_id,
                state=state,
                log_dir=value.get("log_dir"),
                data={**data, "legacy": True, **extra},
            )

    return convert


def _docker(apps: dict[str, Any]) -> Iterator[JobRecord]:
    for app_id in apps:  # values are zlib-compressed executors: not kept
        yield JobRecord("docker_persistent", app_id, state="UNKNOWN", data={"legacy": True})


LEGACY_FILES: dict[str, Callable[[dict[str, Any]], Iterator[JobRecord]]] = {
    ".local_jobs.json": _local,
    ".docker_jobs.json": _docker,
    ".skypilot_jobs.json": _status_dicts("skypilot", {}),
    ".dgx_jobs.json": _status_dicts("dgx_cloud", {"job_id": REMOTE_ID}),
    ".lepton_jobs.json": _status_dicts("lepton", {}),
}


def import_legacy_records(store: SqliteJobStore, conn: sqlite3.Connection, home: str) -> int:
    """Import every legacy file not yet imported; returns how many records were added."""
    pending = [
        name
        for name in LEGACY_FILES
        if os.path.isfile(os.path.join(home, name))
        and store.get_meta(conn, f"legacy:{name}") is None
    ]
    added = 0
    for name in pending:
        path = os.path.join(home, name)
        with store.transaction(conn):
            if store.get_meta(conn, f"legacy:{name}") is not None:
                continue  # another process imported it while we waited for the lock
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
                apps = json.loads(text) if text.strip() else {}
                if not isinstance(apps, dict):
                    raise ValueError("top level is not a JSON object")
                records = list(LEGACY_FILES[name](apps))
                for record in records:
                    if not isinstance(record.log_dir, (str, type(None))):
                        raise TypeError(f"log_dir of {record.app_id!r} is not a string")
            except (OSError, ValueError, TypeError) as e:
                log.warning("not importing %s (left untouched): %s", path, e)
                outcome = f"skipped: {e}"
            else:
                before = conn.total_changes
                for record in records:
                    conn.execute(
                        "INSERT OR IGNORE INTO jobs (backend, app_id, session, state, experiment_id,"
                        " log_dir, created_at, updated_at, data) VALUES (?,?,?,?,?,?,?,?,?)",
                        (
                            record.backend,
                            record.app_id,
                            record.session,
                            record.state,
                            None,
                            record.log_dir,
                            record.created_at,
                            record.updated_at,
                            json.dumps(record.data, sort_keys=True),
                        ),
                    )
                added += conn.total_changes - before
                outcome = f"imported {len(records)}"
                log.info("imported %d job records from %s (file left in place)", len(records), path)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (f"legacy:{name}", outcome),
            )
    return added
