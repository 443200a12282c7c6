"""DGX Cloud backend: each job is one Run:ai workload (a training, or a distributed workload
for several nodes) in one project.

The app id is the workload's unique name (a DNS label); the handle is
`dgx_cloud://<session>/<name>`. The job store record keeps the workload id, its kind, the API
base URL, project, client id (never the secret) and the executor's timeout, so any later
process can describe, list and cancel it with credentials from the environment or a 0600
profile. What answers, silences and 404s mean is decided in `remote.py`, shared with Lepton.

Logs are read from the PVC where it is mounted here (`launched_from_cluster`); elsewhere, with
`kube_apiserver_url` set, from the pods through the cluster's Kubernetes API
(`/api/v1/namespaces/{namespace}/pods/{pod}/log`, the workload's pods listed by Run:ai).
"""

from __future__ import annotations

import logging
import os
import shlex
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from torchx.schedulers.api import AppDryRunInfo, Scheduler
from torchx.specs import AppState

from nemo_run.config import get_nemorun_home as get_nemorun_home
from nemo_run.core.clients import runai_datamover
from nemo_run.core.clients.http import fingerprint
from nemo_run.core.clients.runai import RunAIClient, phase_of
from nemo_run.core.credentials import recall, remember, resolve
from nemo_run.core.execution.base import Executor as Executor
from nemo_run.core.execution.dgxcloud import (
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    PROFILE,
    DGXCloudState,
    api_root,
    credentials_or_error,
)
from nemo_run.core.execution.dgxcloud import DGXCloudExecutor as DGXCloudExecutor
from nemo_run.core.execution.launcher import FaultTolerance
from nemo_run.core.packaging.base import code_archive
from nemo_run.core.store import JobRecord, store_path
from nemo_run.core.store.records import REMOTE_ID
from nemo_run.exceptions import BackendError, ConfigError
from nemo_run.run.torchx_backend.schedulers.api import SchedulerMixin as SchedulerMixin
from nemo_run.run.torchx_backend.schedulers.api import map_state, unique_name
from nemo_run.run.torchx_backend.schedulers.logs import follow_text
from nemo_run.run.torchx_backend.schedulers.mounted import (
    MountedJobRequest,
    MountedJobSchedulerMixin,
)
from nemo_run.run.torchx_backend.schedulers.remote import TIMEOUT

log = logging.getLogger(__name__)

BACKEND = "dgx_cloud"
KUBE_APISERVER_URL = "kube_apiserver_url"  # record key: where pod logs are read from
NAME_LIMIT = 40  # Run:ai derives pod and service names from it; keep room for their suffixes
DEFAULT_TIMEOUT = 30.0  # seconds per HTTP attempt, for records written before the timeout was kept

# Run:ai phases -> torchx states. `Unknown` reads PENDING, as in 0.11.1, so a phase Run:ai
# cannot tell for a moment never counts as an outcome; the others are ours on purpose
# (docs/compatibility.md): a degraded workload still runs, a stopping one is not over yet.
DGX_STATES: dict[DGXCloudState, AppState] = {
    DGXCloudState.CREATING: AppState.SUBMITTED,
    DGXCloudState.INITIALIZING: AppState.PENDING,
    DGXCloudState.RESUMING: AppState.PENDING,
    DGXCloudState.PENDING: AppState.PENDING,
    DGXCloudState.DELETING: AppState.CANCELLED,
    DGXCloudState.RUNNING: AppState.RUNNING,
    DGXCloudState.UPDATING: AppState.RUNNING,
    DGXCloudState.STOPPED: AppState.CANCELLED,
    DGXCloudState.STOPPING: AppState.RUNNING,  # still going down; Stopped follows
    DGXCloudState.DEGRADED: AppState.RUNNING,  # some pods unhealthy, the workload goes on
    DGXCloudState.FAILED: AppState.FAILED,
    DGXCloudState.COMPLETED: AppState.SUCCEEDED,
    DGXCloudState.TERMINATING: AppState.RUNNING,
    DGXCloudState.UNKNOWN: AppState.PENDING,
}
_STATES_BY_PHASE: dict[str, AppState] = {state.value: app for state, app in DGX_STATES.items()}


def __getattr__(name: str) -> Any:
    if name == "DGX_JOB_DIRS":  # the store file in use now, resolved on every access
        return store_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The names `__getattr__` serves too, so `dir()` and API tools see them."""
    return sorted([*globals(), "DGX_JOB_DIRS"])


def workload_name(app_name: str) -> str:
    """A valid, unique Run:ai workload name: a DNS label starting with a letter, <= 40 chars."""
    return unique_name(app_name, NAME_LIMIT)


def state_of_phase(phase: str | None) -> AppState:
    return map_state(_STATES_BY_PHASE, phase or "", "DGX Cloud")


@dataclass
class DGXRequest(MountedJobRequest):
    """One workload to create; `str()` is the dry-run text (body and launch script)."""

    rank_var: ClassVar[str] = "rank"
    job_dir_field: ClassVar[str] = "pvc_job_dir"

    @property
    def mount_dir(self) -> str:
        return self.executor.pvc_nemo_run_dir

    @property
    def kind(self) -> str:
        return "distributed" if self.executor.nodes > 1 else "trainings"

    def prelude(self) -> list[str]:
        """The pod's rank for its log, and defaults for the variables a PyTorch distributed
        workload's pods get from Run:ai (a single-pod training gets none): shell variables
        only, so the task's environment is what Run:ai gave it."""
        nproc = self.executor.nproc_per_node()
        return [
            'rank="${NODE_RANK:-${RANK:-0}}"',
            ': "${MASTER_ADDR:=localhost}" "${MASTER_PORT:=29500}" "${WORLD_SIZE:=1}" "${RANK:=0}"',
            f': "${{NPROC_PER_NODE:={nproc}}}"',
        ]

    def setup_commands(self) -> list[str]:
        """With `launcher="ft"`: where ft_launcher finds its config and writes its flags
        (FAULT_TOL_CFG_PATH, FAULT_TOL_FINISHED_FLAG_FILE, as 0.11.1 exports them), and a
        workload restarted after training finished exits 0 at once instead of training again."""
        launcher = self.executor.get_launcher()
        if not isinstance(launcher, FaultTolerance):
            return []
        base = f"{self.job_dir}/{self.name}"
        launcher.cfg_path = launcher.cfg_path or f"{base}_ft_cfg.yml"
        launcher.finished_flag_file = launcher.finished_flag_file or f"{base}_finished_flag"
        launcher.job_results_file = launcher.job_results_file or f"{base}_job_results"
        return [
            f"export FAULT_TOL_CFG_PATH={shlex.quote(launcher.cfg_path)}",
            f"export FAULT_TOL_FINISHED_FLAG_FILE={shlex.quote(launcher.finished_flag_file)}",
            f"JOB_RESULTS_FILE={shlex.quote(launcher.job_results_file)}",
            'if test -f "$(dirname "$JOB_RESULTS_FILE")/$(basename "$FAULT_TOL_FINISHED_FLAG_FILE")"; then',
            f'  echo "Training is finished" | tee -a "{self.job_dir}/logs/rank${{{self.rank_var}}}.log"',
            "  exit 0",
            "fi",
            'rm -f "$FAULT_TOL_FINISHED_FLAG_FILE" "$JOB_RESULTS_FILE"',
        ]

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
        # a large /dev/shm, as 0.11.1 asks (NCCL and data loader workers need more than 64 MiB)
        spec["compute"] = {"largeShmRequest": True}
        if ex.gpus_per_node:
            spec["compute"]["gpuDevicesRequest"] = ex.gpus_per_node
        body: dict[str, Any] = {"name": self.name, "projectId": project_id, "clusterId": cluster_id}
        if self.kind == "distributed":
            spec["distributedFramework"] = ex.distributed_framework
            spec["numWorkers"] = ex.nodes
            if ex.distributed_framework == "PyTorch":
                # a PyTorch workload is a master pod plus numWorkers workers: nodes pods in all
                spec["numWorkers"] = ex.nodes - 1
                body["masterSpecSameAsWorker"] = True
        spec.update(ex.custom_spec)
        return {**body, "spec": spec}

    def __str__(self) -> str:
        base_url = (
            api_root(self.executor.base_url) if self.executor.base_url else "$DGX_CLOUD_BASE_URL"
        )
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
        limit = request.executor.MAX_ARGS_CHARS
        if len(args) > limit:
            raise ConfigError(
                f"the workload command is {len(args)} characters; DGXCloudExecutor."
                f"MAX_ARGS_CHARS={limit} (Run:ai accepts about 10,000): use a shorter "
                "pvc_nemo_run_dir"
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
            KUBE_APISERVER_URL: ex.kube_apiserver_url.rstrip("/") or None,
            TIMEOUT: ex.timeout,
        }

        def ship(leftovers: list[dict[str, Any]], beat: Callable[[], None]) -> dict[str, Any]:
            with tempfile.TemporaryDirectory(prefix="nemo_run_dgx_") as scratch:
                archive = code_archive(ex.packager, os.getcwd(), scratch)
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

    # -- logs where the PVC is not mounted -------------------------------------------------------
    def _remote_lines(
        self, record: JobRecord, k: int, should_tail: bool, path: str
    ) -> Iterator[str]:
        """Pod k's log through the cluster's Kubernetes API server (`kube_apiserver_url`),
        re-read until the workload ends; without that URL, where the log file is."""
        kube = record.data.get(KUBE_APISERVER_URL)
        workload_id = record.data.get(REMOTE_ID)
        if not kube or not workload_id:
            yield from super()._remote_lines(record, k, should_tail, path)
            return
        client = self._client_for(record)
        namespace, errors = "", list[BackendError]()

        def read() -> str | None:
            nonlocal namespace
            try:
                namespace = namespace or str((client.workload(workload_id) or {}).get("namespace"))
                pods = client.pods(workload_id)
                return client.pod_log(kube, namespace, pods[k]["name"]) if k < len(pods) else ""
            except BackendError as e:  # not answering now: read again, or say where it is
                errors[:] = [e]
                return None

        def gone() -> str:
            return (
                f"nemo_run: the Kubernetes API at {kube} did not give the log of "
                f"{record.app_id} ({errors[0] if errors else 'no answer'}); it is on the PVC "
                f"at {path}\n"
            )

        yield from follow_text(read, lambda: self._finished(record.app_id), gone, should_tail)


def create_scheduler(session_name: str, **kwargs: Any) -> DGXCloudScheduler:
    """Entry point for the `dgx_cloud` torchx scheduler."""
    return DGXCloudScheduler(session_name)
