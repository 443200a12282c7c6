"""Group `hello`: a whole `run.run(Script(inline='echo hi'))` process, end to end."""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import dataclass

from harness.checks import at_most
from harness.procs import Scratch, Side, timed_run
from harness.registry import Group, GroupPlan, Measured, Mode, Row, Step, register

HELLO_CODE = (
    "import nemo_run as run\nrun.run(run.Script(inline='echo hi'), executor=run.LocalExecutor())\n"
)

HELLO = Row("hello_s", "hello world run.run, whole process (s)", "s", "<= 0.35", at_most(0.35))


@dataclass(frozen=True)
class Settings:
    hello_reps: int


def says_hi(path: str) -> bool:
    try:
        with open(path, errors="replace") as f:
            return any(line.strip() == "hi" or line.rstrip().endswith(" hi") for line in f)
    except OSError:
        return False


def measure(side: Side, s: Settings) -> Measured:
    times = []
    saw_hi = []
    with Scratch("hello") as scratch:
        out_path = os.path.join(scratch.root, "stdout.txt")
        for _ in range(s.hello_reps):
            with open(out_path, "w") as out:
                times.append(timed_run(side, scratch, HELLO_CODE, out, 300)[0])
            saw_hi.append(says_hi(out_path))
        # the job's own output, wherever the package keeps it (one log file per run at least)
        logs_with_hi = sum(
            says_hi(os.path.join(d, name))
            for d, _, names in os.walk(scratch.home)
            for name in names
            if name.endswith(".log")
        )
    if all(saw_hi):
        where = "job output shown on stdout"
    elif logs_with_hi >= len(times):
        where = "job output in log files only, not on stdout"
    else:
        where = f"'hi' found on stdout in {sum(saw_hi)} and in {logs_with_hi} log files"
    raw = {"runs_s": times, "hi_on_stdout": saw_hi, "log_files_with_hi": logs_with_hi}
    return Measured(raw).put(HELLO, statistics.median(times), f"n={len(times)}; {where}")


def plan(mode: Mode, _: argparse.Namespace) -> GroupPlan:
    s = Settings(hello_reps=mode.pick(full=5, quick=2, smoke=1))
    return GroupPlan(s, [Step("hello", (HELLO,), lambda side: measure(side, s))])


register(Group("hello", 20, "a hello-world `run.run`, whole process", plan))
