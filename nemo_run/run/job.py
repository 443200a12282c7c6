"""One job by its app handle, on any backend: status as plain data, and its log lines."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from nemo_run.exceptions import UnknownJobError

if TYPE_CHECKING:
    from nemo_run.core.store import JobRecord
    from nemo_run.run.experiment_files import ExperimentRecord, TaskEntry


FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


def parse_handle(handle: str) -> tuple[str, str, str]:
    """(scheduler, session, app id), with a clear error for something that is not a handle."""
    from torchx.specs import parse_app_handle

    try:
        parsed = parse_app_handle(handle)
    except Exception as e:
        raise UnknownJobError(f"{handle!r} is not an app handle like local_persistent://nemo_run/<app id>") from e
    return parsed.scheduler_backend, parsed.session_name, parsed.app_id


def stored_record(handle: str) -> JobRecord | None:
    from nemo_run.core.store import get_store

    scheduler, _, app_id = parse_handle(handle)
    return get_store().get(scheduler, app_id)


def job_status(handle: str) -> dict[str, Any]:
    """Live state plus what the store knows; UnknownJobError when no backend knows the handle."""
    from nemo_run.run.torchx_backend.runner import get_runner

    scheduler, _, app_id = parse_handle(handle)
    record = stored_record(handle)
    data = record.data if record else {}
    if record is not None and record.state in FINAL_STATES:  # final: no need to ask the backend
        state, msg, restarts = record.state, data.get("msg", ""), data.get("num_restarts", 0)
    else:
        status = get_runner().status(handle)
        if status is None:
            raise UnknownJobError(f"no {scheduler} job {app_id!r} is known; `nemorun job list` shows the known jobs")
        record = stored_record(handle) or record
        data = record.data if record else {}
        state, msg, restarts = status.state.name, status.msg, max(status.num_restarts, 0)
    return {
        "handle": handle,
        "backend": scheduler,
        "app_id": app_id,
        "state": state,
        "msg": msg if msg and msg != "<NONE>" else "",
        "num_restarts": restarts,
        "job_dir": record.log_dir if record else None,
        "experiment_id": record.experiment_id if record else None,
        "started_at": record.created_at if record else None,
        "ended_at": data.get("ended_at"),
        "exit_code": data.get("exit_code"),
    }


def task_status(entry: TaskEntry, record: ExperimentRecord, launcher_gone: bool) -> dict[str, Any]:
    """A task's status row: a launched task's job status, or why it has not run."""
    row: dict[str, Any] = {
        "task": entry.id, "state": "WAITING", "handle": entry.handle, "backend": entry.backend,
        "job_dir": entry.job_dir, "dependencies": list(entry.dependencies),
        "started_at": entry.launched_at, "ended_at": None, "exit_code": None, "reason": None,
    }
    if entry.error:
        row.update(state="FAILED", reason=entry.error)
    elif entry.skipped:
        cancelled = entry.skipped == "cancelled before launch"
        row.update(state="CANCELLED" if cancelled else "SKIPPED", reason=entry.skipped)
    elif entry.handle:
        job = job_status(entry.handle)
        row.update(state=job["state"], ended_at=job["ended_at"], exit_code=job["exit_code"],
                   reason=job["msg"] or None, job_dir=job["job_dir"] or entry.job_dir)
    elif record.cancel_requested(entry.id):
        row.update(state="CANCELLED", reason="cancelled before launch")
    elif launcher_gone:
        row.update(state="SKIPPED", reason="not run: its launcher exited before starting it")
    else:
        row["reason"] = "waiting for " + ", ".join(entry.dependencies) if entry.dependencies else None
    return row


def job_log_lines(handle: str, follow: bool = False, regex: str | None = None) -> Iterator[str]:
    """Every role and replica's lines; several streams are read at once and prefixed `[role:k]`."""
    from nemo_run.run.torchx_backend.runner import get_runner

    runner = get_runner()
    app = runner.describe(handle)
    if app is None:
        _, _, app_id = parse_handle(handle)
        raise UnknownJobError(f"no job {app_id!r} is known; `nemorun job list` shows the known jobs")
    streams = [(role.name, k) for role in app.roles for k in range(max(role.num_replicas, 1))]
    if len(streams) == 1:
        role, k = streams[0]
        yield from runner.log_lines(handle, role, k, regex=regex, should_tail=follow)
        return
    lines: queue.Queue[str | None] = queue.Queue()

    def pump(role: str, k: int) -> None:
        try:
            for line in runner.log_lines(handle, role, k, regex=regex, should_tail=follow):
                lines.put(f"[{role}:{k}] {line}")
        finally:
            lines.put(None)

    for role, k in streams:
        threading.Thread(target=pump, args=(role, k), daemon=True).start()
    remaining = len(streams)
    while remaining:
        line = lines.get()
        if line is None:
            remaining -= 1
        else:
            yield line
