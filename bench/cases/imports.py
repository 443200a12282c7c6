"""Group `import`: the cost of `import nemo_run`, as a whole process and timed in-process."""

from __future__ import annotations

import argparse
import statistics
import subprocess
from dataclasses import dataclass

from harness.checks import at_most
from harness.procs import Scratch, Side, timed_run
from harness.registry import Group, GroupPlan, Measured, Mode, Row, Step, register

# Both one-liners import the builtin `time` and print one number, so their difference is
# exactly the cost of `import nemo_run`; the printed number is that import timed in-process.
BARE_CODE = "import time; t = time.perf_counter(); print(0.0)"
IMPORT_CODE = (
    "import time; t = time.perf_counter(); import nemo_run; print((time.perf_counter() - t) * 1e3)"
)

WHOLE = Row("import_ms", "import nemo_run (ms, minus bare python)", "ms", "<= 150", at_most(150))
INPROC = Row("import_inproc_ms", "import nemo_run, timed in-process (ms)", "ms")


@dataclass(frozen=True)
class Settings:
    import_reps: int


def measure(side: Side, s: Settings) -> Measured:
    pipe = subprocess.PIPE
    with Scratch("import") as scratch:
        # warm-up: writes bytecode caches and fails fast if the import is broken
        timed_run(side, scratch, BARE_CODE, pipe, 60)
        timed_run(side, scratch, IMPORT_CODE, pipe, 120)
        base, full, inproc = [], [], []
        for _ in range(s.import_reps):
            base.append(timed_run(side, scratch, BARE_CODE, pipe, 60)[0])
            elapsed, out = timed_run(side, scratch, IMPORT_CODE, pipe, 120)
            full.append(elapsed)
            inproc.append(float(out.strip().splitlines()[-1]))
    bare = statistics.median(base) * 1e3
    with_import = statistics.median(full) * 1e3
    raw = {
        "bare_python_ms": bare,
        "python_with_import_ms": with_import,
        "inprocess_ms": inproc,
        "reps": len(full),
    }
    return (
        Measured(raw)
        .put(WHOLE, with_import - bare, f"n={len(full)}; bare python {bare:.0f} ms")
        .put(INPROC, statistics.median(inproc), f"n={len(full)}")
    )


def plan(mode: Mode, _: argparse.Namespace) -> GroupPlan:
    s = Settings(import_reps=mode.pick(full=10, quick=3, smoke=1))
    return GroupPlan(s, [Step("import", (WHOLE, INPROC), lambda side: measure(side, s))])


register(Group("import", 10, "the cost of `import nemo_run`", plan))
