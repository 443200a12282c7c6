"""`LeptonExecutor`: batch jobs on an NVIDIA DGX Cloud Lepton workspace.

The fields, their order and defaults are nemo-run 0.11.1's. The workspace id, URL and token
come from `LEPTON_WORKSPACE_ID`, `LEPTON_WORKSPACE_URL` and `LEPTON_WORKSPACE_TOKEN` (or the
SDK's `lep login` record) when a call is made; they are never fields here, so they can never
reach a job record, a log or a dry-run text.

Fields may be set after construction (as 0.11.1 allows): `validate()` checks completeness and
consistency at dry run, before anything starts; construction checks only the types given.
"""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nemo_run.config import get_nemorun_home as get_nemorun_home
from nemo_run.core.clients.lepton import LeptonClient, job_state_enum
from nemo_run.core.credentials import resolve
from nemo_run.core.envvars import check_env_vars
from nemo_run.core.execution.base import Executor, ExecutorMacros
from nemo_run.core.execution.fields import (
    check_at_least,
    check_field_types,
    check_positive_seconds,
    check_required,
    in_job_paths,
)
from nemo_run.core.packaging.base import Packager as Packager
from nemo_run.core.packaging.git import GitArchivePackager as GitArchivePackager
from nemo_run.core.store import get_store
from nemo_run.core.store.records import REMOTE_ID
from nemo_run.exceptions import ConfigError, UnknownJobError

logger = logging.getLogger(__name__)

STORE_BACKEND = "lepton"  # the backend name of Lepton jobs in the job store
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
DEFAULT_QUEUE_PRIORITY = "mid-4000"  # 0.11.1's, when preemption is asked for without one


@dataclass(kw_only=True)
class LeptonExecutor(Executor):
    """`nodes` replicas (one per node) of one container image, in a dedicated node group."""

    # Lepton names worker 0 and each worker's index; torchrun meets at a fixed address/port
    torchrun_rendezvous: ClassVar[str] = "static"

    container_image: str = field(
        metadata={"help": "image every replica runs, e.g. nvcr.io/nvidia/nemo:25.02"}
    )
    nemo_run_dir: str = field(
        metadata={"help": "folder inside a mount for the job's code, launch script and logs"}
    )
    launched_from_cluster: bool = field(
        default=False,
        metadata={
            "help": "the mount is available where this runs: code and logs are copied directly"
        },
    )
    nodes: int = field(default=1, metadata={"help": "replicas, one per node"})
    gpus_per_node: int = field(default=0, metadata={"help": "GPUs per node"})
    nprocs_per_node: int = field(
        default=1,
        metadata={"help": "processes per node (default: one per GPU when gpus_per_node is set)"},
    )
    shared_memory_size: int = field(
        default=65536, metadata={"help": "shared memory per replica, in MiB"}
    )
    resource_shape: str = field(
        default="",
        metadata={
            "help": "resource shape of each replica, e.g. gpu.8xh100-80gb or cpu.small (required)"
        },
    )
    node_group: str = field(
        default="", metadata={"help": "name of the dedicated node group to run in (required)"}
    )
    node_reservation: str = field(
        default="", metadata={"help": "id of a node reservation to run in"}
    )
    secret_vars: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "environment variable name -> workspace secret name"},
    )
    mounts: list[dict[str, Any]] = field(
        default_factory=list,
        metadata={"help": 'storage mounts: [{"path": ..., "from": ..., "mount_path": ...}]'},
    )
    lepton_job_dir: str = field(
        init=False, default="", metadata={"help": "the job's folder on the mount (set at dry run)"}
    )
    image_pull_secrets: list[str] = field(
        default_factory=list, metadata={"help": "workspace secrets used to pull the image"}
    )
    custom_spec: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "fields merged as given into the job spec"}
    )
    pre_launch_commands: list[str] = field(
        default_factory=list,
        metadata={"help": "shell commands run on every replica before the task"},
    )
    head_resource_shape: str | None = field(
        default="", metadata={"help": "resource shape of a Ray cluster's head (Ray clusters only)"}
    )
    ray_version: str | None = field(
        default=None, metadata={"help": "Ray version of a Ray cluster (Ray clusters only)"}
    )
    can_be_preempted: bool = field(
        default=False,
        metadata={"help": "higher-priority jobs may preempt this one"},
    )
    can_preempt: bool = field(
        default=False,
        metadata={"help": "this job may preempt lower-priority ones"},
    )
    queue_priority: str | None = field(
        default=None,
        metadata={
            "help": "low, mid or high, optionally with a number: mid-4000 (the default when "
            "can_preempt or can_be_preempted is set)"
        },
    )
    # -- ours, beyond 0.11.1 -----------------------------------------------------------------
    timeout: float = field(
        default=30.0,
        metadata={"help": "seconds per HTTP request; a whole call gets about twice that"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_env_vars(self.secret_vars, "LeptonExecutor.secret_vars")  # names, as env_vars

    # -- checks at dry run -------------------------------------------------------------------
    def validate_task(self, task: Any) -> None:
        """Before a task is packaged (at dry run): the executor's own settings first."""
        self.validate()
        super().validate_task(task)

    def validate(self) -> None:
        """Everything a launch needs, before anything starts: fields may have been set after
        construction (the shape and node group usually are), so types are checked again."""
        check_field_types(self)
        check_required(self, "container_image", "nemo_run_dir", "resource_shape", "node_group")
        for name in ("nodes", "nprocs_per_node"):
            check_at_least(self, name, 1)
        check_at_least(self, "gpus_per_node", 0)
        check_positive_seconds(self, "timeout")
        if not _SHAPE.match(self.resource_shape):
            raise ConfigError(
                f"LeptonExecutor.resource_shape={self.resource_shape!r} is not a resource shape; "
                "write e.g. 'gpu.8xh100-80gb' or 'cpu.small'"
            )
        check_at_least(self, "shared_memory_size", 0, expected="a size in MiB, an integer >= 0")
        check_env_vars(self.secret_vars, "LeptonExecutor.secret_vars")
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

    def queue_config(self) -> dict[str, Any] | None:
        """The job's queue settings: a priority given, or preemption asked for (then with
        0.11.1's default priority `mid-4000`)."""
        if not (self.queue_priority or self.can_preempt or self.can_be_preempted):
            return None
        return {
            "priority_class": self.queue_priority or DEFAULT_QUEUE_PRIORITY,
            "can_preempt": self.can_preempt,
            "can_be_preempted": self.can_be_preempted,
        }

    # -- shape of the job ---------------------------------------------------------------------
    def nnodes(self) -> int:
        return self.nodes

    def nproc_per_node(self) -> int:
        """One process per GPU unless nprocs_per_node says otherwise (a value other than its
        default 1 wins); CPU-only jobs run nprocs_per_node processes."""
        if _count(self.nprocs_per_node) > 1:
            return self.nprocs_per_node
        return _count(self.gpus_per_node) or 1

    def python_executable(self) -> str:
        return "python3"

    def macro_values(self) -> ExecutorMacros:
        """Derived on every replica from Lepton's own variables (LEPTON_JOB_SERVICE_PREFIX,
        LEPTON_SUBDOMAIN, LEPTON_JOB_WORKER_INDEX, LEPTON_JOB_TOTAL_WORKERS) by the launch
        script, as Lepton's lepton_env_to_pytorch.sh does: worker 0's address, the number of
        workers and this worker's index; NPROC_PER_NODE is set there too."""
        return ExecutorMacros(
            head_node_ip_var="MASTER_ADDR",
            nproc_per_node_var="NPROC_PER_NODE",
            num_nodes_var="WORLD_SIZE",
            node_rank_var="NODE_RANK",
        )

    def package_configs(self, *cfgs: tuple[str, str]) -> list[str]:
        """Write (name, text) configs under `<job_dir>/configs`; the paths the job reads them
        from (`/nemo_run/configs/<name>`, as 0.11.1)."""
        return in_job_paths(self.job_dir, super().package_configs(*cfgs))

    # -- the job, as 0.11.1's executor offers it ------------------------------------------------
    def _client(self) -> LeptonClient:
        workspace_id, token, url = workspace_credentials()
        return LeptonClient(self.timeout, workspace_id=workspace_id, token=token, url=url)

    def status(self, job_id: str) -> Any:
        """The job's `LeptonJobState` (the SDK's enum); `Unknown` when the workspace does not
        know the job."""
        state = job_state_enum()
        job = self._client().get_job(job_id)
        return state(job.state) if job is not None else state.Unknown

    def stop_job(self, job_id: str) -> None:
        """Stop the job (it stays in the workspace); BackendError when Lepton refused."""
        self._client().stop_job(job_id)

    def cancel(self, job_id: str) -> None:
        """Delete the job, as 0.11.1's cancel does; BackendError when Lepton refused."""
        self._client().delete_job(job_id)

    # -- 0.11.1's log call by app id: a thin call into the client ---------------------------------
    @classmethod
    def logs(cls, app_id: str, fallback_path: str | None) -> None:
        """Print the log of the job's first replica as Lepton serves it now (what 0.11.1's
        `nemo experiment logs` shows for Lepton). `app_id` is a job's app id here (the job
        store knows its Lepton job), 0.11.1's `<session>___<role>___<job id>`, or a Lepton job
        id; `fallback_path` is accepted and, as in 0.11.1, unused."""
        job_id = lepton_job_id(app_id)
        workspace_id, token, url = workspace_credentials()
        client = LeptonClient(workspace_id=workspace_id, token=token, url=url)
        replicas = client.replica_ids(job_id) if client.get_job(job_id) is not None else []
        if not replicas:
            print(f"nemo_run: Lepton has no replica of job {job_id} (yet); no logs", flush=True)
            return
        first = next((r for r in replicas if r.startswith(f"{job_id}-0-")), replicas[0])
        print(client.log(job_id, first), end="", flush=True)


def _count(value: Any) -> int:
    """An int field's value for arithmetic, 0 when it is not an int (validate() says why)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


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


def lepton_job_id(app_id: str) -> str:
    """The Lepton job behind an app id: the job store's record of it, else 0.11.1's app id form
    (its job id follows the second `___`), else the id itself."""
    record = get_store().get(STORE_BACKEND, app_id)
    if record is not None and record.data.get(REMOTE_ID):
        return str(record.data[REMOTE_ID])
    parts = app_id.split("___", 2)
    if len(parts) == 3 and parts[2]:
        return parts[2]
    if record is not None:
        raise UnknownJobError(
            f"Lepton job {app_id} has not been created yet (its launch has not finished); "
            "try again once it runs"
        )
    return app_id
