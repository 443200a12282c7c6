"""One job by its app handle, on any backend: status as plain data, and its log lines."""

from __future__ import annotations

import os
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torchx.specs import AppState, parse_app_handle

from nemo_run.core.states import FINAL_JOB_STATES
from nemo_run.core.store import JobRecord, get_store
from nemo_run.core.store.records import REMOTE_DIR
from nemo_run.exceptions import ConfigError, LogsGoneError, UnknownJobError
from nemo_run.run.torchx_backend.runner import Runner, get_runner
from nemo_run.run.torchx_backend.schedulers.backends import BACKENDS


@dataclass
class Job:
    """One task of an experiment as 0.11.1's `Experiment.jobs` lists it: what was added, and
    once launched its handle and last known state. Passing these to `Experiment(jobs=...)`
    adds them to a new experiment."""

    id: str
    task: Any
    executor: Any
    handle: str = ""
    launched: bool = False
    state: AppState = AppState.UNSUBMITTED
    plugins: list[Any] | None = None
    tail_logs: bool = False
    dependencies: list[str] = field(default_factory=list)
    name: str = ""


@dataclass
class JobGroup:
    """Several tasks launched together as one job (0.11.1's `JobGroup`): one handle, one state
    per role."""

    id: str
    tasks: list[Any]
    executors: Any
    handles: list[str] = field(default_factory=list)
    launched: bool = False
    states: list[AppState] = field(default_factory=list)
    plugins: list[Any] | None = None
    tail_logs: bool = False
    dependencies: list[str] = field(default_factory=list)
    name: str = ""


# Backends whose log files live in the record's `log_dir` (Docker copies them there at the end).
LOGS_IN_JOB_DIR = frozenset({"local_persistent", "docker_persistent"})


def parse_handle(handle: str) -> tuple[str, str, str]:
    """(scheduler, session, app id), with a clear error for something that is not a handle
    or names a backend nemo_run does not have."""
    try:
        parsed = parse_app_handle(handle)
    except Exception as e:
        raise UnknownJobError(
            f"{handle!r} is not an app handle like local_persistent://nemo_run/<app id>"
        ) from e
    scheduler = parsed.scheduler_backend
    if scheduler not in {b.scheduler for b in BACKENDS}:
        short = [b.scheduler for b in BACKENDS if b.short == scheduler]
        hint = f"did you mean {short[0]}://...? " if short else ""
        raise ConfigError(
            f"unknown backend {scheduler!r} in handle {handle!r}; {hint}handles start with "
            + ", ".join(f"{b.scheduler}://" for b in BACKENDS)
        )
    return scheduler, parsed.session_name, parsed.app_id


def stored_record(handle: str) -> JobRecord | None:
    """The job store's record of a job, None when it has none."""
    scheduler, _, app_id = parse_handle(handle)
    return get_store().get(scheduler, app_id)


def _no_record(handle: str) -> UnknownJobError:
    return UnknownJobError(f"no record of {handle} in the job store {get_store().location}")


def job_status(handle: str) -> dict[str, Any]:
    """Live state plus what the store knows; UnknownJobError when no backend knows the handle.

    The describe comes straight from the scheduler (torchx's `Runner.status` drops extra
    attributes): when the backend did not answer it is marked `unanswered`, and the dict then
    carries `"unanswered": reason` with `state` the last recorded one.
    """
    scheduler, _, app_id = parse_handle(handle)
    record = stored_record(handle)
    data = record.data if record else {}
    silence = None
    if record is not None and record.state in FINAL_JOB_STATES:  # final: no need to ask the backend
        state, msg, restarts = record.state, data.get("msg", ""), data.get("num_restarts", 0)
    else:
        desc = get_runner()._scheduler(scheduler).describe(app_id)
        if desc is None:
            raise _no_record(handle)
        record = stored_record(handle) or record
        data = record.data if record else {}
        silence = getattr(desc, "unanswered", None)
        state = record.state if silence and record else desc.state.name
        msg, restarts = desc.msg, max(desc.num_restarts, 0)
    status = {
        "handle": handle,
        "backend": scheduler,
        "app_id": app_id,
        "state": state,
        "msg": msg if msg and msg != "<NONE>" else "",
        "num_restarts": restarts,
        "job_dir": record.log_dir if record else None,
        "remote_dir": data.get(REMOTE_DIR),
        "experiment_id": record.experiment_id if record else None,
        "started_at": record.created_at if record else None,
        "ended_at": data.get("ended_at"),
        "exit_code": data.get("exit_code"),
    }
    if silence:
        status["unanswered"] = str(silence)
    return status


def _check_regex(regex: str | None) -> None:
    if regex:
        try:
            re.compile(regex)
        except re.error as e:
            raise ConfigError(f"regex {regex!r} is not a valid regular expression: {e}") from e


def _check_logs_kept(handle: str) -> None:
    """LogsGoneError when the folder holding the job's logs was deleted. A running Docker job's
    logs are still in its containers; they are copied into the folder only when it ends."""
    record = stored_record(handle)
    if record is None or record.backend not in LOGS_IN_JOB_DIR or not record.log_dir:
        return
    if record.backend == "docker_persistent" and record.state not in FINAL_JOB_STATES:
        return
    if not os.path.isdir(record.log_dir):
        raise LogsGoneError(
            f"the logs of {handle} are gone: its folder {record.log_dir} no longer exists"
        )


def job_log_lines(handle: str, follow: bool = False, regex: str | None = None) -> Iterator[str]:
    """Every role and replica's lines; several streams are read at once and prefixed `[role:k]`.

    Everything that can be refused (a bad regex, an unknown job, logs whose folder is gone) is
    checked on the call, before any line is read; an error while reading a replica is raised
    to the consumer.
    """
    _check_regex(regex)
    parse_handle(handle)
    runner = get_runner()
    app = runner.describe(handle)
    if app is None:
        raise _no_record(handle)
    _check_logs_kept(handle)  # after the describe: it may have just copied a Docker job's logs
    streams = [(role.name, k) for role in app.roles for k in range(max(role.num_replicas, 1))]
    return _read_streams(runner, handle, streams, follow, regex)


def _read_streams(
    runner: Runner, handle: str, streams: list[tuple[str, int]], follow: bool, regex: str | None
) -> Iterator[str]:
    if len(streams) == 1:
        role, k = streams[0]
        yield from runner.log_lines(handle, role, k, regex=regex, should_tail=follow)
        return
    # (kind, value): "line" text, "error" an exception from a reader, "done" a reader ended
    items: queue.Queue[tuple[str, Any]] = queue.Queue()
    stop = threading.Event()

    def pump(role: str, k: int) -> None:
        try:
            for line in runner.log_lines(handle, role, k, regex=regex, should_tail=follow):
                if stop.is_set():
                    return
                items.put(("line", f"[{role}:{k}] {line}"))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            items.put(("error", e))
        finally:
            items.put(("done", None))

    for role, k in streams:
        threading.Thread(target=pump, args=(role, k), daemon=True, name=f"logs-{role}-{k}").start()
    remaining = len(streams)
    try:
        while remaining:
            kind, value = items.get()
            if kind == "error":
                raise value
            if kind == "done":
                remaining -= 1
            else:
                yield value
    finally:
        stop.set()  # the consumer stopped or failed: readers end at their next line
