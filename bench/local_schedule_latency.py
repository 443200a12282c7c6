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

It also reports the CPU time each side spends per launch, which the machine's load does not
distort as it does latencies: the launching process's own (its loop of dry run + schedule),
and that of every process involved (launchers, supervisors, replicas), counted once all of
them have exited. Where the harness may make cgroups (root, cgroup v1 `cpuacct` or v2), each
round's workers start in a cgroup of their own, which counts every descendant. Otherwise the
harness makes itself the child subreaper (Linux), so processes that outlive their worker are
reaped by it and their CPU time lands in its children's usage; that misses processes reaped
by a parent that ignores SIGCHLD (the kernel discards their usage), so the report names the
method. The workers' start-up (interpreter, imports, before READY) is subtracted; workers
end with `os._exit`, so their interpreter teardown is not counted either.

Ours is `/work/main/.venv/bin/python` with the checkout first on PYTHONPATH; the peer is
`bench/.peer-venv/bin/python` (nemo-run 0.11.1; see bench/README.md to create it). Both are
driven through the same names, as `bench/worker.py` does. This file is standalone: the same
file is the worker (`--worker`), run under each side's interpreter.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
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
PR_SET_CHILD_SUBREAPER = 36
REAP_TIMEOUT_S = 60.0


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
    ready_cpu = cpu_s(resource.RUSAGE_SELF) + cpu_s(resource.RUSAGE_CHILDREN)
    print("READY", flush=True)
    sys.stdin.readline()  # the go signal
    loop_start = cpu_s(resource.RUSAGE_SELF)
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
    return {
        "schedule_s": schedule_s,
        "total_s": total_s,
        "errors": errors,
        "ready_cpu_s": ready_cpu,
        "loop_cpu_s": cpu_s(resource.RUSAGE_SELF) - loop_start,
    }


def cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------- harness side


def side_env(side: str, home: str) -> dict[str, str]:
    """A clean environment: only ours gets the checkout on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NEMORUN_HOME")}
    env["NEMORUN_HOME"] = home
    if side == "ours":
        env["PYTHONPATH"] = str(REPO_ROOT)
    return env


class CpuGroup:
    """A cgroup counting the CPU time of every process started in it (None of it when no
    cgroup can be made here)."""

    ROOTS = ("/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")

    def __init__(self, name: str) -> None:
        self.path: str | None = None
        for root in self.ROOTS:
            path = os.path.join(root, name)
            try:
                os.mkdir(path)
            except OSError:
                continue
            if any(os.path.exists(os.path.join(path, f)) for f in ("cpuacct.usage", "cpu.stat")):
                self.path = path
                return
            os.rmdir(path)

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv`, run from inside the group (a shell joins it, then execs)."""
        if self.path is None:
            return argv
        procs = os.path.join(self.path, "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]

    def used_s(self) -> float:
        assert self.path is not None
        usage = os.path.join(self.path, "cpuacct.usage")
        if os.path.exists(usage):
            with open(usage, encoding="ascii") as fh:
                return int(fh.read()) / 1e9
        with open(os.path.join(self.path, "cpu.stat"), encoding="ascii") as fh:
            fields = dict(line.split() for line in fh if line.strip())
        return int(fields["usage_usec"]) / 1e6

    def empty(self) -> bool:
        assert self.path is not None
        with open(os.path.join(self.path, "cgroup.procs"), encoding="ascii") as fh:
            return not fh.read().strip()

    def close(self) -> None:
        if self.path is None:
            return
        deadline = time.monotonic() + REAP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                os.rmdir(self.path)
                return
            except OSError:  # busy: some process still runs in it
                time.sleep(0.05)


def become_subreaper() -> bool:
    """Orphans of our workers (supervisors, replicas) become our children: their CPU time
    is then counted in ours once we reap them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_orphans() -> bool:
    """Wait for every process adopted from the round (jobs end at once: `true`); False when
    some still ran after REAP_TIMEOUT_S (their CPU time is then missing)."""
    deadline = time.monotonic() + REAP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            time.sleep(0.01)
    return False


def run_round(side: str, python: Path, procs: int, calls: int, scratch: str) -> dict[str, Any]:
    """One round: `procs` workers released together; their pooled timings. The scratch
    folder is removed by the caller, after every round: on a file system without a journal
    ext4 avoids reusing recently freed inodes, which makes file creation much slower for a
    while after a big removal, and would tax whichever side runs next."""
    workers = []
    before = cpu_s(resource.RUSAGE_CHILDREN)
    group = CpuGroup(f"nemorun-bench-{os.getpid()}-{side}-{time.monotonic_ns()}")
    try:
        for i in range(procs):
            home = os.path.join(scratch, f"home{i}")
            job_dir = os.path.join(scratch, f"jobs{i}")
            os.makedirs(home)
            os.makedirs(job_dir)
            workers.append(
                subprocess.Popen(
                    group.wrap(
                        [
                            str(python),
                            __file__,
                            "--worker",
                            "--calls",
                            str(calls),
                            "--job-dir",
                            job_dir,
                        ]
                    ),
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
        ready_cpu = launcher_cpu = 0.0
        for proc in workers:
            out, _ = proc.communicate(timeout=600)
            results = [ln for ln in out.splitlines() if ln.startswith(RESULT_TAG)]
            if not results:
                raise RuntimeError(f"{side} worker printed no result (exit {proc.returncode})")
            result = json.loads(results[-1][len(RESULT_TAG) :])
            for key in pooled:
                pooled[key] += result[key]
            ready_cpu += result["ready_cpu_s"]
            launcher_cpu += result["loop_cpu_s"]
        complete = reap_orphans()  # every supervisor has written its status and exited
        if group.path is not None:
            deadline = time.monotonic() + REAP_TIMEOUT_S
            while not group.empty() and time.monotonic() < deadline:
                time.sleep(0.05)
            complete = group.empty()
            everything, method = group.used_s() - ready_cpu, "cgroup"
        else:
            everything, method = cpu_s(resource.RUSAGE_CHILDREN) - before - ready_cpu, "rusage"
        pooled["cpu"] = [
            {
                "launcher_s": launcher_cpu,
                "all_s": everything,
                "complete": complete,
                "method": method,
            }
        ]
        return pooled
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        group.close()


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
        os._exit(0)  # no interpreter teardown in the CPU figures

    sides = {"ours": args.ours_python}
    if not args.skip_peer:
        if not args.peer_python.exists():
            sys.exit(f"no peer interpreter at {args.peer_python}; see bench/README.md")
        sides["peer"] = args.peer_python
    pooled = {side: {"schedule_s": [], "total_s": [], "errors": [], "cpu": []} for side in sides}
    subreaper = become_subreaper()
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
        if n:
            launcher = sum(c["launcher_s"] for c in data["cpu"]) / n * 1e3
            everything = sum(c["all_s"] for c in data["cpu"]) / n * 1e3
            methods = {c["method"] for c in data["cpu"]}
            caveat = f" [{'/'.join(sorted(methods))}]"
            if methods == {"rusage"}:
                caveat += "" if subreaper else " (no subreaper: orphans' CPU missing)"
            if not all(c["complete"] for c in data["cpu"]):
                caveat += " (some processes were still running: their CPU is missing)"
            print(
                f"  {side:4}  CPU per launch:       launcher {launcher:5.2f} ms   "
                f"every process {everything:5.2f} ms{caveat}"
            )
    if "peer" in pooled and pooled["ours"]["schedule_s"] and pooled["peer"]["schedule_s"]:
        ours = percentile(pooled["ours"]["schedule_s"], 50)
        peer = percentile(pooled["peer"]["schedule_s"], 50)
        print(f"  median peer/ours: {peer / ours:.2f} (target: >= 1)")
    if args.json:
        args.json.write_text(json.dumps(pooled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
