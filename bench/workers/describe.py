"""`describe-setup` / `describe-measure`: one real job among N stored records, then a fresh
process timing `describe()` of it."""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

from workers.common import (
    new_scheduler,
    percentile,
    put_finished_jobs,
    schedule_one,
    state_name,
    stored_ids,
    wait_terminal,
)


def cmd_describe_setup(args: argparse.Namespace) -> dict[str, Any]:
    """--n N --job-dir DIR: schedule one `true` job, then fill the store up to N records."""
    t0 = time.perf_counter()
    sched = new_scheduler()
    app_id = schedule_one(sched, args.job_dir)
    state = wait_terminal(sched, app_id)
    del sched
    gc.collect()
    missing = args.n - len(stored_ids())
    if missing > 0:
        put_finished_jobs([f"bench-filler-{i:07d}" for i in range(missing)], {"roles": ["main"]})
    total = len(stored_ids())
    return {
        "app_id": app_id,
        "state": state,
        "records": total,
        "setup_s": time.perf_counter() - t0,
    }


def cmd_describe_measure(args: argparse.Namespace) -> dict[str, Any]:
    """--app-id ID --calls C --time-cap S: first call, then median/p95 of up to C calls."""
    sched = new_scheduler()
    t0 = time.perf_counter()
    resp = sched.describe(args.app_id)
    first_ms = (time.perf_counter() - t0) * 1e3
    if resp is None:
        raise RuntimeError(f"describe({args.app_id!r}) returned None from a fresh scheduler")
    got_id = getattr(resp, "app_id", None)
    times: list[float] = []
    started = time.perf_counter()
    for _ in range(args.calls):
        t = time.perf_counter()
        r = sched.describe(args.app_id)
        times.append((time.perf_counter() - t) * 1e3)
        if r is None:
            raise RuntimeError(f"describe({args.app_id!r}) returned None on call {len(times)}")
        if time.perf_counter() - started > args.time_cap:
            break
    ordered = sorted(times)
    return {
        "state": state_name(resp),
        "app_id_matches": got_id == args.app_id,
        "first_ms": first_ms,
        "median_ms": statistics.median(ordered),
        "p95_ms": percentile(ordered, 0.95),
        "calls": len(times),
        "calls_requested": args.calls,
        "capped": len(times) < args.calls,
    }


COMMANDS = {"describe-setup": cmd_describe_setup, "describe-measure": cmd_describe_measure}
