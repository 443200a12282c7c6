"""Group `throughput`: processes scheduling at once into one store; does every record stay?"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from harness.checks import equals
from harness.procs import BenchError, Scratch, Side, run_worker, short
from harness.registry import Group, GroupPlan, Measured, Mode, Row, Step, register
from harness.together import run_together


@dataclass(frozen=True)
class Settings:
    tp_procs: int
    tp_each: int


def measure(side: Side, s: Settings, rows: tuple[Row, Row, Row, Row]) -> Measured:
    wall_row, rate_row, kept_row, errors_row = rows
    total = s.tp_procs * s.tp_each
    with Scratch("throughput") as scratch:
        child = ["throughput-child", "--n", str(s.tp_each), "--job-dir", scratch.jobs]
        released = run_together(side, scratch, [child] * s.tp_procs)
        results = released.results
        try:
            kept: Any = run_worker(side, scratch, ["count"], 300)["count"]
            kept_note = f"of {total} scheduled"
        except BenchError as exc:
            kept, kept_note = None, f"store unreadable: {exc}"
    wall = max(r["end"] for r in results) - released.go
    ok = sum(len(r["ids"]) for r in results)
    errors = [e for r in results for e in r["errors"]]
    raw = {
        "startup_s": released.ready - released.launched,
        "acknowledged": ok,
        "errors_sample": errors[:5],
        "per_process_s": [r["end"] - r["start"] for r in results],
    }
    return (
        Measured(raw)
        .put(wall_row, wall, f"{s.tp_procs} procs x {s.tp_each}")
        .put(rate_row, ok / wall if wall > 0 else None, f"{ok}/{total} acknowledged")
        .put(kept_row, kept, kept_note)
        .put(errors_row, len(errors), short(errors[0], 120) if errors else "")
    )


def plan(mode: Mode, _: argparse.Namespace) -> GroupPlan:
    s = Settings(tp_procs=mode.pick(full=8, quick=8, smoke=2), tp_each=mode.pick(25, 10, 3))
    total = s.tp_procs * s.tp_each
    rows = (
        Row("tp_wall_s", f"schedule {s.tp_procs}x{s.tp_each} concurrent, wall (s)", "s"),
        Row("tp_rate", "schedule throughput (schedules/s, higher=better)", "/s"),
        Row(
            "tp_kept", f"records kept (of {total}, higher=better)", "", f"= {total}", equals(total)
        ),
        Row("tp_errors", "schedule calls that raised", "", "= 0", equals(0)),
    )
    return GroupPlan(s, [Step("throughput", rows, lambda side: measure(side, s, rows))])


register(Group("throughput", 40, "concurrent schedules: wall time, records kept", plan))
