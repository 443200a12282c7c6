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
    docker-probe     --image IMG              (does a Docker engine answer, with IMG on it?)
    docker-ps                                 (every container on the engine)
    docker-remove    --ids ID,ID              (force-remove these containers)
    docker-describe  --image IMG --job-dir DIR --calls C   (describe of a RUNNING container job)
    docker-schedule  --image IMG --job-dir DIR --reps R    (schedule() vs containers.run)

`$NEMORUN_HOME` must be set by the caller (the peer reads it at import time).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
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
DEFAULT_DOCKER_NETWORK = "nemo_run"  # both packages' default DockerExecutor network


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


# ---------------------------------------------------------------------------- docker group
# The engine is reached with docker-py (`docker.from_env()`, so $DOCKER_HOST is honoured).
# Nothing here pulls an image: the image must already be on the engine.


def docker_client() -> Any:
    import docker

    return docker.from_env(timeout=60)


def new_docker_scheduler() -> Any:
    from nemo_run.run.torchx_backend.schedulers.docker import create_scheduler

    return create_scheduler(session_name="bench")


def docker_app(image: str, entrypoint: str, args: list[str]) -> Any:
    from torchx import specs

    role = specs.Role(name="main", image=image, entrypoint=entrypoint, args=list(args))
    return specs.AppDef(name="bench", roles=[role])


def docker_executor(image: str, job_dir: str, tag: str) -> Any:
    """A DockerExecutor for one schedule. The peer needs two settings ours does not: its
    default packager is a GitArchivePackager (it runs `git rev-parse` in the working directory,
    which is no git checkout here), and it names the container after `experiment_id`, which
    must be set (it asserts) and unique among live containers."""
    import nemo_run as run

    if is_ours():
        executor = run.DockerExecutor(container_image=image)
    else:
        executor = run.DockerExecutor(container_image=image, packager=run.Packager())
        executor.experiment_id = tag
    executor.job_dir = job_dir
    return executor


def containers_of(client: Any, app_id: str) -> list[Any]:
    """Containers carrying `app_id` as a label value (ours: `nemo_run.app_id`, the peer:
    `nemo-run/id`)."""
    found = []
    for c in client.containers.list(all=True, sparse=True):
        labels = c.attrs.get("Labels") or {}
        if app_id in labels.values():
            found.append(c)
    return found


def force_remove(containers: list[Any]) -> int:
    """Force-remove containers; one already gone (or being auto-removed) is not an error."""
    import docker

    removed = 0
    for c in containers:
        try:
            c.remove(force=True)
            removed += 1
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if getattr(exc, "status_code", None) != 409:  # 409: removal already in progress
                raise
    return removed


def wait_gone(client: Any, app_id: str, timeout: float = 15.0) -> list[str]:
    """Names of `app_id`'s containers still present after `timeout` s (auto-removal is async)."""
    deadline = time.monotonic() + timeout
    while True:
        left = containers_of(client, app_id)
        if not left or time.monotonic() > deadline:
            return [(c.attrs.get("Names") or [c.id[:12]])[0].lstrip("/") for c in left]
        time.sleep(0.1)


def cmd_docker_probe(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import docker
    except ImportError:
        return {"ok": False, "why": f"docker-py is not installed in {sys.executable}"}
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=10)
        client.ping()
        version = client.version().get("Version")
    except Exception as exc:
        return {"ok": False, "why": f"no Docker engine answers at {host}: {exc}"[:300]}
    try:
        client.images.get(args.image)
    except Exception as exc:
        return {
            "ok": False,
            "why": f"image {args.image} is not on the engine at {host} ({type(exc).__name__}); "
            "build it first (scripts/docker-up.sh), the benchmark never pulls",
        }
    return {"ok": True, "engine_version": version, "host": host}


def cmd_docker_ps(_: argparse.Namespace) -> dict[str, Any]:
    client = docker_client()
    return {
        "containers": [
            {
                "id": c.id,
                "name": (c.attrs.get("Names") or [""])[0].lstrip("/"),
                "state": c.attrs.get("State"),
                "image": c.attrs.get("Image"),
            }
            for c in client.containers.list(all=True, sparse=True)
        ]
    }


def cmd_docker_remove(args: argparse.Namespace) -> dict[str, Any]:
    client = docker_client()
    wanted = {i for i in args.ids.split(",") if i}
    found = [c for c in client.containers.list(all=True, sparse=True) if c.id in wanted]
    return {"removed": force_remove(found)}


def cmd_docker_describe(args: argparse.Namespace) -> dict[str, Any]:
    client = docker_client()
    launcher = new_docker_scheduler()  # kept alive: the peer's removes its containers on gc
    out: dict[str, Any] = {}
    app_id = None
    try:
        executor = docker_executor(args.image, args.job_dir, "bench-describe")
        info = launcher.submit_dryrun(docker_app(args.image, "sleep", ["300"]), executor)
        t0 = time.perf_counter()
        app_id = launcher.schedule(info)
        out["app_id"] = app_id
        out["schedule_s"] = time.perf_counter() - t0
        deadline = time.monotonic() + 60
        while not any(c.attrs.get("State") == "running" for c in containers_of(client, app_id)):
            if time.monotonic() > deadline:
                states = [c.attrs.get("State") for c in containers_of(client, app_id)]
                raise RuntimeError(f"no container of {app_id} running after 60 s: {states}")
            time.sleep(0.1)
        out["running_after_s"] = time.perf_counter() - t0

        sched = new_docker_scheduler()
        t = time.perf_counter()
        first = sched.describe(app_id)
        out["first_ms"] = (time.perf_counter() - t) * 1e3
        out["first_state"] = state_name(first)
        times: list[float] = []
        states: dict[str, int] = {}
        for _ in range(args.calls):
            t = time.perf_counter()
            resp = sched.describe(app_id)
            times.append((time.perf_counter() - t) * 1e3)
            name = str(state_name(resp))
            states[name] = states.get(name, 0) + 1
        ordered = sorted(times)
        out.update(
            calls=len(times),
            median_ms=statistics.median(ordered),
            p95_ms=ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)],
            states=states,
            running_still=[c.attrs.get("State") for c in containers_of(client, app_id)],
        )

        # cancel through the package, then check that nothing of the job is left
        t = time.perf_counter()
        try:
            sched.cancel(app_id)
            out["cancel_s"] = time.perf_counter() - t
        except Exception as exc:
            out["cancel_error"] = f"{type(exc).__name__}: {exc}"[:300]
        out["left_after_cancel"] = wait_gone(client, app_id, timeout=15.0)
        try:
            out["state_after_cancel"] = state_name(sched.describe(app_id))
        except Exception as exc:
            out["state_after_cancel"] = f"describe raised {type(exc).__name__}: {exc}"[:200]
    finally:
        if app_id is not None:
            out["force_removed"] = force_remove(containers_of(client, app_id))
    return out


class WarningCounter(logging.Handler):
    """Counts WARNING-or-worse log records (the package's own warnings) while installed."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.count = 0
        self.first = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if not self.first:
            self.first = f"{record.name}: {record.getMessage()}"[:300]


def cmd_docker_schedule(args: argparse.Namespace) -> dict[str, Any]:
    client = docker_client()
    sched = new_docker_scheduler()
    app = docker_app(args.image, "true", [])
    left: list[str] = []
    warnings = WarningCounter()

    def one_schedule(i: int) -> float:
        executor = docker_executor(args.image, os.path.join(args.job_dir, f"job{i}"), f"bench-s{i}")
        info = sched.submit_dryrun(app, executor)
        if i:
            logging.getLogger().addHandler(warnings)
        t = time.perf_counter()
        try:
            app_id = sched.schedule(info)
        finally:
            elapsed = time.perf_counter() - t
            logging.getLogger().removeHandler(warnings)
        force_remove(containers_of(client, app_id))
        left.extend(wait_gone(client, app_id, timeout=10.0))
        return elapsed

    def one_run(**kwargs: Any) -> float:
        t = time.perf_counter()
        container = client.containers.run(args.image, ["true"], detach=True, **kwargs)
        elapsed = time.perf_counter() - t
        force_remove([container])
        return elapsed

    # warm-ups: the first schedule pays the lazy imports, the client and the network set-up
    warm_schedule_s = one_schedule(0)
    warm_run_s = one_run()
    runs: list[float] = []
    schedules: list[float] = []
    # Not part of the baseline, only explains it: both packages attach their containers to a
    # user bridge network (default name "nemo_run", created by the warm-up schedule), which
    # costs the engine more than the default bridge that plain `containers.run` uses.
    on_network: list[float] = []
    network = DEFAULT_DOCKER_NETWORK if docker_network_exists(client) else None
    for i in range(1, args.reps + 1):  # interleaved, so drift hits all alike
        runs.append(one_run())
        schedules.append(one_schedule(i))
        if network:
            on_network.append(one_run(network=network))
    schedule_ms = statistics.median(schedules) * 1e3
    run_ms = statistics.median(runs) * 1e3
    return {
        "reps": args.reps,
        "schedule_ms": schedule_ms,
        "containers_run_ms": run_ms,
        "overhead_ms": schedule_ms - run_ms,
        "containers_run_on_network_ms": statistics.median(on_network) * 1e3 if on_network else None,
        "network": network,
        "schedule_runs_s": schedules,
        "containers_run_runs_s": runs,
        "containers_run_on_network_runs_s": on_network,
        "warmup_schedule_s": warm_schedule_s,
        "warmup_containers_run_s": warm_run_s,
        "warnings_logged": warnings.count,
        "first_warning": warnings.first,
        "left_after_remove": left,
    }


def docker_network_exists(client: Any) -> bool:
    import docker

    try:
        client.networks.get(DEFAULT_DOCKER_NETWORK)
        return True
    except docker.errors.NotFound:
        return False


def cmd_logs_setup(args: argparse.Namespace) -> dict[str, Any]:
    """A finished local job whose stdout holds `--n` MB of 100-byte lines."""
    from torchx import specs

    writer = (  # 100-byte lines, 10,000 at a time
        "import sys\n"
        "block = ('0123456789' * 9 + '012345678\\n') * 10000\n"
        f"for _ in range({args.n * 1_000_000 // 1_000_000}):\n"
        "    sys.stdout.write(block)\n"
    )
    script = os.path.join(args.job_dir, "write_log.py")  # a file: the peer mangles `-c TEXT`
    os.makedirs(args.job_dir, exist_ok=True)
    with open(script, "w") as fh:
        fh.write(writer)
    role = specs.Role(name="main", image="", entrypoint=sys.executable, args=[script])
    import nemo_run as run

    sched = new_scheduler()
    executor = run.LocalExecutor()
    executor.job_dir = args.job_dir
    app_id = sched.schedule(
        sched.submit_dryrun(specs.AppDef(name="biglog", roles=[role]), executor)
    )
    state = wait_terminal(sched, app_id, timeout=600)
    return {"app_id": app_id, "state": state}


def cmd_logs_measure(args: argparse.Namespace) -> dict[str, Any]:
    """Stream every line of the job's log through the scheduler's `log_iter` (as `job logs`
    does) in this fresh process; peak RSS of the process and how much the reading added."""
    import resource

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


COMMANDS = {
    "logs-setup": cmd_logs_setup,
    "logs-measure": cmd_logs_measure,
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
    "docker-probe": cmd_docker_probe,
    "docker-ps": cmd_docker_ps,
    "docker-remove": cmd_docker_remove,
    "docker-describe": cmd_docker_describe,
    "docker-schedule": cmd_docker_schedule,
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
    parser.add_argument("--image", default="")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--ids", default="")
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
