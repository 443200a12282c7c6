"""Lepton workspace client: a thin adapter over the leptonai SDK's v2 `APIClient`.

The SDK loads only when a Lepton call is made (`pip install 'nemo_run[lepton]'`); only
`leptonai.api.v2` is imported. Safe calls are retried on 429/5xx/connection errors with
backoff and jitter; creating a job is made idempotent by its unique name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from nemo_run.core.clients.http import RetryPolicy
from nemo_run.exceptions import BackendError, ConfigError, MissingDependencyError

log = logging.getLogger(__name__)
T = TypeVar("T")
ENV_NAMES = "LEPTON_WORKSPACE_ID, LEPTON_WORKSPACE_TOKEN and LEPTON_WORKSPACE_URL"


def _sdk() -> Any:
    try:
        from leptonai.api.v2 import client as sdk_client
    except ImportError as e:
        raise MissingDependencyError("the lepton backend needs leptonai: pip install 'nemo_run[lepton]'") from e
    return sdk_client


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _transient(error: BaseException) -> bool:
    status = _status(error)
    if status is not None:
        return status == 429 or status >= 500
    import requests

    return isinstance(error, requests.RequestException)


def _retry_after(error: BaseException) -> float | None:
    response = getattr(error, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class LeptonClient:
    """One workspace, credentials from the environment or the SDK's login record."""

    def __init__(self, timeout: float = 30.0, retry: RetryPolicy | None = None) -> None:
        sdk = _sdk()
        try:
            self.api = sdk.APIClient()
        except Exception as e:  # the SDK's WorkspaceConfigurationError and friends
            raise ConfigError(f"Lepton workspace credentials missing or invalid ({e}); set {ENV_NAMES}, "
                              "or run `lep login`") from e
        self.api._timeout = timeout
        self.retry = retry or RetryPolicy()
        self.workspace_id = self.api.workspace_id
        self.url = self.api.url

    def _call(self, what: str, fn: Callable[[], T], *, idempotent: bool = True) -> T:
        for attempt in range(self.retry.attempts):
            try:
                return fn()
            except Exception as e:
                if not idempotent or not _transient(e) or attempt + 1 == self.retry.attempts:
                    raise BackendError(f"Lepton {what} failed: {e}", status=_status(e)) from e
                time.sleep(self.retry.delay(attempt, _retry_after(e)))
        raise AssertionError("unreachable")

    # -- node groups ------------------------------------------------------------------------
    def node_group(self, name: str) -> tuple[str, list[str]]:
        """(node group id, its node ids) for a group named `name`; lists the names when absent."""
        groups = self._call("listing node groups", self.api.nodegroup.list_all)
        for group in groups:
            if group.metadata.name == name:
                nodes = self._call("listing nodes", lambda g=group: self.api.nodegroup.list_nodes(g))
                return group.metadata.id_, [n.metadata.id_ for n in nodes if n.metadata and n.metadata.id_]
        names = sorted(g.metadata.name for g in groups if g.metadata and g.metadata.name)
        raise ConfigError(f"LeptonExecutor.node_group={name!r} does not exist; available node groups: "
                          f"{', '.join(names) or 'none'}")

    # -- jobs (addressed by the id the workspace assigns; names are what we choose) --------
    def get_job(self, job_id: str) -> Any | None:
        """The job, or None once the workspace no longer has it."""
        try:
            return self._call(f"getting job {job_id}", lambda: self.api.job.get(job_id))
        except BackendError as e:
            if e.status == 404:
                return None
            raise

    def find_job(self, name: str) -> Any | None:
        """The live job whose name is exactly `name` (the list filter matches substrings)."""
        jobs = self._call(f"looking up job {name}", lambda: self.api.job.list_all(q=name))
        return next((j for j in jobs if j.metadata and j.metadata.name == name), None)

    def create_job(self, job: dict[str, Any]) -> Any:
        """Create once: after an unclear failure, the unique name tells whether it exists."""
        from leptonai.api.v2.types.job import LeptonJob

        spec = LeptonJob.model_validate(job)
        name = job["metadata"]["name"]
        for attempt in range(self.retry.attempts):
            try:
                return self.api.job.create(spec)
            except Exception as e:
                status = _status(e)
                if not (_transient(e) or status == 409):
                    raise BackendError(f"Lepton rejected job {name}: {e}", status=status) from e
                existing = self.find_job(name)
                if existing is not None:
                    return existing
                if attempt + 1 == self.retry.attempts:
                    raise BackendError(f"creating Lepton job {name} failed: {e}", status=status) from e
                time.sleep(self.retry.delay(attempt, _retry_after(e)))
        raise AssertionError("unreachable")

    def list_jobs(self) -> list[Any]:
        return self._call("listing jobs", self.api.job.list_all)

    def stop_job(self, job_id: str) -> bool:
        """Stop (PATCH spec.stopped=true); False when the job no longer exists. The SDK's
        `update` serialises only plain dicts, so the patch is one."""
        try:
            self._call(f"stopping job {job_id}",
                       lambda: self.api.job.update(job_id, {"spec": {"stopped": True}}))  # type: ignore[arg-type]
            return True
        except BackendError as e:
            if e.status == 404:
                return False
            raise

    def delete_job(self, job_id: str) -> bool:
        try:
            self._call(f"deleting job {job_id}", lambda: self.api.job.delete(job_id))
            return True
        except BackendError as e:
            if e.status == 404:
                return False
            raise

    def replica_ids(self, job_id: str) -> list[str]:
        replicas = self._call(f"listing replicas of {job_id}", lambda: self.api.job.get_replicas(job_id))
        return sorted(r.metadata.id_ for r in replicas if r.metadata and r.metadata.id_)

    def log(self, job_id: str, replica_id: str, timeout: int | None = None) -> str:
        """The replica's log so far (the SDK streams until the replica ends or `timeout`)."""
        return self._call(f"reading logs of {job_id}/{replica_id}",
                          lambda: "".join(self.api.job.get_log(job_id, replica_id, timeout=timeout)))
