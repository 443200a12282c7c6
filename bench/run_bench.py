"""Side-by-side benchmark: this checkout's `nemo_run` versus the peer `nemo-run==0.11.1`.

Run from the repo root with the interpreter that has our package installed:

    python bench/run_bench.py            # full run (a few minutes on 2 cores)
    python bench/run_bench.py --quick    # fewer repetitions, smaller sizes
    python bench/run_bench.py --smoke    # tiny sizes: does every case still work?

This file only plans, runs and reports: the case groups live in `bench/cases/` (one module
each, registered at import) and each measuring process runs `bench/worker.py` under the side's
interpreter, in a fresh `$NEMORUN_HOME`. The table goes to stdout; the same results, with raw
figures, go to `bench/results/latest.json`. See bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cases
from harness.peer import PEER_VENV, RESULTS_DIR, ensure_peer_venv
from harness.procs import REPO_ROOT, BenchError, Scratch, Side, log, run_worker
from harness.registry import Group, GroupPlan, Mode, Prepared
from harness.report import BUSY_LOAD, print_table, table_rows
from harness.results import Results


def parse_args(argv: list[str] | None, groups: list[Group]) -> argparse.Namespace:
    names = ",".join(g.name for g in groups)
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog="groups: " + "; ".join(f"{g.name}: {g.about}" for g in groups),
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer repetitions, smaller sizes")
    size.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, one repetition; groups that need an engine are skipped",
    )
    parser.add_argument("--only", default="", help=f"comma list of groups: {names}")
    parser.add_argument("--ours-python", default=sys.executable)
    parser.add_argument("--peer-python", default="", help="use this interpreter for the peer")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--skip-ours", action="store_true")
    parser.add_argument("--output", default=str(RESULTS_DIR / "latest.json"))
    for group in groups:
        if group.add_options:
            group.add_options(parser)
    args = parser.parse_args(argv)
    wanted = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = sorted(set(wanted) - {g.name for g in groups})
    if unknown:
        parser.error(f"unknown group(s) {unknown}; choose from {names}")
    return args


def make_sides(args: argparse.Namespace) -> list[Side]:
    """The sides to measure, each checked to import the implementation it claims to be."""
    # Ours runs from this checkout: the repo root goes first on PYTHONPATH, so the package
    # measured is the one next to this script whatever state its editable install is in.
    ours = Side("ours", args.ours_python, {"PYTHONPATH": str(REPO_ROOT)})
    peer = Side("peer", args.peer_python or str(PEER_VENV / "bin" / "python"))
    sides = []
    if not args.skip_ours:
        sides.append(ours)
    if not args.skip_peer:
        sides.append(peer)
        if not args.peer_python:
            try:
                peer.python = ensure_peer_venv()
            except (BenchError, OSError, subprocess.CalledProcessError) as exc:
                peer.unavailable = f"peer venv unavailable: {exc}"
    for side in sides:
        if side.unavailable:
            continue
        with Scratch("info") as s:
            try:
                side.info = run_worker(side, s, ["info"], 300)
            except BenchError as exc:
                side.info = {"error": str(exc)}
        impl = side.info.get("implementation")
        if impl and impl != side.name:
            side.unavailable = (
                f"{side.name} interpreter imports the {impl} implementation "
                f"({side.info.get('nemo_run_file')})"
            )
        log(f"[{side.name}] {side.python}: {side.info}")
    return sides


def run_group(
    group: Group, plan: GroupPlan, mode: Mode, sides: list[Side], results: Results
) -> Prepared:
    """Every step of `group` for each side in turn, unless the group is skipped as a whole."""
    prepared = Prepared()
    if mode is Mode.SMOKE and group.smoke_skip:
        prepared = Prepared(skip=f"--smoke: {group.smoke_skip}")
        log(f"[{group.name}] skipped: {prepared.skip}")
    elif plan.prepare is not None:
        prepared = plan.prepare(sides)
    for side in sides:
        if prepared.skip:
            results.skip(plan.steps, side, prepared.skip)
            continue
        for step in plan.steps:
            results.record(step, side)
    return prepared


def settings_of(plans: dict[str, GroupPlan]) -> dict[str, Any]:
    """Every group's settings as one flat dict: the JSON's meta.plan."""
    merged: dict[str, Any] = {}
    for plan in plans.values():
        merged.update(dataclasses.asdict(plan.settings))
    return merged


def run_meta(
    args: argparse.Namespace,
    plans: dict[str, GroupPlan],
    prepared: dict[str, Prepared],
    sides: list[Side],
    started: float,
    load_start: tuple[float, float, float],
) -> dict[str, Any]:
    """The JSON's `meta`: what was run, where, and how busy the machine was."""
    # a group with a one-off check (docker's engine probe) reports it under its own name;
    # null when the check did not run
    group_meta = {name: None for name, plan in plans.items() if plan.prepare}
    group_meta.update({name: p.meta for name, p in prepared.items() if name in group_meta})
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "quick": args.quick,
        "smoke": args.smoke,
        "plan": settings_of(plans),
        "host": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        },
        **group_meta,
        "sides": {
            s.name: {"python": s.python, "info": s.info, "unavailable": s.unavailable}
            for s in sides
        },
        "groups": {name: {"skipped": p.skip or None} for name, p in prepared.items()},
    }


def main(argv: list[str] | None = None) -> int:
    groups = cases.load()
    args = parse_args(argv, groups)
    mode = Mode.SMOKE if args.smoke else Mode.QUICK if args.quick else Mode.FULL
    plans = {g.name: g.plan(mode, args) for g in groups}
    keys = [row.key for plan in plans.values() for row in plan.rows]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    assert not twice, f"row keys declared twice: {twice}"
    wanted = {g.strip() for g in args.only.split(",") if g.strip()}
    selected = [g for g in groups if not wanted or g.name in wanted]

    started = time.time()
    load_start = os.getloadavg()
    if load_start[0] >= BUSY_LOAD:
        log(
            f"warning: the machine is busy before the run (load average {load_start[0]:.2f}); "
            "timings will be noisy"
        )
    sides = make_sides(args)
    results = Results()
    prepared = {g.name: run_group(g, plans[g.name], mode, sides, results) for g in selected}

    rows = table_rows([(g.name, row) for g in selected for row in plans[g.name].rows], results)
    title = "nemo_run benchmark: ours vs nemo-run 0.11.1"
    title += {Mode.FULL: "", Mode.QUICK: "  [--quick]", Mode.SMOKE: "  [--smoke]"}[mode]
    print_table(rows, title, load_start[0])

    report = {
        "meta": run_meta(args, plans, prepared, sides, started, load_start),
        "rows": rows,
        "raw": results.raw,
    }
    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(f"results written to {out_path} ({report['meta']['duration_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
