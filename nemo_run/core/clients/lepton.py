"""Lepton workspace client: a thin adapter over the leptonai SDK's v2 `APIClient`.

The SDK loads only when a Lepton call is made (`pip install 'nemo_run[lepton]'`); only
`leptonai.api.v2` is imported. Safe calls are retried on 429/5xx/connection errors with
backoff and jitter, all within one total deadline per logical call (`DEADLINE_FACTOR` x the
timeout): the SDK's session is given a per-request timeout of min(timeout, time left).
Creating a job is made idempotent by its unique name; an outcome that cannot be settled
raises `UnconfirmedError`.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from nemo_run.core.clients.http import (
    CREATE_CALLS,
    DEADLINE_FACTOR,
    MIN_ATTEMPT_S,
    RetryPolicy,
    TransportError,
    UnconfirmedError,
    deadline_after,
)
from nemo_run.exceptions import BackendError, ConfigError, MissingDependencyError

log = logging.getLogger(__name__)
T = TypeVar("T")
LIST_PAGE_SIZE = 500
ENV_NAMES = "LEPTON_WORKSPACE_ID, LEPTON_WORKSPACE_TOKEN and LEPTON_WORKSPACE_URL"
ALIVE_AND_ARCHIVE = "alive_and_archive"  # LeptonJobQueryMode.AliveAndArchive


def _sdk() -> Any:
    try:
        from leptonai.api.v2 import client as sdk_client  # noqa: PLC0415 - optional SDK, loaded when used
    except ImportError as e:
        raise MissingDependencyError(
            "the lepton backend needs leptonai: pip install 'nemo_run[lepton]'"
        ) from e
    return sdk_client


def job_state_enum() -> Any:
    """The SDK's `LeptonJobState` (leptonai.api.v2; v1 in SDKs before 0.47)."""
    try:
        from leptonai.api.v2.types.job import (  # noqa: PLC0415 - optional SDK, loaded when used
            LeptonJobState,
        )
    except ImportError:
        try:
            from leptonai.api.v1.types.job import (  # noqa: PLC0415 - optional SDK, older layout
                LeptonJobState,
            )
        except ImportError as e:
            raise MissingDependencyError(
                "the lepton backend needs leptonai: pip install 'nemo_run[lepton]'"
            ) from e
    return LeptonJobState


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _no_answer(error: BaseException) -> bool:
    import requests  # noqa: PLC0415 - comes with leptonai, an optional SDK

    return _status(error) is None and isinstance(error, requests.RequestException)


def _transient(error: BaseException) -> bool:
    status = _status(error)
    if status is not None:
        return status in (408, 429) or status >= 500
    return _no_answer(error)


def _retry_after(error: BaseException) -> float | None:
    response = getattr(error, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _bounded_session(deadlines: threading.local) -> Any:
    """A requests session whose every request waits at most the time left before the calling
    thread's deadline (the SDK passes its own fixed timeout otherwise)."""
    import requests  # noqa: PLC0415 - comes with leptonai, an optional SDK

    class BoundedSession(requests.Session):
        def request(
            self, method: str, url: str | bytes, *args: Any, **kwargs: Any
        ) -> requests.Response:
            deadline = getattr(deadlines, "at", None)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left < MIN_ATTEMPT_S:
                    raise requests.Timeout(f"{method} {url!s}: deadline passed")
                timeout = kwargs.get("timeout")
                if isinstance(timeout, tuple):
                    kwargs["timeout"] = tuple(left if t is None else min(t, left) for t in timeout)
                else:
                    kwargs["timeout"] = left if timeout is None else min(timeout, left)
            return super().request(method, url, *args, **kwargs)

    return BoundedSession()


STARTING = "Starting"  # the state of a job the workspace reports none for yet


@dataclass(frozen=True)
class JobInfo:
    """A Lepton job as plain data: the id the workspace assigned, our name, its state (a
    `LeptonJobState` value such as "Running")."""

    id: str
    name: str
    state: str


def job_info(job: Any) -> JobInfo:
    """Plain data from the SDK's `LeptonJob` (callers never see SDK types)."""
    metadata, status = getattr(job, "metadata", None), getattr(job, "status", None)
    raw = getattr(status, "state", None) if status is not None else None
    return JobInfo(
        id=str(getattr(metadata, "id_", None) or ""),
        name=str(getattr(metadata, "name", None) or ""),
        state=str(getattr(raw, "value", raw)) if raw is not None else STARTING,
    )


class LeptonClient:
    """One workspace, credentials from the environment or the SDK's login record."""

    def __init__(
        self,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        *,
        workspace_id: str | None = None,
        token: str | None = None,
        url: str | None = None,
    ) -> None:
        sdk = _sdk()
        given = {"workspace_id": workspace_id, "auth_token": token, "url": url}
        try:  # only what is known: the SDK resolves the rest (and crashes on auth_token=None)
            self.api = sdk.APIClient(**{k: v for k, v in given.items() if v})
        except Exception as e:  # the SDK's WorkspaceConfigurationError and friends
            raise ConfigError(
                f"Lepton workspace credentials missing or invalid ({e}); set {ENV_NAMES}, "
                "or run `nemorun login lepton` (or `lep login`)"
            ) from e
        self.timeout = timeout
        self.api._timeout = timeout
        self._deadlines = threading.local()
        self.api._session = _bounded_session(self._deadlines)
        self.retry = retry or RetryPolicy()
        self.workspace_id = self.api.workspace_id
        self.url = self.api.url
        self.refused = False  # the workspace refused the token: the scheduler drops this client

    def _error(self, what: str, e: BaseException) -> BackendError:
        status = _status(e)
        if status in (401, 403):
            self.refused = True
        if _no_answer(e):
            return TransportError(f"Lepton {what}: no answer ({e})")
        return BackendError(f"Lepton {what} failed: {e}", status=status)

    def _call(self, what: str, fn: Callable[[], T], *, idempotent: bool = True) -> T:
        """One logical call: retried while transient and the deadline allows."""
        deadline = deadline_after(self.timeout)
        outer = getattr(self._deadlines, "at", None)
        self._deadlines.at = deadline if outer is None else min(outer, deadline)
        try:
            attempt = 0
            while True:
                try:
                    return fn()
                except Exception as e:
                    pause = self.retry.delay(attempt, _retry_after(e))
                    late = time.monotonic() + pause + MIN_ATTEMPT_S >= self._deadlines.at
                    last = attempt + 1 >= self.retry.attempts
                    if not idempotent or not _transient(e) or late or last:
                        error = self._error(what, e)
                        if late and isinstance(error, TransportError):
                            error = TransportError(
                                f"Lepton {what}: no answer within "
                                f"{DEADLINE_FACTOR * self.timeout:.1f} s ({e})"
                            )
                        raise error from e
                    time.sleep(pause)
                    attempt += 1
        finally:
            self._deadlines.at = outer

    # -- node groups ------------------------------------------------------------------------
    def node_group(self, name: str) -> tuple[str, list[str]]:
        """(node group id, its node ids) for a group named `name`; lists the names when absent."""
        groups = self._call("listing node groups", self.api.nodegroup.list_all)
        for group in groups:
            if group.metadata.name == name:
                nodes = self._call(
                    "listing nodes", functools.partial(self.api.nodegroup.list_nodes, group)
                )
                return group.metadata.id_, [
                    n.metadata.id_ for n in nodes if n.metadata and n.metadata.id_
                ]
        names = sorted(g.metadata.name for g in groups if g.metadata and g.metadata.name)
        raise ConfigError(
            f"LeptonExecutor.node_group={name!r} does not exist; available node groups: "
            f"{', '.join(names) or 'none'}"
        )

    # -- jobs (addressed by the id the workspace assigns; names are what we choose) --------
    def get_job(self, job_id: str) -> JobInfo | None:
        """The job (live or archived), or None on a 404 (which alone does not prove it is gone)."""
        try:
            return job_info(self._call(f"getting job {job_id}", lambda: self.api.job.get(job_id)))
        except BackendError as e:
            if e.status == 404:
                return None
            raise

    def find_job(self, name: str) -> JobInfo | None:
        """The job whose name is exactly `name`, live or archived (the filter matches
        substrings); None when the listing answered without it."""
        jobs = self._call(
            f"looking up job {name}",
            lambda: self.api.job.list_all(q=name, job_query_mode=ALIVE_AND_ARCHIVE),
        )
        found = (job_info(j) for j in jobs)
        return next((j for j in found if j.name == name), None)

    def create_job(self, job: dict[str, Any]) -> JobInfo:
        """Create once. Raises BackendError when nothing was created (a refusal of the first
        try), UnconfirmedError when it may exist but no lookup could say so."""
        from leptonai.api.v2.types.job import LeptonJob  # noqa: PLC0415 - optional SDK, loaded when used

        spec = LeptonJob.model_validate(job)
        name = job["metadata"]["name"]
        until = time.monotonic() + CREATE_CALLS * DEADLINE_FACTOR * self.timeout
        sent, last, pause = False, "", 0.0
        for attempt in range(self.retry.attempts):
            if attempt:
                if time.monotonic() + pause >= until:
                    break
                time.sleep(pause)
            deadline = deadline_after(self.timeout)
            self._deadlines.at = deadline
            try:
                created = self.api.job.create(spec)
                return job_info(created) if created is not None else JobInfo("", name, STARTING)
            except Exception as e:
                status = _status(e)
                error = self._error(f"creating job {name}", e)
                if not sent and status is not None and not _transient(e) and status != 409:
                    raise BackendError(f"Lepton rejected job {name}: {e}", status=status) from e
                sent, last = True, str(error)
                if status is not None and not _transient(e) and status != 409:
                    break  # an earlier try may have gone through: settle it below
                pause = self.retry.delay(attempt, _retry_after(e))
            finally:
                self._deadlines.at = None
            settled = self._settle(name, last)
            if isinstance(settled, JobInfo):
                return settled
            last = settled
        settled = self._settle(name, last)
        if isinstance(settled, JobInfo):
            return settled
        found = settled
        raise UnconfirmedError(f"creating Lepton job {name} could not be confirmed ({found})")

    def _settle(self, name: str, last: str) -> JobInfo | str:
        """The job an earlier try created, or (a str) why it is still unclear."""
        try:
            existing = self.find_job(name)
        except BackendError as e:
            return f"{last}; looking it up: {e}"
        return existing if existing is not None else f"{last}; not found by name"

    def list_jobs(self) -> list[JobInfo]:
        """The live jobs (an archived one is left out: it is not gone; get_job finds it).
        Pages are read until one comes back short: one request for most workspaces (the
        SDK's own paging always asks once more, for an empty page)."""
        jobs: list[JobInfo] = []
        page = 1
        while True:
            batch = self._call(
                "listing jobs",
                functools.partial(self.api.job.list_all, page=page, page_size=LIST_PAGE_SIZE),
            )
            jobs.extend(job_info(j) for j in batch)
            if len(batch) < LIST_PAGE_SIZE:
                return jobs
            page += 1

    def stop_job(self, job_id: str) -> bool:
        """Stop (PATCH spec.stopped=true): True once accepted, False on a 404; raises
        BackendError otherwise. The SDK's `update` serialises only plain dicts, so the patch
        is one."""
        try:
            self._call(
                f"stopping job {job_id}",
                lambda: self.api.job.update(
                    job_id,
                    {"spec": {"stopped": True}},
                ),
            )
            return True
        except BackendError as e:
            if e.status == 404:
                return False
            raise

    def delete_job(self, job_id: str) -> bool:
        """DELETE the job: True once accepted, False on a 404; raises otherwise."""
        try:
            self._call(f"deleting job {job_id}", lambda: self.api.job.delete(job_id))
            return True
        except BackendError as e:
            if e.status == 404:
                return False
            raise

    def replica_ids(self, job_id: str) -> list[str]:
        replicas = self._call(
            f"listing replicas of {job_id}", lambda: self.api.job.get_replicas(job_id)
        )
        return sorted(r.metadata.id_ for r in replicas if r.metadata and r.metadata.id_)

    def log(self, job_id: str, replica_id: str, timeout: int | None = None) -> str:
        """The replica's log so far (the SDK streams until the replica ends or `timeout`)."""
        return self._call(
            f"reading logs of {job_id}/{replica_id}",
            lambda: "".join(self.api.job.get_log(job_id, replica_id, timeout=timeout)),
        )
