"""An experiment's task definitions, kept in its folder (`tasks.json`) so that a later process
can `Experiment.from_id(...).reset()` and run it again, as in 0.11.1.

No secret is written: an environment entry with a secret-looking name is saved as a reference
to the variable of that name, filled from this process's environment when the file is read
(`export HF_TOKEN=...` before `reset()`); any other secret-looking value (a `--token X`
argument, an inline script or a Partial argument holding one) is saved as a mark that makes
`reset()` refuse, naming it, rather than rerun the task without it.

Scripts, executors, packagers and launchers (dataclasses) are written as plain JSON of their
fields; a `run.Config`/`run.Partial` task as fiddle's JSON (fiddle is loaded only then).
Fields hidden from repr (client secrets, tokens) are never saved: their objects read them
again where they read them when none is given.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
from typing import Any

from nemo_run.core.atomic import atomic_write
from nemo_run.core.diskerrors import raise_if_disk_trouble
from nemo_run.core.redact import is_secret_name, redact_args, redact_text
from nemo_run.exceptions import ConfigError
from nemo_run.run.plan import PlannedTask

DEFINITIONS_FILE = "tasks.json"
FORMAT = 1
_ENV_REF = "\x00nemo_run:env:"  # + variable name: filled from the environment on read
_UNSAVED = "\x00nemo_run:unsaved-secret\x00"  # a secret that cannot be refilled


def save(folder: str, planned: list[PlannedTask]) -> None:
    """Write the definitions of `planned` into the experiment `folder` (0600)."""
    body = {
        "format": FORMAT,
        "tasks": [
            {
                "id": p.id,
                "dependencies": list(p.dependencies),
                "tail_logs": p.tail_logs,
                "tasks": [_saved(_encode_task, t) for t in p.tasks],
                "executor": _saved(_encode, p.executor),
            }
            for p in planned
        ],
    }
    path = os.path.join(folder, DEFINITIONS_FILE)
    try:
        atomic_write(path, json.dumps(body, indent=1), mode=0o600)
    except OSError as e:
        raise_if_disk_trouble(e, path, "writing the experiment's task definitions")
        raise


def _saved(encode: Any, value: Any) -> Any:
    """`encode(value)`, or a note of why it cannot be saved: a value this file cannot hold
    never stops a launch (the launch itself says whether the task can run); only a later
    `reset()` refuses it, with that reason."""
    try:
        return encode(value)
    except Exception as e:  # noqa: BLE001 - ConfigError, fiddle's UnserializableValueError...
        return {"__unsaved__": f"{type(e).__name__}: {e}"}


def load(folder: str, exp_id: str) -> list[PlannedTask]:
    """The tasks saved in `folder`, secrets refilled from the environment; ConfigError when
    there is no file, or a secret cannot be refilled (naming it and the fix)."""
    path = os.path.join(folder, DEFINITIONS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            body = json.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"experiment {exp_id} keeps no task definitions ({path} is missing: it was "
            "launched by an older version); build a new run.Experiment and add the tasks again"
        ) from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}; build a new run.Experiment") from e
    problems: list[str] = []
    planned = [
        PlannedTask(
            id=item["id"],
            tasks=[_decode_task(t, f"task {item['id']}", problems) for t in item["tasks"]],
            executor=_decode(item["executor"], f"task {item['id']} executor", problems),
            dependencies=list(item.get("dependencies", [])),
            tail_logs=bool(item.get("tail_logs", False)),
        )
        for item in body.get("tasks", [])
    ]
    if problems:
        raise ConfigError(
            f"experiment {exp_id} cannot run again as saved: " + "; ".join(problems) + ". "
            "Secrets are never written to disk: export the named variables and call reset() "
            "again, or build a new run.Experiment with the values"
        )
    return planned


# -- tasks: a dataclass (Script) as JSON, a fiddle buildable as fiddle's JSON ----------------
def _encode_task(task: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(task) and not isinstance(task, type):
        return {"kind": "object", "value": _encode(task)}
    from fiddle.experimental import serialization  # noqa: PLC0415 - a Config/Partial task loaded it

    config = _strip_buildable(copy.deepcopy(task))
    return {"kind": "fiddle", "value": serialization.dump_json(config)}


def _decode_task(item: dict[str, Any], where: str, problems: list[str]) -> Any:
    if "__unsaved__" in item:
        problems.append(f"{where} could not be saved ({item['__unsaved__']})")
        return None
    if item.get("kind") == "object":
        return _decode(item["value"], where, problems)
    from fiddle.experimental import serialization  # noqa: PLC0415 - as in _encode_task

    config = serialization.load_json(item["value"])
    _refill_buildable(config, where, problems)
    return config


# -- dataclasses and plain values ------------------------------------------------------------
def _encode(value: Any, key: str = "") -> Any:
    """JSON for a dataclass tree: objects as {"__type__": "module:Qualname", fields}."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {
            f.name: _encode(getattr(value, f.name), f.name)
            for f in dataclasses.fields(value)
            if f.init and f.repr
        }
        cls = type(value)
        return {"__type__": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    if isinstance(value, dict):
        return {
            "__dict__": [
                [k, _ENV_REF + k if _secret_entry(k, v) else _encode(v, str(k))]
                for k, v in value.items()
            ]
        }
    if isinstance(value, list | tuple):
        items = [_encode(v, key) for v in value]
        if all(isinstance(v, str) for v in value):
            masked = redact_args(list(value))
            items = [_UNSAVED if m != v else v for m, v in zip(masked, value, strict=True)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, str):
        return _UNSAVED if _secret_text(key, value) else value
    if value is None or isinstance(value, bool | int | float):
        return value
    raise ConfigError(
        f"field {key or '?'} holds a {type(value).__name__}, which cannot be saved with the "
        "experiment; use plain values (str, numbers, lists, dicts) or dataclasses"
    )


def _decode(value: Any, where: str, problems: list[str]) -> Any:
    if isinstance(value, dict) and "__unsaved__" in value:
        problems.append(f"{where} could not be saved ({value['__unsaved__']})")
        return None
    if isinstance(value, dict) and "__type__" in value:
        module, _, qualname = value["__type__"].partition(":")
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        fields = {k: _decode(v, f"{where}.{k}", problems) for k, v in value["fields"].items()}
        return cls(**fields)
    if isinstance(value, dict) and "__dict__" in value:
        return {k: _decode(v, f"{where}[{k}]", problems) for k, v in value["__dict__"]}
    if isinstance(value, dict) and "__tuple__" in value:
        return tuple(_decode(v, where, problems) for v in value["__tuple__"])
    if isinstance(value, list):
        return [_decode(v, where, problems) for v in value]
    if isinstance(value, str):
        return _refill(value, where, problems)
    return value


def _refill(value: str, where: str, problems: list[str]) -> str:
    if value.startswith(_ENV_REF):
        name = value[len(_ENV_REF) :]
        if name in os.environ:
            return os.environ[name]
        problems.append(f"{where}: ${name} is not set")
        return ""
    if value == _UNSAVED:
        problems.append(f"{where} held a secret, which was not saved")
        return ""
    return value


def _secret_entry(key: Any, value: Any) -> bool:
    return isinstance(key, str) and is_secret_name(key) and isinstance(value, str) and bool(value)


def _secret_text(key: str, value: str) -> bool:
    return bool(value) and (is_secret_name(key) or redact_text(value) != value)


# -- fiddle buildables: the same rules on their arguments ------------------------------------
def _strip_buildable(node: Any) -> Any:
    import fiddle as fdl  # noqa: PLC0415 - see _encode_task

    if isinstance(node, fdl.Buildable):
        for name, value in list(node.__arguments__.items()):
            secret = _secret_text(str(name), _text(value))
            node.__arguments__[name] = _UNSAVED if secret else _strip_buildable(value)
        return node
    if isinstance(node, dict):
        return {
            k: _ENV_REF + k if _secret_entry(k, v) else _strip_buildable(v) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_strip_buildable(v) for v in node]
    if isinstance(node, str) and redact_text(node) != node:
        return _UNSAVED
    return node


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _refill_buildable(node: Any, where: str, problems: list[str]) -> Any:
    import fiddle as fdl  # noqa: PLC0415 - see _encode_task

    if isinstance(node, fdl.Buildable):
        for name, value in list(node.__arguments__.items()):
            node.__arguments__[name] = _refill_buildable(value, f"{where}.{name}", problems)
        return node
    if isinstance(node, dict):
        return {k: _refill_buildable(v, f"{where}[{k}]", problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_refill_buildable(v, where, problems) for v in node]
    if isinstance(node, str):
        return _refill(node, where, problems)
    return node
