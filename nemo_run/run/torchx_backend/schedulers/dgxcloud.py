"""DGX Cloud backend: each job is one Run:ai workload (a training, or a distributed workload
for several nodes) in one project.

The app id is the workload's unique name (a DNS label); the handle is
`dgx_cloud://<session>/<name>`. The job store record keeps the workload id, its kind, the API
base URL, project and client id (never the secret), so any later process can describe,
list and cancel it with credentials from the environment or a 0600 profile.
"""

from __future__ import annotations

import logging
import os
import shlex
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from torchx.schedulers.api import (
    AppDryRunInfo,
    DescribeAppResponse,
    ListAppResponse,
    Scheduler,
    Stream,
)
from torchx.specs import AppDef, AppState, is_terminal, macros

from nemo_run.core.clients.http import TransportError
from nemo_run.core.clients.runai import RunAIClient, phase_of
from nemo_run.core.credentials import resolve
from nemo_run.core.execution.dgxcloud import (
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    PROFILE,
    DGXCloudExecutor,
    credentials_or_error,
)
from nemo_run.core.packaging.base import extract
from nemo_run.core.redact import redact_env
from nemo_run.core.store import JobRecord, store_path
from nemo_run.exceptions import BackendError, ConfigError
from nemo_run.run.torchx_backend.schedulers.api import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    SchedulerMixin,
    map_state,
    single_role_response,
    unique_name,
)
from nemo_run.run.torchx_backend.schedulers.logs import follow_file

log = logging.getLogger(__name__)

BACKEND = "dgx_cloud"
NAME_LIMIT = 40  # Run:ai derives pod and service names from it; keep room for their suffixes

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
class DGXRequest:
    """One workload to create; `str()` is the dry-run text (body and launch script)."""

    app: AppDef
    cmd: list[str]
    executor: DGXCloudExecutor
    name: str

    @property
    def kind(self) -> str:
        return "distributed" if self.executor.nodes > 1 else "trainings"

    @property
    def job_dir(self) -> str:
        """The job's folder on the PVC: code, launch script and per-rank logs."""
        return f"{self.executor.pvc_nemo_run_dir.rstrip('/')}/{self.name}"

    def env(self) -> dict[str, str]:
        return dict(self.app.roles[0].env)

    def launch_script(self, with_code: bool) -> str:
        """Runs on every node: per-rank log on the PVC; pipefail keeps the command's exit code."""
        lines = [
            "#!/bin/bash",
            "set -o pipefail",
            f"mkdir -p {shlex.quote(self.job_dir)}/logs",
            'rank="${NODE_RANK:-${RANK:-0}}"',
        ]
        if with_code:
            lines.append(f"cd {shlex.quote(self.job_dir)}/code")
        lines.append(f'{shlex.join(self.cmd)} 2>&1 | tee "{self.job_dir}/logs/rank${{rank}}.log"')
        return "\n".join(lines) + "\n"

    def body(self, project_id: str, cluster_id: str) -> dict[str, Any]:
        ex = self.executor
        spec: dict[str, Any] = {
            "command": "bash",
            "args": shlex.quote(f"{self.job_dir}/launch.sh"),
            "image": ex.container_image,
            "environmentVariables": [{"name": k, "value": v} for k, v in sorted(self.env().items())],
            "storage": {"pvc": [dict(p) for p in ex.pvcs]},
        }
        if ex.gpus_per_node:
            spec["compute"] = {"gpuDevicesRequest": ex.gpus_per_node}
        if self.kind == "distributed":
            spec.update(distributedFramework=ex.distributed_framework, numWorkers=ex.nodes,
                        minReplicas=ex.nodes, maxReplicas=ex.nodes)
        spec.update(ex.custom_spec)
        return {"name": self.name, "projectId": project_id, "clusterId": cluster_id, "spec": spec}

    def __str__(self) -> str:
        shown = self.body("<project id>", "<cluster id>")
        env = redact_env({e["name"]: e["value"] for e in shown["spec"]["environmentVariables"]})
        shown["spec"]["environmentVariables"] = [{"name": k, "value": v} for k, v in env.items()]
        import json

        return (f"POST {self.executor.base_url or '$DGX_CLOUD_BASE_URL'}/workloads/{self.kind}\n"
                f"{json.dumps(shown, indent=2)}\n# {self.job_dir}/launch.sh\n"
                f"{self.launch_script(self.executor.packager.ships_code)}")


class DGXCloudScheduler(SchedulerMixin, Scheduler[dict[str, str]]):  # type: ignore[misc]
    """Run:ai workloads as torchx apps, durable through the job store."""

    def __init__(self, session_name: str) -> None:
        super().__init__(BACKEND, session_name)
        self._clients: dict[tuple[str, str], RunAIClient] = {}

    def _run_opts(self) -> Any:
        from torchx.specs import runopts

        return runopts()

    # -- clients ----------------------------------------------------------------------------
    def _client(self, base_url: str, client_id: str, secret: str | None, timeout: float = 30.0) -> RunAIClient:
        key = (base_url, client_id)
        client = self._clients.get(key)
        if client is None:
            _, _, secret = credentials_or_error(base_url, client_id, secret)
            client = self._clients[key] = RunAIClient(base_url, client_id, secret, timeout=timeout)
        return client

    def _client_for(self, record: JobRecord) -> RunAIClient:
        data = record.data
        key = (data["base_url"], data["client_id"])
        if key in self._clients:
            return self._clients[key]
        client_id = data["client_id"] or resolve("client_id", None, ENV_CLIENT_ID, PROFILE)
        secret = resolve("client_secret", None, ENV_CLIENT_SECRET, PROFILE)
        return self._client(data["base_url"], client_id or "", secret)

    # -- dry run ----------------------------------------------------------------------------
    def _submit_dryrun(self, app: AppDef, cfg: DGXCloudExecutor) -> AppDryRunInfo[DGXRequest]:  # type: ignore[override]
        if len(app.roles) != 1:
            raise ConfigError(f"DGX Cloud runs one role per job; {app.name!r} has {len(app.roles)}")
        name = workload_name(app.name)
        # one spec serves every node: no per-replica values to substitute
        role = macros.Values(img_root="", app_id=name, replica_id="0", rank0_env="MASTER_ADDR").apply(app.roles[0])
        app.roles = [role]
        request = DGXRequest(app=app, cmd=[role.entrypoint, *role.args], executor=cfg, name=name)
        args = request.body("", "")["spec"]["args"]
        if len(args) > 10_000:
            raise ConfigError(f"the workload command is {len(args)} characters; Run:ai accepts about 10,000")
        return AppDryRunInfo(request, str)

    def _app_id_of(self, request: DGXRequest) -> str:
        return request.name

    # -- schedule ---------------------------------------------------------------------------
    def schedule(self, dryrun_info: AppDryRunInfo[DGXRequest]) -> str:  # type: ignore[override]
        request = dryrun_info.request
        ex = request.executor
        base_url, client_id, secret = ex.credentials()
        client = self._client(base_url, client_id, secret, ex.timeout)
        project = client.find_project(ex.project_name)
        project_id, cluster_id = str(project["id"]), str(project["clusterId"])
        with tempfile.TemporaryDirectory(prefix="nemo_run_dgx_") as scratch:
            archive = ex.packager.package(os.getcwd(), scratch, "code")
            script = request.launch_script(with_code=archive is not None)
            moved = self._ship(client, request, project_id, cluster_id, archive, script)
        created = client.create_workload(request.kind, request.body(project_id, cluster_id))
        self._store().put(JobRecord(
            backend=self.backend, app_id=request.name, session=self.session_name,
            state=AppState.SUBMITTED.name, experiment_id=ex.experiment_id,
            log_dir=request.job_dir if ex.launched_from_cluster else None,
            data={"workload_id": created["workloadId"], "kind": request.kind, "base_url": base_url,
                  "client_id": client_id, "project_id": project_id, "project_name": ex.project_name,
                  "pvc_job_dir": request.job_dir, "nodes": ex.nodes, "role": request.app.roles[0].name,
                  "cmd": request.cmd, "launched_from_cluster": ex.launched_from_cluster,
                  "data_mover_workloads": moved},
        ))
        return request.name

    def _ship(self, client: RunAIClient, request: DGXRequest, project_id: str, cluster_id: str,
              archive: str | None, script: str) -> int:
        """Code and launch script onto the PVC: directly when it is mounted here, else by workspaces."""
        ex = request.executor
        if ex.launched_from_cluster:
            os.makedirs(os.path.join(request.job_dir, "logs"), exist_ok=True)
            if archive:
                extract(archive, os.path.join(request.job_dir, "code"))
            path = os.path.join(request.job_dir, "launch.sh")
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(script)
            os.chmod(path, 0o755)
            return 0
        from nemo_run.core.clients import runai_datamover
        from nemo_run.core.clients.datamover import build_payload

        payload = build_payload({"launch.sh": script.encode()}, archive)
        return runai_datamover.upload(client, name=request.name, project_id=project_id, cluster_id=cluster_id,
                                      image=ex.container_image, pvcs=ex.pvcs, dest=request.job_dir,
                                      payload=payload)

    # -- describe ---------------------------------------------------------------------------
    def describe(self, app_id: str) -> DescribeAppResponse | None:
        record = self._store().get(self.backend, app_id)
        if record is None:
            return None
        if record.state in TERMINAL_STATES or "workload_id" not in record.data:
            return self._response(record, AppState[record.state], record.data.get("msg", ""))
        try:
            workload = self._client_for(record).get_workload(record.data["kind"], record.data["workload_id"])
        except (TransportError, BackendError) as e:
            if isinstance(e, BackendError) and e.status is not None and e.status < 500 and e.status != 429:
                raise
            return self._response(record, AppState[record.state], f"DGX Cloud did not answer: {e}")
        if workload is None:
            state, phase = AppState.CANCELLED, "Deleted"
            msg = "the workload was deleted on the server before it finished"
        else:
            phase = phase_of(workload)
            state = state_of_phase(phase)
            msg = "the workload is being deleted on the server" if phase == "Deleting" else f"phase {phase}"
        if is_terminal(state):
            record = self._record_final(app_id, state.name, phase=phase, msg=msg)
            state = AppState[record.state]
        elif phase != record.data.get("phase") or state.name != record.state:
            record = self._store().update(self.backend, app_id, state=state.name, if_state_in=ACTIVE_STATES,
                                          data={"phase": phase})
        return self._response(record, state, msg)

    def _response(self, record: JobRecord, state: AppState, msg: str) -> DescribeAppResponse:
        cmd = record.data.get("cmd") or [""]
        return single_role_response(record, state, msg, nodes=int(record.data.get("nodes", 1)), entrypoint=cmd[0],
                                    args=cmd[1:], ui_url=record.data.get("base_url", "").removesuffix("/api/v1") or None)

    # -- list -------------------------------------------------------------------------------
    def list(self) -> list[ListAppResponse]:  # type: ignore[override]
        records = self._store().list(self.backend)
        live: dict[str, str] = {}
        groups: dict[tuple[str, str, str], list[JobRecord]] = {}
        for record in records:
            if record.state not in TERMINAL_STATES and "workload_id" in record.data:
                key = (record.data["base_url"], record.data["client_id"], record.data["project_id"])
                groups.setdefault(key, []).append(record)
        for (_, _, project_id), members in groups.items():
            try:
                client = self._client_for(members[0])
                for workload in client.list_workloads([f"projectId=={project_id}"]):
                    live[workload["id"]] = phase_of(workload) or "Unknown"
            except (ConfigError, BackendError) as e:
                log.warning("DGX Cloud states not refreshed for project %s: %s", project_id, e)
                continue
            for record in members:
                phase = live.get(record.data["workload_id"], "Deleted")
                state = AppState.CANCELLED if phase == "Deleted" else state_of_phase(phase)
                if is_terminal(state):
                    self._record_final(record.app_id, state.name, phase=phase)
                record.state = state.name
        return [ListAppResponse(app_id=r.app_id, state=AppState[r.state], app_handle=r.handle) for r in records]

    # -- logs -------------------------------------------------------------------------------
    def log_iter(
        self,
        app_id: str,
        role_name: str,
        k: int = 0,
        regex: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        should_tail: bool = False,
        streams: Stream | None = None,
    ) -> Iterable[str]:
        record = self._known_record(app_id)
        self._check_replica(app_id, {record.data.get("role", "main"): int(record.data.get("nodes", 1))}, role_name, k)
        path = f"{record.data.get('pvc_job_dir', '')}/logs/rank{k}.log"
        if not (record.data.get("launched_from_cluster") and os.path.isdir(os.path.dirname(path))):
            return iter([f"nemo_run: the logs of {app_id} are on the PVC at {path}; read them where the PVC "
                         "is mounted (DGXCloudExecutor(launched_from_cluster=True)) or in the Run:ai UI\n"])
        return self._matching(follow_file(path, lambda: self._finished(app_id), should_tail), regex)

    # -- cancel -----------------------------------------------------------------------------
    def _stop(self, record: JobRecord) -> None:
        self._client_for(record).suspend(record.data["kind"], record.data["workload_id"])


def create_scheduler(session_name: str, **kwargs: Any) -> DGXCloudScheduler:
    """Entry point for the `dgx_cloud` torchx scheduler."""
    return DGXCloudScheduler(session_name)
