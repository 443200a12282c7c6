"""`schedule-child`: times each local `schedule()` call once the harness releases it; the
`schedule` group runs several at once, each in its own `$NEMORUN_HOME`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from workers.common import dryrun_one, new_scheduler


def cmd_schedule_child(args: argparse.Namespace) -> dict[str, Any]:
    """--n N --job-dir DIR: prints READY, waits for a line on stdin, then N dry runs (not
    timed) each followed by a timed `schedule()`."""
    sched = new_scheduler()
    dryrun_one(sched, args.job_dir)  # pay the lazy imports before READY
    print("READY", flush=True)
    sys.stdin.readline()  # the go signal
    schedule_ms: list[float] = []
    with_dryrun_ms: list[float] = []
    errors: list[str] = []
    for _ in range(args.n):
        try:
            t0 = time.perf_counter()
            info = dryrun_one(sched, args.job_dir)
            t1 = time.perf_counter()
            sched.schedule(info)
            t2 = time.perf_counter()
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
            continue
        schedule_ms.append((t2 - t1) * 1e3)
        with_dryrun_ms.append((t2 - t0) * 1e3)
    return {"schedule_ms": schedule_ms, "with_dryrun_ms": with_dryrun_ms, "errors": errors}


COMMANDS = {"schedule-child": cmd_schedule_child}
