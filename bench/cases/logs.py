"""Group `logs`: read a big job log to its end as `job logs` does; memory must stay flat."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from harness.checks import at_most
from harness.procs import BenchError, Scratch, Side, run_worker
from harness.registry import Group, GroupPlan, Measured, Mode, Row, Step, register


@dataclass(frozen=True)
class Settings:
    log_mb: int


def measure(side: Side, s: Settings, peak_row: Row, time_row: Row) -> Measured:
    """Peak memory of reading a big log to its end, as `job logs` does."""
    with Scratch("logs") as scratch:
        args = ["logs-setup", "--n", str(s.log_mb), "--job-dir", scratch.jobs]
        setup = run_worker(side, scratch, args, 900)
        if setup.get("state") != "SUCCEEDED":
            raise BenchError(f"the log-writing job ended {setup.get('state')}")
        meas = run_worker(side, scratch, ["logs-measure", "--app-id", setup["app_id"]], 900)
    expected = s.log_mb * 1_000_000
    if meas["bytes"] != expected:
        raise BenchError(f"read {meas['bytes']:,} bytes of a {expected:,}-byte log")
    note = f"{meas['lines']:,} lines; {meas['rss_before_mb']:.0f} MB before reading"
    return (
        Measured({"setup": setup, "measure": meas})
        .put(peak_row, meas["rss_peak_mb"], note)
        .put(time_row, meas["seconds"])
    )


def plan(mode: Mode, _: argparse.Namespace) -> GroupPlan:
    s = Settings(log_mb=mode.pick(full=500, quick=50, smoke=5))
    rows = (
        Row(
            "logs_peak_rss_mb",
            f"read a {s.log_mb} MB log to its end, peak RSS (MB)",
            "MB",
            "<= 100",
            at_most(100),
        ),
        Row("logs_read_s", f"  time to read the {s.log_mb} MB log (s)", "s"),
    )
    return GroupPlan(s, [Step("logs", rows, lambda side: measure(side, s, *rows))])


register(Group("logs", 80, "peak memory of reading a big log to its end", plan))
