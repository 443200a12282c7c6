"""SkyPilot backend: each job is one SkyPilot job on a cluster, through the SkyPilot SDK as a
client of an API server (`sky.launch`/`sky.exec`/`sky.job_status`/`sky.tail_logs`/`sky.cancel`
with `sky.get`), never the server-side `sky.core` functions, so remote API servers work too.

The app id is the task's unique name; the handle is `skypilot://<session>/<name>`. The record
keeps the cluster name and SkyPilot job id, and the last state seen, which is what `describe`
returns once the cluster is gone.
"""

from __future__ import annotations

import logging
import os
import shlex
import tempfile
import time
from collections.abc import Iterable, Iterator
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

from nemo_run.core.clients.skypilot import (
    ClusterGoneError,
    ServerUnreachableError,
    SkyPilotClient,
)
from nemo_run.core.execution.skypilot import HEAD_NODE_IP, SkypilotExecutor
from nemo_run.core.packaging.base import extract
from nemo_run.core.redact import redact_env, redact_text
from nemo_run.core.store import JobRecord, store_path
from nemo_run.exceptions import BackendError, ConfigError
from nemo_run.run.torchx_backend.schedulers.api import (
    ACTIVE_STATES,
    LAUNCH,
    LAUNCH_PENDING,
    NEVER_STARTED,
    TERMINAL_STATES,
    SchedulerMixin,
    map_state,
    single_role_response,
    unanswered,
    unique_name,
)
from nemo_run.run.torchx_backend.schedulers.logs import split_lines

log = logging.getLogger(__name__)

BACKEND = "skypilot"
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
        import yaml

        config = dict(self.config)
        if config.get("envs"):
            config["envs"] = redact_env({k: str(v) for k, v in config["envs"].items()})
        if config.get("run"):
            config["run"] = redact_text(config["run"])
        return yaml.safe_dump(config, sort_keys=False)


class SkypilotScheduler(SchedulerMixin, Scheduler[dict[str, str]]):  # type: ignore[misc]
    """SkyPilot jobs as torchx apps, durable through the job store."""

    def __init__(self, session_name: str) -> None:
        super().__init__(BACKEND, session_name)
        self._client_instance: SkyPilotClient | None = None

    @property
    def _client(self) -> SkyPilotClient:
        if self._client_instance is None:
            self._client_instance = SkyPilotClient()
        return self._client_instance

    def _run_opts(self) -> Any:
        from torchx.specs import runopts

        return runopts()

    # -- dry run ----------------------------------------------------------------------------
    def _submit_dryrun(self, app: AppDef, cfg: SkypilotExecutor) -> AppDryRunInfo[SkypilotRequest]:  # type: ignore[override]
        if len(app.roles) != 1:
            raise ConfigError(f"SkyPilot runs one role per job; {app.name!r} has {len(app.roles)}")
        name = task_name(app.name)
        role = macros.Values(
            img_root="", app_id=name, replica_id="$SKYPILOT_NODE_RANK", rank0_env="head_node_ip"
        ).apply(app.roles[0])
        app.roles = [role]
        run = "\n".join(
            [
                "set -o pipefail",
                f"export head_node_ip={HEAD_NODE_IP}",
                'export num_nodes="$SKYPILOT_NUM_NODES"',
                shlex.join([role.entrypoint, *role.args]),
            ]
        )
        config = cfg.to_task(name=name, run=run, envs=dict(role.env)).to_yaml_config()
        return AppDryRunInfo(SkypilotRequest(executor=cfg, name=name, config=config), str)

    def _app_id_of(self, request: SkypilotRequest) -> str:
        return request.name

    # -- schedule ---------------------------------------------------------------------------
    def schedule(self, dryrun_info: AppDryRunInfo[SkypilotRequest]) -> str:  # type: ignore[override]
        request = dryrun_info.request
        ex, name = request.executor, request.name
        cluster = ex.cluster_name or f"nemo-{name}"[:40]
        self._put_intent(
            name,
            experiment_id=ex.experiment_id,
            data={
                "cluster": cluster,
                "num_nodes": ex.num_nodes,
                "role": dryrun_info._app.roles[0].name if dryrun_info._app else "main",
                "run": request.config.get("run", ""),
                "api_server": os.environ.get("SKYPILOT_API_SERVER_ENDPOINT", ""),
            },
        )
        try:
            job_id = self._submit(request, cluster)
        except ServerUnreachableError as e:  # the API server may have taken it: find it later
            self._launch_unconfirmed(name, str(e))
            return name
        except BaseException:
            self._launch_failed(name)
            raise
        self._launch_confirmed(name, job_id=job_id)
        return name

    def _submit(self, request: SkypilotRequest, cluster: str) -> int:
        """Package the code and start the job; its SkyPilot job id."""
        ex = request.executor
        with tempfile.TemporaryDirectory(prefix="nemo_run_sky_") as scratch:
            config = dict(request.config)
            archive = ex.packager.package(os.getcwd(), scratch, "code")
            if archive:
                code = os.path.join(scratch, "code")
                extract(archive, code)
                config["workdir"] = code
            if self._client.cluster_up(cluster):
                return self._client.exec(config, cluster)
            return self._client.launch(
                config,
                cluster,
                retry_until_up=ex.retry_until_up,
                idle_minutes_to_autostop=ex.idle_minutes_to_autostop,
                down=ex.autodown,
            )

    def _adopt(self, record: JobRecord) -> JobRecord | DescribeAppResponse:
        """A record whose launch was never confirmed: find the job on its cluster by name."""
        if record.data.get(LAUNCH) == LAUNCH_PENDING and self._launcher_alive(record):
            return self._response(record, AppState.SUBMITTED, "starting")
        cluster = record.data["cluster"]
        try:
            jobs = self._client.queue(cluster)
        except ClusterGoneError:
            jobs = []
        except BackendError as e:
            return unanswered(self._response(record, AppState[record.state], ""), str(e))
        match = next((j for j in jobs if j.name == record.app_id), None)
        if match is not None:
            return self._launch_confirmed(record.app_id, state=record.state, job_id=match.job_id)
        if time.time() - record.created_at > LAUNCH_GRACE_S:
            record = self._record_final(record.app_id, AppState.FAILED.name, msg=NEVER_STARTED)
            return self._response(record, AppState[record.state], record.data.get("msg", ""))
        return self._response(
            record,
            AppState.UNKNOWN,
            f"its launcher exited while launching; no job named {record.app_id} on {cluster} yet",
        )

    # -- describe ---------------------------------------------------------------------------
    def describe(self, app_id: str) -> DescribeAppResponse | None:
        record = self._store().get(self.backend, app_id)
        if record is None:
            return None
        if record.state in TERMINAL_STATES or "cluster" not in record.data:
            return self._response(record, AppState[record.state], record.data.get("msg", ""))
        if "job_id" not in record.data:
            adopted = self._adopt(record)
            if isinstance(adopted, DescribeAppResponse):
                return adopted
            record = adopted
        cluster, job_id = record.data["cluster"], record.data["job_id"]
        try:  # one request to the API server
            status = self._client.job_status(cluster, job_id)
        except BackendError as e:  # cluster gone, or the API server unreachable: keep what we knew
            return unanswered(
                self._response(record, AppState[record.state], ""), f"last recorded state ({e})"
            )
        if status is None:
            return self._response(
                record, AppState[record.state], f"job {job_id} not found on {cluster}"
            )
        state = state_of(status)
        msg = f"SkyPilot {status}"
        if is_terminal(state):
            record = self._record_final(app_id, state.name, sky_status=status, msg=msg)
            state = AppState[record.state]
        elif state.name != record.state:
            self._store().update(self.backend, app_id, state=state.name, if_state_in=ACTIVE_STATES)
        return self._response(record, state, msg)

    def _response(self, record: JobRecord, state: AppState, msg: str) -> DescribeAppResponse:
        return single_role_response(
            record,
            state,
            msg,
            nodes=int(record.data.get("num_nodes", 1)),
            entrypoint="bash",
            args=["-c", record.data.get("run", "")],
            hostname=record.data.get("cluster", ""),
        )

    # -- list -------------------------------------------------------------------------------
    def list(self) -> list[ListAppResponse]:  # type: ignore[override]
        records = self._store().list(self.backend)
        by_cluster: dict[str, list[JobRecord]] = {}
        for record in records:
            if record.state not in TERMINAL_STATES and "job_id" in record.data:
                by_cluster.setdefault(record.data["cluster"], []).append(record)
        for cluster, members in by_cluster.items():
            try:
                jobs = {j.job_id: j.status for j in self._client.queue(cluster)}
            except BackendError as e:  # the cluster is gone: keep the recorded states
                log.warning("SkyPilot queue of %s unavailable: %s", cluster, e)
                continue
            for record in members:
                status = jobs.get(record.data["job_id"])
                if status is None:
                    continue
                state = state_of(status)
                if is_terminal(state):
                    self._record_final(record.app_id, state.name, sky_status=status)
                record.state = state.name
        return [
            ListAppResponse(app_id=r.app_id, state=AppState[r.state], app_handle=r.handle)
            for r in records
        ]

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
            {record.data.get("role", "main"): int(record.data.get("num_nodes", 1))},
            role_name,
            k,
        )
        return self._matching(self._lines(record, should_tail), regex)

    def _lines(self, record: JobRecord, should_tail: bool) -> Iterator[str]:
        """The job's output through the API server; `follow` ends when the job does."""
        cluster, job_id = record.data["cluster"], record.data["job_id"]
        try:
            yield from split_lines(
                chunk.encode() for chunk in self._client.tail_logs(cluster, job_id, should_tail)
            )
        except BackendError as e:
            yield f"nemo_run: the logs of {record.app_id} are not available (cluster {cluster}: {e})\n"

    # -- cancel -----------------------------------------------------------------------------
    def _stop(self, record: JobRecord) -> None:
        cluster = record.data["cluster"]
        try:
            self._client.cancel(cluster, record.data["job_id"])
        except ClusterGoneError:  # the cluster is gone: nothing left to stop
            log.warning(
                "SkyPilot cancel of %s: cluster %s no longer exists", record.app_id, cluster
            )


def create_scheduler(session_name: str, **kwargs: Any) -> SkypilotScheduler:
    """Entry point for the `skypilot` torchx scheduler."""
    return SkypilotScheduler(session_name)
