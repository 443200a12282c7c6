"""Group `schedule`: the latency of one local `schedule()` call while other processes do the
same. This is how the work on the local scheduler's `schedule()` is reported: ours must be no
slower than the peer measured in the same run, on the same machine."""

from __future__ import annotations

import argparse
import math
import os
import statistics
from dataclasses import dataclass

from harness.checks import at_most_peer
from harness.procs import Scratch, Side, short
from harness.registry import Group, GroupPlan, Measured, Mode, Row, Step, register
from harness.together import run_together


@dataclass(frozen=True)
class Settings:
    sched_procs: int
    sched_each: int


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile, as every other latency row reports it."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def measure(side: Side, s: Settings, median_row: Row, p95_row: Row) -> Measured:
    """`sched_procs` children, each in its own home and job dir, released together; every
    child's `schedule()` timings pooled."""
    with Scratch("schedule") as scratch:
        homes, children = [], []
        for i in range(s.sched_procs):
            home, jobs = (os.path.join(scratch.root, f"{kind}{i}") for kind in ("home", "jobs"))
            os.makedirs(home)
            os.makedirs(jobs)
            homes.append(home)
            children.append(["schedule-child", "--n", str(s.sched_each), "--job-dir", jobs])
        released = run_together(side, scratch, children, homes)
    calls = sorted(ms for r in released.results for ms in r["schedule_ms"])
    with_dryrun = sorted(ms for r in released.results for ms in r["with_dryrun_ms"])
    errors = [e for r in released.results for e in r["errors"]]
    if not calls:
        raise ValueError(f"no schedule() call succeeded: {errors[:1]}")
    note = f"n={len(calls)}; with submit_dryrun: median {statistics.median(with_dryrun):.1f} ms"
    if errors:
        note += f"; {len(errors)} raised, first: {short(errors[0], 120)}"
    raw = {
        "schedule_ms": calls,
        "with_dryrun_ms": with_dryrun,
        "errors_sample": errors[:5],
        "startup_s": released.ready - released.launched,
    }
    return (
        Measured(raw)
        .put(median_row, statistics.median(calls), note)
        .put(p95_row, percentile(calls, 0.95))
    )


def plan(mode: Mode, _: argparse.Namespace) -> GroupPlan:
    s = Settings(sched_procs=mode.pick(full=4, quick=4, smoke=2), sched_each=mode.pick(50, 50, 5))
    load = f"{s.sched_procs} procs x {s.sched_each}"
    key = "sched_call_median_ms"
    median = Row(
        key,
        f"one local schedule() under load ({load}), median (ms)",
        "ms",
        "<= peer median",
        at_most_peer(key),
    )
    p95 = Row("sched_call_p95_ms", f"one local schedule() under load ({load}), p95 (ms)", "ms")
    step = Step("schedule", (median, p95), lambda side: measure(side, s, median, p95))
    return GroupPlan(s, [step])


register(Group("schedule", 45, "one local schedule() call while others schedule", plan))
