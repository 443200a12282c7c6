"""`throughput-child`: schedules `true` jobs as soon as the harness releases it; the
`throughput` group runs several at once in one `$NEMORUN_HOME`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from workers.common import new_app, new_scheduler, schedule_one


def cmd_throughput_child(args: argparse.Namespace) -> dict[str, Any]:
    """--n N --job-dir DIR: prints READY, waits for a line on stdin, then N schedules."""
    import nemo_run as run

    sched = new_scheduler()
    run.LocalExecutor()  # pay the lazy imports before READY so only scheduling is timed
    new_app()
    print("READY", flush=True)
    sys.stdin.readline()  # the go signal
    start = time.time()
    ids: list[str] = []
    errors: list[str] = []
    for _ in range(args.n):
        try:
            ids.append(schedule_one(sched, args.job_dir))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
    end = time.time()
    return {"start": start, "end": end, "ids": ids, "errors": errors}


COMMANDS = {"throughput-child": cmd_throughput_child}
