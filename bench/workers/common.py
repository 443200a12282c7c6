"""What every worker command shares: telling the two packages apart, the local scheduler API,
and the two stores (ours: `nemo_run.core.store`; the peer: one JSON file).

Both packages expose the same names, so most code is shared; only writing filler records and
counting stored records differ, chosen by whether `nemo_run.core.store` exists.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time
from typing import Any

RESULT_TAG = "@@RESULT "
BACKEND = "local_persistent"  # our store's backend name for the local scheduler
PEER_JOBS_FILE = ".local_jobs.json"  # the peer's whole local-job "store"


def emit(payload: dict[str, Any]) -> None:
    """The one line the harness reads; anything else the package prints is ignored."""
    sys.stdout.write(RESULT_TAG + json.dumps(payload) + "\n")
    sys.stdout.flush()


def is_ours() -> bool:
    return importlib.util.find_spec("nemo_run.core.store") is not None


def home() -> str:
    value = os.environ.get("NEMORUN_HOME")
    if not value:
        raise RuntimeError("NEMORUN_HOME must be set for the benchmark worker")
    return value


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# ---------------------------------------------------------------------------- scheduler API


def new_scheduler() -> Any:
    from nemo_run.run.torchx_backend.schedulers.local import create_scheduler

    return create_scheduler(session_name="bench")


def new_app() -> Any:
    from torchx import specs

    role = specs.Role(name="main", image="", entrypoint="true", args=[])
    return specs.AppDef(name="bench", roles=[role])


def dryrun_one(sched: Any, job_dir: str) -> Any:
    """The dry-run info of one `true` job, ready for `schedule()`."""
    import nemo_run as run

    executor = run.LocalExecutor()
    executor.job_dir = job_dir
    return sched.submit_dryrun(new_app(), executor)


def schedule_one(sched: Any, job_dir: str) -> str:
    return sched.schedule(dryrun_one(sched, job_dir))


def state_name(resp: Any) -> str | None:
    if resp is None:
        return None
    state = getattr(resp, "state", None)
    return getattr(state, "name", None) or (str(state) if state is not None else None)


def wait_terminal(sched: Any, app_id: str, timeout: float = 30.0) -> str | None:
    from torchx.specs import is_terminal

    deadline = time.monotonic() + timeout
    name = None
    while time.monotonic() < deadline:
        resp = sched.describe(app_id)
        name = state_name(resp)
        if resp is not None and is_terminal(resp.state):
            return name
        time.sleep(0.05)
    return name


# ---------------------------------------------------------------------------- the two stores


def peer_jobs_path() -> str:
    return os.path.join(home(), PEER_JOBS_FILE)


def put_finished_jobs(ids: list[str], data: dict[str, Any]) -> None:
    """Store SUCCEEDED local jobs `ids` directly, in whichever store this package uses."""
    log_root = os.path.join(home(), "filler-logs")
    if is_ours():
        from nemo_run.core.store import JobRecord, get_store

        store = get_store()
        batch = 10_000
        for lo in range(0, len(ids), batch):
            store.put_many(
                [
                    JobRecord(
                        backend=BACKEND,
                        app_id=app_id,
                        state="SUCCEEDED",
                        log_dir=os.path.join(log_root, app_id),
                        data=data,
                    )
                    for app_id in ids[lo : lo + batch]
                ]
            )
        return
    path = peer_jobs_path()
    try:
        with open(path) as f:
            apps = json.load(f)
    except FileNotFoundError:
        apps = {}
    for app_id in ids:
        apps.setdefault(app_id, ["SUCCEEDED", app_id, os.path.join(log_root, app_id), ["main"]])
    tmp = path + ".bench-tmp"
    with open(tmp, "w") as f:
        json.dump(apps, f)
    os.replace(tmp, path)


def stored_ids() -> list[str]:
    """Every local job id the store holds (raises if the store cannot be read)."""
    if is_ours():
        from nemo_run.core.store import get_store

        return [r.app_id for r in get_store().list(backend=BACKEND)]
    path = peer_jobs_path()
    if not os.path.exists(path):
        return []
    with open(path) as f:
        text = f.read()
    if not text.strip():
        return []  # the peer treats an empty file as an empty store
    return list(json.loads(text))
