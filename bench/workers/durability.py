"""`durability-child` / `durability-check`: schedule until SIGKILLed, then count the
acknowledged ids the store lost."""

from __future__ import annotations

import argparse
import gc
from typing import Any

from workers.common import new_scheduler, schedule_one, state_name, stored_ids


def cmd_durability_child(args: argparse.Namespace) -> dict[str, Any]:
    """--job-dir DIR: prints READY, then "ID <app_id>" (flushed) after every schedule, forever."""
    sched = new_scheduler()
    print("READY", flush=True)
    done = 0
    while True:
        app_id = schedule_one(sched, args.job_dir)
        print(f"ID {app_id}", flush=True)
        done += 1
        if done % 50 == 0:  # the peer's in-memory cache holds 100 unfinished apps at most
            del sched
            gc.collect()
            sched = new_scheduler()


def cmd_durability_check(args: argparse.Namespace) -> dict[str, Any]:
    """--ids-file FILE: which acknowledged ids the store lacks; can it describe the last one?"""
    with open(args.ids_file) as f:
        acked = [line.strip() for line in f if line.strip()]
    out: dict[str, Any] = {"acked": len(acked)}
    try:
        present = set(stored_ids())
    except Exception as exc:
        out.update(readable=False, error=f"{type(exc).__name__}: {exc}"[:300])
        return out
    lost = [a for a in acked if a not in present]
    out.update(readable=True, stored=len(present), lost=len(lost), lost_sample=lost[:5])
    if acked:
        last = acked[-1]
        try:
            resp = new_scheduler().describe(last)
            out["describe_last"] = state_name(resp)
        except Exception as exc:
            out.update(readable=False, error=f"describe: {type(exc).__name__}: {exc}"[:300])
    return out


COMMANDS = {"durability-child": cmd_durability_child, "durability-check": cmd_durability_check}
