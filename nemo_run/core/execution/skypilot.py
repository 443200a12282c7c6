"""`SkypilotExecutor`: run tasks on any infrastructure SkyPilot reaches, through its API server.

All validation is local and happens on creation, before any request to the API server;
`sky` (about 2 s to import) loads only when a task is built.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from nemo_run.core.clients.skypilot import import_sky
from nemo_run.core.execution.base import Executor, ExecutorMacros
from nemo_run.core.execution.fields import check_at_least
from nemo_run.exceptions import ConfigError

_ACCELERATOR = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*(:\d+(\.\d+)?)?$")
_REMOTE_SOURCE = re.compile(r"^[a-z0-9+]+://")  # s3://, gs://, https://, ...
# Set by SkyPilot on every node; the launch command derives torchrun's rendezvous from them.
HEAD_NODE_IP = '$(echo "$SKYPILOT_NODE_IPS" | head -n1)'


@dataclass(kw_only=True)
class SkypilotExecutor(Executor):
    """A SkyPilot task: `num_nodes` nodes with the given resources, on an existing or new cluster."""

    container_image: str | None = field(
        default=None, metadata={"help": "Docker image the task runs in"}
    )
    infra: str | None = field(
        default=None,
        metadata={
            "help": "where to run: cloud/region/zone, e.g. aws/us-east-1, k8s, slurm/localcluster"
        },
    )
    cloud: str | None = field(default=None, metadata={"help": "older spelling of infra: the cloud"})
    region: str | None = field(
        default=None, metadata={"help": "older spelling of infra: the region (needs cloud)"}
    )
    zone: str | None = field(
        default=None, metadata={"help": "older spelling of infra: the zone (needs cloud)"}
    )
    gpus: str | None = field(
        default=None, metadata={"help": "accelerator: NAME or NAME:COUNT, e.g. H100 or A100:8"}
    )
    gpus_per_node: int | None = field(
        default=None, metadata={"help": "accelerators per node, with gpus=NAME"}
    )
    cpus: int | float | str | None = field(
        default=None, metadata={"help": "vCPUs per node, e.g. 4, or 4+ for at least 4"}
    )
    memory: int | float | str | None = field(
        default=None, metadata={"help": "memory per node in GB, e.g. 32, or 32+ for at least 32"}
    )
    instance_type: str | None = field(
        default=None, metadata={"help": "cloud instance type, e.g. p4d.24xlarge"}
    )
    num_nodes: int = field(default=1, metadata={"help": "nodes the task runs on"})
    use_spot: bool | None = field(
        default=False, metadata={"help": "use spot instances (None: SkyPilot's default)"}
    )
    disk_size: int | None = field(default=None, metadata={"help": "disk per node, in GB"})
    ports: list[int | str] | tuple[int | str, ...] | None = field(
        default_factory=list, metadata={"help": "ports to open, e.g. 8080 or 10000-10010"}
    )
    # remote path -> local path or bucket URL
    file_mounts: dict[str, str] | None = field(
        default_factory=dict, metadata={"help": "remote path -> local path or bucket URL"}
    )
    # remote path -> storage spec
    storage_mounts: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "remote path -> SkyPilot storage spec"}
    )
    setup: str | None = field(
        default="", metadata={"help": "shell commands SkyPilot runs on each node before the task"}
    )
    cluster_name: str | None = field(
        default=None,
        metadata={"help": "cluster to run on, reused while up (default: nemo-<task name>)"},
    )
    autodown: bool = field(
        default=False, metadata={"help": "tear the cluster down when the job ends"}
    )
    idle_minutes_to_autostop: int | None = field(
        default=None, metadata={"help": "stop the cluster after this many idle minutes"}
    )
    retry_until_up: bool = field(
        default=False, metadata={"help": "keep retrying provisioning until resources are found"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, "num_nodes", 1)
        if self.infra and (self.cloud or self.region or self.zone):
            raise ConfigError(
                "SkypilotExecutor: give either infra='cloud/region/zone' or the older "
                "cloud/region/zone fields, not both"
            )
        if (self.region or self.zone) and not self.cloud:
            raise ConfigError(
                "SkypilotExecutor.region/zone need cloud=... (or use infra='cloud/region/zone')"
            )
        if self.gpus is not None and not _ACCELERATOR.match(self.gpus):
            raise ConfigError(
                f"SkypilotExecutor.gpus={self.gpus!r} is not an accelerator; write NAME or "
                "NAME:COUNT, e.g. 'H100' or 'A100:8'"
            )
        if self.gpus_per_node is not None:
            check_at_least(self, "gpus_per_node", 1)
            if not self.gpus or ":" in self.gpus:
                raise ConfigError(
                    "SkypilotExecutor.gpus_per_node needs gpus='NAME' without a count "
                    "(or give gpus='NAME:COUNT' alone)"
                )
        check_at_least(self, "idle_minutes_to_autostop", 0)
        for remote, source in (self.file_mounts or {}).items():
            if not remote:
                raise ConfigError(
                    f"SkypilotExecutor.file_mounts[{remote!r}] must map a remote path to a local path"
                )
            if not _REMOTE_SOURCE.match(source) and not os.path.exists(os.path.expanduser(source)):
                raise ConfigError(
                    f"SkypilotExecutor.file_mounts[{remote!r}]={source!r} does not exist locally; "
                    "give an existing file or folder, or a bucket URL"
                )

    # -- shape of the job ---------------------------------------------------------------------
    def nnodes(self) -> int:
        return self.num_nodes

    def nproc_per_node(self) -> int:
        return self.gpus_per_node or (
            int(float(self.gpus.split(":")[1])) if self.gpus and ":" in self.gpus else 1
        )

    def python_executable(self) -> str:
        return "python3"

    def macro_values(self) -> ExecutorMacros:
        return ExecutorMacros(
            head_node_ip_var="head_node_ip",
            nproc_per_node_var="SKYPILOT_NUM_GPUS_PER_NODE",
            num_nodes_var="num_nodes",
            node_rank_var="SKYPILOT_NODE_RANK",
        )

    def accelerators(self) -> str | None:
        if self.gpus and self.gpus_per_node:
            return f"{self.gpus}:{self.gpus_per_node}"
        return self.gpus

    def infra_string(self) -> str | None:
        if self.infra:
            return self.infra
        parts = [p for p in (self.cloud, self.region, self.zone) if p]
        return "/".join(parts) or None

    # -- the SkyPilot objects (imports sky) ------------------------------------------------------
    def to_resources(self) -> Any:
        sky = import_sky()
        kwargs: dict[str, Any] = {
            "infra": self.infra_string(),
            "accelerators": self.accelerators(),
            "cpus": self.cpus,
            "memory": self.memory,
            "instance_type": self.instance_type,
            "use_spot": self.use_spot,
            "disk_size": self.disk_size,
            "ports": list(self.ports or ()) or None,
            "image_id": f"docker:{self.container_image}" if self.container_image else None,
        }
        return sky.Resources(**{k: v for k, v in kwargs.items() if v is not None})

    def to_task(self, name: str, run: str, envs: dict[str, str], workdir: str | None = None) -> Any:
        """A real `sky.Task` for `run` (a shell command) with this executor's resources and mounts."""
        sky = import_sky()
        task = sky.Task(
            name=name,
            run=run,
            setup=self.setup or None,
            envs=envs or None,
            workdir=workdir,
            num_nodes=self.num_nodes,
        )
        task.set_resources(self.to_resources())
        if self.file_mounts:
            task.set_file_mounts(
                {
                    k: os.path.expanduser(v) if not _REMOTE_SOURCE.match(v) else v
                    for k, v in self.file_mounts.items()
                }
            )
        if self.storage_mounts:
            task.set_storage_mounts(
                {
                    path: sky.Storage.from_yaml_config(spec)
                    for path, spec in self.storage_mounts.items()
                }
            )
        return task
