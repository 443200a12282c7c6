"""Reading experiment folders that nemo-run 0.11.1 wrote in the same home folder.

0.11.1 keeps `experiments/<title>/<id>/` with `_CONFIG` (the experiment) and `_TASKS` (a JSON
list; per task, the job first) as fiddle configs serialized to JSON, zlib-compressed and
base64-encoded; `_VERSION` names the version and `_DONE` marks a finished launch. We decode
that JSON as plain data - never unpickling, never importing the modules it names - and keep
only what reopening needs: title, id, each task's name, handle and executor type, and the
executor's public settings. Secret-looking values (an env var named like a token, a client
secret) are dropped on read, so they can never be copied anywhere. The folder is never written.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

from nemo_run.core.redact import MASK, is_secret_name, redact

CONFIG_FILE = "_CONFIG"
TASKS_FILE = "_TASKS"
VERSION_FILE = "_VERSION"
DONE_FILE = "_DONE"
MARKERS = (CONFIG_FILE, TASKS_FILE, VERSION_FILE)
MAX_DECODED = 64 * 1024 * 1024  # a corrupt or hostile file must not fill memory
MAX_DEPTH = 64
_NAME = re.compile(r"^(?:Attr\(name|Key\(key)=(['\"])(.*)\1\)$")
_INDEX = re.compile(r"^Index\(index=\d+\)$")


class LegacyFormatError(ValueError):
    """A 0.11.1 file that cannot be decoded; the message says which and why."""


@dataclass
class LegacyTask:
    """One task of a 0.11.1 experiment: what reopening needs, secrets dropped."""

    id: str
    handle: str | None
    executor_type: str
    executor: dict[str, Any] = field(default_factory=dict)
    roles: list[str] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    job_dir: str | None = None


@dataclass
class LegacyExperiment:
    id: str
    title: str
    dir: str
    version: str
    done: bool
    created_at: float
    tasks: list[LegacyTask] = field(default_factory=list)


def is_legacy_folder(folder: str) -> bool:
    """A 0.11.1 experiment folder: its marker files, and none of our experiment.json."""
    return any(os.path.isfile(os.path.join(folder, name)) for name in MARKERS)


# -- decoding ------------------------------------------------------------------------------
def decode_blob(text: str) -> Any:
    """base64(zlib(JSON)) -> JSON data, capped in size; LegacyFormatError when it is not that."""
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode("ascii"))
        inflater = zlib.decompressobj()
        data = inflater.decompress(raw, MAX_DECODED)
        if inflater.unconsumed_tail:
            raise LegacyFormatError(f"decodes to more than {MAX_DECODED} bytes")
        return json.loads(data)
    except (UnicodeError, binascii.Error, zlib.error, ValueError) as e:
        if isinstance(e, LegacyFormatError):
            raise
        raise LegacyFormatError(f"not a compressed fiddle config ({e})") from e


def _pyref_name(node: Any) -> str:
    """`module.name` of a fiddle pyref, as text (never imported)."""
    if isinstance(node, dict) and node.get("type") == "pyref":
        return f"{node.get('module', '')}.{node.get('name', '')}".strip(".")
    return ""


def _item_name(key: Any) -> str | None:
    """`Attr(name='x')` / `Key(key='x')` -> 'x'; None for list indexes and anything else."""
    match = _NAME.match(key) if isinstance(key, str) else None
    return match.group(2) if match else None


class _Reader:
    """Turns fiddle's JSON graph into plain data: configs become `{"__fn__": ..., field: ...}`,
    dicts, lists and leaves stay as they are; unknown shapes read as None."""

    def __init__(self, doc: Any) -> None:
        if not isinstance(doc, dict) or not isinstance(doc.get("objects"), dict):
            raise LegacyFormatError("no 'objects' in the fiddle config")
        self.objects: dict[str, Any] = doc["objects"]
        self.root = doc.get("root")

    def value(self, node: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise LegacyFormatError("config nested too deeply (a cycle?)")
        if not isinstance(node, dict):
            return node if isinstance(node, (str, int, float, bool, type(None))) else None
        kind = node.get("type")
        if kind == "leaf":
            leaf = node.get("value")
            return leaf if isinstance(leaf, (str, int, float, bool, type(None))) else None
        if kind == "pyref":
            return _pyref_name(node)
        if kind == "ref":
            return self.obj(self.objects.get(str(node.get("key"))), depth + 1)
        return None

    def obj(self, obj: Any, depth: int) -> Any:
        if not isinstance(obj, dict):
            return None
        type_name = _pyref_name(obj.get("type"))
        raw = obj.get("items")
        items: list[Any] = raw if isinstance(raw, list) else []
        pairs = [(i[0], i[1]) for i in items if isinstance(i, list) and len(i) == 2]
        if type_name in ("builtins.list", "builtins.tuple"):
            return [self.value(v, depth) for k, v in pairs if _INDEX.match(str(k))]
        if type_name == "builtins.dict":
            return {n: self.value(v, depth) for k, v in pairs if (n := _item_name(k)) is not None}
        out: dict[str, Any] = {"__fn__": self.fn_of(obj, depth)}
        for key, val in pairs:
            name = _item_name(key)
            if name is not None:
                out[name] = self.value(val, depth)
        return out

    def fn_of(self, obj: dict[str, Any], depth: int) -> str:
        """The class a config builds, read from its traverser metadata (a pyref)."""
        meta = obj.get("metadata")
        if isinstance(meta, dict) and meta.get("type") == "ref":
            meta = self.objects.get(str(meta.get("key")))
        if isinstance(meta, dict):
            for item in meta.get("items") or []:
                if isinstance(item, list) and len(item) == 2 and _item_name(item[0]) == "fn_or_cls":
                    return _pyref_name(item[1])
        return ""

    def read(self) -> Any:
        return self.value(self.root)


def read_config(text: str, where: str = "") -> Any:
    """One `_CONFIG` / `_TASKS` entry as plain data (see `_Reader`); errors name `where`."""
    try:
        return _Reader(decode_blob(text)).read()
    except LegacyFormatError as e:
        raise LegacyFormatError(f"{where}: {e}" if where else str(e)) from e


# -- secrets ---------------------------------------------------------------------------------
def public(value: Any) -> Any:
    """A copy with secret-looking entries dropped (not masked: nothing of them is kept) and
    secrets inside strings and command lines masked."""
    if isinstance(value, dict):
        kept = {
            k: public(v)
            for k, v in value.items()
            if not (isinstance(k, str) and is_secret_name(k) and k != "__fn__")
            and not _named_secret(v)
        }
        return {k: v for k, v in redact(kept).items() if v != MASK}
    if isinstance(value, list):
        return [public(v) for v in value if not _named_secret(v)]
    return redact(value)


def _named_secret(item: Any) -> bool:
    """`{"name": "HF_TOKEN", "value": ...}`, as env lists of some platforms hold them."""
    return (
        isinstance(item, dict)
        and isinstance(item.get("name"), str)
        and is_secret_name(item["name"])
        and "value" in item
    )


def _short(fn: str) -> str:
    return fn.rsplit(".", 1)[-1] if fn else "unknown"


def executor_settings(config: Any) -> tuple[str, dict[str, Any]]:
    """(executor class name, its public settings with nested configs as `{"type": ...}`)."""
    if not isinstance(config, dict):
        return "unknown", {}

    def plain(value: Any) -> Any:
        if isinstance(value, dict) and "__fn__" in value:
            return {
                "type": _short(value["__fn__"]),
                **{k: plain(v) for k, v in value.items() if k != "__fn__"},
            }
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    settings = public({k: plain(v) for k, v in config.items() if k != "__fn__"})
    return _short(str(config.get("__fn__", ""))), settings


# -- one folder ------------------------------------------------------------------------------
def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeError) as e:
        raise LegacyFormatError(f"{path} cannot be read ({e})") from e


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _task(job: Any, index: int, path: str) -> LegacyTask:
    """A Job (one handle) or JobGroup (a list of handles) as one task entry."""
    if not isinstance(job, dict) or not isinstance(job.get("id"), str) or not job["id"]:
        raise LegacyFormatError(f"{path}: task {index} has no id")
    fn = str(job.get("__fn__", ""))
    handles = _strings(job.get("handles")) if fn.endswith("JobGroup") else []
    handle = job.get("handle") if not handles else handles[0]
    executor = job.get("executor")
    if executor is None and isinstance(job.get("executors"), list) and job["executors"]:
        executor = job["executors"][0]
    elif isinstance(job.get("executors"), dict):
        executor = job["executors"]
    exec_type, settings = executor_settings(executor)
    job_dir = settings.get("job_dir") if isinstance(settings.get("job_dir"), str) else None
    return LegacyTask(
        id=job["id"],
        handle=handle if isinstance(handle, str) and handle else None,
        executor_type=exec_type,
        executor=settings,
        roles=[job["id"]],
        dependencies=_strings(job.get("dependencies")),
        job_dir=job_dir or None,
    )


def _created_at(exp_id: str, folder: str) -> float:
    """0.11.1 ids end in `_<time.time_ns()>`; else the folder's files' age."""
    tail = exp_id.rsplit("_", 1)[-1]
    if tail.isdigit() and 1e18 <= int(tail) < 1e19:
        return int(tail) / 1e9
    for name in (CONFIG_FILE, TASKS_FILE, VERSION_FILE):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.getmtime(os.path.join(folder, name))
    return os.path.getmtime(folder)


def read_legacy_experiment(folder: str) -> LegacyExperiment:
    """Read a 0.11.1 folder; LegacyFormatError naming the file when it cannot be decoded."""
    folder = os.path.abspath(folder)
    config_path = os.path.join(folder, CONFIG_FILE)
    config: Any = {}
    if os.path.isfile(config_path):
        config = read_config(_read_text(config_path), config_path)
    config = config if isinstance(config, dict) else {}
    exp_id = config.get("id") if isinstance(config.get("id"), str) else os.path.basename(folder)
    title = config.get("title") if isinstance(config.get("title"), str) else None
    title = title or os.path.basename(os.path.dirname(folder))
    version_path = os.path.join(folder, VERSION_FILE)
    version = _read_text(version_path).strip() if os.path.isfile(version_path) else "unknown"
    tasks_path = os.path.join(folder, TASKS_FILE)
    tasks: list[LegacyTask] = []
    if os.path.isfile(tasks_path):
        try:
            entries = json.loads(_read_text(tasks_path))
        except ValueError as e:
            raise LegacyFormatError(f"{tasks_path} is not JSON ({e})") from e
        if not isinstance(entries, list):
            raise LegacyFormatError(f"{tasks_path} is not a JSON list")
        for index, entry in enumerate(entries):
            blob = entry[0] if isinstance(entry, list) and entry else entry
            if not isinstance(blob, str):
                raise LegacyFormatError(f"{tasks_path}: task {index} is not a serialized job")
            tasks.append(
                _task(read_config(blob, f"{tasks_path} (task {index})"), index, tasks_path)
            )
    return LegacyExperiment(
        id=exp_id,
        title=title,
        dir=folder,
        version=version or "unknown",
        done=os.path.isfile(os.path.join(folder, DONE_FILE)),
        created_at=_created_at(exp_id, folder),
        tasks=tasks,
    )
