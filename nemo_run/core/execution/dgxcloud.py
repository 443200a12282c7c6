"""`DGXCloudExecutor`: train on NVIDIA DGX Cloud through the Run:ai API.

The fields, their order and defaults are nemo-run 0.11.1's; the credentials may also be left
empty and come from the environment (`DGX_CLOUD_BASE_URL`, `DGX_CLOUD_CLIENT_ID`,
`DGX_CLOUD_CLIENT_SECRET`) or the 0600 profile `$NEMORUN_HOME/profiles/dgxcloud.json`, read
when a call is made. `client_secret` is `repr=False` and never reaches a job record.

Fields may be set after construction (as 0.11.1 allows): `validate()` checks completeness and
consistency at dry run, before anything starts; construction checks only the types given.
"""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from nemo_run.config import get_nemorun_home as get_nemorun_home
from nemo_run.core.clients.runai import RunAIClient, phase_of
from nemo_run.core.credentials import profile_path, resolve
from nemo_run.core.execution.base import RUNDIR_NAME as RUNDIR_NAME
from nemo_run.core.execution.base import Executor, ExecutorMacros
from nemo_run.core.execution.fields import (
    check_at_least,
    check_choice,
    check_field_types,
    check_positive_seconds,
    check_required,
    check_url,
    in_job_paths,
)
from nemo_run.core.execution.launcher import FaultTolerance as FaultTolerance
from nemo_run.core.execution.launcher import Launcher as Launcher
from nemo_run.core.execution.launcher import Torchrun as Torchrun
from nemo_run.core.packaging.base import Packager as Packager
from nemo_run.core.packaging.git import GitArchivePackager as GitArchivePackager
from nemo_run.exceptions import BackendError, ConfigError

logger = logging.getLogger(__name__)

PROFILE = "dgxcloud"
ENV_BASE_URL = ("DGX_CLOUD_BASE_URL",)
ENV_CLIENT_ID = ("DGX_CLOUD_CLIENT_ID", "DGX_CLOUD_APP_ID")
ENV_CLIENT_SECRET = ("DGX_CLOUD_CLIENT_SECRET", "DGX_CLOUD_APP_SECRET")
FRAMEWORKS = ("PyTorch", "MPI", "TF", "XGBoost", "JAX")
API_ROOT = "/api/v1"
_URL = re.compile(r"^https?://[^/\s?#]+(/\S*)?$")


class DGXCloudState(str, Enum):
    """A Run:ai workload's phase (`actualPhase`), as nemo-run 0.11.1 names them. A `str`
    enum: `DGXCloudState.RUNNING == "Running"`, so tables keyed by it also answer the API's
    own strings."""

    CREATING = "Creating"
    INITIALIZING = "Initializing"
    RESUMING = "Resuming"
    PENDING = "Pending"
    DELETING = "Deleting"
    RUNNING = "Running"
    UPDATING = "Updating"
    STOPPED = "Stopped"
    STOPPING = "Stopping"
    DEGRADED = "Degraded"
    FAILED = "Failed"
    COMPLETED = "Completed"
    TERMINATING = "Terminating"
    UNKNOWN = "Unknown"

    __str__ = str.__str__  # "Running", as the API writes it


def api_root(url: str, name: str = "base_url") -> str:
    """The Run:ai API root for `url`, given as the host root (`https://org.run.ai`) or as the
    API root itself (`https://org.run.ai/api/v1`); ConfigError for anything else."""
    text = url.strip().rstrip("/") if isinstance(url, str) else ""
    if not _URL.match(text):
        raise ConfigError(
            f"DGXCloudExecutor.{name}={url!r} is not an http(s) URL; write the Run:ai address, "
            "e.g. https://my-org.run.ai (or its API root https://my-org.run.ai/api/v1)"
        )
    if text.endswith(API_ROOT):
        return text
    return text + ("/v1" if text.endswith("/api") else API_ROOT)


check_base_url = api_root  # the name `nemorun login dgxcloud` uses


@dataclass(kw_only=True)
class DGXCloudExecutor(Executor):
    """A Run:ai training (1 node) or distributed workload (several nodes) in one project."""

    # torchrun's nodes meet at the master pod (MASTER_ADDR) through a c10d store
    torchrun_rendezvous: ClassVar[str] = "c10d"

    base_url: str = field(
        default="",
        metadata={
            "help": "Run:ai address, https://host or https://host/api/v1 (else "
            "DGX_CLOUD_BASE_URL or the profile)"
        },
    )
    kube_apiserver_url: str = field(
        default="",
        metadata={
            "help": "Kubernetes API server of the cluster: logs are read from it when the PVC "
            "is not mounted here"
        },
    )
    client_id: str = field(
        default="",
        metadata={"help": "Run:ai application id (else DGX_CLOUD_CLIENT_ID or the profile)"},
    )
    client_secret: str = field(
        default="",
        repr=False,
        metadata={
            "help": "Run:ai application secret (else DGX_CLOUD_CLIENT_SECRET or the profile)"
        },
    )
    project_name: str = field(metadata={"help": "Run:ai project the workload runs in"})
    container_image: str = field(metadata={"help": "image the workload runs"})
    pvc_nemo_run_dir: str = field(
        metadata={"help": "folder on a PVC for the job's code, launch script and logs"},
    )
    launched_from_cluster: bool = field(
        default=False,
        metadata={"help": "the PVC is mounted where this runs: code and logs are copied directly"},
    )
    nodes: int = field(
        default=1, metadata={"help": "nodes (pods); more than one makes a distributed workload"}
    )
    gpus_per_node: int = field(default=0, metadata={"help": "GPUs requested per node"})
    nprocs_per_node: int = field(
        default=1,
        metadata={"help": "processes per node (default: one per GPU when gpus_per_node is set)"},
    )
    pvc_job_dir: str = field(
        init=False, default="", metadata={"help": "the job's folder on the PVC (set at dry run)"}
    )
    pvcs: list[dict[str, Any]] = field(
        default_factory=list,
        metadata={
            "help": 'PVCs to mount, at least one: [{"claimName": "nemo-pvc", "path": "/nemo_run"}]'
        },
    )
    distributed_framework: str = field(
        default="PyTorch",
        metadata={"help": "framework of a distributed workload: PyTorch, MPI, TF, XGBoost or JAX"},
    )
    custom_spec: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "fields merged as given into the workload spec"}
    )
    MAX_ARGS_CHARS: int = field(
        default=9500, metadata={"help": "longest workload command Run:ai is sent"}
    )
    # -- ours, beyond 0.11.1 -----------------------------------------------------------------
    app_id: str = field(default="", metadata={"help": "older name of client_id"})
    app_secret: str = field(
        default="", repr=False, metadata={"help": "older name of client_secret"}
    )
    timeout: float = field(
        default=30.0, metadata={"help": "seconds per HTTP request to the Run:ai API"}
    )

    # -- checks at dry run -------------------------------------------------------------------
    def validate_task(self, task: Any) -> None:
        """Before a task is packaged (at dry run): the executor's own settings first."""
        self.validate()
        super().validate_task(task)

    def validate(self) -> None:
        """Everything a launch needs, before anything starts: fields may have been set after
        construction, so the types are checked again too."""
        check_field_types(self)
        check_required(self, "project_name", "container_image", "pvc_nemo_run_dir")
        for name in ("nodes", "nprocs_per_node", "MAX_ARGS_CHARS"):
            check_at_least(self, name, 1)
        check_at_least(self, "gpus_per_node", 0)
        check_positive_seconds(self, "timeout")
        if self.base_url:
            api_root(self.base_url)
        if self.kube_apiserver_url:
            check_url(self, "kube_apiserver_url", "https://my-cluster.example.com:6443")
        check_choice(self, "distributed_framework", FRAMEWORKS)
        self._check_pvcs()

    def _check_pvcs(self) -> None:
        if not self.pvcs:
            raise ConfigError(
                "DGXCloudExecutor.pvcs needs at least one Run:ai PVC item, e.g. "
                "[{'claimName': 'nemo-pvc', 'path': '/nemo_run'}], holding pvc_nemo_run_dir"
            )
        for i, pvc in enumerate(self.pvcs):
            if not pvc.get("claimName") or not str(pvc.get("path", "")).startswith("/"):
                raise ConfigError(
                    f"DGXCloudExecutor.pvcs[{i}] needs 'claimName' and an absolute 'path', got {pvc!r}"
                )
        target = posixpath.normpath(self.pvc_nemo_run_dir)
        if not target.startswith("/"):
            raise ConfigError(
                f"DGXCloudExecutor.pvc_nemo_run_dir={self.pvc_nemo_run_dir!r} must be absolute"
            )
        mounts = [posixpath.normpath(p["path"]) for p in self.pvcs]
        if not any(target == m or target.startswith(m.rstrip("/") + "/") for m in mounts):
            raise ConfigError(
                f"DGXCloudExecutor.pvc_nemo_run_dir={self.pvc_nemo_run_dir!r} is not under any "
                f"PVC path ({', '.join(mounts)}); put it inside one of them"
            )

    # -- credentials (resolved on every call, never stored) ------------------------------------
    def credentials(self) -> tuple[str, str, str]:
        """(API root, client_id, client_secret); ConfigError naming where to set them."""
        base_url = resolve("base_url", self.base_url, ENV_BASE_URL, PROFILE)
        client_id = resolve("client_id", self.client_id or self.app_id, ENV_CLIENT_ID, PROFILE)
        secret = resolve(
            "client_secret", self.client_secret or self.app_secret, ENV_CLIENT_SECRET, PROFILE
        )
        return credentials_or_error(base_url, client_id, secret)

    def _client(self) -> RunAIClient:
        base_url, client_id, secret = self.credentials()
        return RunAIClient(base_url, client_id, secret, timeout=self.timeout)

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
        """Set in every pod of a PyTorch distributed workload by Run:ai's operator (the launch
        script defaults them for a single-pod training): the master pod's address, the number
        of pods and this pod's rank; NPROC_PER_NODE is set by the launch script."""
        return ExecutorMacros(
            head_node_ip_var="MASTER_ADDR",
            nproc_per_node_var="NPROC_PER_NODE",
            num_nodes_var="WORLD_SIZE",
            node_rank_var="RANK",
        )

    def package_configs(self, *cfgs: tuple[str, str]) -> list[str]:
        """Write (name, text) configs under `<job_dir>/configs`; the paths the job reads them
        from (`/nemo_run/configs/<name>`, as 0.11.1)."""
        return in_job_paths(self.job_dir, super().package_configs(*cfgs))

    # -- the workload, as 0.11.1's executor offers it ------------------------------------------
    def get_auth_token(self) -> str | None:
        """A bearer token for the Run:ai API (cached in memory until shortly before expiry)."""
        return self._client().token()

    def get_project_and_cluster_id(self, token: str) -> tuple[str | None, str | None]:
        """(project id, cluster id) of `project_name`; ConfigError listing the projects when
        it does not exist."""
        project = self._client().find_project(self.project_name)
        return str(project["id"]), str(project["clusterId"])

    def status(self, job_id: str) -> DGXCloudState | None:
        """The workload's phase, or None when the API did not say (an error or a 404: as in
        0.11.1, that reads as transient, never as an outcome)."""
        try:
            workload = self._client().get_workload(self._kind(), job_id)
        except BackendError:
            return None
        phase = phase_of(workload) if workload else None
        if not phase:
            return None
        try:
            return DGXCloudState(phase)
        except ValueError:
            return DGXCloudState.UNKNOWN

    def cancel(self, job_id: str) -> None:
        """Suspend the workload (Run:ai's stop); BackendError when Run:ai refused."""
        self._client().suspend(self._kind(), job_id)

    def _kind(self) -> str:
        return "distributed" if self.nodes > 1 else "trainings"


def _count(value: Any) -> int:
    """An int field's value for arithmetic, 0 when it is not an int (validate() says why)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def credentials_or_error(
    base_url: str | None, client_id: str | None, secret: str | None
) -> tuple[str, str, str]:
    missing = [
        name
        for name, value in (
            ("base_url", base_url),
            ("client_id", client_id),
            ("client_secret", secret),
        )
        if not value
    ]
    if missing:
        raise ConfigError(
            f"DGX Cloud credentials missing: {', '.join(missing)}; set DGX_CLOUD_BASE_URL, "
            f"DGX_CLOUD_CLIENT_ID and DGX_CLOUD_CLIENT_SECRET, or write them to {profile_path(PROFILE)} "
            "(mode 0600) as base_url, client_id, client_secret"
        )
    return api_root(base_url or ""), client_id or "", secret or ""
