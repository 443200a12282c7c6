"""DGX Cloud Lepton backend: each job is one Lepton batch job (`nodes` replicas) in a
dedicated node group, driven through the leptonai SDK's v2 client.

The app id is the job's unique name (`^[a-z][a-z0-9-]*$`, <= 36 chars); the handle is
`lepton://<session>/<name>`. The record keeps the workspace id and URL (never the token)
and the timeout; a later process authenticates from `LEPTON_WORKSPACE_*` or the SDK's login
record. What answers, silences and 404s mean is decided in `remote.py`, shared with DGX Cloud.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from torchx.schedulers.api import AppDryRunInfo, Scheduler
from torchx.specs import AppState

from nemo_run.config import get_nemorun_home as get_nemorun_home
from nemo_run.core.clients import datamover
from nemo_run.core.clients.http import fingerprint
from nemo_run.core.clients.lepton import JobInfo, LeptonClient, job_state_enum
from nemo_run.core.execution.base import Executor as Executor
from nemo_run.core.execution.lepton import STORE_BACKEND, workspace_credentials
from nemo_run.core.execution.lepton import LeptonExecutor as LeptonExecutor
from nemo_run.core.packaging.base import code_archive
from nemo_run.core.store import JobRecord, store_path
from nemo_run.core.store.records import REMOTE_ID
from nemo_run.exceptions import ConfigError
from nemo_run.run.torchx_backend.schedulers.api import SchedulerMixin as SchedulerMixin
from nemo_run.run.torchx_backend.schedulers.api import map_state, unique_name
from nemo_run.run.torchx_backend.schedulers.logs import follow_text
from nemo_run.run.torchx_backend.schedulers.mounted import (
    MountedJobRequest,
    MountedJobSchedulerMixin,
)
from nemo_run.run.torchx_backend.schedulers.remote import TIMEOUT

log = logging.getLogger(__name__)

BACKEND = STORE_BACKEND  # "lepton"
NAME_LIMIT = 36
HELPER_TIMEOUT_S = 600.0
DEFAULT_TIMEOUT = 30.0  # seconds per HTTP attempt (LeptonExecutor.timeout, when it has one)

# Lepton job states (`LeptonJobState` values) -> torchx states. Keyed by the SDK's enum in
# `LEPTON_STATES` (built when first read, as leptonai is optional); `Unknown` is UNKNOWN here,
# never FAILED as in 0.11.1: a state Lepton cannot tell for a moment is not an outcome.
_STATES_BY_NAME: dict[str, AppState] = {
    "Starting": AppState.PENDING,
    "Running": AppState.RUNNING,
    "Failed": AppState.FAILED,
    "Completed": AppState.SUCCEEDED,
    "Stopped": AppState.CANCELLED,
    "Stopping": AppState.RUNNING,  # still going down; Stopped follows
    "Deleting": AppState.CANCELLED,
    "Deleted": AppState.CANCELLED,
    "Restarting": AppState.RUNNING,
    "Archived": AppState.UNKNOWN,  # finished long ago; the outcome is no longer reported
    "Queueing": AppState.PENDING,
    "Awaiting": AppState.PENDING,
    "PendingRetry": AppState.PENDING,
    "Terminating": AppState.RUNNING,
    "Unknown": AppState.UNKNOWN,
    "UNK": AppState.UNKNOWN,  # the SDK's value for LeptonJobState.Unknown
}


@functools.cache
def lepton_states() -> dict[Any, AppState]:
    """`LEPTON_STATES`: the table keyed by the SDK's `LeptonJobState` (a `str` enum, so the
    API's strings find their entries too); MissingDependencyError without leptonai."""
    return {
        member: _STATES_BY_NAME.get(member.value, AppState.UNKNOWN) for member in job_state_enum()
    }


def __getattr__(name: str) -> Any:
    if name == "LEPTON_JOB_DIRS":  # the store file in use now, resolved on every access
        return store_path()
    if name == "LEPTON_STATES":
        return lepton_states()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The names `__getattr__` serves too, so `dir()` and API tools see them."""
    return sorted([*globals(), "LEPTON_JOB_DIRS", "LEPTON_STATES"])


def job_name(app_name: str) -> str:
    """A valid, unique Lepton job name: `^[a-z][a-z0-9-]*$`, at most 36 characters."""
    return unique_name(app_name, NAME_LIMIT)


def state_of(raw: Any) -> AppState:
    return map_state(_STATES_BY_NAME, raw, "Lepton")


@dataclass
class LeptonRequest(MountedJobRequest):
    """One Lepton job to create; `str()` is the dry-run text (job spec and launch script)."""

    job_dir_field: ClassVar[str] = "lepton_job_dir"

    @property
    def mount_dir(self) -> str:
        return self.executor.nemo_run_dir

    def prelude(self) -> list[str]:
        """Rank and rendezvous from Lepton's own variables, as Lepton's
        lepton_env_to_pytorch.sh derives them (worker 0 is `<service prefix>-0.<subdomain>`);
        values already set (by the user's env) are kept."""
        nproc = self.executor.nproc_per_node()
        return [
            'export NODE_RANK="${LEPTON_JOB_WORKER_INDEX:-${NODE_RANK:-0}}"',
            'export WORLD_SIZE="${LEPTON_JOB_TOTAL_WORKERS:-${WORLD_SIZE:-1}}"',
            'if [ -z "${MASTER_ADDR:-}" ] && [ -n "${LEPTON_JOB_WORKER_INDEX:-}" ]; then',
            '  export MASTER_ADDR="${LEPTON_JOB_SERVICE_PREFIX:-${LEPTON_JOB_NAME}}-0.'
            '${LEPTON_SUBDOMAIN:-${LEPTON_JOB_NAME}-job-svc}"',
            "fi",
            'export MASTER_ADDR="${MASTER_ADDR:-localhost}" MASTER_PORT="${MASTER_PORT:-29400}"',
            f'export NPROC_PER_NODE="${{NPROC_PER_NODE:-{nproc}}}"',
        ]

    def setup_commands(self) -> list[str]:
        return list(self.executor.pre_launch_commands)

    def job(
        self,
        node_group_id: str,
        node_ids: list[str],
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
        replicas: int | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        ex = self.executor
        nodes = replicas or ex.nodes
        if env is None:
            env = self.env()
        envs: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(env.items())]
        envs += [
            {"name": k, "value_from": {"secret_name_ref": v}}
            for k, v in sorted(ex.secret_vars.items())
        ]
        spec: dict[str, Any] = {
            "resource_shape": ex.resource_shape,
            "affinity": {"allowed_dedicated_node_groups": [node_group_id]},
            "container": {
                "image": ex.container_image,
                "command": command or ["bash", f"{self.job_dir}/launch.sh"],
            },
            "shared_memory_size": ex.shared_memory_size,
            "completions": nodes,
            "parallelism": nodes,
            "envs": envs,
            "mounts": [dict(m) for m in ex.mounts],
            "image_pull_secrets": list(ex.image_pull_secrets),
        }
        if node_ids:
            spec["affinity"]["allowed_nodes_in_node_group"] = node_ids
        if nodes > 1:
            spec["intra_job_communication"] = True
        queue = ex.queue_config()
        if queue:
            spec["queue_config"] = queue
        if ex.node_reservation:
            spec["reservation_config"] = {"reservation_id": ex.node_reservation}
        if command is None:
            spec.update(ex.custom_spec)
        return {"metadata": {"name": name or self.name}, "spec": spec}

    def __str__(self) -> str:
        return self.dryrun_text("POST $LEPTON_WORKSPACE_URL/jobs", self.job("<node group id>", []))


class LeptonScheduler(MountedJobSchedulerMixin, Scheduler[dict[str, str]]):
    """Lepton batch jobs as torchx apps, durable through the job store."""

    label = "Lepton"
    deleted_msg = "the job was deleted in the workspace before it finished"
    request_class, name_limit = LeptonRequest, NAME_LIMIT
    storage, helper_timeout_s = "shared mount", HELPER_TIMEOUT_S

    def __init__(self, session_name: str) -> None:
        super().__init__(BACKEND, session_name)
        self._clients: dict[tuple[Any, ...], Any] = {}

    def _client(self, record: JobRecord | None = None, timeout: float | None = None) -> Any:
        """A client for the credentials in force now (read on every call), cached per setting:
        the token by its sha256 only (in memory), and a client the workspace refused a token
        to is dropped, so a corrected login is used at once."""
        if timeout is None:
            timeout = (record.data.get(TIMEOUT) if record else None) or DEFAULT_TIMEOUT
        workspace_id, token, url = workspace_credentials()
        key = (
            workspace_id,
            fingerprint(token) if token else None,
            url,
            os.environ.get("HOME"),
            float(timeout),
        )
        for refused in [k for k, c in list(self._clients.items()) if c.refused]:
            del self._clients[refused]  # a token the workspace refused is not kept
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = LeptonClient(
                timeout=timeout, workspace_id=workspace_id, token=token, url=url
            )
        wanted = record.data.get("workspace_id") if record else None
        if record is not None and wanted and wanted != client.workspace_id:
            raise ConfigError(
                f"job {record.app_id} belongs to Lepton workspace {wanted!r} but the credentials "
                f"are for {client.workspace_id!r}; set LEPTON_WORKSPACE_ID={wanted}"
            )
        return client

    # -- schedule ---------------------------------------------------------------------------
    def schedule(self, dryrun_info: AppDryRunInfo[LeptonRequest]) -> str:
        """Read-only lookups first (a bad node group fails with nothing recorded), then the
        intent record, the code, and the create (see `RemoteSchedulerMixin._launch_remote`)."""
        request = dryrun_info.request
        ex = request.executor
        timeout = float(ex.timeout or DEFAULT_TIMEOUT)
        client = self._client(timeout=timeout)
        group_id, node_ids = client.node_group(ex.node_group)
        data = {
            **self._record_data(request),
            "workspace_id": client.workspace_id,
            "url": client.url,
            TIMEOUT: timeout,
        }

        def ship(leftovers: list[dict[str, Any]], beat: Callable[[], None]) -> dict[str, Any]:
            with tempfile.TemporaryDirectory(prefix="nemo_run_lepton_") as scratch:
                archive = code_archive(ex.packager, os.getcwd(), scratch)
                moved = self._ship_code(
                    request,
                    archive,
                    request.launch_script(with_code=archive is not None),
                    helper_ops=lambda: self._helper_ops(client, request, group_id, node_ids),
                    helper_name=lambda i: f"{request.name[: NAME_LIMIT - 4].rstrip('-')}-m{i}",
                    leftovers=leftovers,
                    beat=beat,
                )
            return {"data_mover_jobs": moved}

        def create() -> str:
            created = client.create_job(request.job(group_id, node_ids))
            return created.id or request.name

        log_dir = request.job_dir if ex.launched_from_cluster else None
        return self._launch_remote(
            request.name,
            experiment_id=ex.experiment_id,
            log_dir=log_dir,
            data=data,
            ship=ship,
            create=create,
        )

    def _helper_ops(
        self, client: Any, request: LeptonRequest, group_id: str, node_ids: list[str]
    ) -> datamover.HelperOps:
        """Helper jobs carrying the payload in environment variables (no argv limit)."""

        def create(name: str, script: str, env: dict[str, str]) -> dict[str, Any]:
            job = request.job(
                group_id, node_ids, env=env, command=["sh", "-c", script], replicas=1, name=name
            )
            return {"id": client.create_job(job).id or name, "name": name}

        def status(entry: dict[str, Any]) -> str:
            job = client.get_job(entry["id"])
            if job is None:
                return datamover.GONE
            state = state_of(job.state)
            if state == AppState.SUCCEEDED:
                return datamover.DONE
            return (
                datamover.FAILED
                if state in (AppState.FAILED, AppState.CANCELLED)
                else datamover.RUNNING
            )

        return datamover.HelperOps(create, status, lambda entry: self._delete_with(client, entry))

    @staticmethod
    def _delete_with(client: Any, entry: dict[str, Any]) -> None:
        """Delete one helper job (found by name when its id is unknown); gone is fine."""
        job_id = entry.get("id")
        if not job_id:
            found = client.find_job(entry["name"])
            if found is None:
                return
            job_id = found.id
        client.delete_job(job_id)

    # -- the hooks of RemoteSchedulerMixin ---------------------------------------------------
    def _get(self, record: JobRecord) -> JobInfo | None:
        return self._client(record).get_job(record.data[REMOTE_ID])

    def _lookup(self, record: JobRecord) -> JobInfo | None:
        return self._client(record).find_job(record.app_id)

    def _list_key(self, record: JobRecord) -> tuple[Any, ...]:
        return (record.data.get("workspace_id"), record.data.get(TIMEOUT))

    def _list_live(self, record: JobRecord) -> list[JobInfo]:
        return self._client(record).list_jobs()

    def _id_of(self, job: JobInfo) -> str:
        return job.id

    def _name_of(self, job: JobInfo) -> str:
        return job.name

    def _observe(self, job: JobInfo) -> tuple[AppState, str, str]:
        return state_of(job.state), job.state, f"state {job.state}"

    def _stop_remote(self, record: JobRecord) -> bool:
        return self._client(record).stop_job(record.data[REMOTE_ID])

    def _delete_helper(self, record: JobRecord, entry: dict[str, Any]) -> None:
        self._delete_with(self._client(record), entry)

    def _ui_url(self, record: JobRecord) -> str | None:
        return record.data.get("url")

    def _remote_lines(
        self, record: JobRecord, k: int, should_tail: bool, path: str
    ) -> Iterator[str]:
        """The k-th replica's log through the API, re-read until the job ends (never forever)."""
        client, job_id = self._client(record), record.data[REMOTE_ID]
        replicas: list[str] = []

        def read() -> str | None:
            replicas[:] = client.replica_ids(job_id) if client.get_job(job_id) is not None else []
            return client.log(job_id, replicas[k], timeout=2) if k < len(replicas) else None

        def gone() -> str | None:
            if replicas:
                return None  # the job has fewer replicas than k: nothing to say
            return (
                f"nemo_run: Lepton no longer serves the logs of {record.app_id}; "
                f"they are on the shared mount at {path}\n"
            )

        yield from follow_text(read, lambda: self._finished(record.app_id), gone, should_tail)


def create_scheduler(session_name: str, **kwargs: Any) -> LeptonScheduler:
    """Entry point for the `lepton` torchx scheduler."""
    return LeptonScheduler(session_name)
