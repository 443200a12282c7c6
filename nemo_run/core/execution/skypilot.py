"""`SkypilotExecutor`: run tasks on any infrastructure SkyPilot reaches, through its API server.

The fields, their order and defaults are nemo-run 0.11.1's. Types are checked on creation;
`validate()` checks the rest at dry run (0.11.1 lets users set fields after construction), all
locally, before any request to the API server. `sky` (about 2 s to import) loads only when a
task is built.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from nemo_run.core.clients.skypilot import ClusterGoneError, SkyPilotClient, import_sky
from nemo_run.core.execution.base import RUNDIR_NAME as RUNDIR_NAME
from nemo_run.core.execution.base import Executor, ExecutorMacros
from nemo_run.core.execution.fields import (
    CONFIGS_DIR,
    check_at_least,
    check_field_types,
    in_job_paths,
    shell_join,
)
from nemo_run.core.packaging.base import Packager
from nemo_run.core.packaging.git import GitArchivePackager
from nemo_run.core.store import get_store
from nemo_run.core.store.records import REMOTE_ID
from nemo_run.exceptions import ConfigError, UnknownJobError

logger = logging.getLogger(__name__)

STORE_BACKEND = "skypilot"  # the backend name of SkyPilot jobs in the job store
_ACCELERATOR = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*(:\d+(\.\d+)?)?$")
_REMOTE_SOURCE = re.compile(r"^[a-z0-9+]+://")  # s3://, gs://, https://, ...
# Set by SkyPilot on every node; the launch command derives torchrun's rendezvous from them.
HEAD_NODE_IP = '$(echo "$SKYPILOT_NODE_IPS" | head -n1)'
# Resource fields whose list value means "any one of these" (entry i of each list: option i).
ANY_OF_FIELDS = (
    "cloud",
    "region",
    "zone",
    "cpus",
    "memory",
    "instance_type",
    "use_spot",
    "disk_size",
    "disk_tier",
)
RESOURCE_FIELDS = (*ANY_OF_FIELDS, "infra", "network_tier")


@dataclass(kw_only=True)
class SkypilotExecutor(Executor):
    """A SkyPilot task: `num_nodes` nodes with the given resources, on an existing or new cluster.

    A list value of cloud, region, zone, gpus, cpus, memory, instance_type, use_spot,
    disk_size or disk_tier means any one of them (SkyPilot's `any_of`)."""

    # The shell variables of a task's nodes, as 0.11.1 names them: the run script sets
    # head_node_ip and num_nodes from SkyPilot's SKYPILOT_NODE_IPS and SKYPILOT_NUM_NODES.
    HEAD_NODE_IP_VAR = "head_node_ip"
    NPROC_PER_NODE_VAR = "SKYPILOT_NUM_GPUS_PER_NODE"
    NUM_NODES_VAR = "num_nodes"
    NODE_RANK_VAR = "SKYPILOT_NODE_RANK"
    HET_GROUP_HOST_VAR = "het_group_host"

    packager: Packager = field(
        default_factory=GitArchivePackager,  # as 0.11.1: the committed tree of the launch repo
        metadata={"help": "how code reaches the job (default: GitArchivePackager())"},
    )
    container_image: str | None = field(
        default=None, metadata={"help": "Docker image the task runs in"}
    )
    cloud: str | list[str] | None = field(
        default=None, metadata={"help": "cloud (or a list: any of them); or use infra"}
    )
    region: str | list[str] | None = field(
        default=None, metadata={"help": "region (or a list: any of them)"}
    )
    zone: str | list[str] | None = field(
        default=None, metadata={"help": "zone (or a list: any of them)"}
    )
    gpus: str | list[str] | None = field(
        default=None,
        metadata={"help": "accelerator: NAME or NAME:COUNT, e.g. H100 or A100:8 (or a list)"},
    )
    gpus_per_node: int | None = field(
        default=None, metadata={"help": "accelerators per node, with gpus=NAME"}
    )
    cpus: int | float | str | list[int | float | str] | None = field(
        default=None, metadata={"help": "vCPUs per node, e.g. 4, or 4+ for at least 4"}
    )
    memory: int | float | str | list[int | float | str] | None = field(
        default=None, metadata={"help": "memory per node in GB, e.g. 32, or 32+ for at least 32"}
    )
    instance_type: str | list[str] | None = field(
        default=None, metadata={"help": "cloud instance type, e.g. p4d.24xlarge"}
    )
    num_nodes: int = field(default=1, metadata={"help": "nodes the task runs on"})
    use_spot: bool | list[bool] | None = field(
        default=None, metadata={"help": "use spot instances (None: SkyPilot's default)"}
    )
    disk_size: int | list[int] | None = field(
        default=None, metadata={"help": "disk per node, in GB"}
    )
    disk_tier: str | list[str] | None = field(
        default=None, metadata={"help": "disk tier: low, medium, high, ultra or best"}
    )
    ports: list[int | str] | tuple[int | str, ...] | None = field(
        default=None, metadata={"help": "ports to open, e.g. 8080 or 10000-10010"}
    )
    file_mounts: dict[str, str] | None = field(
        default=None, metadata={"help": "remote path -> local path or bucket URL"}
    )
    storage_mounts: dict[str, dict[str, Any]] | None = field(
        default=None, metadata={"help": "remote path -> SkyPilot storage spec"}
    )
    cluster_name: str | None = field(
        default=None,
        metadata={"help": "cluster to run on, reused while up (default: nemo-<task name>)"},
    )
    setup: str | None = field(
        default=None, metadata={"help": "shell commands SkyPilot runs on each node before the task"}
    )
    autodown: bool = field(
        default=False, metadata={"help": "tear the cluster down when the job ends"}
    )
    idle_minutes_to_autostop: int | None = field(
        default=None, metadata={"help": "stop the cluster after this many idle minutes"}
    )
    torchrun_nproc_per_node: int | None = field(
        default=None, metadata={"help": "torchrun's processes per node (default: the GPUs)"}
    )
    cluster_config_overrides: dict[str, Any] | None = field(
        default=None, metadata={"help": "SkyPilot's _cluster_config_overrides for the cluster"}
    )
    infra: str | None = field(
        default=None,
        metadata={
            "help": "where to run: cloud/region/zone, e.g. aws/us-east-1, k8s, slurm/localcluster"
        },
    )
    network_tier: str | None = field(
        default=None, metadata={"help": "network tier: standard or best"}
    )
    retry_until_up: bool = field(
        default=False, metadata={"help": "keep retrying provisioning until resources are found"}
    )

    # -- checks at dry run -------------------------------------------------------------------
    def validate_task(self, task: Any) -> None:
        """Before a task is packaged (at dry run): the executor's own settings first."""
        self.validate()
        super().validate_task(task)

    def validate(self) -> None:
        """Everything a launch needs, before any request to the API server: fields may have
        been set after construction, so the types are checked again; local sources of
        file_mounts must exist."""
        check_field_types(self)
        check_at_least(self, "num_nodes", 1)
        for name in ("gpus_per_node", "torchrun_nproc_per_node"):
            check_at_least(self, name, 1)
        check_at_least(self, "idle_minutes_to_autostop", 0)
        clashing = [n for n in ("cloud", "region", "zone") if getattr(self, n) is not None]
        if self.infra and clashing:
            raise ConfigError(
                f"SkypilotExecutor: give either infra={self.infra!r} or "
                f"{'/'.join(clashing)}, not both (infra='cloud/region/zone' says it all)"
            )
        for gpu in _as_list(self.gpus):
            if not _ACCELERATOR.match(gpu):
                raise ConfigError(
                    f"SkypilotExecutor.gpus={gpu!r} is not an accelerator; write NAME or "
                    "NAME:COUNT, e.g. 'H100' or 'A100:8'"
                )
            if self.gpus_per_node is not None and ":" in gpu:
                raise ConfigError(
                    f"SkypilotExecutor.gpus={gpu!r} has a count and gpus_per_node="
                    f"{self.gpus_per_node} gives another; write gpus='NAME' with gpus_per_node, "
                    "or gpus='NAME:COUNT' alone"
                )
        self._check_file_mounts()

    def _check_file_mounts(self) -> None:
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
        """torchrun_nproc_per_node when given, else the GPUs per node (gpus_per_node, or the
        COUNT of gpus='NAME:COUNT'), else 1."""
        for value in (self.torchrun_nproc_per_node, self.gpus_per_node):
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        for gpu in _as_list(self.gpus):
            count = gpu.partition(":")[2]
            if count.replace(".", "", 1).isdigit() and float(count) >= 1:
                return int(float(count))
        return 1

    def python_executable(self) -> str:
        return "python3"

    def macro_values(self) -> ExecutorMacros:
        """Variables on every node of the task (SkyPilot's, and the two the run script sets)."""
        return ExecutorMacros.named_by(self)

    def package_configs(self, *cfgs: tuple[str, str]) -> list[str]:
        """Write (name, text) configs under `<job_dir>/configs`; the paths the task reads them
        from (`/nemo_run/configs/<name>`, mounted there by `to_task`)."""
        return in_job_paths(self.job_dir, super().package_configs(*cfgs))

    def accelerators(self) -> str | dict[str, int] | None:
        """SkyPilot's `accelerators`: 'NAME:COUNT' as given, or {NAME: COUNT} for each name
        (several names: any of them), COUNT being gpus_per_node (default 1)."""
        names = _as_list(self.gpus)
        if not names:
            return None
        if isinstance(self.gpus, str) and ":" in self.gpus:
            return self.gpus
        out: dict[str, int] = {}
        for gpu in names:
            name, _, count = gpu.partition(":")
            out[name] = int(float(count)) if count else (self.gpus_per_node or 1)
        return out

    # -- the SkyPilot objects (imports sky) ------------------------------------------------------
    def resources_config(self) -> dict[str, Any]:
        """SkyPilot's `resources:` section for this executor: list values become `any_of`
        options (entry i of each list makes option i), and a value 'none' means unset."""
        config: dict[str, Any] = {}
        any_of: list[dict[str, Any]] = []
        for name in RESOURCE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, list):
                for i, item in enumerate(value):
                    while len(any_of) <= i:
                        any_of.append({})
                    if not _is_none(item):
                        any_of[i][name] = item
            elif value is not None and not _is_none(value):
                config[name] = value
        accelerators = self.accelerators()
        if accelerators:
            config["accelerators"] = accelerators
        if self.container_image:
            image = self.container_image
            config["image_id"] = image if image.startswith("docker:") else f"docker:{image}"
        if self.ports:
            config["ports"] = [str(p) for p in self.ports]
        if any_of:
            config["any_of"] = any_of
        if self.cluster_config_overrides:
            config["_cluster_config_overrides"] = dict(self.cluster_config_overrides)
        return config

    def to_resources(self) -> Any:
        """The `sky.Resources` choices (a set: one per any_of option); a ConfigError when
        SkyPilot refuses them."""
        sky = import_sky()
        try:
            return sky.Resources.from_yaml_config(self.resources_config())
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"SkypilotExecutor: SkyPilot refuses these resources: {e}") from e

    def run_script(self, cmd: list[str]) -> str:
        """The task's `run`: head node address and node count from SkyPilot's variables, then
        the command (references to the node variables expand on each node)."""
        names = self.macro_values().variable_names()
        link = getattr(self.packager, "code_link", None)  # symlink_from_remote_dir: code there
        return "\n".join(
            [
                "set -o pipefail",
                *([f"cd {shlex.quote(link)}"] if link else []),
                f"export {self.HEAD_NODE_IP_VAR}={HEAD_NODE_IP}",
                f'export {self.NUM_NODES_VAR}="$SKYPILOT_NUM_NODES"',
                shell_join(cmd, names),
            ]
        )

    def to_task(
        self, name: str, cmd: list[str] | None = None, env_vars: dict[str, str] | None = None
    ) -> Any:
        """A real `sky.Task` running `cmd` with this executor's resources and mounts."""
        sky = import_sky()
        task = sky.Task(
            name=name,
            run=self.run_script(cmd) if cmd else None,
            setup=self.setup or None,
            envs={**self.env_vars, **(env_vars or {})} or None,
            num_nodes=self.num_nodes,
        )
        task.set_resources(self.to_resources())
        mounts = {
            k: os.path.expanduser(v) if not _REMOTE_SOURCE.match(v) else v
            for k, v in (self.file_mounts or {}).items()
        }
        configs = os.path.join(self.job_dir, "configs") if self.job_dir else ""
        if configs and os.path.isdir(configs):
            mounts.setdefault(CONFIGS_DIR, configs)
        if mounts:
            task.set_file_mounts(mounts)
        if self.storage_mounts:
            task.set_storage_mounts(
                {
                    path: sky.Storage.from_yaml_config(spec)
                    for path, spec in self.storage_mounts.items()
                }
            )
        return task

    # -- 0.11.1's job calls by app id: thin calls into the client --------------------------------
    @classmethod
    def parse_app(cls, app_id: str) -> tuple[str, str, int]:
        """(cluster, task name, SkyPilot job id) of a job: from its record in the job store
        (an app id here is the task's name), else from 0.11.1's app id
        `<session>___<cluster>___<task>___<job id>`; UnknownJobError when neither says."""
        record = get_store().get(STORE_BACKEND, app_id)
        if record is not None and record.data.get("cluster") and record.data.get(REMOTE_ID):
            return str(record.data["cluster"]), app_id, int(record.data[REMOTE_ID])
        parts = app_id.split("___")
        if len(parts) == 4 and parts[1] and parts[2] and parts[3].isdigit():
            return parts[1], parts[2], int(parts[3])
        if record is not None:
            raise UnknownJobError(
                f"SkyPilot job {app_id} has no job id on its cluster yet (its launch has not "
                "finished); try again once it runs"
            )
        raise UnknownJobError(
            f"no SkyPilot job {app_id!r}: give the app id of its handle "
            "skypilot://<session>/<app id>"
        )

    @classmethod
    def cancel(cls, app_id: str) -> None:
        """Cancel the job on its cluster (nothing to do once the cluster is gone, as in
        0.11.1); its record reads CANCELLED at the next status, once SkyPilot reports it."""
        cluster, _, job_id = cls.parse_app(app_id)
        try:
            SkyPilotClient().cancel(cluster, job_id)
        except ClusterGoneError:
            logger.info(
                "SkyPilot cluster %s is gone: job %s has nothing to cancel", cluster, app_id
            )

    @classmethod
    def logs(cls, app_id: str, fallback_path: str | None) -> None:
        """Print the job's output, followed until the job ends (what 0.11.1's `nemo experiment
        logs` shows for SkyPilot); once the cluster is gone, the `run.log` in `fallback_path`
        (0.11.1 left one there), else ClusterGoneError."""
        cluster, _, job_id = cls.parse_app(app_id)
        try:
            for chunk in SkyPilotClient().tail_logs(cluster, job_id, follow=True):
                print(chunk, end="", flush=True)
        except ClusterGoneError:
            saved = (
                os.path.join(os.path.expanduser(fallback_path), "run.log") if fallback_path else ""
            )
            if not (saved and os.path.isfile(saved)):
                raise
            with open(saved, encoding="utf-8", errors="replace") as f:
                for line in f:
                    print(line, end="", flush=True)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else [value]


def _is_none(value: Any) -> bool:
    """0.11.1 reads the text 'none' as unset (e.g. region=['us-east-1', 'none'])."""
    return isinstance(value, str) and value.lower() == "none"
