"""`DockerExecutor`: run tasks as containers on a Docker engine; plus the request it produces.

Validation happens here, on creation, so bad volumes, ulimits or sizes fail before any
engine call. The request (`DockerJobRequest`) is what a dry run prints and what `schedule`
creates; its text masks secret-looking environment values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nemo_run.core.execution.base import Executor, ExecutorMacros
from nemo_run.core.execution.fields import check_at_least
from nemo_run.core.redact import redact, redact_args, redact_env
from nemo_run.exceptions import ConfigError

CONTAINER_CODE_DIR = "/nemo_run/code"
CONTAINER_JOB_DIR = "/nemo_run"
_SIZE = re.compile(r"^\d+[bkmg]?$", re.IGNORECASE)
_ULIMIT = re.compile(r"^([a-z_]+)=(-?\d+|unlimited)(?::(-?\d+|unlimited))?$")
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


def _valid_size(size: str | int) -> bool:
    """Bytes as a positive int (never bool), or text like '16g' / '512m'."""
    if isinstance(size, int):
        return not isinstance(size, bool) and size > 0
    return bool(_SIZE.match(size))


def parse_ulimit(text: str) -> tuple[str, int, int]:
    """'nofile=1024:2048' -> ('nofile', 1024, 2048); 'memlock=unlimited' -> ('memlock', -1, -1)."""
    match = _ULIMIT.match(text) if isinstance(text, str) else None
    if not match:
        raise ConfigError(
            f"DockerExecutor.ulimits entry {text!r} is malformed; write NAME=SOFT[:HARD], "
            "e.g. 'nofile=1024:2048' or 'memlock=unlimited'"
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

    container_image: str = field(metadata={"help": "image every container runs, e.g. python:3.11"})
    num_gpus: int | None = field(default=None, metadata={"help": "GPUs per container; -1 for all"})
    runtime: str | None = field(default=None, metadata={"help": "container runtime, e.g. nvidia"})
    shm_size: str | int | None = field(
        default=None, metadata={"help": "size of /dev/shm: bytes, or text like 16g or 512m"}
    )
    ulimits: list[str] = field(
        default_factory=list,
        metadata={"help": "NAME=SOFT[:HARD] limits, e.g. nofile=1024:2048 or memlock=unlimited"},
    )
    ipc_mode: str | None = field(
        default=None, metadata={"help": "IPC mode of the containers, e.g. host"}
    )
    healthcheck: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Docker healthcheck: test, optionally interval, timeout, retries, start_period"
        },
    )
    privileged: bool = field(default=False, metadata={"help": "run the containers privileged"})
    network: str | None = field(
        default=None,
        metadata={"help": "network the containers join (default: a bridge network named nemo_run)"},
    )
    volumes: list[str] = field(
        default_factory=list, metadata={"help": "SOURCE:TARGET[:MODE] mounts, e.g. /data:/data:ro"}
    )
    additional_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "more docker-py containers.run arguments (labels and environment merge)"},
    )
    spawns_replicas: ClassVar[bool] = True

    ntasks_per_node: int = field(default=1, metadata={"help": "containers (ranks) per task"})

    def __post_init__(self) -> None:
        super().__post_init__()
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
        for ulimit in self.ulimits:
            parse_ulimit(ulimit)
        for volume in self.volumes:
            parse_volume(volume)
        if not self.healthcheck:
            self.healthcheck = None  # {} (nemo-run's default) means no healthcheck, as None does
        else:
            unknown = set(self.healthcheck) - _HEALTHCHECK_KEYS
            if unknown or "test" not in self.healthcheck:
                raise ConfigError(
                    f"DockerExecutor.healthcheck needs a 'test' and only {sorted(_HEALTHCHECK_KEYS)}; "
                    f"unknown keys: {sorted(unknown)}"
                )

    def nproc_per_node(self) -> int:
        return self.ntasks_per_node

    def python_executable(self) -> str:
        return "python3"

    def macro_values(self) -> ExecutorMacros:
        return ExecutorMacros(
            head_node_ip_var="MASTER_ADDR",
            nproc_per_node_var="LOCAL_WORLD_SIZE",
            num_nodes_var="NNODES",
            node_rank_var="NODE_RANK",
        )


@dataclass
class DockerContainer:
    """One container of a job: a replica of a role."""

    name: str
    image: str
    command: list[str]
    role: str
    replica_id: int
    hostname: str
    kwargs: dict[str, Any] = field(default_factory=dict)  # docker-py containers.run arguments


@dataclass
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
