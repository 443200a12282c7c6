"""Run:ai REST client (DGX Cloud): token, projects, workloads. Paths and fields follow the
Run:ai OpenAPI document; nothing here knows about torchx or nemo_run jobs.

Tokens are cached in this process until shortly before they expire (never on disk), keyed by
the API, the client id and a sha256 of the secret (so a changed secret is never served a
token the old one earned), and refreshed once on a 401. Creating a workload is made
idempotent by its unique name: after a timeout, a 5xx, a 429 or a 409, the client looks the
name up before creating again; an outcome it cannot settle raises `UnconfirmedError`.
Every call (token, request, retries) ends within `DEADLINE_FACTOR` x the timeout.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any
from urllib.parse import quote

from nemo_run.core.clients.http import (
    CREATE_CALLS,
    DEADLINE_FACTOR,
    RETRYABLE_STATUS,
    JsonHttp,
    RetryPolicy,
    TransportError,
    UnconfirmedError,
    error_message,
    fingerprint,
    is_transient,
)
from nemo_run.exceptions import BackendError, ConfigError

WORKLOAD_KINDS = ("trainings", "distributed", "workspaces")
PAGE_SIZE = 500
_tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
_tokens_lock = threading.Lock()


class RunAIClient:
    """Talks to `<base_url>` (which ends in `/api/v1`)."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self._token_key = (self.base_url, client_id, fingerprint(client_secret))
        self.http = JsonHttp(self.base_url, timeout=timeout, retry=retry or RetryPolicy())

    def __repr__(self) -> str:
        return f"RunAIClient({self.base_url!r}, client_id={self.client_id!r})"

    # -- auth -------------------------------------------------------------------------------
    def _token(self, refresh: bool = False, deadline: float | None = None) -> str:
        with _tokens_lock:
            cached = _tokens.get(self._token_key)
            if cached and not refresh and cached[1] > time.time():
                return cached[0]
        status, body = self.http.request(
            "POST",
            "/token",
            idempotent=True,
            deadline=deadline,
            body={
                "grantType": "client_credentials",
                "clientID": self.client_id,
                "clientSecret": self._client_secret,
            },
        )
        if status in (400, 401, 403):
            with _tokens_lock:
                _tokens.pop(self._token_key, None)
            raise BackendError(
                f"DGX Cloud refused the credentials of client {self.client_id!r}: "
                f"{error_message(status, body)}",
                status=status,
            )
        if status >= 400 or not isinstance(body, dict) or not body.get("accessToken"):
            raise BackendError(f"POST /token failed: {error_message(status, body)}", status=status)
        lifetime = float(body.get("expiresIn") or 300)
        with _tokens_lock:
            _tokens[self._token_key] = (
                body["accessToken"],
                time.time() + max(lifetime - 30, lifetime / 2),
            )
        return body["accessToken"]

    def token(self) -> str:
        """A bearer token for this client (cached in memory until shortly before it expires)."""
        return self._token()

    def call(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        body: Any = None,
        query: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        """One logical API call with auth, within one deadline; a 401 refreshes the token
        and tries once more."""
        deadline = self.http.deadline()
        for refresh in (False, True):
            token = self._token(refresh=refresh, deadline=deadline)
            status, parsed = self.http.request(
                method,
                path,
                idempotent=idempotent,
                body=body,
                query=query,
                headers={"Authorization": f"Bearer {token}"},
                timeout=timeout,
                deadline=deadline,
            )
            if status != 401:
                return status, parsed
        return status, parsed

    def _ok(self, status: int, body: Any, what: str) -> Any:
        if status >= 400:
            raise BackendError(
                f"{what} failed ({status}): {error_message(status, body)}",
                status=status,
                body=str(body)[:2000],
            )
        return body

    def _pages(self, path: str, key: str, filters: list[str]) -> list[dict[str, Any]]:
        """Every item of a paged list; `filterBy` is one comma-joined value (the spec's
        `explode: false`)."""
        items: list[dict[str, Any]] = []
        offset = 0
        while True:
            query = {"filterBy": ",".join(filters) or None, "offset": offset, "limit": PAGE_SIZE}
            status, body = self.call("GET", path, idempotent=True, query=query)
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
        available = sorted(
            p.get("name", "?") for p in self._pages("/org-unit/projects", "projects", [])
        )
        raise ConfigError(
            f"DGXCloudExecutor.project_name={name!r} does not exist; available projects: "
            f"{', '.join(available) or 'none'}"
        )

    # -- workloads --------------------------------------------------------------------------
    def find_workload(self, name: str, project_id: str) -> dict[str, Any] | None:
        """The live workload named `name` in the project (GET /workloads, filterBy name and
        projectId), or None when the listing answered without it."""
        found = self._pages(
            "/workloads", "workloads", [f"name=={name}", f"projectId=={project_id}"]
        )
        return next((w for w in found if w.get("name") == name), None)

    def create_workload(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create once. Raises BackendError when nothing was created (the server refused the
        first try, or no try was sent), UnconfirmedError when it may exist but no lookup
        could say so; the caller then keeps a record that describe reconciles by name."""
        if kind not in WORKLOAD_KINDS:
            raise ValueError(f"unknown workload kind {kind!r}")
        policy, name = self.http.retry, body.get("name")
        until = time.monotonic() + CREATE_CALLS * DEADLINE_FACTOR * self.http.timeout
        sent, last = False, ""
        for attempt in range(policy.attempts):
            if attempt:
                pause = policy.delay(attempt - 1, None)
                if time.monotonic() + pause >= until:
                    break
                self.http.sleep(pause)
            try:
                self._token()  # a failure here means this try was never sent
            except BackendError as e:
                if not is_transient(e):
                    raise
                last = str(e)
                continue
            try:
                status, created = self.call(
                    "POST", f"/workloads/{kind}", idempotent=False, body=body
                )
            except TransportError as e:
                sent, status, created, last = True, None, None, str(e)
            if status is not None and status < 400:
                return created
            if status is not None:
                last = f"HTTP {status}: {error_message(status, created)}"
                if status not in RETRYABLE_STATUS and status != 409:
                    if not sent:  # the server refused the only try: nothing exists
                        self._ok(status, created, f"creating {kind} workload {name!r}")
                    break  # an earlier try may have gone through: settle it below
            sent = True
            existing = self._settle(body, last)
            if isinstance(existing, dict):
                return existing
            last = existing
        if not sent:
            raise BackendError(f"creating {kind} workload {name!r}: never sent ({last})")
        existing = self._settle(body, last)
        if isinstance(existing, dict):
            return existing
        raise UnconfirmedError(
            f"creating {kind} workload {name!r} could not be confirmed ({existing})"
        )

    def _settle(self, body: dict[str, Any], last: str) -> dict[str, Any] | str:
        """The workload an earlier try created, or the reason it is still unclear."""
        try:
            existing = self.find_workload(body["name"], body["projectId"])
        except BackendError as e:
            return f"{last}; looking it up: {e}"
        if existing is None:
            return f"{last}; not found by name"
        return {"workloadId": existing["id"], "name": existing["name"], **existing}

    def get_workload(self, kind: str, workload_id: str) -> dict[str, Any] | None:
        """The typed workload, or None on a 404 (which alone does not prove it is gone)."""
        status, body = self.call("GET", f"/workloads/{kind}/{workload_id}", idempotent=True)
        if status == 404:
            return None
        return self._ok(status, body, f"GET {kind} workload {workload_id}")

    def list_workloads(self, filters: list[str]) -> list[dict[str, Any]]:
        return self._pages("/workloads", "workloads", filters)

    def suspend(self, kind: str, workload_id: str) -> bool:
        """Stop a workload (POST .../suspend): True once accepted, False on a 404; raises
        BackendError for anything else (the stop did not happen)."""
        status, body = self.call(
            "POST", f"/workloads/{kind}/{workload_id}/suspend", idempotent=True
        )
        if status == 404:
            return False
        self._ok(status, body, f"suspending {kind} workload {workload_id}")
        return True

    def delete(self, kind: str, workload_id: str) -> bool:
        """DELETE the workload: True once accepted, False on a 404; raises otherwise."""
        status, body = self.call("DELETE", f"/workloads/{kind}/{workload_id}", idempotent=True)
        if status == 404:
            return False
        self._ok(status, body, f"deleting {kind} workload {workload_id}")
        return True

    # -- pods and their logs ------------------------------------------------------------------
    def workload(self, workload_id: str) -> dict[str, Any] | None:
        """The generic workload record (GET /workloads/{id}: with its `namespace`), or None on
        a 404."""
        status, body = self.call("GET", f"/workloads/{workload_id}", idempotent=True)
        if status == 404:
            return None
        return self._ok(status, body, f"GET workload {workload_id}")

    def pods(self, workload_id: str) -> list[dict[str, Any]]:
        """The workload's pods (GET /workloads/{id}/pods), master first, then by index."""
        status, body = self.call("GET", f"/workloads/{workload_id}/pods", idempotent=True)
        pods = self._ok(status, body, f"GET pods of workload {workload_id}").get("pods") or []
        return sorted(pods, key=_pod_order)

    def pod_log(
        self, kube_apiserver_url: str, namespace: str, pod: str, *, timeout: float | None = None
    ) -> str:
        """A pod's log from the cluster's Kubernetes API server
        (`GET /api/v1/namespaces/{namespace}/pods/{pod}/log`), authenticated with this
        client's Run:ai token (clusters whose API server trusts Run:ai's identity provider)."""
        kube = JsonHttp(kube_apiserver_url.rstrip("/"), timeout=timeout or self.http.timeout)
        path = f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}/log"
        for refresh in (False, True):
            headers = {"Authorization": f"Bearer {self._token(refresh=refresh)}"}
            status, body = kube.request("GET", path, idempotent=True, headers=headers, text=True)
            if status != 401:
                break
        if status >= 400:
            raise BackendError(
                f"reading the log of pod {pod} from {kube_apiserver_url} failed ({status}): "
                f"{error_message(status, body)}",
                status=status,
            )
        return str(body or "")


def _pod_order(pod: dict[str, Any]) -> tuple[int, int, str]:
    """Master (or launcher) pods first, then workers by their index."""
    name = str(pod.get("name") or "")
    head = 0 if re.search(r"-(master|launcher)-\d+$", name) else 1
    index = re.search(r"(\d+)$", name)
    return head, int(index.group(1)) if index else 0, name


def phase_of(workload: dict[str, Any]) -> str | None:
    """The typed endpoints report `actualPhase`; the generic ones `phase`."""
    return workload.get("actualPhase") or workload.get("phase")
