"""One benchmark step, run under either implementation's interpreter.

The harness (`run_bench.py`) runs this file with our interpreter and with the peer venv's
interpreter. Both packages expose the same names, so the code below is shared; only the
filler-record writer and the record counter differ, chosen by whether `nemo_run.core.store`
exists (the peer has no such module).

Every command ends by printing one line `@@RESULT <json>` on stdout; the harness ignores
anything else the package prints. Commands:

    info
    describe-setup   --n N --job-dir DIR
    describe-measure --app-id ID --calls C --time-cap S
    throughput-child --n N --job-dir DIR      (prints READY, waits for a line on stdin)
    count
    durability-child --job-dir DIR            (prints READY, then "ID <app_id>" per schedule)
    durability-check --ids-file FILE
    fill-jobs        --n N                    (N finished local jobs for `nemorun job list`)
    exp-create                                (one finished local task; prints its experiment id)
    exp-many         --n N --time-cap S       (N parallel `true` tasks, timed in-process)

`$NEMORUN_HOME` must be set by the caller (the peer reads it at import time).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import statistics
import sys
import time
import traceback
from typing import Any

RESULT_TAG = "@@RESULT "
BACKEND = "local_persistent"  # our store's backend name for the local scheduler
PEER_JOBS_FILE = ".local_jobs.json"  # the peer's whole local-job "store"


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_TAG + json.dumps(payload) + "\n")
    sys.stdout.flush()


def is_ours() -> bool:
    return importlib.util.find_spec("nemo_run.core.store") is not None


def home() -> str:
    value = os.environ.get("NEMORUN_HOME")
    if not value:
        raise RuntimeError("NEMORUN_HOME must be set for the benchmark worker")
    return value


def peer_jobs_path() -> str:
    return os.path.join(home(), PEER_JOBS_FILE)


# ---------------------------------------------------------------------------- scheduler API


def new_scheduler() -> Any:
    from nemo_run.run.torchx_backend.schedulers.local import create_scheduler

    return create_scheduler(session_name="bench")


def new_app() -> Any:
    from torchx import specs

    role = specs.Role(name="main", image="", entrypoint="true", args=[])
    return specs.AppDef(name="bench", roles=[role])


def schedule_one(sched: Any, job_dir: str) -> str:
    import nemo_run as run

    executor = run.LocalExecutor()
    executor.job_dir = job_dir
    info = sched.submit_dryrun(new_app(), executor)
    return sched.schedule(info)


def state_name(resp: Any) -> str | None:
    if resp is None:
        return None
    state = getattr(resp, "state", None)
    return getattr(state, "name", None) or (str(state) if state is not None else None)


def wait_terminal(sched: Any, app_id: str, timeout: float = 30.0) -> str | None:
    from torchx.specs import is_terminal

    deadline = time.monotonic() + timeout
    name = None
    while time.monotonic() < deadline:
        resp = sched.describe(app_id)
        name = state_name(resp)
        if resp is not None and is_terminal(resp.state):
            return name
        time.sleep(0.05)
    return name


# ---------------------------------------------------------------------------- the two stores


def filler_ids(count: int, start: int = 0) -> list[str]:
    return [f"bench-filler-{i:07d}" for i in range(start, start + count)]


def add_fillers(count: int) -> None:
    """Add `count` synthetic SUCCEEDED local jobs to whichever store this package uses."""
    if count <= 0:
        return
    log_root = os.path.join(home(), "filler-logs")
    if is_ours():
        from nemo_run.core.store import JobRecord, get_store

        store = get_store()
        ids = filler_ids(count)
        batch = 10_000
        for lo in range(0, len(ids), batch):
            store.put_many(
                [
                    JobRecord(
                        backend=BACKEND,
                        app_id=app_id,
                        state="SUCCEEDED",
                        log_dir=os.path.join(log_root, app_id),
                        data={"roles": ["main"]},
                    )
                    for app_id in ids[lo : lo + batch]
                ]
            )
    else:
        path = peer_jobs_path()
        try:
            with open(path) as f:
                apps = json.load(f)
        except FileNotFoundError:
            apps = {}
        for app_id in filler_ids(count):
            apps.setdefault(app_id, ["SUCCEEDED", app_id, os.path.join(log_root, app_id), ["main"]])
        tmp = path + ".bench-tmp"
        with open(tmp, "w") as f:
            json.dump(apps, f)
        os.replace(tmp, path)


def stored_ids() -> list[str]:
    """Every local job id the store holds (raises if the store cannot be read)."""
    if is_ours():
        from nemo_run.core.store import get_store

        return [r.app_id for r in get_store().list(backend=BACKEND)]
    path = peer_jobs_path()
    if not os.path.exists(path):
        return []
    with open(path) as f:
        text = f.read()
    if not text.strip():
        return []  # the peer treats an empty file as an empty store
    return list(json.loads(text))


# ---------------------------------------------------------------------------- commands


def cmd_info(_: argparse.Namespace) -> dict[str, Any]:
    import nemo_run

    try:
        from importlib.metadata import version

        dist_version = version("nemo_run")
    except Exception:
        dist_version = None
    return {
        "implementation": "ours" if is_ours() else "peer",
        "nemo_run_file": getattr(nemo_run, "__file__", None),
        "nemo_run_version": getattr(nemo_run, "__version__", None) or dist_version,
        "python": sys.version.split()[0],
        "executable": sys.executable,
    }


def cmd_describe_setup(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    sched = new_scheduler()
    app_id = schedule_one(sched, args.job_dir)
    state = wait_terminal(sched, app_id)
    del sched
    gc.collect()
    before = len(stored_ids())
    add_fillers(args.n - before)
    total = len(stored_ids())
    return {
        "app_id": app_id,
        "state": state,
        "records": total,
        "setup_s": time.perf_counter() - t0,
    }


def cmd_describe_measure(args: argparse.Namespace) -> dict[str, Any]:
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
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {
        "state": state_name(resp),
        "app_id_matches": got_id == args.app_id,
        "first_ms": first_ms,
        "median_ms": statistics.median(ordered),
        "p95_ms": p95,
        "calls": len(times),
        "calls_requested": args.calls,
        "capped": len(times) < args.calls,
    }


def cmd_throughput_child(args: argparse.Namespace) -> dict[str, Any]:
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


def cmd_count(_: argparse.Namespace) -> dict[str, Any]:
    return {"count": len(stored_ids())}


def cmd_durability_child(args: argparse.Namespace) -> dict[str, Any]:
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


def job_filler_data() -> dict[str, Any]:
    return {"roles": [{"name": "main", "num_replicas": 1}], "exit_code": 0}


def cmd_fill_jobs(args: argparse.Namespace) -> dict[str, Any]:
    """Fill the store with `n` finished local jobs (ours: the shape `nemorun job list` reads)."""
    t0 = time.perf_counter()
    if is_ours():
        from nemo_run.core.store import JobRecord, get_store

        store = get_store()
        log_root = os.path.join(home(), "filler-logs")
        batch = 10_000
        for lo in range(0, args.n, batch):
            store.put_many(
                [
                    JobRecord(
                        backend=BACKEND,
                        app_id=f"bench-job-{i:07d}",
                        state="SUCCEEDED",
                        log_dir=os.path.join(log_root, f"bench-job-{i:07d}"),
                        data=job_filler_data(),
                    )
                    for i in range(lo, min(lo + batch, args.n))
                ]
            )
    else:
        add_fillers(args.n)
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
    t0 = time.perf_counter()
    exp = run_true_tasks("bench", 1)
    elapsed = time.perf_counter() - t0
    return {"exp_id": exp._id, "states": task_states(exp), "create_s": elapsed}


def spawn_true(n: int) -> float:
    """Seconds to start `n` `true` processes at once with subprocess and wait for all of them."""
    import subprocess

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
    import threading

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


COMMANDS = {
    "info": cmd_info,
    "describe-setup": cmd_describe_setup,
    "describe-measure": cmd_describe_measure,
    "throughput-child": cmd_throughput_child,
    "count": cmd_count,
    "durability-child": cmd_durability_child,
    "durability-check": cmd_durability_check,
    "fill-jobs": cmd_fill_jobs,
    "exp-create": cmd_exp_create,
    "exp-many": cmd_exp_many,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--job-dir", default="")
    parser.add_argument("--app-id", default="")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--time-cap", type=float, default=20.0)
    parser.add_argument("--ids-file", default="")
    args = parser.parse_args(argv)
    try:
        result = COMMANDS[args.command](args)
    except BaseException as exc:
        tb = traceback.format_exc().strip().splitlines()
        emit({"error": f"{type(exc).__name__}: {exc}"[:500], "traceback": tb[-12:]})
        return 1
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
