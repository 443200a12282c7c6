"""What an experiment's tasks are doing: one status row per task, and whether a task is done.

A task's state comes from its job (by handle, through `job_status`) once launched; before
that, from the experiment record (waiting, skipped, cancelled before launch, failed to launch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nemo_run.exceptions import ConfigError, UnknownJobError
from nemo_run.run.experiment_files import ExperimentRecord, TaskEntry
from nemo_run.run.job import job_status
from nemo_run.run.torchx_backend.schedulers.watcher import Seen

NOT_STARTED = "not run: its launcher exited before starting it"


def task_status(entry: TaskEntry, record: ExperimentRecord, launcher_gone: bool) -> dict[str, Any]:
    """A task's status row: a launched task's job status, or why it has not run.

    A job the store no longer knows (or a handle this version cannot read) makes only its own
    row UNKNOWN, with the reason; the other tasks still show.
    """
    row: dict[str, Any] = {
        "task": entry.id,
        "state": "WAITING",
        "handle": entry.handle,
        "backend": entry.backend,
        "job_dir": entry.job_dir,
        "dependencies": list(entry.dependencies),
        "started_at": entry.launched_at,
        "ended_at": None,
        "exit_code": None,
        "reason": None,
    }
    if entry.error:
        row.update(state="FAILED", reason=entry.error)
    elif entry.skipped:
        cancelled = entry.skipped == "cancelled before launch"
        row.update(state="CANCELLED" if cancelled else "SKIPPED", reason=entry.skipped)
    elif entry.handle:
        try:
            job = job_status(entry.handle)
        except (UnknownJobError, ConfigError) as e:
            if entry.launched_at is None and isinstance(e, UnknownJobError):
                # the handle was planned, and no record means its job never started
                if launcher_gone:
                    row.update(state="SKIPPED", reason=NOT_STARTED)
                else:
                    row["reason"] = "launching"
            else:
                row.update(state="UNKNOWN", reason=str(e))
        else:
            row.update(
                state=job["state"],
                ended_at=job["ended_at"],
                exit_code=job["exit_code"],
                reason=job["msg"] or None,
                job_dir=job["job_dir"] or entry.job_dir,
                remote_dir=job.get("remote_dir"),
            )
    elif record.cancel_requested(entry.id):
        row.update(state="CANCELLED", reason="cancelled before launch")
    elif launcher_gone:
        row.update(state="SKIPPED", reason=NOT_STARTED)
    else:
        row["reason"] = (
            "waiting for " + ", ".join(entry.dependencies) if entry.dependencies else None
        )
    return row


def task_done(
    entry: TaskEntry, record: ExperimentRecord, seen: Mapping[str, Seen], launcher_gone: bool
) -> bool:
    """Whether a task can change no more: it ended, will never run, or never started."""
    if entry.error or entry.skipped:
        return True
    if entry.handle:
        state = seen[entry.handle]
        if state.done:
            return True
        # a planned handle with no record, whose launcher is gone: it never started
        return entry.launched_at is None and launcher_gone and state.state.name == "UNKNOWN"
    return record.cancel_requested(entry.id) or launcher_gone
