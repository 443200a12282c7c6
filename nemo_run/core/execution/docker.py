"""`DockerExecutor`: run tasks as containers on a Docker engine; plus the request it produces.

The fields, their order and defaults are nemo-run 0.11.1's. Types are checked on creation;
`validate()` checks the rest (volumes, ulimits, sizes, the image) at dry run, before any engine
call, since 0.11.1 lets users set fields after construction.

The request (`DockerJobRequest`) is what a dry run prints and what `schedule` creates; its
text masks secret-looking environment values.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nemo_run.config import get_nemorun_home as get_nemorun_home
from nemo_run.core.execution.base import RUNDIR_NAME as RUNDIR_NAME
from nemo_run.core.execution.base import Executor, ExecutorMacros
from nemo_run.core.execution.fields import check_at_least, check_field_types, in_job_paths
from nemo_run.core.packaging.base import Packager
from nemo_run.core.packaging.git import GitArchivePackager
from nemo_run.core.redact import redact, redact_args, redact_env
from nemo_run.core.store import store_path
from nemo_run.exceptions import ConfigError

logger = logging.getLogger(__name__)

CONTAINER_JOB_DIR = f"/{RUNDIR_NAME}"  # the job's folder, mounted into every container
CONTAINER_CODE_DIR = f"{CONTAINER_JOB_DIR}/code"
# The label holding the app id on every container of a job (0.11.1 names it `nemo-run/id`;
# its `nemo-run/name` and `nemo-run/experiment-id` labels have no counterpart here).
LABEL_ID = "nemo_run.app_id"
FCNTL_AVAILABLE = importlib.util.find_spec("fcntl") is not None  # as 0.11.1: a POSIX host

_SIZE = re.compile(r"^\d+[bkmg]?$", re.IGNORECASE)
_ULIMIT = re.compile(r"^([a-z_]+)[:=](-?\d+|unlimited)(?::(-?\d+|unlimited))?$")
NETWORK = "nemo_run"  # 0.11.1's default network
_HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period"}
_VOLUME_MODES = {
    "ro",
    "rw",
    "z",
    "Z",
    "shared",
    "slave",
    "private",
    "rshared",
    "rslave",
    "rprivate",
    "nocopy",
    "consistent",
    "cached",
    "delegated",
}


def __getattr__(name: str) -> Any:
    """`DOCKER_JOB_DIRS`, 0.11.1's job file: the job store's path now, resolved on every
    access so `set_nemorun_home()` and `$NEMORUN_HOME` count."""
    if name == "DOCKER_JOB_DIRS":
        return store_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The names `__getattr__` serves too, so `dir()` and API tools see them."""
    return sorted([*globals(), "DOCKER_JOB_DIRS"])


def _valid_size(size: str | int) -> bool:
    """Bytes as a positive int (never bool), or text like '16g' / '512m'."""
    if isinstance(size, int):
        return not isinstance(size, bool) and size > 0
    return bool(_SIZE.match(size))


def parse_ulimit(text: str) -> tuple[str, int, int]:
    """'nofile:1024:2048' (0.11.1's form) or 'nofile=1024:2048' -> ('nofile', 1024, 2048); a
    missing hard limit equals the soft one; 'unlimited' (or -1) is -1."""
    match = _ULIMIT.match(text) if isinstance(text, str) else None
    if not match:
        raise ConfigError(
            f"DockerExecutor.ulimits entry {text!r} is malformed; write NAME:SOFT[:HARD], "
            "e.g. 'nofile:1024:2048' or 'memlock:-1:-1'"
        )
    name, soft, hard = match.group(1), match.group(2), match.group(3) or match.group(2)

    def value(v: str) -> int:
        return -1 if v == "unlimited" else int(v)

    return name, value(soft), value(hard)


def parse_volume(text: str) -> tuple[str, str, str]:
    """'/host:/container[:ro]' or 'named-volume:/container' -> (source, target, mode)."""
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise ConfigError(
            f"DockerExecutor.volumes entry {text!r} is malformed; write SOURCE:TARGET[:MODE], "
            "e.g. '/data:/data:ro'"
        )
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if not target.startswith("/"):
        raise ConfigError(
            f"DockerExecutor.volumes entry {text!r}: the container path {target!r} must be absolute"
        )
    if source.startswith(".") or ("/" in source and not source.startswith("/")):
        raise ConfigError(
            f"DockerExecutor.volumes entry {text!r}: give the host path {source!r} as an absolute path"
        )
    if not set(mode.split(",")) <= _VOLUME_MODES:
        raise ConfigError(
            f"DockerExecutor.volumes entry {text!r}: unknown mode {mode!r}; use ro or rw"
        )
    return source, target, mode


@dataclass(kw_only=True)
class DockerExecutor(Executor):
    """Containers on the local Docker engine, one per replica (`ntasks_per_node` per task)."""

    spawns_replicas: ClassVar[bool] = True

    packager: Packager = field(
        default_factory=GitArchivePackager,  # as 0.11.1: the committed tree of the launch repo
        metadata={"help": "how code reaches the job (default: GitArchivePackager())"},
    )
    container_image: str = field(metadata={"help": "image every container runs, e.g. python:3.11"})
    ntasks_per_node: int = field(
        default=1, metadata={"help": "containers (ranks) per task, or torchrun's processes"}
    )
    runtime: str | None = field(default=None, metadata={"help": "container runtime, e.g. nvidia"})
    num_gpus: int | None = field(default=None, metadata={"help": "GPUs per container; -1 for all"})
    shm_size: str | int | None = field(
        default=None, metadata={"help": "size of /dev/shm: bytes, or text like 16g or 512m"}
    )
    ulimits: list[str] = field(
        default_factory=list,
        metadata={"help": "NAME:SOFT[:HARD] limits, e.g. nofile:1024:2048 or memlock:-1:-1"},
    )
    ipc_mode: str | None = field(
        default=None, metadata={"help": "IPC mode of the containers, e.g. host"}
    )
    healthcheck: dict[str, Any] | None = field(
        default_factory=dict,
        metadata={
            "help": "Docker healthcheck: test, optionally interval, timeout, retries, "
            "start_period ({} for none)"
        },
    )
    privileged: bool = field(default=False, metadata={"help": "run the containers privileged"})
    network: str = field(
        default=NETWORK,
        metadata={"help": "network the containers join (a bridge network, created if missing)"},
    )
    additional_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "more docker-py containers.run arguments (labels and environment merge)"},
    )
    volumes: list[str] = field(
        default_factory=list, metadata={"help": "SOURCE:TARGET[:MODE] mounts, e.g. /data:/data:ro"}
    )

    job_name: str = field(
        init=False, default="nemo-job", metadata={"help": "the task's name (set by assign)"}
    )
    run_as_group: bool = field(
        init=False, default=False, metadata={"help": "roles run with resource_group (merge)"}
    )
    resource_group: list[DockerExecutor] = field(
        init=False,
        default_factory=list,
        repr=False,
        compare=False,
        metadata={"help": "one executor per role of a task group (set by merge)"},
    )

    @classmethod
    def merge(cls, executors: list[DockerExecutor], num_tasks: int) -> DockerExecutor:
        """One executor for a group of `num_tasks` tasks run together: role i runs with
        executors[i] (or copies of a single one). The first is returned, grouping them all."""
        if len(executors) not in (1, num_tasks):
            raise ConfigError(
                f"DockerExecutor.merge: {len(executors)} executors for {num_tasks} tasks; give "
                "one executor, or one per task"
            )
        if len(executors) == 1:
            executors = [executors[0], *(copy.deepcopy(executors[0]) for _ in range(num_tasks - 1))]
        main = executors[0]
        main.run_as_group = True
        main.resource_group = list(executors)
        return main

    def role_executor(self, index: int) -> DockerExecutor:
        """The executor whose settings role `index` of the job runs with."""
        if self.run_as_group and self.resource_group:
            return self.resource_group[index]
        return self

    # -- checks at dry run -------------------------------------------------------------------
    def validate_task(self, task: Any) -> None:
        """Before a task is packaged (at dry run): the executor's own settings first."""
        self.validate()
        super().validate_task(task)

    def validate(self) -> None:
        """Everything a launch needs, before any engine call: fields may have been set after
        construction, so the types are checked again; grouped executors are checked too."""
        for executor in [self, *(e for e in self.resource_group if e is not self)]:
            executor._validate_one()

    def _validate_one(self) -> None:
        check_field_types(self)
        if not self.container_image.strip():
            raise ConfigError(
                "DockerExecutor.container_image is required, e.g. container_image='python:3.11'"
            )
        check_at_least(self, "num_gpus", -1, expected="-1 (all), 0 or more")
        check_at_least(self, "ntasks_per_node", 1)
        if self.shm_size is not None and not _valid_size(self.shm_size):
            raise ConfigError(
                f"DockerExecutor.shm_size={self.shm_size!r} is malformed; write e.g. '16g' or '512m'"
            )
        if not self.network.strip():
            raise ConfigError("DockerExecutor.network is empty; leave the default 'nemo_run'")
        for ulimit in self.ulimits:
            parse_ulimit(ulimit)
        for volume in self.volumes:
            parse_volume(volume)
        if self.healthcheck:
            unknown = set(self.healthcheck) - _HEALTHCHECK_KEYS
            if unknown or "test" not in self.healthcheck:
                raise ConfigError(
                    f"DockerExecutor.healthcheck needs a 'test' and only {sorted(_HEALTHCHECK_KEYS)}; "
                    f"unknown keys: {sorted(unknown)}"
                )

    # -- placement ------------------------------------------------------------------------------
    def assign(self, exp_id: str, exp_dir: str, task_id: str, task_dir: str) -> None:
        """Place the task under the experiment folder; `job_name` is the task's id."""
        super().assign(exp_id, exp_dir, task_id, task_dir)
        self.job_name = task_id

    def package_configs(self, *cfgs: tuple[str, str]) -> list[str]:
        """Write (name, text) configs under `<job_dir>/configs`; the paths the containers read
        them from (`/nemo_run/configs/<name>`, as 0.11.1)."""
        return in_job_paths(self.job_dir, super().package_configs(*cfgs))

    # -- shape of the job ---------------------------------------------------------------------
    def nnodes(self) -> int:
        return 1

    def nproc_per_node(self) -> int:
        return self.ntasks_per_node

    def python_executable(self) -> str:
        return "python3"

    def macro_values(self) -> ExecutorMacros:
        """Set in every container by the scheduler: the first container's name on the job's
        network (MASTER_ADDR), the node count and this node's rank (one node of rank 0, except
        for a role whose replicas each run torchrun or ft_launcher: each container is a node,
        ranked by its replica index) and the processes per node. Commands run without a shell,
        so the scheduler puts these values in place of the references."""
        return ExecutorMacros(
            head_node_ip_var="MASTER_ADDR",
            nproc_per_node_var="NPROC_PER_NODE",
            num_nodes_var="NNODES",
            node_rank_var="NODE_RANK",
        )


@dataclass(kw_only=True)
class DockerContainer:
    """One container of a job: a replica of a role."""

    name: str
    image: str
    command: list[str]
    role: str
    replica_id: int
    hostname: str
    kwargs: dict[str, Any] = field(default_factory=dict)  # docker-py containers.run arguments


@dataclass(kw_only=True)
class DockerJobRequest:
    """Everything `schedule` creates for one job; `str()` is the dry-run text."""

    id: str
    executor: DockerExecutor
    containers: list[DockerContainer]
    log_dir: str = ""  # host folder mounted at /nemo_run

    def __str__(self) -> str:
        lines = [
            f"app_id: {self.id}",
            f"job_dir: {self.log_dir} -> {CONTAINER_JOB_DIR}",
            f"packager: {type(self.executor.packager).__name__}",
        ]
        for c in self.containers:
            lines.append(f"container {c.name} (role {c.role}, replica {c.replica_id}):")
            lines.append(f"  image: {c.image}")
            lines.append(f"  command: {redact_args(c.command)}")
            for key, value in sorted(c.kwargs.items()):
                if key == "environment":
                    for name, val in sorted(redact_env(value).items()):
                        lines.append(f"  env {name}={val}")
                else:
                    lines.append(f"  {key}: {redact({key: value})[key]}")
        return "\n".join(lines)

    def summary(self) -> list[dict[str, Any]]:
        """Per-container facts for the job store (no environment values)."""
        return [
            {
                "name": c.name,
                "role": c.role,
                "replica_id": c.replica_id,
                "image": c.image,
                "command": c.command,
            }
            for c in self.containers
        ]
