"""`logs-setup` / `logs-measure`: a job that writes a big log, then a fresh process reading
it to the end through the scheduler's `log_iter`."""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from typing import Any

from workers.common import new_scheduler, wait_terminal


def cmd_logs_setup(args: argparse.Namespace) -> dict[str, Any]:
    """--n MB --job-dir DIR: a finished local job whose stdout holds MB MB of 100-byte lines."""
    from torchx import specs

    import nemo_run as run

    writer = (  # 100-byte lines, 10,000 (1 MB) at a time
        "import sys\n"
        "block = ('0123456789' * 9 + '012345678\\n') * 10000\n"
        f"for _ in range({args.n}):\n"
        "    sys.stdout.write(block)\n"
    )
    script = os.path.join(args.job_dir, "write_log.py")  # a file: the peer mangles `-c TEXT`
    os.makedirs(args.job_dir, exist_ok=True)
    with open(script, "w") as fh:
        fh.write(writer)
    role = specs.Role(name="main", image="", entrypoint=sys.executable, args=[script])
    sched = new_scheduler()
    executor = run.LocalExecutor()
    executor.job_dir = args.job_dir
    app_id = sched.schedule(
        sched.submit_dryrun(specs.AppDef(name="biglog", roles=[role]), executor)
    )
    state = wait_terminal(sched, app_id, timeout=600)
    return {"app_id": app_id, "state": state}


def cmd_logs_measure(args: argparse.Namespace) -> dict[str, Any]:
    """--app-id ID: stream every line of the job's log through `log_iter` (as `job logs` does)
    in this fresh process; peak RSS of the process and what it was before reading."""
    sched = new_scheduler()
    sched.describe(args.app_id)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    lines = size = 0
    for text in sched.log_iter(args.app_id, "main", 0):
        lines += 1
        size += len(text)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "lines": lines,
        "bytes": size,
        "seconds": time.perf_counter() - t0,
        "rss_before_mb": before,
        "rss_peak_mb": peak,
    }


COMMANDS = {"logs-setup": cmd_logs_setup, "logs-measure": cmd_logs_measure}
