"""The case registry: what a group declares and how the harness finds it.

A case module builds its rows (key, label, unit, target, check) next to the function that
measures them and calls `register()` once at import. The harness runs whatever is registered,
in `order`, and knows no group by name.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from harness.procs import Side

T = TypeVar("T")

# row key -> side name ("ours"/"peer") -> value: what a row check gets to compare against
Values = dict[str, dict[str, Any]]
# (ours' value, every value of the run) -> pass, fail, or None when it cannot be judged
Check = Callable[[Any, Values], "bool | None"]


class Mode(Enum):
    """How big a run is: every group picks its sizes and repetitions from this."""

    FULL = "full"
    QUICK = "quick"
    SMOKE = "smoke"

    def pick(self, full: T, quick: T, smoke: T) -> T:
        return {Mode.FULL: full, Mode.QUICK: quick, Mode.SMOKE: smoke}[self]


@dataclass(frozen=True)
class Row:
    """One table row. `target` is the text shown; `check` decides PASS/FAIL for ours."""

    key: str
    label: str
    unit: str
    target: str = ""
    check: Check | None = None


@dataclass
class Measured:
    """What one step measured for one side: a value per row, notes, and the raw figures."""

    raw: Any = None  # goes to the JSON's "raw" section; None stores nothing
    values: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def put(self, row: Row, value: Any, note: str = "") -> Measured:
        self.values[row.key] = value
        if note:
            self.notes[row.key] = note
        return self


@dataclass(frozen=True)
class Step:
    """One measurement of one side, filling `rows`: a failure marks only these rows ERROR."""

    name: str  # its key under "raw" in the JSON, and its tag in the progress lines
    rows: tuple[Row, ...]
    measure: Callable[[Side], Measured]
    always: bool = False  # run even for an unavailable side: it looks at the engine, not the side


@dataclass(frozen=True)
class Prepared:
    """The outcome of a group's one-off check before any side runs (e.g. is there an engine)."""

    skip: str = ""  # non-empty: every row of the group shows `skipped`, for this reason
    meta: dict[str, Any] | None = None  # goes to the JSON's meta under the group's name


@dataclass
class GroupPlan:
    """A group's part of one run: its settings (recorded in the JSON) and its steps."""

    settings: Any  # a dataclass; its fields go into the JSON's meta.plan
    steps: list[Step]
    prepare: Callable[[list[Side]], Prepared] | None = None

    @property
    def rows(self) -> list[Row]:
        return [row for step in self.steps for row in step.rows]


@dataclass(frozen=True)
class Group:
    """A case group, as `--only` names it."""

    name: str
    order: int  # position in the run and in the table
    about: str  # one line for `--help`
    plan: Callable[[Mode, argparse.Namespace], GroupPlan]
    add_options: Callable[[argparse.ArgumentParser], None] | None = None
    smoke_skip: str = ""  # non-empty: `--smoke` leaves the group out, for this reason


_GROUPS: dict[str, Group] = {}


def register(group: Group) -> Group:
    """Called once by each case module at import."""
    if group.name in _GROUPS:
        raise ValueError(f"case group {group.name!r} registered twice")
    _GROUPS[group.name] = group
    return group


def registered() -> list[Group]:
    return sorted(_GROUPS.values(), key=lambda g: (g.order, g.name))
