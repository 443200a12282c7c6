"""Fault-injection rules, as posted to ``/_emulator/faults``.

A rule is ``{"match": {"method", "path_prefix"}, "count", "action": {...}}``: the next
``count`` requests (``-1``: every one) whose method and path match get the action:
``status`` (an error reply, with ``retry_after`` a ``Retry-After`` header), ``delay``
(seconds before handling), ``drop`` (close the connection without a reply),
``delay_after_commit`` / ``drop_after_commit`` (the same after the request took effect),
``body`` (reply with this JSON instead of handling the request, with ``status``, default 200:
e.g. a stale listing that lacks a job which exists).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FAULT_ACTIONS = (
    "status",
    "retry_after",
    "delay",
    "drop",
    "delay_after_commit",
    "drop_after_commit",
    "body",
)


@dataclass
class FaultRule:
    id: int
    method: str | None
    path_prefix: str | None
    remaining: int | None  # None: every matching request
    action: dict
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method != method:
            return False
        return not self.path_prefix or path.startswith(self.path_prefix)

    def to_json(self) -> dict:
        match: dict[str, str] = {}
        if self.method:
            match["method"] = self.method
        if self.path_prefix:
            match["path_prefix"] = self.path_prefix
        return {
            "id": self.id,
            "match": match,
            "remaining": self.remaining,
            "hits": self.hits,
            "action": self.action,
        }


def parse_fault_rule(raw: Any, rule_id: int) -> FaultRule:
    if not isinstance(raw, dict):
        raise ValueError("a fault rule must be an object")
    unknown = set(raw) - {"match", "count", "action"}
    if unknown:
        raise ValueError(f"unknown fault rule keys: {sorted(unknown)}")
    match = raw.get("match") or {}
    if not isinstance(match, dict) or set(match) - {"method", "path_prefix"}:
        raise ValueError("match takes only 'method' and 'path_prefix'")
    action = raw.get("action")
    if not isinstance(action, dict) or not action:
        raise ValueError("action must be a non-empty object")
    unknown = set(action) - set(FAULT_ACTIONS) - {"message"}
    if unknown:
        raise ValueError(f"unknown action keys {sorted(unknown)}; known: {list(FAULT_ACTIONS)}")
    if not any(k in action for k in FAULT_ACTIONS if k != "retry_after"):
        raise ValueError("action needs one of status, delay, drop, delay_after_commit, body")
    lowest = 200 if "body" in action else 400
    if "status" in action and not (
        isinstance(action["status"], int) and lowest <= action["status"] <= 599
    ):
        raise ValueError(
            "action.status must be an HTTP status 200-599 with a body, else an error (400-599)"
        )
    for key in ("retry_after", "delay", "delay_after_commit"):
        if key in action and (not isinstance(action[key], (int, float)) or action[key] < 0):
            raise ValueError(f"action.{key} must be a non-negative number of seconds")
    count = raw.get("count", 1)
    if count is None or count == -1:
        remaining = None
    elif isinstance(count, int) and count >= 1:
        remaining = count
    else:
        raise ValueError("count must be a positive integer (or -1 for every request)")
    method = match.get("method")
    return FaultRule(
        rule_id, method.upper() if method else None, match.get("path_prefix"), remaining, action
    )


def take_fault(rules: list[FaultRule], method: str, paths: tuple[str, ...]) -> FaultRule | None:
    """The first rule matching ``method`` and any of ``paths``, used up once (the caller locks)."""
    for rule in rules:
        if any(rule.matches(method, path) for path in paths):
            rule.hits += 1
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    rules.remove(rule)
            return rule
    return None
