"""An HTTP emulator of the NVIDIA Run:ai REST API (the part DGX Cloud clients use).

Served (API base ``<url>/api/v1``; every route except the token grant needs
``Authorization: Bearer <token>``):

* ``POST /api/v1/token``: ``client_credentials`` (``clientID``/``clientSecret``) or
  ``app_token`` (``appID``/``appSecret``) -> ``{"accessToken", "expiresIn"}``.
* ``GET /api/v1/org-unit/projects`` (``filterBy``, ``sortBy``, ``sortOrder``, ``offset``,
  ``limit``, ``search``).
* ``POST /api/v1/workloads/{trainings,distributed,workspaces}`` -> 202 and the workload;
  ``GET``/``DELETE .../{workloadId}``; ``POST .../{workloadId}/suspend`` and ``/resume``.
* ``GET /api/v1/workloads`` (``filterBy``, ``sortBy``, ``sortOrder``, ``offset``, ``limit``,
  ``deleted``, ``search``), ``GET /api/v1/workloads/{workloadId}`` and
  ``GET /api/v1/workloads/{workloadId}/pods``.
* Besides Run:ai's API, the one Kubernetes API route a client reads logs with (as the
  cluster's API server, ``kube_apiserver_url`` = the emulator's URL, accepting Run:ai tokens):
  ``GET /api/v1/namespaces/{namespace}/pods/{pod}/log`` -> the pod's log as text.

Outside the API, for tests: ``/_emulator/faults`` (POST rules, GET, DELETE),
``POST /_emulator/expire-tokens``, ``GET /_emulator/state``, ``POST /_emulator/reset``.

Shapes come from the vendored OpenAPI subset (``runai-openapi-subset.json``); every request
is routed and validated against it (see ``validate.py``). Workloads really run (see
``workloads.py``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import secrets
import shlex
import string
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from nemo_run.testing.common import http
from nemo_run.testing.common.http import MAX_BODY_BYTES, EmulatorBase, Response
from nemo_run.testing.dgxcloud.validate import ApiSpec, Issue
from nemo_run.testing.dgxcloud.workloads import Workload, WorkloadManager, now_iso, pod_name

MAX_ARGS_CHARS = 10_000  # the real service rejects longer spec.args
DNS1123_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
TOKEN_PATH = "/api/v1/token"
# The one Kubernetes API route served besides Run:ai's (logs through `kube_apiserver_url`)
KUBE_POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
KUBE_POD_LOG_TEMPLATE = "/api/v1/namespaces/{namespace}/pods/{pod}/log"
KINDS = {"trainings": "Training", "distributed": "Distributed", "workspaces": "Workspace"}
# Run:ai's defaults per workload type: priority, priority class and category
TYPE_DEFAULTS = {
    "trainings": (50, "train", "Train"),
    "distributed": (50, "train", "Train"),
    "workspaces": (100, "build", "Build"),
}
TENANT_ID = 1001
PHASE_TO_K8S = {
    "Creating": "Pending",
    "Pending": "Pending",
    "Initializing": "Pending",
    "Resuming": "Pending",
    "Running": "Running",
    "Completed": "Succeeded",
    "Failed": "Failed",
    "Stopping": "Terminating",
    "Stopped": "Stopped",
    "Deleting": "Terminating",
}


@dataclass
class Config:
    client_id: str = "emulator-client"
    client_secret: str = "emulator-secret"
    token_ttl: float = 3600.0
    projects: list[str] = field(default_factory=lambda: ["nemo-project"])
    data_dir: Path = Path("/tmp/runai-emulator")
    mode: str = "auto"
    phase_delay: float = 0.04
    stop_grace: float = 2.0
    cluster_id: str | None = None
    verbose: bool = False
    lenient_token_keys: bool = False  # clientId/appId too (see __main__'s --lenient-token-keys)


def lenient_token_payload(payload: Any) -> Any:
    """A token request's keys in the spec's spelling whatever their case (clientId ->
    clientID), as a server reading JSON keys case-insensitively takes them."""
    if not isinstance(payload, dict):
        return payload
    spelled = {
        name.lower(): name
        for name in ("grantType", "clientID", "clientSecret", "appID", "appSecret")
    }
    return {spelled.get(str(k).lower(), k): v for k, v in payload.items()}


class ApiError(http.EmulatorError):
    """An error reply in the spec's ``Error`` (or ``SubmissionErrorV2``) shape."""

    def __init__(
        self,
        status: int,
        message: str,
        issues: list[Issue] | None = None,
        submission: bool = False,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.issues = issues or []
        self.submission = submission
        self.headers = headers or {}

    def response(self) -> Response:
        body: dict[str, Any] = {"code": self.status, "message": self.message}
        if self.issues:
            body["details"] = "\n".join(str(i) for i in self.issues)
            if self.submission:
                body["complianceIssues"] = [
                    {"field": i.field, "details": i.details} for i in self.issues
                ]
        return Response(self.status, body, dict(self.headers))


def validation_error(issues: list[Issue], submission: bool, what: str = "request") -> ApiError:
    shown = "; ".join(str(i) for i in issues[:20])
    more = f" (and {len(issues) - 20} more)" if len(issues) > 20 else ""
    return ApiError(400, f"Invalid {what}: {shown}{more}", issues, submission)


# ---------------------------------------------------------------------------------------------
# Filtering and paging (filterBy / sortBy / offset / limit)

_FILTER = re.compile(r"^([A-Za-z0-9]+)(==|!=|<=|>=|=@|!@|=\^|=\$)(.+)$", re.S)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _ordered(a: Any, b: str) -> tuple[Any, Any] | None:
    try:
        return float(a), float(b)
    except (TypeError, ValueError):
        pass
    if isinstance(a, str):
        return a, b  # RFC 3339 times in one format compare as text
    return None


def filter_matches(record: dict, fields: dict[str, Any], expression: str) -> bool:
    m = _FILTER.match(expression)
    if not m:
        return False
    name, op, expected = m.groups()
    actual = fields.get(name, record.get(name))
    if isinstance(actual, (list, dict)):
        actual = ",".join(_text(v) for v in actual) if isinstance(actual, list) else None
    if op == "==":
        return actual is not None and _text(actual) == expected
    if op == "!=":
        return actual is None or _text(actual) != expected
    if op == "=@":
        return actual is not None and expected in _text(actual)
    if op == "!@":
        return actual is None or expected not in _text(actual)
    if op == "=^":
        return actual is not None and _text(actual).startswith(expected)
    if op == "=$":
        return actual is not None and _text(actual).endswith(expected)
    if actual is None:
        return False
    pair = _ordered(actual, expected)
    if pair is None:
        return False
    try:
        return pair[0] <= pair[1] if op == "<=" else pair[0] >= pair[1]
    except TypeError:
        return False


def page(items: list[dict], query: dict, key: str) -> dict:
    offset = max(0, int(query.get("offset") or 0))
    limit = int(query.get("limit") or 50)
    chunk = items[offset : offset + limit]
    out: dict[str, Any] = {key: chunk}
    if offset + limit < len(items):
        out["next"] = offset + limit
    return out


def sort_records(records: list[tuple[dict, dict]], query: dict) -> list[tuple[dict, dict]]:
    sort_by = query.get("sortBy")
    if sort_by:

        def key(pair: tuple[dict, dict]):
            record, fields = pair
            value = fields.get(sort_by, record.get(sort_by))
            if value is None:
                return (1, 0, "")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return (0, value, "")
            return (0, 0, _text(value))

        records = sorted(records, key=key)
    if query.get("sortOrder") == "desc":
        records = list(reversed(records))
    return records


# ---------------------------------------------------------------------------------------------
# The emulator


class Emulator(EmulatorBase):
    """Everything the HTTP handler needs: spec, projects, tokens, workloads, faults, counters."""

    api_error = ApiError
    framing_error_body = {"code": 400, "message": "malformed request body framing"}
    manager: WorkloadManager

    def __init__(self, config: Config, spec: ApiSpec | None = None):
        self.config = config
        self.spec = spec or ApiSpec.load()
        self.validator = self.spec.validator
        self.init_common()
        self.create_lock = threading.Lock()
        self.started_at = time.time()
        self.cluster_id = config.cluster_id or str(uuid.uuid4())
        self.department_id = str(uuid.uuid4())
        self.department_name = "default"
        self.node_pool_id = str(random.randint(10, 99))
        self.projects = [self._project(i, name) for i, name in enumerate(config.projects)]
        self.projects_by_id = {p["id"]: p for p in self.projects}
        self.tokens: dict[str, tuple[str, float]] = {}
        self._jwt_key = secrets.token_bytes(32)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.manager = WorkloadManager(
            config.data_dir, config.mode, config.phase_delay, config.stop_grace
        )
        self.url = ""

    # -- projects ---------------------------------------------------------------------------
    def _project(self, index: int, name: str) -> dict:
        created = now_iso(self.started_at)
        quota = 8.0
        return {
            "id": str(1001 + index),
            "name": name,
            "description": f"Emulated project {name}",
            "clusterId": self.cluster_id,
            "parentId": self.department_id,
            "parent": {"id": self.department_id, "name": self.department_name},
            "requestedNamespace": None,
            "enforceRunaiScheduler": True,
            "status": {
                "namespace": f"runai-{name}",
                "phase": "Ready",
                "phaseMessage": "Project is ready",
                "lastUpdatedTime": created,
                "nodePoolQuotaStatuses": [],
            },
            "totalResources": {"gpuQuota": quota, "cpuQuota": None, "memoryQuota": None},
            "createdAt": created,
            "updatedAt": created,
            "createdBy": "emulator",
            "updatedBy": "emulator",
            "effective": {"defaultNodePools": ["default"]},
            "defaultNodePools": ["default"],
            "resources": [
                {
                    "nodePool": {"id": self.node_pool_id, "name": "default"},
                    "gpu": {"deserved": quota, "limit": -1, "overQuotaWeight": 2},
                    "cpu": {"deserved": None, "limit": None, "overQuotaWeight": None},
                    "memory": {
                        "deserved": None,
                        "limit": None,
                        "overQuotaWeight": None,
                        "units": "Mib",
                    },
                }
            ],
        }

    @staticmethod
    def _project_fields(p: dict) -> dict:
        return {
            "departmentId": p["parentId"],
            "parentName": p["parent"]["name"],
            "phase": p["status"]["phase"],
            "totalGpuQuota": p["totalResources"]["gpuQuota"],
        }

    # -- tokens -------------------------------------------------------------------------------
    def _b64(self, data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def issue_token(self, subject: str) -> tuple[str, int]:
        now = int(time.time())
        ttl = int(self.config.token_ttl)
        header = self._b64(
            json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode()
        )
        claims = {
            "iss": self.url or "runai-emulator",
            "sub": subject,
            "client_id": subject,
            "iat": now,
            "exp": now + ttl,
            "jti": str(uuid.uuid4()),
        }
        payload = self._b64(json.dumps(claims, separators=(",", ":")).encode())
        signing = f"{header}.{payload}".encode()
        signature = self._b64(hmac.new(self._jwt_key, signing, hashlib.sha256).digest())
        token = f"{header}.{payload}.{signature}"
        with self.lock:
            self.tokens[token] = (subject, time.time() + self.config.token_ttl)
        return token, ttl

    def authenticate(self, headers) -> str:
        value = headers.get("Authorization") or ""
        scheme, _, token = value.partition(" ")
        if not value:
            raise ApiError(401, "Unauthorized: the Authorization header is missing")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Unauthorized: expected 'Authorization: Bearer <token>'")
        with self.lock:
            entry = self.tokens.get(token.strip())
        if entry is None:
            raise ApiError(401, "Unauthorized: the token is invalid or was revoked")
        subject, expires = entry
        if time.time() >= expires:
            raise ApiError(401, "Unauthorized: the token has expired")
        return subject

    def expire_tokens(self) -> int:
        with self.lock:
            count = len(self.tokens)
            self.tokens = {t: (s, 0.0) for t, (s, _) in self.tokens.items()}
        return count

    # -- what the shared HTTP layer asks ----------------------------------------------------------
    def bound(self, host: str, port: int) -> None:
        self.url = f"http://{host}:{port}"

    def request_key(self, method: str, path: str) -> str:
        if KUBE_POD_LOG.match(path):
            return f"{method} {KUBE_POD_LOG_TEMPLATE}"
        route = self.spec.route(method, path)
        return f"{method} {route.template or path}"

    def respond(self, method, path, query, headers, body, too_large) -> Response:
        return self.handle(method, path, query, headers, body, too_large)[1]

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> ApiError:
        return ApiError(status, message, headers=headers)

    def fault_body(self, status: int, message: str) -> dict:
        return {"code": status, "message": message}

    def control_extra(self, method: str, path: str, body: bytes | None) -> Response | None:
        if path == "/_emulator/expire-tokens" and method == "POST":
            return Response(200, {"expired": self.expire_tokens()})
        return None

    # -- the API ------------------------------------------------------------------------------
    def handle(
        self,
        method: str,
        path: str,
        query_string: str,
        headers,
        body: bytes | None,
        too_large: bool,
    ) -> tuple[str, Response]:
        """Answer one ``/api`` request; returns the counter key and the response."""
        kube = KUBE_POD_LOG.match(path)
        if kube:
            key = f"{method} {KUBE_POD_LOG_TEMPLATE}"
            try:
                return key, self._pod_log(method, headers, kube.group(1), kube.group(2))
            except ApiError as e:
                return key, e.response()
        route = self.spec.route(method, path)
        key = f"{method} {route.template or path}"
        try:
            return key, self._handle(route, method, path, query_string, headers, body, too_large)
        except ApiError as e:
            return key, e.response()

    def _handle(self, route, method, path, query_string, headers, body, too_large) -> Response:
        if route.status == 404:
            raise ApiError(404, f"Not found: no API path matches {path}")
        if route.status == 405:
            allow = ", ".join(m.upper() for m in route.allowed)
            raise ApiError(
                405,
                f"Method {method} is not allowed on {route.template} (allowed: {allow})",
                headers={"Allow": allow},
            )
        if route.status == 501:
            raise ApiError(501, f"{method} {route.template} exists in Run:ai but is not emulated")
        creating = (
            method == "POST"
            and route.template.count("/") == 4
            and route.template.rsplit("/", 1)[-1] in KINDS
        )
        if too_large:
            raise ApiError(
                413, f"Request body too large: the limit is {MAX_BODY_BYTES} bytes", None, creating
            )
        subject = None
        if route.template != TOKEN_PATH:
            subject = self.authenticate(headers)
        issues = self.spec.check_path_params(route)
        query, query_issues = self.spec.parse_query(
            route, parse_qs(query_string, keep_blank_values=True)
        )
        issues += query_issues
        if issues:
            raise validation_error(issues, creating, "request parameters")
        payload: dict = {}
        schema = self.spec.request_schema(route)
        if schema is not None:
            if not body:
                raise ApiError(
                    400, "Invalid request: a JSON request body is required", None, creating
                )
            try:
                payload = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ApiError(
                    400, f"Invalid request: the body is not JSON: {e}", None, creating
                ) from e
            if route.template == TOKEN_PATH and self.config.lenient_token_keys:
                payload = lenient_token_payload(payload)
            issues = self.validator.validate(payload, schema)
            if issues:
                raise validation_error(issues, creating)
        parts = route.template.split("/")[3:]  # after /api/v1
        if route.template == TOKEN_PATH:
            return self._token(payload)
        if parts == ["org-unit", "projects"]:
            return self._list_projects(query)
        if parts == ["workloads"]:
            return self._list_workloads(query)
        if parts == ["workloads", "{workloadId}"]:
            w = self._find(route.params["workloadId"], None)
            return Response(200, self.workload_json(w))
        if parts == ["workloads", "{workloadId}", "pods"]:
            w = self._find(route.params["workloadId"], None)
            return Response(200, {"pods": self.pods_json(w)})
        kind = parts[1]
        if len(parts) == 2:
            return self._create(kind, payload, subject)
        w = self._find(route.params["workloadId"], kind)
        if len(parts) == 3 and method == "GET":
            return Response(200, self.workload_meta_json(w))
        if len(parts) == 3 and method == "DELETE":
            self.manager.delete(w)
            return Response(202, {"code": 202, "message": "Request has been accepted."})
        if parts[3] == "suspend":
            self.manager.suspend(w)
        else:
            self.manager.resume(w)
        return Response(202, {"code": 202, "message": "Request has been accepted."})

    def _find(self, workload_id: str, kind: str | None) -> Workload:
        w = self.manager.get(workload_id)
        if w is None or (kind is not None and w.kind != kind):
            what = KINDS[kind].lower() if kind else "workload"
            raise ApiError(404, f"Not found: no {what} with id {workload_id}")
        return w

    def _token(self, payload: dict) -> Response:
        grant = payload.get("grantType")
        if grant is None:
            raise validation_error([Issue("$.grantType", "required field is missing")], False)
        if grant == "client_credentials":
            ident, secret = payload.get("clientID"), payload.get("clientSecret")
            names = ("clientID", "clientSecret")
        elif grant == "app_token":
            ident, secret = payload.get("appID"), payload.get("appSecret")
            names = ("appID", "appSecret")
        else:
            raise ApiError(
                400,
                f"Invalid request: grantType {grant!r} is not supported by the emulator "
                "(use client_credentials or app_token)",
            )
        missing = [
            Issue(f"$.{n}", "required for this grantType")
            for n, v in zip(names, (ident, secret), strict=True)
            if not v
        ]
        if missing:
            raise validation_error(missing, False)
        ok_id = hmac.compare_digest(str(ident).encode(), self.config.client_id.encode())
        ok_secret = hmac.compare_digest(str(secret).encode(), self.config.client_secret.encode())
        if not (ok_id and ok_secret):
            raise ApiError(401, "Unauthorized: invalid client credentials")
        token, ttl = self.issue_token(str(ident))
        return Response(200, {"accessToken": token, "expiresIn": ttl})

    def _list_projects(self, query: dict) -> Response:
        records = [(p, self._project_fields(p)) for p in self.projects]
        records = self._filter(records, query, lambda p: p["name"])
        return Response(200, page([p for p, _ in records], query, "projects"))

    def _filter(self, records, query: dict, text_of) -> list:
        for expression in query.get("filterBy") or ():
            records = [(r, f) for r, f in records if filter_matches(r, f, expression)]
        search = query.get("search")
        if search:
            records = [(r, f) for r, f in records if search.lower() in text_of(r).lower()]
        return sort_records(records, query)

    def _list_workloads(self, query: dict) -> Response:
        deleted = query.get("deleted") is True
        items = [w for w in self.manager.all() if w.deleted == deleted]
        items.sort(key=lambda w: w.created_at)
        records = []
        for w in items:
            data = self.workload_json(w)
            fields = {"nodepool": ",".join(data.get("requestedNodePools") or [])}
            records.append((data, fields))
        records = self._filter(records, query, lambda d: d["name"])
        return Response(200, page([d for d, _ in records], query, "workloads"))

    # -- creation -----------------------------------------------------------------------------
    def _create(self, kind: str, body: dict, subject: str | None) -> Response:
        issues: list[Issue] = []
        project = self.projects_by_id.get(body["projectId"])
        if project is None:
            known = ", ".join(f"{p['id']} ({p['name']})" for p in self.projects)
            issues.append(
                Issue(
                    "$.projectId", f"project {body['projectId']!r} does not exist (known: {known})"
                )
            )
        elif body["clusterId"] != project["clusterId"]:
            issues.append(
                Issue(
                    "$.clusterId",
                    f"{body['clusterId']!r} is not the cluster of project {project['name']!r} "
                    f"({project['clusterId']})",
                )
            )
        if body.get("templateId") is not None:
            issues.append(Issue("$.templateId", f"no template {body['templateId']!r} exists"))
        requested = body["name"]
        name = requested
        if body.get("useGivenNameAsPrefix"):
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            name = f"{requested}-{suffix}"
        if not DNS1123_LABEL.match(name) or len(name) > 63:
            issues.append(
                Issue(
                    "$.name",
                    f"{name!r} is not a valid workload name: use at most 63 lowercase letters, "
                    "digits and '-', starting with a letter and ending with a letter or digit "
                    "(a Kubernetes DNS-1123 label)",
                )
            )
        spec = body.get("spec") or {}
        issues += self._check_spec(spec, "$.spec", require_image=True)
        if kind == "distributed" and body.get("masterSpec"):
            issues += self._check_spec(body["masterSpec"], "$.masterSpec", require_image=False)
        if issues or project is None:  # an unknown project is one of the issues
            raise validation_error(issues, True)
        with self.create_lock:
            if self.manager.name_taken(project["id"], name):
                raise ApiError(
                    409,
                    f"Conflict: a workload named {name!r} already exists in project "
                    f"{project['name']!r}",
                )
            w = Workload(
                id=self.manager.new_id(),
                kind=kind,
                name=name,
                requested_name=requested,
                project=project,
                created_by=subject or "",
                body=body,
            )
            self.manager.submit(w)
        return Response(202, self.workload_meta_json(w))

    @staticmethod
    def _check_spec(spec: dict, where: str, require_image: bool) -> list[Issue]:
        issues: list[Issue] = []
        if require_image and not spec.get("image"):
            issues.append(
                Issue(f"{where}.image", "the image name is mandatory for creating a workload")
            )
        args = spec.get("args")
        if isinstance(args, str) and len(args) > MAX_ARGS_CHARS:
            issues.append(
                Issue(
                    f"{where}.args",
                    f"is {len(args)} characters long; the service accepts at most {MAX_ARGS_CHARS}",
                )
            )
        for key in ("command", "args"):
            text = spec.get(key)
            if isinstance(text, str):
                try:
                    shlex.split(text)
                except ValueError as e:
                    issues.append(Issue(f"{where}.{key}", f"cannot be split into words: {e}"))
        for i, env in enumerate(spec.get("environmentVariables") or ()):
            if env and not env.get("exclude") and not env.get("name"):
                issues.append(Issue(f"{where}.environmentVariables[{i}].name", "is mandatory"))
        for i, pvc in enumerate((spec.get("storage") or {}).get("pvc") or ()):
            if pvc and not pvc.get("exclude") and not pvc.get("path"):
                issues.append(Issue(f"{where}.storage.pvc[{i}].path", "is mandatory"))
        return issues

    # -- rendering ----------------------------------------------------------------------------
    def workload_meta_json(self, w: Workload) -> dict:
        """The ``Training1`` / ``DistributedWorkload`` / ``Workspace1`` object."""
        out: dict[str, Any] = {
            "name": w.name,
            "requestedName": w.requested_name,
            "workloadId": w.id,
            "projectId": w.project["id"],
            "departmentId": self.department_id,
            "clusterId": w.project["clusterId"],
            "createdBy": w.created_by,
            "createdAt": now_iso(w.created_at),
            "deletedAt": now_iso(w.deleted_at) if w.deleted_at else None,
            "desiredPhase": w.desired_phase,
            "actualPhase": w.phase,
            "spec": w.body.get("spec") or {},
        }
        if w.kind == "distributed":
            for key in ("masterSpecSameAsWorker", "masterSpec"):
                if key in w.body:
                    out[key] = w.body[key]
        return out

    def workload_json(self, w: Workload) -> dict:
        """The ``Workload`` object of ``GET /api/v1/workloads``."""
        spec = w.spec
        priority, priority_class, category = TYPE_DEFAULTS[w.kind]
        project = w.project
        phase_ts = now_iso(w.phase_updated_at)
        env = {
            e["name"]: e.get("value") or ""
            for e in spec.get("environmentVariables") or ()
            if e and e.get("name") and not e.get("exclude")
        }
        out: dict[str, Any] = {
            "tenantId": TENANT_ID,
            "type": KINDS[w.kind],
            "name": w.name,
            "id": w.id,
            "source": "Control-plane",
            "priority": priority,
            "priorityClassName": spec.get("priorityClass") or priority_class,
            "submittedBy": w.created_by,
            "clusterId": project["clusterId"],
            "projectName": project["name"],
            "projectId": project["id"],
            "departmentName": self.department_name,
            "departmentId": self.department_id,
            "namespace": project["status"]["namespace"],
            "createdAt": now_iso(w.created_at),
            "phase": w.phase,
            "conditions": self._conditions(w),
            "k8sPhase": PHASE_TO_K8S.get(w.phase, "Unknown"),
            "runningPods": w.running_pods(),
            "phaseUpdatedAt": phase_ts,
            "k8sPhaseUpdatedAt": phase_ts,
            "updatedAt": phase_ts,
            "deletedAt": now_iso(w.deleted_at) if w.deleted_at else None,
            "completedAt": now_iso(w.completed_at) if w.completed_at else None,
            "category": spec.get("category") or category,
            "requestedPods": {"number": w.replica_count()},
            "requestedNodePools": list(spec.get("nodePools") or ["default"]),
            "currentNodePools": ["default"] if w.phase == "Running" else [],
            "images": [spec["image"]] if spec.get("image") else [],
            "environmentVariables": env,
            "actionsSupport": {"delete": True, "suspend": True},
            "preemptible": spec.get("preemptibility", "preemptible") != "non-preemptible",
        }
        if w.phase_message:
            out["phaseMessage"] = w.phase_message
        if spec.get("command"):
            out["command"] = spec["command"]
        if spec.get("args"):
            out["arguments"] = spec["args"]
        if w.kind == "distributed":
            out["distributedFramework"] = spec.get("distributedFramework") or "PyTorch"
        return out

    def pods_json(self, w: Workload) -> list[dict]:
        """The ``Pod1`` objects of a workload's replicas (none before they start)."""
        out = []
        for replica in list(w.replicas):
            running = replica.exit_code() is None
            phase = "Running" if running else "Succeeded" if replica.exit_code() == 0 else "Failed"
            ts = now_iso(w.phase_updated_at)
            out.append(
                {
                    "name": pod_name(w.name, w.kind, w.body, replica.rank),
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{w.id}/{replica.rank}")),
                    "workloadId": w.id,
                    "clusterId": w.project["clusterId"],
                    "projectId": w.project["id"],
                    "priorityClassName": TYPE_DEFAULTS[w.kind][1],
                    "createdAt": now_iso(w.created_at),
                    "containers": [{"name": "main", "image": w.spec.get("image") or ""}],
                    "k8sPhase": phase,
                    "tenantId": TENANT_ID,
                    "k8sPhaseUpdatedAt": ts,
                    "updatedAt": ts,
                }
            )
        return out

    def _pod_log(self, method: str, headers, namespace: str, pod: str) -> Response:
        """``GET /api/v1/namespaces/{namespace}/pods/{pod}/log`` of the cluster's Kubernetes
        API server (the emulator serves it too, with Run:ai's tokens): the replica's log."""
        if method != "GET":
            raise ApiError(405, f"Method {method} is not allowed on {KUBE_POD_LOG_TEMPLATE}")
        self.authenticate(headers)
        for w in self.manager.all():
            if w.project["status"]["namespace"] != namespace:
                continue
            for replica in list(w.replicas):
                if pod_name(w.name, w.kind, w.body, replica.rank) == pod:
                    path = self.manager.log_dir(w.id) / f"{replica.rank}.log"
                    data = path.read_bytes() if path.exists() else b""
                    return Response(200, stream=iter([data] if data else []))
        raise ApiError(404, f'pods "{pod}" not found in namespace "{namespace}"')

    @staticmethod
    def _conditions(w: Workload) -> list[dict]:
        ts = now_iso(w.phase_updated_at)
        if w.phase == "Failed":
            return [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "PodFailed",
                    "message": w.phase_message or "",
                    "lastTransitionTime": ts,
                }
            ]
        if w.phase in ("Running", "Completed", "Stopped"):
            return [{"type": w.phase, "status": "True", "lastTransitionTime": ts}]
        return []

    def state(self) -> dict:
        workloads = []
        for w in sorted(self.manager.all(), key=lambda w: w.created_at):
            workloads.append(
                {
                    "id": w.id,
                    "name": w.name,
                    "requestedName": w.requested_name,
                    "type": KINDS[w.kind],
                    "kind": w.kind,
                    "phase": w.phase,
                    "desiredPhase": w.desired_phase,
                    "phaseMessage": w.phase_message,
                    "phases": [[p, now_iso(t)] for p, t in list(w.phases)],
                    "projectId": w.project["id"],
                    "createdAt": now_iso(w.created_at),
                    "deleted": w.deleted,
                    "deletedAt": now_iso(w.deleted_at) if w.deleted_at else None,
                    "mode": w.mode,
                    "logDir": str(self.manager.log_dir(w.id)),
                    "replicas": [r.describe() for r in list(w.replicas)],
                }
            )
        with self.lock:
            return {
                "url": self.url,
                "mode": self.config.mode,
                "dataDir": str(self.config.data_dir),
                "clusterId": self.cluster_id,
                "projects": [{"id": p["id"], "name": p["name"]} for p in self.projects],
                "workloads": workloads,
                "requests": dict(self.requests),
                "responses": dict(self.responses),
                "faults": [r.to_json() for r in self.faults],
                "tokens": len(self.tokens),
            }

    def shutdown(self) -> None:
        self.manager.shutdown()


# ---------------------------------------------------------------------------------------------
# HTTP


class Handler(http.Handler):
    server_version = "RunaiEmulator/1.0"


EmulatorHTTPServer = http.EmulatorHTTPServer


def make_server(config: Config, host: str = "127.0.0.1", port: int = 0) -> EmulatorHTTPServer:
    """Build (but do not start) an emulator server; ``server.emulator.url`` is its address."""
    return EmulatorHTTPServer((host, port), Emulator(config), Handler)
