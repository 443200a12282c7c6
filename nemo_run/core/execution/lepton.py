"""`LeptonExecutor`: batch jobs on an NVIDIA DGX Cloud Lepton workspace.

The workspace id, URL and token come from `LEPTON_WORKSPACE_ID`, `LEPTON_WORKSPACE_URL` and
`LEPTON_WORKSPACE_TOKEN` (or the SDK's `lep login` record) when a call is made; they are never
fields here, so they can never reach a job record, a log or a dry-run text.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from nemo_run.core.credentials import resolve
from nemo_run.core.envvars import check_env_vars
from nemo_run.core.execution.base import Executor, ExecutorMacros
from nemo_run.core.execution.fields import check_at_least, check_positive_seconds
from nemo_run.exceptions import ConfigError

# Mount targets Lepton refuses (the paths themselves; folders below them are allowed).
RESERVED_MOUNT_PATHS = frozenset(
    {
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/lib",
        "/lib64",
        "/media",
        "/opt",
        "/proc",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/usr",
        "/usr/bin",
        "/usr/lib",
        "/usr/local",
        "/usr/sbin",
        "/var",
        "/sys/fs/cgroup",
        "/sys/kernel/security",
        "/proc/sys",
        "/proc/bus",
    }
)
_SHAPE = re.compile(r"^[a-z0-9]+(\.[a-z0-9-]+)*$", re.IGNORECASE)
_QUEUE_PRIORITY = re.compile(r"^(low|mid|high)(-\d{1,4})?$")


@dataclass(kw_only=True)
class LeptonExecutor(Executor):
    """`nodes` replicas (one per node) of one container image, in a dedicated node group."""

    container_image: str = field(
        metadata={"help": "image every replica runs, e.g. nvcr.io/nvidia/nemo:25.02"}
    )
    nemo_run_dir: str = field(
        metadata={"help": "folder inside a mount for the job's code, launch script and logs"}
    )
    nodes: int = field(default=1, metadata={"help": "replicas, one per node"})
    gpus_per_node: int = field(default=0, metadata={"help": "GPUs per node"})
    nprocs_per_node: int = field(default=1, metadata={"help": "processes per node"})
    resource_shape: str = field(
        default="",
        metadata={
            "help": "resource shape of each replica, e.g. gpu.8xh100-80gb or cpu.small (required)"
        },
    )
    node_group: str = field(
        default="", metadata={"help": "name of the dedicated node group to run in (required)"}
    )
    mounts: list[dict[str, Any]] = field(
        default_factory=list,
        metadata={"help": 'storage mounts: [{"path": ..., "from": ..., "mount_path": ...}]'},
    )
    shared_memory_size: int = field(
        default=65536, metadata={"help": "shared memory per replica, in MiB"}
    )
    secret_vars: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "environment variable name -> workspace secret name"},
    )
    image_pull_secrets: list[str] = field(
        default_factory=list, metadata={"help": "workspace secrets used to pull the image"}
    )
    node_reservation: str = field(
        default="", metadata={"help": "id of a node reservation to run in"}
    )
    can_be_preempted: bool = field(
        default=False,
        metadata={"help": "higher-priority jobs may preempt this one (needs queue_priority)"},
    )
    can_preempt: bool = field(
        default=False,
        metadata={"help": "this job may preempt lower-priority ones (needs queue_priority)"},
    )
    queue_priority: str | None = field(
        default=None, metadata={"help": "low, mid or high, optionally with a number: mid-4000"}
    )
    pre_launch_commands: list[str] = field(
        default_factory=list,
        metadata={"help": "shell commands run on every replica before the task"},
    )
    custom_spec: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "fields merged as given into the job spec"}
    )
    launched_from_cluster: bool = field(
        default=False,
        metadata={
            "help": "the mount is available where this runs: code and logs are copied directly"
        },
    )
    timeout: float = field(
        default=30.0,
        metadata={"help": "seconds per HTTP request; a whole call gets about twice that"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.container_image.strip():
            raise ConfigError(
                "LeptonExecutor.container_image is required, e.g. 'nvcr.io/nvidia/nemo:25.02'"
            )
        for name in ("nodes", "nprocs_per_node"):
            check_at_least(self, name, 1)
        check_at_least(self, "gpus_per_node", 0)
        check_positive_seconds(self, "timeout")
        if not self.resource_shape or not _SHAPE.match(self.resource_shape):
            raise ConfigError(
                f"LeptonExecutor.resource_shape={self.resource_shape!r} is not a resource shape; "
                "write e.g. 'gpu.8xh100-80gb' or 'cpu.small'"
            )
        if not self.node_group:
            raise ConfigError(
                "LeptonExecutor.node_group is required: the name of a dedicated node group"
            )
        check_at_least(self, "shared_memory_size", 0, expected="a size in MiB, an integer >= 0")
        check_env_vars(self.secret_vars, "LeptonExecutor.secret_vars")
        if (self.can_preempt or self.can_be_preempted) and not self.queue_priority:
            raise ConfigError(
                "LeptonExecutor.queue_priority (e.g. 'mid-4000') is required with can_preempt "
                "or can_be_preempted"
            )
        if self.queue_priority and not _QUEUE_PRIORITY.match(self.queue_priority):
            raise ConfigError(
                f"LeptonExecutor.queue_priority={self.queue_priority!r}; use low, mid or high, "
                "optionally with a number: 'mid-4000'"
            )
        self._check_mounts()

    def _check_mounts(self) -> None:
        for i, mount in enumerate(self.mounts):
            if not mount.get("mount_path") or not mount.get("path"):
                raise ConfigError(
                    f"LeptonExecutor.mounts[{i}] needs 'path' (in the storage) and "
                    f"'mount_path' (in the container), got {mount!r}"
                )
            target = posixpath.normpath(str(mount["mount_path"]))
            if not target.startswith("/"):
                raise ConfigError(
                    f"LeptonExecutor.mounts[{i}].mount_path={mount['mount_path']!r} must be absolute"
                )
            if target in RESERVED_MOUNT_PATHS:
                raise ConfigError(
                    f"LeptonExecutor.mounts[{i}].mount_path={target!r} is a reserved system path; "
                    "mount under e.g. /nemo-workspace instead"
                )
        target = posixpath.normpath(self.nemo_run_dir or "")
        mounts = [posixpath.normpath(str(m["mount_path"])) for m in self.mounts]
        if not any(target == m or target.startswith(m.rstrip("/") + "/") for m in mounts):
            raise ConfigError(
                f"LeptonExecutor.nemo_run_dir={self.nemo_run_dir!r} must be inside one of the "
                f"mounts ({', '.join(mounts) or 'none given'}): code and logs go there"
            )

    def nnodes(self) -> int:
        return self.nodes

    def nproc_per_node(self) -> int:
        return self.nprocs_per_node

    def python_executable(self) -> str:
        return "python3"

    def macro_values(self) -> ExecutorMacros:
        return ExecutorMacros(
            head_node_ip_var="MASTER_ADDR",
            nproc_per_node_var="NPROC_PER_NODE",
            num_nodes_var="WORLD_SIZE",
            node_rank_var="NODE_RANK",
        )


PROFILE = "lepton"
ENV_WORKSPACE = (
    ("workspace_id", "LEPTON_WORKSPACE_ID"),
    ("token", "LEPTON_WORKSPACE_TOKEN"),
    ("url", "LEPTON_WORKSPACE_URL"),
)


def workspace_credentials() -> tuple[str | None, str | None, str | None]:
    """(workspace id, token, url), each from `LEPTON_WORKSPACE_*` or the 0600 profile
    `$NEMORUN_HOME/profiles/lepton.json`, read at call time; None lets the leptonai SDK fall
    back to its own `lep login` record."""
    found = [resolve(key, None, (env,), PROFILE) for key, env in ENV_WORKSPACE]
    return found[0], found[1], found[2]
