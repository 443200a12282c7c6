"""Running emulated Run:ai workloads for real, as host processes or as Docker containers.

Each accepted workload becomes one or more replicas (one for a training or a workspace;
for a distributed workload ``numWorkers`` workers, plus a master pod of rank 0 when the
request asks for one with ``masterSpecSameAsWorker: true`` or a ``masterSpec``; ranks
``0..n-1``), named as the training operator names its pods (``<name>-master-0``,
``<name>-worker-<i>``). A replica runs ``spec.command`` (split like a shell would) followed by
``shlex.split(spec.args)``; with no command, ``spec.args`` is the whole command line.
``spec.environmentVariables`` (``name`` and ``value``) are set.

A distributed PyTorch workload (the ``distributedFramework`` default) runs under Kubeflow's
PyTorch operator, and its pods get exactly what that operator gives them: ``PET_NNODES`` (the
pods) and ``PYTHONUNBUFFERED=0``; with a master pod also ``MASTER_ADDR`` (the master pod's
name), ``MASTER_PORT=23456``, ``WORLD_SIZE`` (the pods: ``nprocPerNode`` is ``auto``), ``RANK``
(master 0, worker i i+1), ``PET_NODE_RANK`` (= RANK) and ``PET_NPROC_PER_NODE=auto``. Other
frameworks get none of these. The operator's win over the user's variables of the same name
(it adds them after the pod spec's).

Storage: each ``spec.storage.pvc`` item is the host folder ``<data-dir>/pvcs/<claimName>``
(created on demand; a claim without a name gets ``<workload name>-pvc-<index>``).

* Docker mode: one container per replica from ``spec.image`` on the local engine, labelled
  ``nemo_run.emulator=<workload id>``, on a user-defined bridge network of its own where it is
  reachable by its pod name (also its hostname), so ``MASTER_ADDR`` resolves to the master's
  container; PVC folders bind-mounted at their ``path`` (read-only when ``readOnly``).
  ``spec.command`` replaces the image's entrypoint and ``spec.args`` its CMD, as in
  Kubernetes. Images are never pulled: a missing image fails the workload. Exited containers
  are kept until the workload is deleted (or resumed), so ``docker logs`` still works.
* Subprocess mode: one process group per replica on the host, with the host environment plus
  the workload's. PVC paths cannot be mounted, so every occurrence of a PVC mount path in the
  command, the arguments, the environment values and ``workingDir`` is replaced with the host
  folder (a path counts only as a whole path component: ``/data`` is replaced in
  ``/data/x`` but not in ``/database``). The working directory is ``workingDir`` when it
  exists on the host after that replacement, else ``<data-dir>/work/<workloadId>``. The pods
  of a distributed workload stand for machines of their own: each gets a loopback address of
  the workload's own block (127.a.b.1 for rank 0, ...) in ``NEMORUN_STANDIN_NODE_ADDR``, the
  pod names in ``NEMORUN_STANDIN_HOSTS`` (the torchrun stand-in's DNS), and ``MASTER_ADDR`` is
  the master's address (host processes cannot resolve pod names).

Every replica's combined stdout and stderr is appended to
``<data-dir>/logs/<workloadId>/<rank>.log``.

Phases follow Run:ai's: Creating -> Pending -> Initializing -> Running -> Completed (every
replica exited 0) or Failed (a replica exited non-zero: the others are stopped at once;
``backoffLimit`` and restart policies are not emulated); suspend: Stopping -> Stopped (the
replicas are killed: SIGTERM, then SIGKILL after a grace period); resume: Resuming -> Pending
-> Initializing -> Running with fresh replicas; delete: Deleting -> gone.
"""

from __future__ import annotations

import os
import shlex
import threading
import time
import uuid
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

LABEL = "nemo_run.emulator"
MASTER_PORT = 23456  # the PyTorch operator's default port of the master pod
PYTORCH = "PyTorch"
TERMINAL = ("Completed", "Failed", "Stopped")


def now_iso(ts: float | None = None) -> str:
    """RFC 3339 UTC with milliseconds, as Run:ai prints times (2022-01-01T03:49:52.531Z)."""
    ts = time.time() if ts is None else ts
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
    return f"{base}.{int(ts * 1000) % 1000:03d}Z"


# ---------------------------------------------------------------------------------------------
# What to run


@dataclass
class Mount:
    claim: str
    host: Path
    path: str
    read_only: bool = False


@dataclass
class ReplicaPlan:
    rank: int
    image: str | None
    command: list[str] | None
    args: list[str] | None
    env: dict[str, str]
    working_dir: str | None


@dataclass
class LaunchPlan:
    workload_id: str
    name: str
    image: str | None
    mounts: list[Mount]
    replicas: list[ReplicaPlan]
    distributed: bool
    pods: list[str] = field(default_factory=list)  # pod names, by rank
    master: bool = False  # a distributed workload with a master pod (rank 0)
    framework: str | None = None  # distributedFramework (PyTorch when not given)


def operator_env(plan: LaunchPlan, rank: int, master_addr: str) -> dict[str, str]:
    """What Kubeflow's PyTorch operator gives pod `rank` of a distributed PyTorch workload
    (see the module docstring); nothing for a training or another framework."""
    if not plan.distributed or plan.framework != PYTORCH:
        return {}
    pods = str(len(plan.replicas))
    env = {"PYTHONUNBUFFERED": "0", "PET_NNODES": pods}
    if plan.master:  # the operator sets the rest only for a job with a master replica
        env.update(
            MASTER_ADDR=master_addr,
            MASTER_PORT=str(MASTER_PORT),
            WORLD_SIZE=pods,
            RANK=str(rank),
            PET_NODE_RANK=str(rank),
            PET_NPROC_PER_NODE="auto",
        )
    return env


def split_words(text: str | None) -> list[str] | None:
    """``shlex.split`` for a Run:ai command/args string; None when absent or blank."""
    if text is None or not text.strip():
        return None
    return shlex.split(text)


def _env_pairs(items: list[dict] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items or ():
        if not item or item.get("exclude") or not item.get("name"):
            continue
        # secret / configMap / podFieldRef / userCredential sources cannot be resolved here
        if item.get("value") is None and any(
            item.get(k) for k in ("secret", "configMap", "podFieldRef", "userCredential")
        ):
            continue
        env[item["name"]] = "" if item.get("value") is None else str(item["value"])
    return env


def has_master(kind: str, body: dict) -> bool:
    """A distributed workload has a master pod besides its ``numWorkers`` workers when it
    asks for one: ``masterSpecSameAsWorker: true`` or a ``masterSpec``."""
    return kind == "distributed" and (
        body.get("masterSpecSameAsWorker") is True or bool(body.get("masterSpec"))
    )


def replica_count(kind: str, body: dict) -> int:
    """Pods of a workload: one, or the master (if any) plus ``numWorkers`` workers."""
    if kind != "distributed":
        return 1
    workers = int((body.get("spec") or {}).get("numWorkers") or 1)
    return workers + (1 if has_master(kind, body) else 0)


def pod_name(name: str, kind: str, body: dict, rank: int) -> str:
    """The pod of rank ``rank``, named as the training operator names them: ``<name>-0-0`` for
    a training, ``<name>-master-0`` and ``<name>-worker-<i>`` for a distributed workload."""
    if kind != "distributed":
        return f"{name}-{rank}-0"
    if has_master(kind, body):
        return f"{name}-master-0" if rank == 0 else f"{name}-worker-{rank - 1}"
    return f"{name}-worker-{rank}"


def build_plan(workload_id: str, name: str, kind: str, body: dict, data_dir: Path) -> LaunchPlan:
    """Turn a validated creation request into replicas to start."""
    spec = body.get("spec") or {}
    mounts: list[Mount] = []
    storage = spec.get("storage") or {}
    for index, pvc in enumerate(storage.get("pvc") or ()):
        if not pvc or pvc.get("exclude") or not pvc.get("path"):
            continue
        claim = pvc.get("claimName") or f"{name}-pvc-{index}"
        mounts.append(
            Mount(claim, data_dir / "pvcs" / claim, pvc["path"], bool(pvc.get("readOnly")))
        )
    base_env = _env_pairs(spec.get("environmentVariables"))
    distributed = kind == "distributed"
    count = replica_count(kind, body)
    master = body.get("masterSpec") if distributed else None
    use_master = bool(master) and body.get("masterSpecSameAsWorker") is not True
    replicas = []
    for rank in range(count):
        source = spec
        env = dict(base_env)
        if use_master and master and rank == 0:
            source = {k: v for k, v in master.items() if v is not None}
            source = {**{k: v for k, v in spec.items() if k not in source}, **source}
            env = _env_pairs(source.get("environmentVariables"))
        replicas.append(
            ReplicaPlan(
                rank=rank,
                image=source.get("image"),
                command=split_words(source.get("command")),
                args=split_words(source.get("args")),
                env=env,
                working_dir=source.get("workingDir"),
            )
        )
    return LaunchPlan(
        workload_id,
        name,
        spec.get("image"),
        mounts,
        replicas,
        distributed,
        pods=[pod_name(name, kind, body, rank) for rank in range(count)],
        master=has_master(kind, body),
        framework=(spec.get("distributedFramework") or PYTORCH) if distributed else None,
    )


# ---------------------------------------------------------------------------------------------
# Replicas


class Replica(Runtime):
    """One running (or finished) process or container: the replica of rank ``rank``."""

    rank: int
    log_path: Path


class ProcessReplica(ProcessRuntime, Replica):
    def __init__(self, rank: int, log_path: Path, argv: list[str], env: dict, cwd: str):
        self.rank = rank
        super().__init__(argv, env, cwd, log_path)

    def describe(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "pid": self.proc.pid if self.proc else None,
            "argv": self.argv,
            "exitCode": self.exit_code(),
            "log": str(self.log_path),
        }


class ContainerReplica(ContainerRuntime, Replica):
    def __init__(self, rank: int, log_path: Path, container, argv: list[str] | None):
        self.rank = rank
        super().__init__(container, argv, log_path)

    def describe(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "container": self.container.name,
            "containerId": self.container.id,
            "argv": self.argv,
            "exitCode": self.exit_code(),
            "log": str(self.log_path),
        }


class FailedReplica(StartFailure, Replica):
    """A replica that could not be started at all (e.g. the image is missing)."""

    def __init__(self, rank: int, log_path: Path, message: str):
        self.rank = rank
        super().__init__(message, log_path)

    def describe(self) -> dict[str, Any]:
        return {"rank": self.rank, "exitCode": 1, "error": self.message, "log": str(self.log_path)}


# ---------------------------------------------------------------------------------------------
# Backends


def _path_replacer(mounts: list[Mount]):
    """A function replacing PVC mount paths (whole path components only) with host folders."""
    return path_replacer([(m.path, str(m.host)) for m in mounts])


class SubprocessBackend:
    name = "subprocess"

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir

    def start(self, plan: LaunchPlan, log_dir: Path) -> list[Replica]:
        for mount in plan.mounts:
            mount.host.mkdir(parents=True, exist_ok=True)
        replace = _path_replacer(plan.mounts)
        scratch = self.data_dir / "work" / plan.workload_id
        scratch.mkdir(parents=True, exist_ok=True)
        addresses = loopback_addresses(len(plan.replicas)) if plan.distributed else []
        names = {pod: rank for rank, pod in enumerate(plan.pods)}
        replicas: list[Replica] = []
        for rp in plan.replicas:
            log_path = log_dir / f"{rp.rank}.log"
            words = (rp.command or []) + (rp.args or [])
            if not words:
                replicas.append(
                    FailedReplica(rp.rank, log_path, "no command or args to run on the host")
                )
                continue
            argv = [replace(w) for w in words]
            env = dict(os.environ)
            env.update({k: replace(v) for k, v in rp.env.items()})
            if plan.distributed:  # a machine of its own; the master is found by its address
                env.update(node_env(addresses, rp.rank, names))
                env.update(operator_env(plan, rp.rank, addresses[0]))
            cwd = str(scratch)
            if rp.working_dir:
                candidate = replace(rp.working_dir)
                if os.path.isdir(candidate):
                    cwd = candidate
            replicas.append(ProcessReplica(rp.rank, log_path, argv, env, cwd))
        return replicas

    def cleanup(self, workload_id: str) -> None:
        return None

    def shutdown(self) -> None:
        return None


class DockerBackend(DockerEngine):
    label = LABEL

    def network_name(self, workload_id: str) -> str:
        return f"runai-emu-{workload_id[:12]}"

    def start(self, plan: LaunchPlan, log_dir: Path) -> list[Replica]:
        for mount in plan.mounts:
            mount.host.mkdir(parents=True, exist_ok=True)
        volumes = {
            str(m.host.resolve()): {"bind": m.path, "mode": "ro" if m.read_only else "rw"}
            for m in plan.mounts
        }
        self.remove_containers(plan.workload_id)  # a resume starts from fresh containers
        # pods that must reach each other get a network of their workload; a single pod the
        # engine's default bridge (an engine has room for only ~30 user networks)
        network = self._network(plan.workload_id) if len(plan.replicas) > 1 else None
        names = [f"runai-emu-{plan.workload_id[:8]}-{rp.rank}" for rp in plan.replicas]
        replicas: list[Replica] = []
        for rp, cname in zip(plan.replicas, names, strict=True):
            log_path = log_dir / f"{rp.rank}.log"
            image = rp.image or plan.image
            if not self.has_image(image):
                replicas.append(
                    FailedReplica(
                        rp.rank,
                        log_path,
                        f"image {image!r} is not on the local engine (the emulator never pulls)",
                    )
                )
                continue
            pod = plan.pods[rp.rank]
            env = {**rp.env, **operator_env(plan, rp.rank, plan.pods[0])}
            kwargs: dict[str, Any] = {
                "name": cname,
                "hostname": pod[:63],  # a DNS label
                "environment": env,
                "labels": {LABEL: plan.workload_id, f"{LABEL}.rank": str(rp.rank)},
                "volumes": volumes,
                "detach": True,
            }
            if network is not None:
                kwargs["network"] = network.name
                kwargs["networking_config"] = {
                    network.name: self.client.api.create_endpoint_config(aliases=[pod])
                }
            if rp.command is not None:
                kwargs["entrypoint"] = rp.command
                kwargs["command"] = rp.args or []
            elif rp.args is not None:
                kwargs["command"] = rp.args
            if rp.working_dir:
                kwargs["working_dir"] = rp.working_dir
            argv = (rp.command or []) + (rp.args or []) or None
            try:
                container = self.client.containers.run(image, **kwargs)
            except Exception as e:  # noqa: BLE001 - e.g. the entrypoint is not in the image
                replicas.append(FailedReplica(rp.rank, log_path, f"container failed to start: {e}"))
                continue
            replicas.append(ContainerReplica(rp.rank, log_path, container, argv))
        return replicas


# ---------------------------------------------------------------------------------------------
# Workloads and their lifecycle


@dataclass
class Workload:
    """One emulated workload; the server renders it as the API objects."""

    id: str
    kind: str  # trainings | distributed | workspaces
    name: str
    requested_name: str
    project: dict
    created_by: str
    body: dict
    created_at: float = field(default_factory=time.time)
    desired_phase: str = "Running"
    phase: str = "Creating"
    phase_updated_at: float = 0.0
    phase_message: str | None = None
    phases: list[tuple[str, float]] = field(default_factory=list)
    completed_at: float | None = None
    deleted_at: float | None = None
    mode: str | None = None
    replicas: list[Replica] = field(default_factory=list)
    generation: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def spec(self) -> dict:
        return self.body.get("spec") or {}

    def set_phase(self, phase: str, message: str | None = None) -> None:
        ts = time.time()
        self.phase = phase
        self.phase_updated_at = ts
        self.phase_message = message
        self.phases.append((phase, ts))
        if phase in ("Completed", "Failed"):
            self.completed_at = ts

    def running_pods(self) -> int:
        if self.phase != "Running":
            return 0
        return sum(1 for r in self.replicas if r.exit_code() is None)

    def replica_count(self) -> int:
        return replica_count(self.kind, self.body)


class WorkloadManager(ManagerBase):
    """Owns the workloads and drives each through its phases on a thread of its own."""

    def __init__(
        self,
        data_dir: Path,
        mode: str = "auto",
        phase_delay: float = 0.04,
        stop_grace: float = 2.0,
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
        self.workloads: dict[str, Workload] = self.items

    def image_of(self, w: Workload) -> str | None:
        return w.spec.get("image")

    def runtimes_of(self, w: Workload) -> list[Replica]:
        return list(w.replicas)

    def set_state(self, w: Workload, state: str, message: str | None) -> None:
        w.set_phase(state, message)

    # -- queries ---------------------------------------------------------------------------
    def name_taken(self, project_id: str, name: str) -> bool:
        with self.lock:
            return any(
                w.name == name and w.project["id"] == project_id and not w.deleted
                for w in self.workloads.values()
            )

    # -- commands -----------------------------------------------------------------------------
    def new_id(self) -> str:
        return str(uuid.uuid4())

    def submit(self, w: Workload) -> None:
        w.set_phase("Creating")
        self._register(w)

    def suspend(self, w: Workload) -> None:
        with w.lock:
            if w.deleted or w.phase == "Deleting":
                return
            w.desired_phase = "Stopped"
            if w.phase in ("Stopped", "Stopping"):
                return
            gen = self._take_over(w, "Stopping")
        self._spawn(self._stop, w, gen)

    def resume(self, w: Workload) -> None:
        with w.lock:
            if w.deleted or w.phase == "Deleting":
                return
            w.desired_phase = "Running"
            if w.phase not in ("Stopped", "Stopping"):
                return
            gen = self._take_over(w, "Resuming")
        self._spawn(self._drive, w, gen)

    def delete(self, w: Workload) -> None:
        with w.lock:
            if w.deleted or w.phase == "Deleting":
                return
            w.desired_phase = "Deleted"
            gen = self._take_over(w, "Deleting")
        self._spawn(self._remove, w, gen)

    # -- internals ------------------------------------------------------------------------------
    def _sleep_phase(self, w: Workload, gen: int) -> bool:
        time.sleep(self.phase_delay)
        return w.generation == gen

    def _drive(self, w: Workload, gen: int) -> None:
        try:
            self._drive_inner(w, gen)
        except Exception as e:  # noqa: BLE001 - never leave a workload hanging
            self._advance(w, gen, "Failed", f"emulator error: {e}")

    def _drive_inner(self, w: Workload, gen: int) -> None:
        if not self._sleep_phase(w, gen) or not self._advance(w, gen, "Pending"):
            return
        if not self._sleep_phase(w, gen) or not self._advance(w, gen, "Initializing"):
            return
        started = time.time()
        plan = build_plan(w.id, w.name, w.kind, w.body, self.data_dir)
        log_dir = self.log_dir(w.id)
        log_dir.mkdir(parents=True, exist_ok=True)
        with w.lock:
            if w.generation != gen:
                return
            backend = self._backend_for(w)
            w.mode = backend.name
            w.replicas = backend.start(plan, log_dir)
        rest = self.phase_delay - (time.time() - started)
        if rest > 0:
            time.sleep(rest)
        if not self._advance(w, gen, "Running"):
            return
        while True:
            codes = [r.exit_code() for r in w.replicas]
            failed = [(r, c) for r, c in zip(w.replicas, codes, strict=True) if c not in (None, 0)]
            if failed:
                replica, code = failed[0]
                with w.lock:
                    if w.generation != gen:
                        return
                self._kill(w)
                message = f"replica {replica.rank} exited with code {code}"
                if isinstance(replica, FailedReplica):
                    message = f"replica {replica.rank} could not start: {replica.message}"
                self._advance(w, gen, "Failed", message)
                return
            if all(c == 0 for c in codes):
                self._advance(w, gen, "Completed")
                return
            time.sleep(self.poll_interval)
            if w.generation != gen:
                return
