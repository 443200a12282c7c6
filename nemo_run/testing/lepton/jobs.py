"""Running emulated Lepton jobs for real, as host processes or as Docker containers.

A job has ``spec.completions`` replicas (worker indices ``0..completions-1``), at most
``spec.parallelism`` of them running at once (``completions == parallelism == N``: all N at
once, the usual distributed-training shape); when one exits 0 the next pending index starts.
Each replica runs ``spec.container.command`` (a list, like a Kubernetes ``command``: it
replaces the image's entrypoint) with ``spec.envs`` (``value``, or ``value_from.secret_name_ref``
resolved from the emulator's user secrets, else to a dummy ``emulator-secret-<name>``).

Environment of every replica, as DGX Cloud Lepton sets it for batch jobs:
``LEPTON_JOB_NAME`` (the job id), ``LEPTON_JOB_SERVICE_PREFIX`` (the job id),
``LEPTON_SUBDOMAIN`` (``<job id>-job-svc``), ``LEPTON_JOB_WORKER_PREFIX`` and
``LEPTON_JOB_WORKER_HOSTNAME_PREFIX`` (``worker``), ``LEPTON_JOB_WORKER_INDEX``,
``LEPTON_JOB_TOTAL_WORKERS`` (completions), ``LEPTON_JOB_FAILURE_COUNT`` (0),
``LEPTON_WORKER_ID`` (the replica id), ``LEPTON_WORKSPACE_ID``,
``LEPTON_RESOURCE_ACCELERATOR_NUM`` / ``LEPTON_RESOURCE_ACCELERATOR_TYPE`` (from a
``gpu.<N>x<type>`` resource shape). Lepton itself does not set the PyTorch variables (its
``lepton_env_to_pytorch.sh`` derives them, worker 0 being ``<service prefix>-0.<subdomain>``),
and neither does the emulator unless started with ``--torch-env``: then ``MASTER_ADDR``
(worker 0's address), ``MASTER_PORT=29400``, ``WORLD_SIZE`` (completions) and ``NODE_RANK``
(the index). User ``envs`` may override the PyTorch ones but not the ``LEPTON_*`` ones.

Storage: each ``spec.mounts`` item is the host folder
``<data-dir>/storage/<from or "node-nfs">/<path>`` (created on demand).

* Docker mode: one container per replica from ``spec.container.image`` on the local engine
  (never pulled: a missing image fails the replica), labelled ``nemo_run.lepton-emulator=<job
  id>``, hostname ``worker-<index>``, on a bridge network of the job's own where it is also
  reachable as ``worker-<index>.<job id>-job-svc`` and, as Lepton names workers for
  ``lepton_env_to_pytorch.sh``, ``<service prefix>-<index>.<subdomain>``; mounts are bind mounts at ``mount_path``
  (read-only with ``mount_options.read_only``). Kernel limits apply for real (an environment
  string over 128 KiB cannot be exec'd: the replica fails). Exited containers are kept until
  the job is deleted or restarted.
* Subprocess mode: one process group per replica on the host (``spec.container.image`` is
  ignored; a job without a command fails), with the host environment plus the job's, in
  ``<data-dir>/work/<job id>/<index>``. Mount paths cannot be mounted, so every occurrence of
  a ``mount_path`` (as whole path components: ``/data`` in ``/data/x`` but not in
  ``/database``) in the command and the environment values is replaced with its host folder.
  The replicas stand for machines of their own: worker i gets the i-th loopback address of
  the job's own block (127.a.b.1, 127.a.b.2, ...) in ``NEMORUN_STANDIN_NODE_ADDR``, and its
  names (``<service prefix>-<i>.<subdomain>``, ``worker-<i>.<subdomain>``, ``worker-<i>``) go
  into ``NEMORUN_STANDIN_HOSTS``, the torchrun stand-in's DNS (host processes cannot resolve
  them); with ``--torch-env``, ``MASTER_ADDR`` is worker 0's address.

Each replica's combined stdout and stderr goes to ``<data-dir>/logs/<job id>/<replica id>.log``.

States follow ``LeptonJobState``: Starting -> Running -> Completed (every replica exited 0) or
Failed (one exited non-zero: the others are killed at once; ``max_failure_retry`` and
``max_job_failure_retry`` are not emulated); ``spec.stopped=true``: Stopping -> Stopped
(replicas get SIGTERM, then SIGKILL after a grace period); ``spec.stopped=false`` on a stopped
job: Starting again with fresh replicas; delete: Deleting -> gone. A finished job is archived
(left out of ``alive_only`` listings) ``ttl_seconds_after_finished`` after it finished.
"""

from __future__ import annotations

import os
import random
import re
import string
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_run.testing.common.manager import ManagerBase
from nemo_run.testing.common.replicas import (
    ContainerRuntime,
    DockerEngine,
    ProcessRuntime,
    Runtime,
    StartFailure,
    loopback_addresses,
    node_env,
    path_replacer,
)

LABEL = "nemo_run.lepton-emulator"
MASTER_PORT = 29400
WORKER_PREFIX = "worker"
TERMINAL = ("Completed", "Failed", "Stopped")
SHAPE = re.compile(r"^gpu\.(\d+)x([a-z0-9-]+)$")


def random_suffix(k: int) -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=k))


# ---------------------------------------------------------------------------------------------
# Jobs


@dataclass
class ReplicaRecord:
    index: int
    id: str
    node: dict[str, str]
    log_path: Path
    started_at: float
    runtime: Runtime | None = None
    finished_at: float | None = None
    code: int | None = None

    def exit_code(self) -> int | None:
        if self.code is None and self.runtime is not None:
            code = self.runtime.exit_code()
            if code is not None:
                self.code = code
                self.finished_at = time.time()
        return self.code

    def describe(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "index": self.index,
            "node": self.node.get("id"),
            "exitCode": self.exit_code(),
            "log": str(self.log_path),
        }
        if self.runtime is not None:
            out.update(self.runtime.describe())
        return out


@dataclass
class Job:
    id: str
    name: str
    metadata: dict
    spec: dict
    nodes: list[dict[str, str]]  # where replicas may be placed
    created_at: float = field(default_factory=time.time)
    state: str = "Starting"
    states: list[tuple[str, float]] = field(default_factory=list)
    message: str | None = None
    completion_time: float | None = None
    deleted_at: float | None = None
    mode: str | None = None
    replicas: list[ReplicaRecord] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    generation: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def set_state(self, state: str, message: str | None = None) -> None:
        ts = time.time()
        self.state = state
        self.message = message
        self.states.append((state, ts))
        if state in ("Completed", "Failed"):
            self.completion_time = ts
        elif state == "Starting":
            self.completion_time = None
        self.event("Warning" if state == "Failed" else "Normal", f"Job{state}", message)

    def event(self, kind: str, reason: str, message: str | None = None) -> None:
        self.events.append(
            {
                "type": kind,
                "reason": reason,
                "message": message or "",
                "count": 1,
                "ts": time.time(),
            }
        )

    @property
    def archived(self) -> bool:
        if self.state not in ("Completed", "Failed") or self.completion_time is None:
            return False
        ttl = self.spec.get("ttl_seconds_after_finished")
        return ttl is not None and time.time() >= self.completion_time + ttl

    def counts(self) -> dict[str, int]:
        running = succeeded = failed = 0
        for r in list(self.replicas):
            code = r.exit_code()
            if code is None:
                running += 1
            elif code == 0:
                succeeded += 1
            else:
                failed += 1
        ready = running if self.state == "Running" else 0
        return {"ready": ready, "active": running, "succeeded": succeeded, "failed": failed}


# ---------------------------------------------------------------------------------------------
# Backends


@dataclass
class MountPlan:
    host: Path
    target: str
    read_only: bool


@dataclass
class ReplicaPlan:
    """Everything needed to start one replica."""

    job_id: str
    index: int
    replica_id: str
    image: str | None
    command: list[str] | None
    env: dict[str, str]  # the job's envs
    lepton_env: dict[str, str]  # LEPTON_* (win over envs)
    torch_env: dict[str, str] | None  # WORLD_SIZE, NODE_RANK (envs win); None: no --torch-env
    mounts: list[MountPlan]
    log_path: Path
    workers: int = 1  # completions: the job's workers, each a machine of its own

    def names(self) -> dict[str, int]:
        """Every worker's names on the job's network -> its index."""
        subdomain = self.lepton_env["LEPTON_SUBDOMAIN"]
        service = self.lepton_env["LEPTON_JOB_SERVICE_PREFIX"]
        out: dict[str, int] = {}
        for i in range(self.workers):
            for name in (f"{service}-{i}.{subdomain}", f"{WORKER_PREFIX}-{i}.{subdomain}"):
                out[name] = i
            out[f"{WORKER_PREFIX}-{i}"] = i
        return out


class SubprocessBackend:
    name = "subprocess"

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self._addresses: dict[str, list[str]] = {}

    def start(self, plan: ReplicaPlan) -> Runtime:
        replace = path_replacer([(m.target, str(m.host)) for m in plan.mounts])
        if not plan.command:
            return StartFailure("no container.command to run on the host", plan.log_path)
        work = self.data_dir / "work" / plan.job_id / str(plan.index)
        work.mkdir(parents=True, exist_ok=True)
        addresses = self._addresses.get(plan.job_id)
        if addresses is None:  # the job's machines: one block for all its workers
            addresses = self._addresses[plan.job_id] = loopback_addresses(plan.workers)
        env = dict(os.environ)
        env.update(node_env(addresses, plan.index, plan.names()))
        if plan.torch_env is not None:
            env.update(plan.torch_env, MASTER_ADDR=addresses[0], MASTER_PORT=str(MASTER_PORT))
        env.update({k: replace(v) for k, v in plan.env.items()})
        env.update(plan.lepton_env)
        argv = [replace(word) for word in plan.command]
        return ProcessRuntime(argv, env, str(work), plan.log_path)

    def cleanup(self, job_id: str) -> None:
        self._addresses.pop(job_id, None)

    def shutdown(self) -> None:
        return None


class DockerBackend(DockerEngine):
    label = LABEL

    def network_name(self, job_id: str) -> str:
        return f"lepton-emu-{job_id}"

    def start(self, plan: ReplicaPlan) -> Runtime:
        from docker.types import Mount  # noqa: PLC0415 - optional SDK: only docker mode

        if not plan.image:
            return StartFailure("spec.container.image is empty", plan.log_path)
        if not self.has_image(plan.image):
            return StartFailure(
                f"image {plan.image!r} is not on the local engine (the emulator never pulls)",
                plan.log_path,
            )
        network = self._network(plan.job_id)
        host = f"{WORKER_PREFIX}-{plan.index}"
        subdomain = plan.lepton_env["LEPTON_SUBDOMAIN"]
        env: dict[str, str] = {}
        if plan.torch_env is not None:
            master = f"{WORKER_PREFIX}-0.{subdomain}"
            env.update(plan.torch_env, MASTER_ADDR=master, MASTER_PORT=str(MASTER_PORT))
        env.update(plan.env)
        env.update(plan.lepton_env)
        kwargs: dict[str, Any] = {
            "name": f"lepton-emu-{plan.replica_id}",
            "hostname": host,
            "environment": env,
            "labels": {LABEL: plan.job_id, f"{LABEL}.replica": plan.replica_id},
            "network": network.name,
            "networking_config": {
                network.name: self.client.api.create_endpoint_config(
                    aliases=[name for name, i in plan.names().items() if i == plan.index]
                )
            },
            "mounts": [
                Mount(m.target, str(m.host.resolve()), type="bind", read_only=m.read_only)
                for m in plan.mounts
            ],
            "detach": True,
        }
        if plan.command:
            kwargs["entrypoint"] = plan.command
            kwargs["command"] = []
        try:
            container = self.client.containers.run(plan.image, **kwargs)
        except Exception as e:  # noqa: BLE001 - e.g. E2BIG, or no such executable
            return StartFailure(f"container failed to start: {e}", plan.log_path, 128)
        return ContainerRuntime(container, plan.command, plan.log_path, logs_wait=5.0)


# ---------------------------------------------------------------------------------------------
# The manager


class JobManager(ManagerBase):
    """Owns the jobs and drives each one through its states on a thread of its own."""

    def __init__(
        self,
        data_dir: Path,
        workspace_id: str,
        mode: str = "auto",
        phase_delay: float = 0.05,
        stop_grace: float = 2.0,
        torch_env: bool = False,
        secrets: dict[str, str] | None = None,
        poll_interval: float = 0.02,
    ):
        super().__init__(
            data_dir,
            mode,
            phase_delay,
            stop_grace,
            poll_interval,
            SubprocessBackend(data_dir),
            DockerBackend(data_dir),
        )
        self.workspace_id = workspace_id
        self.torch_env = torch_env
        self.secrets = secrets if secrets is not None else {}
        self.jobs: dict[str, Job] = self.items

    def image_of(self, job: Job) -> str | None:
        return (job.spec.get("container") or {}).get("image")

    def runtimes_of(self, job: Job) -> list[Runtime]:
        return [r.runtime for r in list(job.replicas) if r.runtime is not None]

    def set_state(self, job: Job, state: str, message: str | None) -> None:
        job.set_state(state, message)

    # -- queries -------------------------------------------------------------------------------
    def name_taken(self, name: str) -> bool:
        with self.lock:
            return any(not j.deleted and name in (j.name, j.id) for j in self.jobs.values())

    def mount_plans(self, spec: dict) -> list[MountPlan]:
        plans = []
        for m in spec.get("mounts") or ():
            source = m.get("from") or "node-nfs"
            rel = (m.get("path") or "").strip("/")
            host = self.data_dir / "storage" / source
            if rel:
                host = host / rel
            read_only = bool((m.get("mount_options") or {}).get("read_only"))
            plans.append(MountPlan(host, m["mount_path"], read_only))
        return plans

    # -- commands --------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        job.set_state("Starting")
        self._register(job)

    def stop(self, job: Job) -> None:
        with job.lock:
            if job.deleted or job.state in ("Deleting", "Stopping", "Stopped", *TERMINAL):
                return
            gen = self._take_over(job, "Stopping")
        self._spawn(self._stop, job, gen)

    def restart(self, job: Job) -> None:
        with job.lock:
            if job.deleted or job.state not in ("Stopping", "Stopped"):
                return
            gen = self._take_over(job, "Starting")
        self._spawn(self._drive, job, gen)

    def delete(self, job: Job) -> None:
        with job.lock:
            if job.deleted or job.state == "Deleting":
                return
            gen = self._take_over(job, "Deleting")
        self._spawn(self._remove, job, gen)

    # -- internals ---------------------------------------------------------------------------------
    def _kill(self, job: Job) -> None:
        super()._kill(job)
        for r in list(job.replicas):
            r.exit_code()

    def _user_env(self, spec: dict) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in spec.get("envs") or ():
            value = item.get("value")
            ref = (item.get("value_from") or {}).get("secret_name_ref")
            if value is None and ref:
                value = self.secrets.get(ref, f"emulator-secret-{ref}")
            env[item["name"]] = "" if value is None else str(value)
        return env

    def _system_env(self, job: Job, index: int, replica_id: str) -> dict[str, str]:
        completions = int(job.spec.get("completions") or 1)
        env = {
            "LEPTON_JOB_NAME": job.id,
            "LEPTON_JOB_SERVICE_PREFIX": job.id,
            "LEPTON_SUBDOMAIN": f"{job.id}-job-svc",
            "LEPTON_JOB_WORKER_PREFIX": WORKER_PREFIX,
            "LEPTON_JOB_WORKER_HOSTNAME_PREFIX": WORKER_PREFIX,
            "LEPTON_JOB_WORKER_INDEX": str(index),
            "LEPTON_JOB_TOTAL_WORKERS": str(completions),
            "LEPTON_JOB_FAILURE_COUNT": "0",
            "LEPTON_WORKER_ID": replica_id,
            "LEPTON_WORKSPACE_ID": self.workspace_id,
        }
        m = SHAPE.match((job.spec.get("resource_shape") or "").lower())
        env["LEPTON_RESOURCE_ACCELERATOR_NUM"] = m.group(1) if m else "0"
        if m:
            env["LEPTON_RESOURCE_ACCELERATOR_TYPE"] = f"NVIDIA-{m.group(2).upper()}"
        return env

    def _start_replica(self, job: Job, gen: int, backend, index: int) -> ReplicaRecord | None:
        replica_id = f"{job.id}-{index}-{random_suffix(5)}"
        log_path = self.log_dir(job.id) / f"{replica_id}.log"
        log_path.touch()
        node = job.nodes[index % len(job.nodes)] if job.nodes else {}
        mounts = self.mount_plans(job.spec)
        for m in mounts:
            m.host.mkdir(parents=True, exist_ok=True)
        container = job.spec.get("container") or {}
        torch_env = None
        if self.torch_env:
            torch_env = {
                "WORLD_SIZE": str(job.spec.get("completions") or 1),
                "NODE_RANK": str(index),
            }
        plan = ReplicaPlan(
            job_id=job.id,
            index=index,
            replica_id=replica_id,
            image=container.get("image"),
            command=container.get("command"),
            env=self._user_env(job.spec),
            lepton_env=self._system_env(job, index, replica_id),
            torch_env=torch_env,
            mounts=mounts,
            log_path=log_path,
            workers=max(1, int(job.spec.get("completions") or 1)),
        )
        with job.lock:
            if job.generation != gen:
                return None
            record = ReplicaRecord(index, replica_id, node, log_path, time.time())
            job.replicas.append(record)
            record.runtime = backend.start(plan)
            job.event("Normal", "Started", f"replica {replica_id} started on {node.get('id')}")
        return record

    def _drive(self, job: Job, gen: int) -> None:
        try:
            self._drive_inner(job, gen)
        except Exception as e:  # noqa: BLE001 - never leave a job hanging
            self._kill(job)
            self._advance(job, gen, "Failed", f"emulator error: {e}")

    def _drive_inner(self, job: Job, gen: int) -> None:
        time.sleep(self.phase_delay)
        self.log_dir(job.id).mkdir(parents=True, exist_ok=True)
        with job.lock:
            if job.generation != gen:
                return
            backend = self._backend_for(job)
            job.mode = backend.name
            if backend is self.docker:
                self.docker.remove_containers(job.id)  # a restart starts from fresh containers
            job.replicas = []
        completions = max(1, int(job.spec.get("completions") or 1))
        parallelism = max(1, min(int(job.spec.get("parallelism") or 1), completions))
        pending = list(range(completions))
        running: list[ReplicaRecord] = []
        for index in pending[:parallelism]:
            record = self._start_replica(job, gen, backend, index)
            if record is None:
                return
            running.append(record)
        del pending[:parallelism]
        if not self._advance(job, gen, "Running"):
            return
        while True:
            for record in list(running):
                code = record.exit_code()
                if code is None:
                    continue
                running.remove(record)
                if code != 0:
                    with job.lock:
                        if job.generation != gen:
                            return
                    self._kill(job)
                    message = f"replica {record.id} (worker {record.index}) exited with code {code}"
                    if isinstance(record.runtime, StartFailure):
                        message = f"replica {record.id} could not start: {record.runtime.message}"
                    self._advance(job, gen, "Failed", message)
                    return
                if pending:
                    nxt = self._start_replica(job, gen, backend, pending.pop(0))
                    if nxt is None:
                        return
                    running.append(nxt)
            if not running and not pending:
                self._advance(job, gen, "Completed")
                return
            time.sleep(self.poll_interval)
            if job.generation != gen:
                return
