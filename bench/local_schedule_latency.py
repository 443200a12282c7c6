"""Latency of one local `schedule()` call under load: this checkout vs nemo-run 0.11.1.

    python bench/local_schedule_latency.py [--procs 4] [--calls 50] [--rounds 2]

For each side, `--procs` worker processes start at once, each with its own fresh temporary
`$NEMORUN_HOME` and job folder; each imports the package, creates a scheduler
(`create_scheduler(session_name="bench")`), prints READY and waits. Once all are ready the
harness releases them together, and each calls `submit_dryrun` (untimed) then `schedule`
(timed with `time.perf_counter`) of a one-replica `true` app `--calls` times. The report
gives the median and nearest-rank p95 of one `schedule()` call over every call of every
worker, and the same for `submit_dryrun + schedule`. Sides never run at the same time; with
`--rounds N` they alternate N times (ours, peer, ours, ...), so a change in the machine's
load hits both, and the figures pool every round.

Ours is `/work/main/.venv/bin/python` with the checkout first on PYTHONPATH; the peer is
`bench/.peer-venv/bin/python` (nemo-run 0.11.1; see bench/README.md to create it). Both are
driven through the same names, as `bench/worker.py` does. This file is standalone: the same
file is the worker (`--worker`), run under each side's interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OURS_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
PEER_PYTHON = BENCH_DIR / ".peer-venv" / "bin" / "python"
RESULT_TAG = "@@RESULT "


# ---------------------------------------------------------------------------- worker side


def worker(calls: int, job_dir: str) -> dict[str, Any]:
    """Schedule `calls` `true` jobs once released; the timings of each call, in seconds."""
    from torchx import specs

    import nemo_run as run
    from nemo_run.run.torchx_backend.schedulers.local import create_scheduler

    sched = create_scheduler(session_name="bench")

    def dryrun() -> Any:
        executor = run.LocalExecutor()
        executor.job_dir = job_dir
        role = specs.Role(name="main", image="", entrypoint="true", args=[])
        return sched.submit_dryrun(specs.AppDef(name="bench", roles=[role]), executor)

    dryrun()  # pay lazy imports before READY, so only scheduling is timed
    print("READY", flush=True)
    sys.stdin.readline()  # the go signal
    schedule_s, total_s, errors = [], [], []
    for _ in range(calls):
        try:
            t0 = time.perf_counter()
            info = dryrun()
            t1 = time.perf_counter()
            sched.schedule(info)
            t2 = time.perf_counter()
        except Exception as e:  # noqa: BLE001 - counted and reported, the run goes on
            errors.append(f"{type(e).__name__}: {e}"[:300])
            continue
        schedule_s.append(t2 - t1)
        total_s.append(t2 - t0)
    return {"schedule_s": schedule_s, "total_s": total_s, "errors": errors}


# ---------------------------------------------------------------------------- harness side


def side_env(side: str, home: str) -> dict[str, str]:
    """A clean environment: only ours gets the checkout on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NEMORUN_HOME")}
    env["NEMORUN_HOME"] = home
    if side == "ours":
        env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def run_round(side: str, python: Path, procs: int, calls: int, scratch: str) -> dict[str, Any]:
    """One round: `procs` workers released together; their pooled timings. The scratch
    folder is removed by the caller, after every round: on a file system without a journal
    ext4 avoids reusing recently freed inodes, which makes file creation much slower for a
    while after a big removal, and would tax whichever side runs next."""
    workers = []
    try:
        for i in range(procs):
            home = os.path.join(scratch, f"home{i}")
            job_dir = os.path.join(scratch, f"jobs{i}")
            os.makedirs(home)
            os.makedirs(job_dir)
            workers.append(
                subprocess.Popen(
                    [
                        str(python),
                        __file__,
                        "--worker",
                        "--calls",
                        str(calls),
                        "--job-dir",
                        job_dir,
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=scratch,
                    env=side_env(side, home),
                )
            )
        for proc in workers:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "READY":
                raise RuntimeError(f"{side} worker did not start: {line!r}")
        for proc in workers:  # release them together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        pooled: dict[str, list] = {"schedule_s": [], "total_s": [], "errors": []}
        for proc in workers:
            out, _ = proc.communicate(timeout=600)
            results = [ln for ln in out.splitlines() if ln.startswith(RESULT_TAG)]
            if not results:
                raise RuntimeError(f"{side} worker printed no result (exit {proc.returncode})")
            result = json.loads(results[-1][len(RESULT_TAG) :])
            for key in pooled:
                pooled[key] += result[key]
        return pooled
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        time.sleep(0.5)  # the `true` jobs' supervisors finish writing their status


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def summary(values: list[float]) -> str:
    if not values:
        return "no data"
    median, p95 = percentile(values, 50) * 1e3, percentile(values, 95) * 1e3
    return f"median {median:6.2f} ms   p95 {p95:6.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ours-python", type=Path, default=OURS_PYTHON)
    parser.add_argument("--peer-python", type=Path, default=PEER_PYTHON)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every timing here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--job-dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(RESULT_TAG + json.dumps(worker(args.calls, args.job_dir)), flush=True)
        return 0

    sides = {"ours": args.ours_python}
    if not args.skip_peer:
        if not args.peer_python.exists():
            sys.exit(f"no peer interpreter at {args.peer_python}; see bench/README.md")
        sides["peer"] = args.peer_python
    pooled = {side: {"schedule_s": [], "total_s": [], "errors": []} for side in sides}
    load_before = os.getloadavg()
    scratches: list[str] = []
    try:
        for r in range(args.rounds):
            for side, python in sides.items():
                print(f"round {r + 1}/{args.rounds}: {side}", file=sys.stderr, flush=True)
                scratches.append(tempfile.mkdtemp(prefix=f"nemorun-sched-{side}-"))
                result = run_round(side, python, args.procs, args.calls, scratches[-1])
                for key in pooled[side]:
                    pooled[side][key] += result[key]
    finally:
        load_after = os.getloadavg()
        for scratch in scratches:
            shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"one local schedule() of a `true` app, {args.procs} processes x {args.calls} calls "
        f"concurrently, {args.rounds} round(s); {os.cpu_count()} CPUs, load average "
        f"{load_before[0]:.2f} before / {load_after[0]:.2f} after"
    )
    for side, data in pooled.items():
        n, errors = len(data["schedule_s"]), data["errors"]
        print(f"  {side:4}  schedule():           {summary(data['schedule_s'])}   (n={n})")
        print(f"  {side:4}  dryrun + schedule():  {summary(data['total_s'])}")
        if errors:
            print(f"  {side:4}  {len(errors)} call(s) raised; first: {errors[0]}")
    if "peer" in pooled and pooled["ours"]["schedule_s"] and pooled["peer"]["schedule_s"]:
        ours = percentile(pooled["ours"]["schedule_s"], 50)
        peer = percentile(pooled["peer"]["schedule_s"], 50)
        print(f"  median peer/ours: {peer / ours:.2f} (target: >= 1)")
    if args.json:
        args.json.write_text(json.dumps(pooled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
