"""The `docker` group's worker commands. The engine is reached with docker-py
(`docker.from_env()`, so $DOCKER_HOST is honoured); nothing here pulls an image: the image
must already be on the engine.

    docker-probe     --image IMG                           does an engine answer, with IMG?
    docker-ps                                              every container on the engine
    docker-remove    --ids ID,ID                           force-remove these containers
    docker-describe  --image IMG --job-dir DIR --calls C   describe of a RUNNING container job
    docker-schedule  --image IMG --job-dir DIR --reps R    schedule() vs containers.run
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from typing import Any

from workers.common import is_ours, percentile, state_name

DEFAULT_DOCKER_NETWORK = "nemo_run"  # both packages' default DockerExecutor network


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
    """A DockerExecutor for one schedule. Both default to a GitArchivePackager (it needs the
    working directory to be a git checkout, which it is not here), so both ship nothing. The
    peer also names the container after `experiment_id`, which must be set (it asserts) and
    unique among live containers."""
    import nemo_run as run

    if is_ours():
        executor = run.DockerExecutor(container_image=image, packager=run.Packager())
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


def docker_network_exists(client: Any) -> bool:
    import docker

    try:
        client.networks.get(DEFAULT_DOCKER_NETWORK)
        return True
    except docker.errors.NotFound:
        return False


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
            p95_ms=percentile(ordered, 0.95),
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


COMMANDS = {
    "docker-probe": cmd_docker_probe,
    "docker-ps": cmd_docker_ps,
    "docker-remove": cmd_docker_remove,
    "docker-describe": cmd_docker_describe,
    "docker-schedule": cmd_docker_schedule,
}
