"""Run:ai REST client (DGX Cloud): token, projects, workloads. Paths and fields follow the
Run:ai OpenAPI document; nothing here knows about torchx or nemo_run jobs.

Tokens are cached in this process until shortly before they expire (never on disk) and
refreshed once on a 401. Creating a workload is made idempotent by its unique name: after a
timeout, a 5xx, a 429 or a 409, the client looks the name up before creating again.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from nemo_run.core.clients.http import (
    RETRYABLE_STATUS,
    JsonHttp,
    RetryPolicy,
    TransportError,
    error_message,
)
from nemo_run.exceptions import BackendError, ConfigError

WORKLOAD_KINDS = ("trainings", "distributed", "workspaces")
PAGE_SIZE = 500
_tokens: dict[tuple[str, str], tuple[str, float]] = {}
_tokens_lock = threading.Lock()


class RunAIClient:
    """Talks to `<base_url>` (which ends in `/api/v1`)."""

    def __init__(self, base_url: str, client_id: str, client_secret: str, *, timeout: float = 30.0,
                 retry: RetryPolicy | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.http = JsonHttp(self.base_url, timeout=timeout, retry=retry or RetryPolicy())

    def __repr__(self) -> str:
        return f"RunAIClient({self.base_url!r}, client_id={self.client_id!r})"

    # -- auth -------------------------------------------------------------------------------
    def _token(self, refresh: bool = False) -> str:
        key = (self.base_url, self.client_id)
        with _tokens_lock:
            cached = _tokens.get(key)
            if cached and not refresh and cached[1] > time.time():
                return cached[0]
        status, body = self.http.request("POST", "/token", idempotent=True, body={
            "grantType": "client_credentials", "clientID": self.client_id, "clientSecret": self._client_secret,
        })
        if status in (400, 401, 403):
            raise BackendError(f"DGX Cloud refused the credentials of client {self.client_id!r}: "
                               f"{error_message(status, body)}", status=status)
        if status >= 400 or not isinstance(body, dict) or not body.get("accessToken"):
            raise BackendError(f"POST /token failed: {error_message(status, body)}", status=status)
        lifetime = float(body.get("expiresIn") or 300)
        with _tokens_lock:
            _tokens[key] = (body["accessToken"], time.time() + max(lifetime - 30, lifetime / 2))
        return body["accessToken"]

    def call(self, method: str, path: str, *, idempotent: bool, body: Any = None,
             query: dict[str, Any] | None = None, timeout: float | None = None) -> tuple[int, Any]:
        """One API call with auth; a 401 refreshes the token and tries once more."""
        for refresh in (False, True):
            headers = {"Authorization": f"Bearer {self._token(refresh=refresh)}"}
            status, parsed = self.http.request(method, path, idempotent=idempotent, body=body, query=query,
                                               headers=headers, timeout=timeout)
            if status != 401:
                return status, parsed
        return status, parsed

    def _ok(self, status: int, body: Any, what: str) -> Any:
        if status >= 400:
            raise BackendError(f"{what} failed ({status}): {error_message(status, body)}", status=status,
                               body=str(body)[:2000])
        return body

    def _pages(self, path: str, key: str, filters: list[str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        offset = 0
        while True:
            status, body = self.call("GET", path, idempotent=True,
                                     query={"filterBy": filters or None, "offset": offset, "limit": PAGE_SIZE})
            page = self._ok(status, body, f"GET {path}").get(key, [])
            items.extend(page)
            if not page or body.get("next") in (None, 0) or len(page) < PAGE_SIZE:
                return items
            offset = int(body["next"])

    # -- projects ---------------------------------------------------------------------------
    def find_project(self, name: str) -> dict[str, Any]:
        """The project named `name`; ConfigError listing the available ones when absent."""
        for project in self._pages("/org-unit/projects", "projects", [f"name=={name}"]):
            if project.get("name") == name:
                return project
        available = sorted(p.get("name", "?") for p in self._pages("/org-unit/projects", "projects", []))
        raise ConfigError(f"DGXCloudExecutor.project_name={name!r} does not exist; available projects: "
                          f"{', '.join(available) or 'none'}")

    # -- workloads --------------------------------------------------------------------------
    def find_workload(self, name: str, project_id: str) -> dict[str, Any] | None:
        found = self._pages("/workloads", "workloads", [f"name=={name}", f"projectId=={project_id}"])
        return next((w for w in found if w.get("name") == name), None)

    def create_workload(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create once: an unclear outcome is resolved by looking the unique name up."""
        if kind not in WORKLOAD_KINDS:
            raise ValueError(f"unknown workload kind {kind!r}")
        policy = self.http.retry
        for attempt in range(policy.attempts):
            try:
                status, created = self.call("POST", f"/workloads/{kind}", idempotent=False, body=body)
            except TransportError:
                status, created = None, None
            if status is not None and status < 400:
                return created
            if status is not None and status not in RETRYABLE_STATUS and status != 409:
                self._ok(status, created, f"creating {kind} workload {body.get('name')!r}")
            existing = self.find_workload(body["name"], body["projectId"])
            if existing is not None:  # our earlier attempt went through
                return {"workloadId": existing["id"], "name": existing["name"], **existing}
            if status == 409:
                raise BackendError(f"workload name {body['name']!r} is taken in project {body['projectId']}",
                                   status=409)
            self.http.sleep(policy.delay(attempt, None))
        raise BackendError(f"creating {kind} workload {body.get('name')!r} failed after {policy.attempts} attempts")

    def get_workload(self, kind: str, workload_id: str) -> dict[str, Any] | None:
        """The typed workload, or None when the server no longer has it."""
        status, body = self.call("GET", f"/workloads/{kind}/{workload_id}", idempotent=True)
        if status == 404:
            return None
        return self._ok(status, body, f"GET {kind} workload {workload_id}")

    def list_workloads(self, filters: list[str]) -> list[dict[str, Any]]:
        return self._pages("/workloads", "workloads", filters)

    def suspend(self, kind: str, workload_id: str) -> bool:
        """Stop a workload (POST .../suspend); False when it no longer exists."""
        status, body = self.call("POST", f"/workloads/{kind}/{workload_id}/suspend", idempotent=True)
        if status == 404:
            return False
        self._ok(status, body, f"suspending {kind} workload {workload_id}")
        return True

    def delete(self, kind: str, workload_id: str) -> bool:
        status, body = self.call("DELETE", f"/workloads/{kind}/{workload_id}", idempotent=True)
        if status == 404:
            return False
        self._ok(status, body, f"deleting {kind} workload {workload_id}")
        return True


def phase_of(workload: dict[str, Any]) -> str | None:
    """The typed endpoints report `actualPhase`; the generic ones `phase`."""
    return workload.get("actualPhase") or workload.get("phase")
