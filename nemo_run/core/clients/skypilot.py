"""SkyPilot client: the SDK's client calls to an API server (`sky.launch`, `sky.exec`,
`sky.job_status`, `sky.queue`, `sky.tail_logs`, `sky.cancel`, each through `sky.get`), taking
and returning plain data. Never the server-side `sky.core` functions, so remote API servers work.

The SDK (about 2 s to import) loads at the first call (`pip install 'nemo_run[skypilot]'`).
Errors become `BackendError`; a cluster that does not exist is `ClusterGoneError`, and an API
server that did not answer is `ServerUnreachableError` (a request may or may not have run).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nemo_run.core.clients.http import TransportError
from nemo_run.exceptions import BackendError, MissingDependencyError


class ClusterGoneError(BackendError):
    """The cluster does not exist (any more): an answer, like an HTTP 404."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=404)


class ServerUnreachableError(TransportError):
    """No answer from the API server: the request may or may not have been taken."""


@dataclass(frozen=True)
class QueuedJob:
    job_id: int
    name: str
    status: str  # a sky.JobStatus name, e.g. RUNNING


def import_sky() -> Any:
    try:
        import sky  # noqa: PLC0415 - optional SDK, loaded when used
    except ImportError as e:
        raise MissingDependencyError(
            "the skypilot backend needs skypilot: pip install 'nemo_run[skypilot]'"
        ) from e
    return sky


def _field(record: Any, name: str) -> Any:
    """The SDK answers with dicts or dict-like records depending on the call."""
    try:
        return record[name]
    except (TypeError, KeyError):
        return getattr(record, name, None)


def _name(value: Any) -> str:
    return str(getattr(value, "name", value))


class SkyPilotClient:
    """Calls to the API server the environment points at (`SKYPILOT_API_SERVER_ENDPOINT`)."""

    def __init__(self) -> None:
        self._sky = import_sky()

    def _fail(self, error: Exception, doing: str) -> BackendError:
        import requests  # noqa: PLC0415 - comes with skypilot, an optional SDK

        kind = type(error).__name__
        if kind in ("ClusterDoesNotExist", "ClusterNotUpError"):
            return ClusterGoneError(f"{doing}: {error}")
        if isinstance(
            error, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)
        ):
            return ServerUnreachableError(
                f"{doing}: the SkyPilot API server did not answer ({error})"
            )
        return BackendError(f"{doing} failed: {kind}: {error}")

    def _call(self, doing: str, request: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._sky.get(request(*args, **kwargs))
        except Exception as e:
            raise self._fail(e, doing) from e

    # -- clusters and jobs ------------------------------------------------------------------
    def cluster_up(self, cluster: str) -> bool:
        records = self._call(f"status of cluster {cluster}", self._sky.status, [cluster])
        return any(
            _field(r, "name") == cluster and _name(_field(r, "status")) == "UP" for r in records
        )

    def launch(
        self,
        task_config: dict[str, Any],
        cluster: str,
        *,
        retry_until_up: bool,
        idle_minutes_to_autostop: int | None,
        down: bool,
    ) -> int:
        """Start `task_config` on a new (or stopped) cluster; the job id."""
        task = self._sky.Task.from_yaml_config(task_config)
        job_id, _ = self._call(
            f"launching {task.name} on {cluster}",
            self._sky.launch,
            task,
            cluster_name=cluster,
            retry_until_up=retry_until_up,
            idle_minutes_to_autostop=idle_minutes_to_autostop,
            down=down,
        )
        return self._job_id(job_id, task.name, cluster)

    def exec(self, task_config: dict[str, Any], cluster: str) -> int:
        """Run `task_config` on a cluster that is UP; the job id."""
        task = self._sky.Task.from_yaml_config(task_config)
        job_id, _ = self._call(
            f"running {task.name} on {cluster}", self._sky.exec, task, cluster_name=cluster
        )
        return self._job_id(job_id, task.name, cluster)

    @staticmethod
    def _job_id(job_id: Any, name: str, cluster: str) -> int:
        if job_id is None:
            raise BackendError(f"SkyPilot started no job for {name} on {cluster}")
        return int(job_id)

    def job_status(self, cluster: str, job_id: int) -> str | None:
        """The job's status name, or None when the cluster has no such job."""
        statuses = self._call(
            f"status of job {job_id} on {cluster}", self._sky.job_status, cluster, [job_id]
        )
        status = statuses.get(job_id) if isinstance(statuses, dict) else None
        return None if status is None else _name(status)

    def queue(self, cluster: str) -> list[QueuedJob]:
        jobs = self._call(f"queue of {cluster}", self._sky.queue, cluster, all_users=True)
        return [
            QueuedJob(
                int(_field(j, "job_id")),
                str(_field(j, "job_name") or ""),
                _name(_field(j, "status")),
            )
            for j in jobs
        ]

    def cancel(self, cluster: str, job_id: int) -> None:
        self._call(
            f"cancelling job {job_id} on {cluster}", self._sky.cancel, cluster, job_ids=[job_id]
        )

    def tail_logs(self, cluster: str, job_id: int, follow: bool) -> Iterator[str]:
        """The job's output as text chunks; `follow` ends when the job does."""
        try:
            for chunk in self._sky.tail_logs(cluster, job_id, follow=follow, preload_content=False):
                if chunk is not None:
                    yield chunk
        except Exception as e:
            raise self._fail(e, f"logs of job {job_id} on {cluster}") from e
