"""DGX Cloud backend: each job is one Run:ai workload (a training, or a distributed workload
for several nodes) in one project.

The app id is the workload's unique name (a DNS label); the handle is
`dgx_cloud://<session>/<name>`. The job store record keeps the workload id, its kind, the API
base URL, project, client id (never the secret) and the executor's timeout, so any later
process can describe, list and cancel it with credentials from the environment or a 0600
profile. What answers, silences and 404s mean is decided in `remote.py`, shared with Lepton.
"""

from __future__ import annotations

import logging
import os
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from torchx.schedulers.api import AppDryRunInfo, Scheduler
from torchx.specs import AppState

from nemo_run.core.clients import runai_datamover
from nemo_run.core.clients.http import fingerprint
from nemo_run.core.clients.runai import RunAIClient, phase_of
from nemo_run.core.credentials import recall, remember, resolve
from nemo_run.core.execution.dgxcloud import (
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    PROFILE,
    credentials_or_error,
)
from nemo_run.core.store import JobRecord, store_path
from nemo_run.core.store.records import REMOTE_ID
from nemo_run.exceptions import ConfigError
from nemo_run.run.torchx_backend.schedulers.api import map_state, unique_name
from nemo_run.run.torchx_backend.schedulers.mounted import (
    MountedJobRequest,
    MountedJobSchedulerMixin,
)
from nemo_run.run.torchx_backend.schedulers.remote import TIMEOUT

log = logging.getLogger(__name__)

BACKEND = "dgx_cloud"
NAME_LIMIT = 40  # Run:ai derives pod and service names from it; keep room for their suffixes
DEFAULT_TIMEOUT = 30.0  # seconds per HTTP attempt, for records written before the timeout was kept

DGX_STATES: dict[str, AppState] = {
    "Creating": AppState.SUBMITTED,
    "Initializing": AppState.PENDING,
    "Resuming": AppState.PENDING,
    "Pending": AppState.PENDING,
    "Deleting": AppState.CANCELLED,
    "Running": AppState.RUNNING,
    "Updating": AppState.RUNNING,
    "Stopped": AppState.CANCELLED,
    "Stopping": AppState.RUNNING,  # still going down; Stopped follows
    "Degraded": AppState.RUNNING,
    "Failed": AppState.FAILED,
    "Completed": AppState.SUCCEEDED,
    "Terminating": AppState.RUNNING,
    "Unknown": AppState.UNKNOWN,
}


def __getattr__(name: str) -> Any:
    if name == "DGX_JOB_DIRS":  # the store file in use now, resolved on every access
        return store_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def workload_name(app_name: str) -> str:
    """A valid, unique Run:ai workload name: a DNS label starting with a letter, <= 40 chars."""
    return unique_name(app_name, NAME_LIMIT)


def state_of_phase(phase: str | None) -> AppState:
    return map_state(DGX_STATES, phase or "", "DGX Cloud")


@dataclass
class DGXRequest(MountedJobRequest):
    """One workload to create; `str()` is the dry-run text (body and launch script)."""

    rank_var: ClassVar[str] = "rank"

    @property
    def mount_dir(self) -> str:
        return self.executor.pvc_nemo_run_dir

    @property
    def kind(self) -> str:
        return "distributed" if self.executor.nodes > 1 else "trainings"

    def prelude(self) -> list[str]:
        return ['rank="${NODE_RANK:-${RANK:-0}}"']

    def body(self, project_id: str, cluster_id: str) -> dict[str, Any]:
        ex = self.executor
        spec: dict[str, Any] = {
            "command": "bash",
            "args": shlex.quote(f"{self.job_dir}/launch.sh"),
            "image": ex.container_image,
            "environmentVariables": [
                {"name": k, "value": v} for k, v in sorted(self.env().items())
            ],
            "storage": {"pvc": [dict(p) for p in ex.pvcs]},
        }
        if ex.gpus_per_node:
            spec["compute"] = {"gpuDevicesRequest": ex.gpus_per_node}
        if self.kind == "distributed":
            spec.update(
                distributedFramework=ex.distributed_framework,
                numWorkers=ex.nodes,
                minReplicas=ex.nodes,
                maxReplicas=ex.nodes,
            )
        spec.update(ex.custom_spec)
        return {"name": self.name, "projectId": project_id, "clusterId": cluster_id, "spec": spec}

    def __str__(self) -> str:
        base_url = self.executor.base_url or "$DGX_CLOUD_BASE_URL"
        return self.dryrun_text(
            f"POST {base_url}/workloads/{self.kind}", self.body("<project id>", "<cluster id>")
        )


class DGXCloudScheduler(MountedJobSchedulerMixin, Scheduler[dict[str, str]]):
    """Run:ai workloads as torchx apps, durable through the job store."""

    label = "DGX Cloud"
    deleted_msg = "the workload was deleted on the server before it finished"
    request_class, name_limit = DGXRequest, NAME_LIMIT
    storage = "PVC"

    def __init__(self, session_name: str) -> None:
        super().__init__(BACKEND, session_name)
        self._clients: dict[tuple[str, str, str, float], RunAIClient] = {}

    # -- clients ----------------------------------------------------------------------------
    def _client(
        self, base_url: str, client_id: str, secret: str | None, timeout: float = DEFAULT_TIMEOUT
    ) -> RunAIClient:
        """One client per API, client id, secret (by its sha256, in memory only) and timeout:
        a changed secret never reuses a client (or a token) the old one got."""
        base_url, client_id, secret = credentials_or_error(base_url, client_id, secret)
        remember((base_url, client_id), secret)  # memory only: later describes in this process
        key = (base_url, client_id, fingerprint(secret), float(timeout))
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = RunAIClient(base_url, client_id, secret, timeout=timeout)
        return client

    def _client_for(self, record: JobRecord) -> RunAIClient:
        """A client for a recorded job, with the credentials in force now (read on every call)."""
        data = record.data
        client_id = data.get("client_id") or resolve("client_id", None, ENV_CLIENT_ID, PROFILE)
        secret = resolve("client_secret", None, ENV_CLIENT_SECRET, PROFILE) or recall(
            (data["base_url"], client_id or "")
        )
        return self._client(
            data["base_url"], client_id or "", secret, data.get(TIMEOUT) or DEFAULT_TIMEOUT
        )

    # -- dry run ----------------------------------------------------------------------------
    def _check_request(self, request: MountedJobRequest) -> None:
        if not isinstance(request, DGXRequest):  # `request_class` makes every request one
            raise TypeError(f"expected a DGXRequest, got {type(request).__name__}")
        args = request.body("", "")["spec"]["args"]
        if len(args) > 10_000:
            raise ConfigError(
                f"the workload command is {len(args)} characters; Run:ai accepts about 10,000"
            )

    # -- schedule ---------------------------------------------------------------------------
    def schedule(self, dryrun_info: AppDryRunInfo[DGXRequest]) -> str:
        """Read-only lookups first (a bad project fails with nothing recorded), then the
        intent record, the code, and the create (see `RemoteSchedulerMixin._launch_remote`)."""
        request = dryrun_info.request
        ex = request.executor
        base_url, client_id, secret = ex.credentials()
        client = self._client(base_url, client_id, secret, ex.timeout)
        project = client.find_project(ex.project_name)
        project_id, cluster_id = str(project["id"]), str(project["clusterId"])
        data = {
            **self._record_data(request),
            "kind": request.kind,
            "base_url": base_url,
            "client_id": client_id,
            "project_id": project_id,
            "project_name": ex.project_name,
            TIMEOUT: ex.timeout,
        }

        def ship(leftovers: list[dict[str, Any]], beat: Callable[[], None]) -> dict[str, Any]:
            with tempfile.TemporaryDirectory(prefix="nemo_run_dgx_") as scratch:
                archive = ex.packager.package(os.getcwd(), scratch, "code")
                moved = self._ship_code(
                    request,
                    archive,
                    request.launch_script(with_code=archive is not None),
                    helper_ops=lambda: runai_datamover.helper_ops(
                        client,
                        project_id=project_id,
                        cluster_id=cluster_id,
                        image=ex.container_image,
                        pvcs=ex.pvcs,
                    ),
                    helper_name=lambda i: runai_datamover.helper_name(request.name, i),
                    leftovers=leftovers,
                    beat=beat,
                )
            return {"data_mover_workloads": moved}

        def create() -> str:
            created = client.create_workload(request.kind, request.body(project_id, cluster_id))
            return created["workloadId"]

        log_dir = request.job_dir if ex.launched_from_cluster else None
        return self._launch_remote(
            request.name,
            experiment_id=ex.experiment_id,
            log_dir=log_dir,
            data=data,
            ship=ship,
            create=create,
        )

    # -- the hooks of RemoteSchedulerMixin ---------------------------------------------------
    def _get(self, record: JobRecord) -> dict[str, Any] | None:
        return self._client_for(record).get_workload(record.data["kind"], record.data[REMOTE_ID])

    def _lookup(self, record: JobRecord) -> dict[str, Any] | None:
        return self._client_for(record).find_workload(record.app_id, record.data["project_id"])

    def _list_key(self, record: JobRecord) -> tuple[Any, ...]:
        data = record.data
        return (data["base_url"], data.get("client_id"), data["project_id"])

    def _list_live(self, record: JobRecord) -> list[Any]:
        return self._client_for(record).list_workloads([f"projectId=={record.data['project_id']}"])

    def _id_of(self, job: dict[str, Any]) -> str:
        return str(job.get("id") or job.get("workloadId") or "")

    def _name_of(self, job: dict[str, Any]) -> str:
        return str(job.get("name") or "")

    def _observe(self, job: dict[str, Any]) -> tuple[AppState, str, str]:
        phase = phase_of(job) or "Unknown"
        msg = (
            "the workload is being deleted on the server"
            if phase == "Deleting"
            else f"phase {phase}"
        )
        return state_of_phase(phase), phase, msg

    def _stop_remote(self, record: JobRecord) -> bool:
        return self._client_for(record).suspend(record.data["kind"], record.data[REMOTE_ID])

    def _delete_helper(self, record: JobRecord, entry: dict[str, Any]) -> None:
        client = self._client_for(record)
        if not entry.get("id"):
            found = client.find_workload(entry["name"], record.data["project_id"])
            if found is None:
                return
            entry = {**entry, "id": found["id"]}
        runai_datamover.delete_helper(client, entry)

    def _ui_url(self, record: JobRecord) -> str | None:
        return record.data.get("base_url", "").removesuffix("/api/v1") or None


def create_scheduler(session_name: str, **kwargs: Any) -> DGXCloudScheduler:
    """Entry point for the `dgx_cloud` torchx scheduler."""
    return DGXCloudScheduler(session_name)
