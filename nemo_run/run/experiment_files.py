"""Where experiments live on disk and the record that lets any process reopen one.

`$NEMORUN_HOME/experiments/<title>/<id>/experiment.json` holds the plan (tasks, dependencies,
backends, public executor settings) and, once launched, each task's app handle. Only the
launching process (or its detached driver) writes it, atomically; other processes read it
and ask the job store and backends for live states. A cancel request for a task that has
not launched yet is a marker file `cancel/<task id>` the driver honours.

Files are read tolerantly, because another nemo_run version (or a hand edit) may have written
them: one odd or broken file is reported by name and never breaks listing or lookup of others.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import threading
import time
import types
import typing
from dataclasses import asdict, dataclass, field
from typing import Any

from nemo_run.config import get_nemorun_home
from nemo_run.core.atomic import atomic_write
from nemo_run.core.diskerrors import raise_if_disk_trouble
from nemo_run.exceptions import ConfigError, UnknownExperimentError
from nemo_run.run.legacy_experiments import (
    LegacyExperiment,
    LegacyFormatError,
    is_legacy_folder,
    read_legacy_experiment,
)

log = logging.getLogger(__name__)

EXPERIMENTS_DIR = "experiments"
EXPERIMENT_FILE = "experiment.json"
CANCEL_DIR = "cancel"
FORMAT_VERSION = 1

_reported: set[str] = set()
_quiet = threading.local()  # set while scanning only to word an error message


@dataclass
class TaskEntry:
    """One task of an experiment as recorded on disk."""

    id: str
    backend: str
    roles: list[str]
    dependencies: list[str] = field(default_factory=list)
    executor: dict[str, Any] = field(default_factory=dict)
    handle: str | None = None
    job_dir: str | None = None
    launched_at: float | None = None
    skipped: str | None = None  # why it never ran (a dependency failed, cancelled, ...)
    error: str | None = None  # why launching it failed
    plugins: list[dict[str, Any]] = field(default_factory=list)  # run.Plugin types and fields


@dataclass
class ExperimentRecord:
    id: str
    title: str
    dir: str
    created_at: float = field(default_factory=time.time)
    tasks: list[TaskEntry] = field(default_factory=list)
    driver: dict[str, Any] = field(default_factory=dict)  # pid, start_ticks, boot_id
    launch_done: bool = False
    written_by: str | None = None  # "nemo-run <version>" for a folder 0.11.1 wrote (read-only)

    def task(self, task_id: str) -> TaskEntry:
        for entry in self.tasks:
            if entry.id == task_id:
                return entry
        raise UnknownExperimentError(
            f"experiment {self.id} has no task {task_id!r}; "
            f"its tasks: {', '.join(t.id for t in self.tasks) or 'none'}"
        )

    def create(self) -> None:
        """Claim `<title>/<id>` with an exclusive mkdir, then save: two launchers that drew the
        same id can never share (and overwrite) one experiment folder."""
        os.makedirs(os.path.dirname(self.dir), mode=0o700, exist_ok=True)
        try:
            os.mkdir(self.dir, mode=0o700)
        except FileExistsError as e:
            raise ConfigError(
                f"experiment id {self.id!r} is taken: {self.dir} already exists; use a new id"
            ) from e
        self.save()

    def save(self) -> None:
        """Write atomically (temp file + rename), 0600, so readers never see half a file.

        The temp name is unique per call (pid, thread, serial) because the driver saves from
        several threads; a failed write removes its temp file.
        """
        path = os.path.join(self.dir, EXPERIMENT_FILE)
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise_if_disk_trouble(e, self.dir, "creating the experiment folder")
            raise
        refuse_if_legacy(self, "saved")
        fields = {k: v for k, v in asdict(self).items() if k != "written_by"}
        text = json.dumps({"version": FORMAT_VERSION, **fields}, indent=1, default=repr)
        try:
            atomic_write(path, text)
        except OSError as e:
            raise_if_disk_trouble(e, path, "saving the experiment record")
            raise

    @classmethod
    def load(cls, folder: str) -> ExperimentRecord:
        """Read a record any nemo_run version wrote: unknown keys are ignored (with a warning),
        null or mistyped fields read as their defaults, a task entry without an id is dropped.
        Only a file without a usable id and title is refused (UnknownExperimentError)."""
        path = os.path.join(folder, EXPERIMENT_FILE)
        if not os.path.isfile(path) and is_legacy_folder(folder):
            return _legacy_record(folder)
        try:
            with open(path, encoding="utf-8") as fh:
                raw = json.load(fh)
        except FileNotFoundError as e:
            raise UnknownExperimentError(
                f"no experiment at {folder} (missing {EXPERIMENT_FILE})"
            ) from e
        except ValueError as e:
            raise _broken(path, f"not JSON ({e})") from e
        except OSError as e:
            raise _broken(path, f"cannot be read ({e.strerror or e})") from e
        if not isinstance(raw, dict):
            raise _broken(path, f"not a JSON object but a {type(raw).__name__}")
        for key in ("id", "title"):
            if not isinstance(raw.get(key), str) or not raw[key].strip():
                raise _broken(path, f"no {key}")
        raw = dict(raw)
        raw.pop("version", None)
        tasks = raw.pop("tasks", None)
        fields = _known_fields(
            cls, raw, path, {"dir": os.path.abspath(folder), "created_at": os.path.getmtime(path)}
        )
        if tasks is not None and not isinstance(tasks, list):
            _report(f"{path}: tasks should be a list, got {type(tasks).__name__}; reading no tasks")
            tasks = None
        entries = (_task_entry(item, k, path) for k, item in enumerate(tasks or []))
        return cls(**fields, tasks=[e for e in entries if e is not None])

    # -- cancel requests for tasks not yet launched -------------------------------------
    def request_cancel(self, task_id: str) -> None:
        refuse_if_legacy(self, "marked for cancelling")
        os.makedirs(os.path.join(self.dir, CANCEL_DIR), mode=0o700, exist_ok=True)
        open(os.path.join(self.dir, CANCEL_DIR, task_id), "a").close()

    def cancel_requested(self, task_id: str) -> bool:
        return os.path.exists(os.path.join(self.dir, CANCEL_DIR, task_id))


def refuse_if_legacy(record: ExperimentRecord, action: str) -> None:
    """Nothing is ever written into a folder another version owns."""
    if record.written_by:
        raise ConfigError(
            f"experiment {record.id} was written by {record.written_by} and is read-only here: "
            f"it cannot be {action}; build a new run.Experiment with its tasks instead"
        )


NEVER_LAUNCHED = "no handle in nemo-run 0.11.1's record: never launched"


def _legacy_record(folder: str) -> ExperimentRecord:
    """A 0.11.1 folder as a read-only record (secrets already dropped by the reader)."""
    try:
        legacy: LegacyExperiment = read_legacy_experiment(folder)
    except LegacyFormatError as e:
        raise _broken(folder, str(e)) from e
    return ExperimentRecord(
        id=legacy.id,
        title=legacy.title,
        dir=legacy.dir,
        created_at=legacy.created_at,
        tasks=[
            TaskEntry(
                id=t.id,
                backend=t.handle.split("://", 1)[0] if t.handle else "",
                roles=t.roles,
                dependencies=t.dependencies,
                executor={"type": t.executor_type, **t.executor},
                handle=t.handle,
                job_dir=t.job_dir,
                launched_at=legacy.created_at if t.handle else None,
                skipped=None if t.handle else NEVER_LAUNCHED,
            )
            for t in legacy.tasks
        ],
        launch_done=True,
        written_by=f"nemo-run {legacy.version}",
    )


def _is_experiment(folder: str) -> bool:
    """Ours (experiment.json) or one 0.11.1 wrote (its _CONFIG/_TASKS/_VERSION files)."""
    return os.path.isfile(os.path.join(folder, EXPERIMENT_FILE)) or is_legacy_folder(folder)


def experiments_root(base_dir: str | None = None) -> str:
    return os.path.join(base_dir or get_nemorun_home(), EXPERIMENTS_DIR)


def require_name(value: Any, what: str = "experiment id or title") -> str:
    """Refuse an empty name: an unset shell variable (`$EXP`) must never mean "any experiment"."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"the {what} is empty ({value!r}); name one, `nemorun experiment list` shows them"
        )
    return value


# -- reading files another version wrote ------------------------------------------------------
def _report(message: str) -> None:
    """Warn once per process: one command may read the same file several times."""
    if not getattr(_quiet, "on", False) and message not in _reported:
        _reported.add(message)
        log.warning("%s", message)


def _broken(path: str, problem: str) -> UnknownExperimentError:
    return UnknownExperimentError(f"experiment file {path} is unreadable: {problem}")


def _fits(value: Any, annotation: Any) -> bool:
    """Whether a JSON value fits a field annotation (list items are checked one level deep)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in typing.get_args(annotation))
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if origin is list:
        item = (typing.get_args(annotation) or (Any,))[0]
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if isinstance(value, bool):
        return annotation is bool
    if annotation is float:
        return isinstance(value, (int, float))
    return isinstance(annotation, type) and isinstance(value, annotation)


def _empty(annotation: Any) -> Any:
    """The empty value of a required field (a mistyped `roles` reads as [])."""
    origin = typing.get_origin(annotation)
    return {list: [], dict: {}}.get(origin, "" if annotation is str else None)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _known_fields(
    cls: type, raw: dict[str, Any], where: str, fallback: dict[str, Any]
) -> dict[str, Any]:
    """The fields of `cls` in `raw` whose values fit; the rest read as defaults (or `fallback`)."""
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        _report(
            f"{where}: ignoring unknown key(s) {', '.join(map(repr, unknown))} "
            "(written by another nemo_run version?)"
        )
    out: dict[str, Any] = {}
    for name in known:
        if name not in raw:
            continue
        value, annotation = raw[name], hints[name]
        if value is None and typing.get_origin(annotation) in (list, dict):
            continue  # null for a list or dict reads as empty
        if _fits(value, annotation):
            out[name] = value
        else:
            _report(
                f"{where}: {name} has the wrong type ({type(value).__name__}: "
                f"{json.dumps(value, default=str)[:40]}); reading its default"
            )
    for name, spec in known.items():
        no_default = (
            spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        )
        if name not in out and name in fallback:
            out[name] = fallback[name]
        elif name not in out and no_default:
            out[name] = _empty(hints[name])
    return out


def _task_entry(item: Any, k: int, path: str) -> TaskEntry | None:
    """One task as written by any version; None (with a warning) for one without an id."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
        _report(f"{path}: skipping task entry {k}, a {type(item).__name__} without an id")
        return None
    return TaskEntry(**_known_fields(TaskEntry, item, f"{path} (task {item['id']!r})", {}))


def _records(title: str | None = None, base_dir: str | None = None) -> list[ExperimentRecord]:
    """Readable records, oldest first; a broken file is skipped, reported by name."""
    root = experiments_root(base_dir)
    titles = (
        [title] if title is not None else (sorted(os.listdir(root)) if os.path.isdir(root) else [])
    )
    out = []
    for name in titles:
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        for exp_id in sorted(os.listdir(folder)):
            if _is_experiment(os.path.join(folder, exp_id)):
                try:
                    record = ExperimentRecord.load(os.path.join(folder, exp_id))
                except UnknownExperimentError as e:
                    _report(f"skipping {e}")
                    continue
                if title is None or record.title == title:
                    out.append(record)
    return sorted(out, key=lambda r: r.created_at)


def _quiet_records(base_dir: str | None) -> list[ExperimentRecord]:
    """Every record, without warnings: only used to word an error about something else."""
    _quiet.on = True
    try:
        return _records(base_dir=base_dir)
    finally:
        _quiet.on = False


def list_experiments(
    title: str | None = None, base_dir: str | None = None
) -> list[ExperimentRecord]:
    """Experiments oldest first, optionally only those with exactly this title."""
    if title is not None:
        require_name(title, "experiment title")
    return _records(title, base_dir)


def _known(base_dir: str | None) -> str:
    recent = [r.id for r in _quiet_records(base_dir)][-10:]
    return ", ".join(recent) if recent else "none (nothing launched from this home folder yet)"


def find_by_id(exp_id: str, base_dir: str | None = None) -> ExperimentRecord:
    """The record with this exact id; ConfigError for an empty id, UnknownExperimentError else."""
    require_name(exp_id, "experiment id")
    root = experiments_root(base_dir)
    if os.path.isdir(root) and "/" not in exp_id and exp_id not in (".", ".."):
        for title in sorted(os.listdir(root)):
            folder = os.path.join(root, title, exp_id)
            if _is_experiment(folder):
                return ExperimentRecord.load(folder)
    raise UnknownExperimentError(
        f"no experiment with id {exp_id!r} in {root}; recent ids: {_known(base_dir)}"
    )


def find_latest(title: str, base_dir: str | None = None) -> ExperimentRecord:
    """The newest record with exactly this title (never "any title" for an empty one)."""
    require_name(title, "experiment title")
    records = _records(title, base_dir) if "/" not in title and title not in (".", "..") else []
    if not records:
        titles = sorted({r.title for r in _quiet_records(base_dir)})
        raise UnknownExperimentError(
            f"no experiment titled {title!r}; known titles: {', '.join(titles) or 'none'}"
        )
    return records[-1]
