"""Row checks: does ours meet its target? Each gets ours' value and every value of the run."""

from __future__ import annotations

from typing import Any

from harness.registry import Check, Values


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def at_most(limit: float) -> Check:
    return lambda value, _: value <= limit


def equals(expected: Any) -> Check:
    return lambda value, _: value == expected


def is_yes() -> Check:
    return lambda value, _: value is True


def at_most_peer(key: str) -> Check:
    """Ours must not exceed the peer's figure for row `key` in the same run; without a peer
    figure (skipped, failed) there is no verdict."""

    def check(value: Any, values: Values) -> bool | None:
        peer = values.get(key, {}).get("peer")
        return value <= peer if is_number(peer) else None

    return check
