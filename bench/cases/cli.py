"""Group `cli`: whole console-script processes (`job list`, `experiment status`) and an
experiment of many parallel tasks."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass

from harness.checks import at_most
from harness.procs import BenchError, Scratch, Side, run_worker, short, timed_cmd
from harness.registry import Group, GroupPlan, Measured, Mode, Row, Step, register

NO_SUCH_COMMAND = "n/a (no such command)"

STATUS = Row(
    "cli_status_s",
    "experiment status (1 finished task), whole process (s)",
    "s",
    "<= 0.3",
    at_most(0.3),
)
OVERHEAD = Row(
    "cli_many_overhead_ms",
    "  overhead per task beyond process start (ms)",
    "ms",
    "<= 15",
    at_most(15),
)


@dataclass(frozen=True)
class Settings:
    cli_reps: int
    cli_jobs: int
    cli_tasks: int
    cli_cap_s: float


def cli_script(side: Side) -> str:
    """The side's console script, next to its interpreter: `nemorun` (ours) or `nemo` (peer)."""
    name = "nemorun" if side.name == "ours" else "nemo"
    path = os.path.join(os.path.dirname(side.python), name)
    if not os.access(path, os.X_OK):
        raise BenchError(f"no console script {path}")
    return path


def cmd_text(argv: list[str]) -> str:
    return " ".join([os.path.basename(argv[0]), *argv[1:]])


def time_cmd_reps(
    side: Side, scratch: Scratch, argv: list[str], out_path: str, reps: int, timeout: float
) -> list[float]:
    """One warm-up run, then `reps` timed runs of `argv`; every run must exit 0."""
    times = []
    for i in range(reps + 1):
        elapsed, rc, err = timed_cmd(side, scratch, argv, out_path, timeout)
        if rc != 0:
            raise BenchError(f"`{cmd_text(argv)}` exited {rc}: {err}")
        if i:
            times.append(elapsed)
    return times


def measure_joblist(side: Side, s: Settings, rows: tuple[Row, Row]) -> Measured:
    """`job list --json`, default limit then `--limit 0`, over `cli_jobs` stored jobs."""
    cli = cli_script(side)
    with Scratch("joblist") as scratch:
        out_path = os.path.join(scratch.root, "stdout.txt")
        _, rc, err = timed_cmd(side, scratch, [cli, "job", "list", "--help"], out_path, 120)
        if rc != 0 and "no such command" in err.lower():
            why = f"`{cmd_text([cli, 'job', 'list'])}` exits {rc}: no such command"
            out = Measured({"probe": err}).put(rows[0], NO_SUCH_COMMAND, why)
            return out.put(rows[1], NO_SUCH_COMMAND)
        if rc != 0:
            raise BenchError(f"`{cmd_text([cli, 'job', 'list', '--help'])}` exited {rc}: {err}")
        setup = run_worker(side, scratch, ["fill-jobs", "--n", str(s.cli_jobs)], 900)
        if setup.get("records") != s.cli_jobs:
            raise BenchError(
                f"store holds {setup.get('records')} records after setup, wanted {s.cli_jobs}"
            )
        out = Measured({"setup": setup})
        for row, extra in ((rows[0], []), (rows[1], ["--limit", "0"])):
            argv = [cli, "job", "list", "--json", *extra]
            times = time_cmd_reps(side, scratch, argv, out_path, s.cli_reps, 300)
            size = os.path.getsize(out_path)
            with open(out_path) as f:
                try:
                    listed = json.load(f)
                except ValueError as exc:
                    raise BenchError(f"`{cmd_text(argv)}` printed invalid JSON: {exc}") from exc
            if not isinstance(listed, list):
                kind = type(listed).__name__
                raise BenchError(f"`{cmd_text(argv)}` printed a {kind}, not a list")
            if extra and len(listed) != s.cli_jobs:
                raise BenchError(
                    f"`{cmd_text(argv)}` listed {len(listed)} jobs, the store holds {s.cli_jobs}"
                )
            out.raw[row.key] = {"runs_s": times, "rows": len(listed), "stdout_bytes": size}
            note = f"n={len(times)}; {len(listed):,} rows, {size / 1e3:,.0f} kB of JSON"
            out.put(row, statistics.median(times), note)
    return out


def measure_status(side: Side, s: Settings) -> Measured:
    """`experiment status ID` of a finished one-task experiment, as a whole process."""
    cli = cli_script(side)
    with Scratch("status") as scratch:
        created = run_worker(side, scratch, ["exp-create"], 300)
        argv = [cli, "experiment", "status", created["exp_id"]]
        out_path = os.path.join(scratch.root, "stdout.txt")
        times = time_cmd_reps(side, scratch, argv, out_path, s.cli_reps, 120)
        with open(out_path, errors="replace") as f:
            shown = f.read()
    note = f"n={len(times)}"
    if created.get("states") != {"SUCCEEDED": 1}:
        note += f"; task states after the run: {created.get('states')}"
    if "SUCCEEDED" not in shown:
        note += f"; output does not show SUCCEEDED: {short(shown, 160)}"
    raw = {"create": created, "runs_s": times, "stdout": shown[-2000:]}
    return Measured(raw).put(STATUS, statistics.median(times), note)


def measure_many(side: Side, s: Settings, wall_row: Row) -> Measured:
    """An experiment of `cli_tasks` parallel `true` tasks, launched and waited for in-process."""
    n = s.cli_tasks
    with Scratch("exp-many") as scratch:
        t0 = time.perf_counter()
        args = ["exp-many", "--n", str(n), "--time-cap", str(s.cli_cap_s)]
        res = run_worker(side, scratch, args, s.cli_cap_s + 300)
        whole = time.perf_counter() - t0
    wall_note = f"whole process {whole:.1f} s; 1-task warm-up {res['warmup_s']:.2f} s"
    if res.get("states") != {"SUCCEEDED": n}:
        wall_note += f"; task states: {res.get('states')}"
    baseline = f"baseline: {n} `true` via subprocess {res['baseline_s'] * 1e3:.0f} ms"
    return (
        Measured({**res, "whole_process_s": whole})
        .put(wall_row, res["wall_s"], wall_note)
        .put(OVERHEAD, res["overhead_ms"], baseline)
    )


def plan(mode: Mode, _: argparse.Namespace) -> GroupPlan:
    s = Settings(
        cli_reps=mode.pick(full=5, quick=3, smoke=1),
        cli_jobs=mode.pick(full=100_000, quick=10_000, smoke=200),
        cli_tasks=mode.pick(full=200, quick=50, smoke=5),
        cli_cap_s=mode.pick(full=120.0, quick=60.0, smoke=60.0),
    )
    joblist = (
        Row(
            "cli_joblist_s",
            f"job list --json @ {s.cli_jobs:,} jobs, whole process (s)",
            "s",
            "<= 0.5",
            at_most(0.5),
        ),
        Row("cli_joblist_all_s", f"job list --json --limit 0 @ {s.cli_jobs:,} jobs (s)", "s"),
    )
    wall = Row(
        "cli_many_wall_s",
        f"experiment of {s.cli_tasks} parallel `true` tasks, launch+wait (s)",
        "s",
    )
    return GroupPlan(
        s,
        [
            Step("cli_joblist", joblist, lambda side: measure_joblist(side, s, joblist)),
            Step("cli_status", (STATUS,), lambda side: measure_status(side, s)),
            Step("cli_many", (wall, OVERHEAD), lambda side: measure_many(side, s, wall)),
        ],
    )


register(Group("cli", 60, "console scripts as whole processes; many-task experiments", plan))
