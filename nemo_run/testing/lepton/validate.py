"""Strict request validation against the leptonai SDK's own pydantic models.

The SDK's models ignore unknown fields and coerce types (``"2"`` -> ``2``), which would let a
client bug through that the real service rejects. Here a request body is checked twice:

1. ``unknown_fields`` walks the JSON next to the model's ``model_fields`` (by alias, e.g.
   ``from`` and ``id``), through ``Optional``/``Union``/``List``/``Dict``, and names every key
   the model does not declare, at any depth (``$.spec.container.foo``).
2. ``Model.model_validate_json(body, strict=True)``: pydantic's strict mode on JSON input (no
   string-to-number or number-to-bool coercion; enums still come as their string values).
   Each error's location becomes a JSON path.

Only this module (and the server that imports it) needs ``leptonai``.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from pydantic import BaseModel, ValidationError


@dataclass
class Issue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_json(self) -> dict:
        return {"path": self.path, "message": self.message}


def json_path(loc: tuple | list) -> str:
    out = "$"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _fits(tp: Any, value: Any) -> bool:
    """Whether ``value`` has the JSON shape of ``tp`` (object, array or anything else)."""
    origin = typing.get_origin(tp)
    if _is_model(tp) or origin is dict:
        return isinstance(value, dict)
    if origin in (list, tuple, set):
        return isinstance(value, list)
    return True


def unknown_fields(tp: Any, value: Any, loc: tuple = ()) -> list[Issue]:
    """Every key in ``value`` that ``tp`` (a model or a typing construct) does not declare."""
    if value is None or tp is Any:
        return []
    if _is_model(tp):
        if not isinstance(value, dict):
            return []  # a type error: pydantic reports it
        fields = {(f.alias or name): f.annotation for name, f in tp.model_fields.items()}
        issues: list[Issue] = []
        for key, child in value.items():
            if key not in fields:
                known = ", ".join(sorted(fields))
                issues.append(Issue(json_path((*loc, key)), f"unknown field (known: {known})"))
            else:
                issues += unknown_fields(fields[key], child, (*loc, key))
        return issues
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None) and _fits(a, value)]
        results = [unknown_fields(a, value, loc) for a in options]
        return min(results, key=len) if results else []
    if origin in (list, tuple, set) and isinstance(value, list) and args:
        issues = []
        for i, item in enumerate(value):
            issues += unknown_fields(args[0], item, (*loc, i))
        return issues
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        issues = []
        for key, child in value.items():
            issues += unknown_fields(args[1], child, (*loc, key))
        return issues
    return []


def strict_issues(model: type[BaseModel], payload: Any) -> list[Issue]:
    """Unknown fields, then strict type errors; empty when ``payload`` is a valid ``model``."""
    if not isinstance(payload, dict):
        return [Issue("$", f"must be a JSON object, not {type(payload).__name__}")]
    issues = unknown_fields(model, payload)
    try:
        model.model_validate_json(json.dumps(payload), strict=True)
    except ValidationError as e:
        for err in e.errors(include_url=False, include_input=False):
            issues.append(Issue(json_path(err.get("loc", ())), err.get("msg", "invalid")))
    return issues


M = TypeVar("M", bound=BaseModel)


def parse_strict(model: type[M], payload: Any) -> tuple[M | None, list[Issue]]:
    issues = strict_issues(model, payload)
    if issues:
        return None, issues
    return model.model_validate_json(json.dumps(payload), strict=True), []
