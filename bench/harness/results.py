"""Collects every step's values, notes, errors and raw figures, per side."""

from __future__ import annotations

import time
from typing import Any

from harness.format import fmt
from harness.procs import BenchError, Side, log, short
from harness.registry import Step, Values

SKIPPED = "skipped"


class Results:
    """Everything measured in one run; a failing step marks its own rows and nothing else."""

    def __init__(self) -> None:
        self.values: Values = {}
        self.notes: dict[str, dict[str, str]] = {}
        self.errors: dict[str, dict[str, str]] = {}
        self.raw: dict[str, dict[str, Any]] = {}

    def record(self, step: Step, side: Side) -> None:
        """Run `step` for `side`; any exception becomes an ERROR in the step's rows."""
        t0 = time.perf_counter()
        try:
            if side.unavailable and not step.always:
                raise BenchError(side.unavailable)
            out = step.measure(side)
            declared = [row.key for row in step.rows]
            missing = [k for k in declared if k not in out.values]
            extra = [k for k in out.values if k not in declared]
            if missing or extra:
                raise BenchError(f"step {step.name} left rows {missing} unset, set {extra}")
        except Exception as exc:  # a failing row must not stop the others
            msg = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
            for row in step.rows:
                self.errors.setdefault(row.key, {})[side.name] = msg
            self.raw.setdefault(step.name, {})[side.name] = {"error": msg}
            log(f"[{step.name}] {side.name}: ERROR {short(msg, 300)}")
            return
        if out.raw is not None:
            self.raw.setdefault(step.name, {})[side.name] = out.raw
        for key, value in out.values.items():
            self.values.setdefault(key, {})[side.name] = value
        for key, note in out.notes.items():
            if note:
                self.notes.setdefault(key, {})[side.name] = note
        shown = ", ".join(f"{k}={fmt(v)}" for k, v in out.values.items()) or "done"
        log(f"[{step.name}] {side.name}: {shown}  ({time.perf_counter() - t0:.1f} s)")

    def skip(self, steps: list[Step], side: Side, why: str) -> None:
        """Fill every row of a skipped group with `skipped`; the reason goes in its first row."""
        rows = [row for step in steps for row in step.rows]
        for step in steps:
            if step.rows:
                self.raw.setdefault(step.name, {})[side.name] = {"skipped": why}
        for row in rows:
            self.values.setdefault(row.key, {})[side.name] = SKIPPED
        if rows:
            self.notes.setdefault(rows[0].key, {})[side.name] = f"skipped: {why}"
