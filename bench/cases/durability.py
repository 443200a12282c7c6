"""Group `durability`: SIGKILL a process mid-schedule; are acknowledged jobs still stored?"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from harness.checks import equals, is_yes
from harness.procs import (
    BenchError,
    LineReader,
    Scratch,
    Side,
    run_worker,
    short,
    stderr_tail,
    worker_argv,
)
from harness.registry import Group, GroupPlan, Measured, Mode, Row, Step, register

LOST = Row("dur_lost", "kill -9: acknowledged ids lost", "", "= 0", equals(0))
READABLE = Row("dur_readable", "kill -9: store readable afterwards", "", "yes", is_yes())


@dataclass(frozen=True)
class Settings:
    dur_rounds: int
    dur_max_delay_s: float
    seed: int
    dur_min_delay_s: float = 0.05


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=12345, help="seed for the kill instants")


def kill_round(
    side: Side, scratch: Scratch, rnd: int, delay: float
) -> tuple[list[str], dict[str, Any]]:
    """One child scheduling in a loop, SIGKILLed `delay` s after READY; its complete ID lines."""
    err_path = os.path.join(scratch.root, f"round{rnd}.err")
    with open(err_path, "w") as err:
        p = subprocess.Popen(
            worker_argv(side, ["durability-child", "--job-dir", scratch.jobs]),
            cwd=scratch.cwd,
            env=side.env(scratch.home),
            text=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert p.stdout is not None
    reader = LineReader(p.stdout)
    reader.start()
    try:
        ready = reader.wait_for("READY", 300)
        if ready:
            time.sleep(delay)
        exited_early = p.poll()
        if exited_early is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    lines = reader.drain()
    # only complete lines count as acknowledged: a torn last line was never seen
    acked = [ln[3:].strip() for ln in lines if ln.startswith("ID ") and ln.endswith("\n")]
    info: dict[str, Any] = {"kill_after_s": round(delay, 3), "acked": len(acked)}
    if not ready or exited_early is not None:
        info["child_failed"] = f"rc={p.returncode}: {stderr_tail(err_path)}"
    return acked, info


def measure(side: Side, s: Settings) -> Measured:
    rng = random.Random(s.seed)
    rounds = []
    with Scratch("durability") as scratch:
        ids_file = os.path.join(scratch.root, "acked.txt")
        open(ids_file, "w").close()
        for rnd in range(s.dur_rounds):
            delay = rng.uniform(s.dur_min_delay_s, s.dur_max_delay_s)
            acked, info = kill_round(side, scratch, rnd, delay)
            with open(ids_file, "a") as f:
                f.writelines(a + "\n" for a in acked)
            rounds.append(info)
        check = run_worker(side, scratch, ["durability-check", "--ids-file", ids_file], 300)
    acked_total = sum(r["acked"] for r in rounds)
    failed = [r["child_failed"] for r in rounds if "child_failed" in r]
    if acked_total == 0:
        raise BenchError("no schedule was acknowledged in any round: " + "; ".join(failed)[:400])
    readable = bool(check.get("readable"))
    lost_note = f"of {acked_total} acked, {s.dur_rounds} kills"
    if failed:
        lost_note += f"; {len(failed)} child(ren) failed: {short(failed[0], 160)}"
    return (
        Measured({"rounds": rounds, "check": check})
        .put(LOST, check.get("lost"), lost_note)
        .put(READABLE, readable, "" if readable else short(str(check.get("error", "")), 160))
    )


def plan(mode: Mode, args: argparse.Namespace) -> GroupPlan:
    s = Settings(
        dur_rounds=mode.pick(full=8, quick=3, smoke=1),
        dur_max_delay_s=mode.pick(full=2.5, quick=1.5, smoke=2.0),
        seed=args.seed,
        # one round must see at least one acknowledged schedule, even on a busy machine
        dur_min_delay_s=mode.pick(full=0.05, quick=0.05, smoke=1.0),
    )
    return GroupPlan(s, [Step("durability", (LOST, READABLE), lambda side: measure(side, s))])


register(
    Group(
        "durability",
        50,
        "kill -9 while scheduling: acknowledged jobs lost?",
        plan,
        add_options=add_options,
    )
)
