"""`nemorun dashboard` at scale: the experiment list page with 100,000 stored jobs.

    python bench/dashboard_list.py                       # 10,000 experiments x 10 tasks
    python bench/dashboard_list.py --experiments 1000 --tasks 5 --requests 20

Builds a fresh home in-process (experiment folders written by `ExperimentRecord.save`, job
records by the store's `put_many`), starts the dashboard as a process on it, and times N
requests of a few list pages (the first page, a deep page, a title filter, a state filter).
Prints median and p95 per page and exits 1 when the first page's median is over the target.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nemo_run.config import set_nemorun_home  # noqa: E402
from nemo_run.core.store import JobRecord, get_store  # noqa: E402
from nemo_run.run.experiment_files import ExperimentRecord, TaskEntry, experiments_root  # noqa: E402

TARGET_MS = 300.0
STATES = ("SUCCEEDED",) * 7 + ("FAILED", "CANCELLED", "SUCCEEDED")


def build_home(home: str, n_experiments: int, n_tasks: int) -> int:
    """Experiment folders and their job records; returns the number of jobs."""
    set_nemorun_home(home)
    rng = random.Random(7)
    start = time.time() - n_experiments * 60
    jobs: list[JobRecord] = []
    root = experiments_root(home)
    for e in range(n_experiments):
        title = f"sweep-{e % 50:02d}"
        exp_id = f"{title}_{e:06d}"
        created = start + e * 60
        tasks = []
        for t in range(n_tasks):
            app_id = f"t{t}-{e:06d}"
            handle = f"local_persistent://nemo_run/{app_id}"
            deps = [f"t{t - 1}"] if t else []
            tasks.append(
                TaskEntry(
                    f"t{t}", "local_persistent", [f"t{t}"], deps, {}, handle, None, created + t
                )
            )
            state = rng.choice(STATES)
            jobs.append(
                JobRecord("local_persistent", app_id, "nemo_run", state, exp_id, None, created + t, created + t + 30,
                          {"exit_code": 0 if state == "SUCCEEDED" else 1, "ended_at": created + t + 30})
            )  # fmt: skip
        record = ExperimentRecord(
            exp_id, title, os.path.join(root, title, exp_id), created, tasks, {}, True
        )
        record.save()
    get_store(home).put_many(jobs)
    return len(jobs)


def timed(url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        began = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
        out.append((time.perf_counter() - began) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiments", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nemorun-dash-bench-") as home:
        began = time.perf_counter()
        n_jobs = build_home(home, args.experiments, args.tasks)
        print(
            f"home: {args.experiments} experiments, {n_jobs} jobs, built in {time.perf_counter() - began:.1f} s"
        )
        env = {**os.environ, "NEMORUN_HOME": home}
        began = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "nemo_run.cli.nemorun", "dashboard", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env,
        )  # fmt: skip
        try:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            found = re.search(r"(http://\S+)", line)
            if not found:
                print(f"dashboard did not start: {line}{proc.stdout.read()}")  # type: ignore[union-attr]
                return 1
            print(f"server up (first index) in {time.perf_counter() - began:.1f} s: {line.strip()}")
            url = found.group(1)
            pages = {
                "list, page 1": url,
                "list, page 100": url + "?page=100",
                "title filter": url + "?title=sweep-07",
                "state filter FAILED": url + "?state=FAILED",
                "one experiment": url
                + f"experiment/sweep-{(args.experiments - 1) % 50:02d}_{args.experiments - 1:06d}",
            }
            medians = {}
            for name, page in pages.items():
                timed(page, 2)  # warm
                times = sorted(timed(page, args.requests))
                p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
                medians[name] = statistics.median(times)
                print(
                    f"{name:22s} median {medians[name]:7.1f} ms   p95 {p95:7.1f} ms   (n={len(times)})"
                )
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    ok = medians["list, page 1"] < TARGET_MS
    print(f"target: list page 1 median < {TARGET_MS:.0f} ms: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
