"""`fill-jobs`, `exp-create`, `exp-many`: the state the `cli` group's console scripts read,
and an experiment of many parallel tasks timed in-process."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from typing import Any

from workers.common import emit, put_finished_jobs, stored_ids


def cmd_fill_jobs(args: argparse.Namespace) -> dict[str, Any]:
    """--n N: N finished local jobs, in the shape `nemorun job list` reads."""
    t0 = time.perf_counter()
    data = {"roles": [{"name": "main", "num_replicas": 1}], "exit_code": 0}
    put_finished_jobs([f"bench-job-{i:07d}" for i in range(args.n)], data)
    return {"records": len(stored_ids()), "fill_s": time.perf_counter() - t0}


def task_states(exp: Any) -> dict[str, int]:
    """How many of the experiment's tasks are in each state, by state name.

    Ours keys each task's state as "state", the peer as "status" (a torchx AppState)."""
    counts: dict[str, int] = {}
    statuses = exp.status(return_dict=True) or {}
    for value in statuses.values():
        state = value.get("state", value.get("status")) if isinstance(value, dict) else value
        name = getattr(state, "name", None) or str(state)
        counts[name] = counts.get(name, 0) + 1
    return counts


def run_true_tasks(title: str, n: int) -> Any:
    """An experiment of `n` independent local `true` tasks, launched in parallel and waited for.

    The same code drives both packages: the peer launches inside `run()` and waits when the
    `with` block exits; ours waits inside an attached `run()`."""
    import nemo_run as run

    with run.Experiment(title) as exp:
        for i in range(n):
            exp.add(run.Script(inline="true"), executor=run.LocalExecutor(), name=f"t{i}")
        exp.run(sequential=False)
    return exp


def cmd_exp_create(_: argparse.Namespace) -> dict[str, Any]:
    """One finished local task; prints its experiment id for `experiment status`."""
    t0 = time.perf_counter()
    exp = run_true_tasks("bench", 1)
    elapsed = time.perf_counter() - t0
    return {"exp_id": exp._id, "states": task_states(exp), "create_s": elapsed}


def spawn_true(n: int) -> float:
    """Seconds to start `n` `true` processes at once with subprocess and wait for all of them."""
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(n)
    ]
    for p in procs:
        p.wait()
    return time.perf_counter() - t0


def cmd_exp_many(args: argparse.Namespace) -> dict[str, Any]:
    """--n N --time-cap S: N parallel `true` tasks, launch+wait timed against a bare baseline;
    stops the process after S s."""
    import nemo_run  # noqa: F401  (imports are not timed)

    # A one-task warm-up pays every lazy import and one-time set-up (store, directories).
    t0 = time.perf_counter()
    run_true_tasks("warmup", 1)
    warmup_s = time.perf_counter() - t0
    baseline_before = spawn_true(args.n)

    cap = args.time_cap

    def give_up() -> None:
        sys.stdout.write("\n")  # the package may have left a partial line on stdout
        emit(
            {
                "error": f"capped: the {args.n}-task experiment had not finished after "
                f"{cap:.0f} s (launch+wait still running; the process was stopped)",
                "capped": True,
            }
        )
        os._exit(3)

    watchdog = threading.Timer(cap, give_up)
    watchdog.daemon = True
    t0 = time.perf_counter()
    watchdog.start()
    try:
        exp = run_true_tasks("bench", args.n)
    except Exception as exc:
        elapsed = time.perf_counter() - t0
        raise RuntimeError(
            f"the experiment raised {type(exc).__name__}: {exc} after {elapsed:.1f} s of launch+wait"
        ) from exc
    finally:
        watchdog.cancel()
    wall_s = time.perf_counter() - t0
    baseline_after = spawn_true(args.n)
    baseline_s = min(baseline_before, baseline_after)
    return {
        "n": args.n,
        "wall_s": wall_s,
        "baseline_s": baseline_s,
        "baseline_runs_s": [baseline_before, baseline_after],
        "overhead_ms": (wall_s - baseline_s) / args.n * 1e3,
        "warmup_s": warmup_s,
        "states": task_states(exp),
        "exp_id": exp._id,
    }


COMMANDS = {"fill-jobs": cmd_fill_jobs, "exp-create": cmd_exp_create, "exp-many": cmd_exp_many}
