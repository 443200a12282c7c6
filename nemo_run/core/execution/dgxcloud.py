"""`DGXCloudExecutor`: train on NVIDIA DGX Cloud through the Run:ai API.

Credentials never live in job records: `client_secret` is `repr=False`, and a later process
reads it from `DGX_CLOUD_CLIENT_SECRET` or the 0600 profile `$NEMORUN_HOME/profiles/dgxcloud.json`.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from nemo_run.core.credentials import profile_path, resolve
from nemo_run.core.execution.base import Executor, ExecutorMacros
from nemo_run.core.execution.fields import check_at_least, check_positive_seconds
from nemo_run.exceptions import ConfigError

PROFILE = "dgxcloud"
ENV_BASE_URL = ("DGX_CLOUD_BASE_URL",)
ENV_CLIENT_ID = ("DGX_CLOUD_CLIENT_ID", "DGX_CLOUD_APP_ID")
ENV_CLIENT_SECRET = ("DGX_CLOUD_CLIENT_SECRET", "DGX_CLOUD_APP_SECRET")
FRAMEWORKS = ("PyTorch", "MPI", "TF", "XGBoost", "JAX")


def check_base_url(url: str) -> str:
    if not re.match(r"^https?://[^/]+(/.*)?/api/v1/?$", url or ""):
        raise ConfigError(
            f"DGXCloudExecutor.base_url={url!r} must be the API root ending in /api/v1, "
            "e.g. https://my-org.run.ai/api/v1"
        )
    return url.rstrip("/")


@dataclass(kw_only=True)
class DGXCloudExecutor(Executor):
    """A Run:ai training (1 node) or distributed workload (several nodes) in one project."""

    base_url: str = field(
        default="",
        metadata={
            "help": "Run:ai API root ending in /api/v1 (else DGX_CLOUD_BASE_URL or the profile)"
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
    app_id: str = field(default="", metadata={"help": "older name of client_id"})
    app_secret: str = field(
        default="", repr=False, metadata={"help": "older name of client_secret"}
    )
    project_name: str = field(
        default="", metadata={"help": "Run:ai project the workload runs in (required)"}
    )
    container_image: str = field(
        default="", metadata={"help": "image the workload runs (required)"}
    )
    pvc_nemo_run_dir: str = field(
        default="",
        metadata={"help": "folder on a PVC for the job's code, launch script and logs (required)"},
    )
    nodes: int = field(
        default=1, metadata={"help": "nodes; more than one makes a distributed workload"}
    )
    gpus_per_node: int = field(default=0, metadata={"help": "GPUs requested per node"})
    nprocs_per_node: int = field(default=1, metadata={"help": "processes per node"})
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
    launched_from_cluster: bool = field(
        default=False,
        metadata={"help": "the PVC is mounted where this runs: code and logs are copied directly"},
    )
    timeout: float = field(
        default=30.0, metadata={"help": "seconds per HTTP request to the Run:ai API"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.client_id = self.client_id or self.app_id
        self.client_secret = self.client_secret or self.app_secret
        if self.base_url:
            self.base_url = check_base_url(self.base_url)
        for name in ("nodes", "nprocs_per_node"):
            check_at_least(self, name, 1)
        check_at_least(self, "gpus_per_node", 0)
        check_positive_seconds(self, "timeout")
        for name in ("project_name", "container_image", "pvc_nemo_run_dir"):
            if not getattr(self, name):
                raise ConfigError(f"DGXCloudExecutor.{name} is required")
        if self.distributed_framework not in FRAMEWORKS:
            raise ConfigError(
                f"DGXCloudExecutor.distributed_framework={self.distributed_framework!r}; "
                f"use one of {', '.join(FRAMEWORKS)}"
            )
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
        """(base_url, client_id, client_secret); ConfigError naming where to set them."""
        base_url = resolve("base_url", self.base_url, ENV_BASE_URL, PROFILE)
        client_id = resolve("client_id", self.client_id, ENV_CLIENT_ID, PROFILE)
        secret = resolve("client_secret", self.client_secret, ENV_CLIENT_SECRET, PROFILE)
        return credentials_or_error(base_url, client_id, secret)

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
            node_rank_var="RANK",
        )


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
    return check_base_url(base_url or ""), client_id or "", secret or ""
