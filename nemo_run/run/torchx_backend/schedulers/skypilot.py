"""SkyPilot backend: each job is one SkyPilot job on a cluster, through the SkyPilot SDK as a
client of an API server (`sky.launch`/`sky.exec`/`sky.job_status`/`sky.tail_logs`/`sky.cancel`
with `sky.get`), never the server-side `sky.core` functions, so remote API servers work too.

The app id is the task's unique name; the handle is `skypilot://<session>/<name>`. The record
keeps the cluster name and SkyPilot job id. A job whose cluster was taken down before its end
was recorded reads CANCELLED once the API server confirms the cluster is gone.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from torchx.schedulers.api import (
    AppDryRunInfo,
    DescribeAppResponse,
    Scheduler,
    Stream,
)
from torchx.specs import AppDef, AppState, macros

from nemo_run.config import get_nemorun_home as get_nemorun_home
from nemo_run.core.clients.http import UnconfirmedError
from nemo_run.core.clients.skypilot import (
    ClusterGoneError,
    QueuedJob,
    ServerUnreachableError,
    SkyPilotClient,
)
from nemo_run.core.execution.base import Executor as Executor
from nemo_run.core.execution.skypilot import STORE_BACKEND, SkypilotExecutor
from nemo_run.core.packaging.base import code_archive, extract
from nemo_run.core.redact import redact_env, redact_text
from nemo_run.core.store import JobRecord, store_path
from nemo_run.core.store.records import NODES, REMOTE_ID
from nemo_run.exceptions import BackendError, ConfigError
from nemo_run.run.torchx_backend.schedulers.api import SchedulerMixin as SchedulerMixin
from nemo_run.run.torchx_backend.schedulers.api import (
    map_state,
    single_role_response,
    unique_name,
)
from nemo_run.run.torchx_backend.schedulers.logs import split_lines
from nemo_run.run.torchx_backend.schedulers.remote import RemoteSchedulerMixin
from nemo_run.run.torchx_backend.schedulers.runopts import DryRun

log = logging.getLogger(__name__)

BACKEND = STORE_BACKEND  # "skypilot"
FCNTL_AVAILABLE = importlib.util.find_spec("fcntl") is not None  # as 0.11.1: a POSIX host
LAUNCH_GRACE_S = 900.0  # a launch whose launcher died may still be provisioning for this long

SKYPILOT_STATES: dict[str, AppState] = {
    "INIT": AppState.SUBMITTED,
    "PENDING": AppState.PENDING,
    "SETTING_UP": AppState.PENDING,
    "RUNNING": AppState.RUNNING,
    "SUCCEEDED": AppState.SUCCEEDED,
    "FAILED": AppState.FAILED,
    "FAILED_SETUP": AppState.FAILED,
    "FAILED_DRIVER": AppState.FAILED,
    "CANCELLED": AppState.CANCELLED,
}


def __getattr__(name: str) -> Any:
    if name == "SKYPILOT_JOB_DIRS":  # the store file in use now, resolved on every access
        return store_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The names `__getattr__` serves too, so `dir()` and API tools see them."""
    return sorted([*globals(), "SKYPILOT_JOB_DIRS"])


def state_of(status: Any) -> AppState:
    """Map a `sky.JobStatus` (or its name); a value added later reads UNKNOWN, with a warning."""
    return map_state(SKYPILOT_STATES, getattr(status, "name", status), "SkyPilot job")


def task_name(app_name: str) -> str:
    return unique_name(app_name, 40)


@dataclass
class SkypilotRequest:
    """The task to run as SkyPilot's task config; `str()` (the dry-run text) is its YAML."""

    executor: SkypilotExecutor
    name: str
    config: dict[str, Any]

    def __str__(self) -> str:
        import yaml  # noqa: PLC0415 - comes with skypilot, an optional SDK

        config = dict(self.config)
        if config.get("envs"):
            config["envs"] = redact_env({k: str(v) for k, v in config["envs"].items()})
        if config.get("run"):
            config["run"] = redact_text(config["run"])
        return yaml.safe_dump(config, sort_keys=False)


class SkypilotScheduler(RemoteSchedulerMixin, Scheduler[dict[str, str]]):
    """SkyPilot jobs as torchx apps, durable through the job store; the state rules are the
    remote backends' (`RemoteSchedulerMixin`), the hooks below are SkyPilot's."""

    label = "SkyPilot"
    deleted_msg = "its cluster no longer has the job (the cluster was taken down)"
    never_created_grace_s = LAUNCH_GRACE_S

    def __init__(self, session_name: str) -> None:
        super().__init__(BACKEND, session_name)
        self._client_instance: SkyPilotClient | None = None

    @property
    def _client(self) -> SkyPilotClient:
        if self._client_instance is None:
            self._client_instance = SkyPilotClient()
        return self._client_instance

    # -- dry run ----------------------------------------------------------------------------
    def _submit_dryrun(self, app: AppDef, cfg: SkypilotExecutor) -> AppDryRunInfo[SkypilotRequest]:
        cfg.validate()  # fields may have been set after construction: check them all now
        if len(app.roles) != 1:
            raise ConfigError(f"SkyPilot runs one role per job; {app.name!r} has {len(app.roles)}")
        name = task_name(app.name)
        role = macros.Values(
            img_root="",
            app_id=name,
            replica_id="$SKYPILOT_NODE_RANK",
            rank0_env=SkypilotExecutor.HEAD_NODE_IP_VAR,
        ).apply(app.roles[0])
        app.roles = [role]
        task = cfg.to_task(name, [role.entrypoint, *role.args], dict(role.env))
        config = task.to_yaml_config()
        return AppDryRunInfo(SkypilotRequest(executor=cfg, name=name, config=config), str)

    def _app_id_of(self, request: SkypilotRequest) -> str:
        return request.name

    # -- schedule ---------------------------------------------------------------------------
    def schedule(self, dryrun_info: DryRun[SkypilotRequest]) -> str:  # type: ignore[override]
        request = dryrun_info.request
        ex = request.executor
        cluster = ex.cluster_name or f"nemo-{request.name}"[:40]
        data = {
            "cluster": cluster,
            NODES: ex.num_nodes,
            "role": dryrun_info.app.roles[0].name,
            "run": redact_text(request.config.get("run") or ""),
            "api_server": os.environ.get("SKYPILOT_API_SERVER_ENDPOINT", ""),
        }
        return self._launch_remote(
            request.name,
            experiment_id=ex.experiment_id,
            log_dir=None,
            data=data,
            ship=lambda leftovers, heartbeat: {},
            create=lambda: self._submit(request, cluster),
        )

    def _submit(self, request: SkypilotRequest, cluster: str) -> int:
        """Package the code and start the job; its SkyPilot job id. No answer from the API
        server means the request may have been taken: UnconfirmedError, found later by name."""
        ex = request.executor
        with tempfile.TemporaryDirectory(prefix="nemo_run_sky_") as scratch:
            config = dict(request.config)
            archive = code_archive(ex.packager, os.getcwd(), scratch)
            if archive:
                code = os.path.join(scratch, "code")
                extract(archive, code)
                config["workdir"] = code
            try:
                if self._client.cluster_up(cluster):
                    return self._client.exec(config, cluster)
                return self._client.launch(
                    config,
                    cluster,
                    retry_until_up=ex.retry_until_up,
                    idle_minutes_to_autostop=ex.idle_minutes_to_autostop,
                    down=ex.autodown,
                )
            except ServerUnreachableError as e:
                raise UnconfirmedError(str(e)) from e

    # -- hooks of the remote state rules -------------------------------------------------------
    def _get(self, record: JobRecord) -> QueuedJob | None:
        cluster, job_id = record.data["cluster"], record.data[REMOTE_ID]
        try:
            status = self._client.job_status(cluster, job_id)
        except ClusterGoneError:
            return None
        return None if status is None else QueuedJob(job_id, record.app_id, status)

    def _lookup(self, record: JobRecord) -> QueuedJob | None:
        return next((j for j in self._list_live(record) if j.name == record.app_id), None)

    def _list_key(self, record: JobRecord) -> tuple[Any, ...]:
        return (record.data.get("cluster"),)

    def _list_live(self, record: JobRecord) -> list[QueuedJob]:
        try:
            return self._client.queue(record.data["cluster"])
        except ClusterGoneError:
            return []

    def _id_of(self, job: QueuedJob) -> int:
        return job.job_id

    def _name_of(self, job: QueuedJob) -> str:
        return job.name

    def _observe(self, job: QueuedJob) -> tuple[AppState, str, str]:
        return state_of(job.status), job.status, f"SkyPilot {job.status}"

    def _stop_remote(self, record: JobRecord) -> bool:
        try:
            self._client.cancel(record.data["cluster"], record.data[REMOTE_ID])
        except ClusterGoneError:
            return False
        return True

    def _delete_helper(self, record: JobRecord, entry: dict[str, Any]) -> None:
        """SkyPilot launches use no helper jobs."""

    def _response(self, record: JobRecord, state: AppState, msg: str) -> DescribeAppResponse:
        return single_role_response(
            record,
            state,
            msg,
            nodes=int(record.data.get(NODES, 1)),
            entrypoint="bash",
            args=["-c", record.data.get("run", "")],
            hostname=record.data.get("cluster", ""),
        )

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
        self._check_replica(
            app_id,
            {record.data.get("role", "main"): int(record.data.get(NODES, 1))},
            role_name,
            k,
        )
        return self._matching(self._lines(record, should_tail), regex)

    def _lines(self, record: JobRecord, should_tail: bool) -> Iterator[str]:
        """The job's output through the API server; `follow` ends when the job does."""
        cluster, job_id = record.data["cluster"], record.data.get(REMOTE_ID)
        if job_id is None:
            yield f"nemo_run: {record.app_id} has not started on {cluster} (yet); no logs\n"
            return
        try:
            yield from split_lines(
                chunk.encode() for chunk in self._client.tail_logs(cluster, job_id, should_tail)
            )
        except BackendError as e:
            yield f"nemo_run: the logs of {record.app_id} are not available (cluster {cluster}: {e})\n"


def create_scheduler(session_name: str, **kwargs: Any) -> SkypilotScheduler:
    """Entry point for the `skypilot` torchx scheduler."""
    return SkypilotScheduler(session_name)
