"""An HTTP emulator of the DGX Cloud Lepton workspace API (the part the leptonai SDK v2 uses).

The SDK's ``APIClient`` sends every request to ``<workspace url><path>``; the workspace URL
(``LEPTON_WORKSPACE_URL``, ``url=``) is ``http://<host>:<port>/api/v2/workspaces/<ws>``, as
the real one is ``https://gateway.dgxc-lepton.nvidia.com/api/v2/workspaces/<ws>``. Served
below it (every route needs ``Authorization: Bearer <token>``; 401 otherwise; an unknown
workspace id is 404):

* ``GET /workspace``: ``WorkspaceInfo`` (``client.info()``).
* ``GET /jobs`` (``job_query_mode``, ``q``, ``query``, ``status``, ``node_groups``,
  ``created_by``, ``page``, ``page_size``) -> ``{"jobs": [...], "total", "page",
  "page_size"}`` (newest first), or a bare array of jobs when neither ``page`` nor
  ``page_size`` is given (``JobAPI.list_all`` always pages, ``list_matching`` never does);
  ``POST /jobs`` (a ``LeptonJob``) -> the job; ``GET /jobs/{id}`` (``job_query_mode``);
  ``PATCH /jobs/{id}`` (a partial ``LeptonJob``; ``spec.stopped`` true stops, false restarts);
  ``DELETE /jobs/{id}``.
* ``GET /jobs/{id}/replicas`` -> ``[Replica]``; ``GET /jobs/{id}/replicas/{rid}/log`` ->
  the replica's output as ``text/plain``, streamed (chunked) until the replica exits
  (``follow=false``: what is there now); ``GET /jobs/{id}/events`` -> ``[LeptonEvent]``.
* ``GET /dedicated-node-groups``, ``GET /dedicated-node-groups/{id}``,
  ``GET /dedicated-node-groups/{id}/nodes`` (``idle=true``: nodes without running replicas).
* ``GET/POST /usersecrets``, ``DELETE /usersecrets/{name}`` (values are never returned;
  ``envs[].value_from.secret_name_ref`` resolves to the stored value).
* ``GET /logs`` (``job``, ``replica``, ``start``, ``end``, ``limit``, ``direction``): the
  Loki-shaped ``{"data": {"result": [{"stream": {...}, "values": [[ns, line]]}]}}``; line
  times are the replica's start plus the line number in nanoseconds.

Request bodies over 1.5 MiB get 413. Bodies are validated strictly with the SDK's own models
(see ``validate.py``): 400 naming the JSON path. Job names (``metadata.id``, else
``metadata.name``) follow the SDK's rules (``^[a-z][a-z0-9-]*$``, at most 36 characters, ...);
a name used by a job not yet deleted is 409. The job id is the name plus ``-`` and 4 random
characters, as Lepton assigns it, so clients must use the id the create call returns.

Outside the API, for tests (no auth): ``/_emulator/faults`` (POST rules, GET, DELETE; rules
as the Run:ai emulator's: ``{"match": {"method", "path_prefix"}, "count", "action":
{"status" | "retry_after" | "delay" | "drop" | "delay_after_commit" |
"drop_after_commit" | "body"}}``; ``path_prefix`` matches the full path or the path below the
workspace URL, e.g. ``/jobs``), ``GET /_emulator/state``, ``POST /_emulator/reset``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import posixpath
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from leptonai.api.v2.job_validation import (
    validate_job_name,
    validate_label_key,
    validate_mount_path,
)
from leptonai.api.v2.spec_utils import validate_environment_variable_name
from leptonai.api.v2.types.job import LeptonJob, LeptonJobQueryMode, LeptonJobState
from leptonai.api.v2.types.secret import SecretItem

from nemo_run.testing.common import http
from nemo_run.testing.common.http import MAX_BODY_BYTES, EmulatorBase, Response
from nemo_run.testing.lepton.jobs import Job, JobManager, random_suffix
from nemo_run.testing.lepton.validate import Issue, json_path, parse_strict, unknown_fields

API_PREFIX = "/api/v2/workspaces/"
QUERY_MODES = {m.value for m in LeptonJobQueryMode}
JOB_STATES = {s.value for s in LeptonJobState}
USER = "emulator@example.com"
ERROR_CODES = {400: "InvalidParameter", 404: "NotFound", 405: "MethodNotAllowed"}

# (template below the workspace URL, methods)
ROUTES: list[tuple[str, tuple[str, ...]]] = [
    ("/workspace", ("GET",)),
    ("/jobs", ("GET", "POST")),
    ("/jobs/{job_id}", ("GET", "PATCH", "DELETE")),
    ("/jobs/{job_id}/replicas", ("GET",)),
    ("/jobs/{job_id}/replicas/{replica_id}/log", ("GET",)),
    ("/jobs/{job_id}/events", ("GET",)),
    ("/dedicated-node-groups", ("GET",)),
    ("/dedicated-node-groups/{node_group_id}", ("GET",)),
    ("/dedicated-node-groups/{node_group_id}/nodes", ("GET",)),
    ("/usersecrets", ("GET", "POST")),
    ("/usersecrets/{secret_name}", ("DELETE",)),
    ("/logs", ("GET",)),
]
_COMPILED = [
    (t, methods, re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", t) + "$"))
    for t, methods in ROUTES
]


@dataclass
class Config:
    token: str = "emulator-token"
    workspace_id: str = "emuws"
    data_dir: Path = Path("/tmp/lepton-emulator")
    mode: str = "auto"
    node_groups: list[tuple[str, int]] = field(default_factory=lambda: [("nemo-nodes", 2)])
    phase_delay: float = 0.05
    stop_grace: float = 2.0
    torch_env: bool = False  # Lepton sets only LEPTON_* variables
    verbose: bool = False


class ApiError(http.EmulatorError):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.issues = issues or []
        self.headers = headers or {}

    def response(self) -> Response:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.issues:
            body["errors"] = [i.to_json() for i in self.issues]
        return Response(self.status, body, dict(self.headers))


def invalid(issues: list[Issue], what: str) -> ApiError:
    shown = "; ".join(str(i) for i in issues[:20])
    more = f" (and {len(issues) - 20} more)" if len(issues) > 20 else ""
    return ApiError(400, "InvalidParameter", f"invalid {what}: {shown}{more}", issues)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def short_hash(text: str, n: int = 4) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def deep_merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# The emulator


class Emulator(EmulatorBase):
    api_error = ApiError
    framing_error_body = {"code": "InvalidParameter", "message": "bad body framing"}
    manager: JobManager

    def __init__(self, config: Config):
        self.config = config
        self.init_common()
        self.create_lock = threading.Lock()
        self.started_at = time.time()
        self.secrets: dict[str, str] = {}
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.manager = JobManager(
            config.data_dir,
            config.workspace_id,
            config.mode,
            config.phase_delay,
            config.stop_grace,
            config.torch_env,
            self.secrets,
        )
        self.node_groups = [self._node_group(name, count) for name, count in config.node_groups]
        self.origin = ""

    @property
    def base(self) -> str:
        return API_PREFIX + self.config.workspace_id

    @property
    def url(self) -> str:
        return self.origin + self.base

    # -- node groups ---------------------------------------------------------------------------
    def _node_group(self, name: str, count: int) -> dict:
        gid = f"{name}-{short_hash(name)}"
        nodes = []
        for i in range(count):
            nid = f"node-{short_hash(gid + str(i), 8)}"
            nodes.append({"id": nid, "name": f"{name}-{i}", "group": gid})
        return {"id": gid, "name": name, "nodes": nodes}

    def _find_group(self, gid: str) -> dict:
        for g in self.node_groups:
            if g["id"] == gid:
                return g
        known = ", ".join(f"{g['id']} ({g['name']})" for g in self.node_groups)
        raise ApiError(
            404, "NotFound", f"dedicated node group {gid!r} not found (known ids: {known})"
        )

    def group_json(self, g: dict) -> dict:
        created = int(self.started_at * 1000)
        n = len(g["nodes"])
        return {
            "metadata": {
                "id": g["id"],
                "name": g["name"],
                "created_at": created,
                "version": 1,
                "owner": "customer",
            },
            "spec": {
                "workspaces": [self.config.workspace_id],
                "allocation_mode": "static",
                "owner": "customer",
                "gpu_product": "NVIDIA-EMULATED",
                "desired_nodes": n,
            },
            "status": {"ready_nodes": n, "quota_enabled": False},
        }

    def node_json(self, g: dict, node: dict) -> dict:
        workloads = []
        for job in self.manager.all():
            if job.deleted:
                continue
            for r in list(job.replicas):
                if r.node.get("id") == node["id"] and r.exit_code() is None:
                    workloads.append(
                        {
                            "type": "job",
                            "name": job.name,
                            "id": job.id,
                            "replica_id": r.id,
                            "workspace": self.config.workspace_id,
                        }
                    )
        return {
            "metadata": {"id": node["id"], "name": node["name"]},
            "spec": {
                "dedicated_node_group": g["id"],
                "hostname": node["name"],
                "unschedulable": False,
                "resource": {
                    "cpu": {"type": "x86_64", "total": 64.0, "allocated": 0.0},
                    "gpu": {"product": "NVIDIA-EMULATED", "total": 8.0, "allocated": 0.0},
                    "memory": {"total": 512 * 1024, "allocated": 0},
                },
            },
            "status": {"status": ["Ready"], "hostname": node["name"], "workloads": workloads},
        }

    # -- auth ------------------------------------------------------------------
    def authenticate(self, headers) -> None:
        value = headers.get("Authorization") or ""
        scheme, _, token = value.partition(" ")
        if not value:
            raise ApiError(401, "Unauthorized", "the Authorization header is missing")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Unauthorized", "expected 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(token.strip().encode(), self.config.token.encode()):
            raise ApiError(401, "Unauthorized", "invalid workspace token")

    # -- what the shared HTTP layer asks ----------------------------------------------------------
    def bound(self, host: str, port: int) -> None:
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        self.origin = f"http://{host}:{port}"

    def request_key(self, method: str, path: str) -> str:
        return self.route(method, path)[0]

    def respond(self, method, path, query, headers, body, too_large) -> Response:
        return self.handle(method, path, query, headers, body, too_large)

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> ApiError:
        return ApiError(status, ERROR_CODES[status], message, headers=headers)

    def fault_body(self, status: int, message: str) -> dict:
        return {"code": "InjectedFault", "message": message}

    def fault_paths(self, path: str) -> tuple[str, ...]:
        """The full path, and the path below the workspace URL (``/jobs``) when it is there."""
        if path.startswith(self.base + "/"):
            return (path, path[len(self.base) :])
        return (path,)

    def reset_extra(self) -> None:
        self.secrets.clear()

    # -- routing ---------------------------------------------------------------------------------
    def route(self, method: str, path: str) -> tuple[str, str | None, dict, tuple[str, ...]]:
        """(counter key, template or None, path params, allowed methods)."""
        if not path.startswith(API_PREFIX):
            return f"{method} {path}", None, {}, ()
        rest = path[len(API_PREFIX) :]
        ws, _, below = rest.partition("/")
        below = "/" + below.rstrip("/") if below else ""
        for template, methods, pattern in _COMPILED:
            m = pattern.match(below)
            if m:
                params = {"workspace_id": ws, **m.groupdict()}
                full = API_PREFIX + "{workspace_id}" + template
                return f"{method} {full}", template, params, methods
        return f"{method} {path}", None, {"workspace_id": ws}, ()

    def handle(
        self, method: str, path: str, query: str, headers, body: bytes | None, too_large: bool
    ) -> Response:
        try:
            return self._handle(method, path, query, headers, body, too_large)
        except ApiError as e:
            return e.response()

    def _handle(self, method, path, query_string, headers, body, too_large) -> Response:
        _, template, params, methods = self.route(method, path)
        if template is None:
            raise ApiError(404, "NotFound", f"no API path matches {path}")
        if method not in methods:
            allow = ", ".join(methods)
            raise ApiError(
                405,
                "MethodNotAllowed",
                f"{method} is not allowed on {template} (allowed: {allow})",
                headers={"Allow": allow},
            )
        if too_large:
            raise ApiError(
                413, "RequestEntityTooLarge", f"request body over {MAX_BODY_BYTES} bytes"
            )
        self.authenticate(headers)
        if params["workspace_id"] != self.config.workspace_id:
            raise ApiError(404, "NotFound", f"workspace {params['workspace_id']!r} not found")
        query = parse_qs(query_string, keep_blank_values=True)
        payload = None
        if method in ("POST", "PATCH", "PUT"):
            if not body:
                raise ApiError(400, "InvalidParameter", "a JSON request body is required")
            try:
                payload = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ApiError(400, "InvalidParameter", f"the body is not JSON: {e}") from e
        key = (method, template)
        if key == ("GET", "/workspace"):
            return Response(200, self.workspace_json())
        if key == ("GET", "/jobs"):
            return self._list_jobs(query)
        if key == ("POST", "/jobs"):
            return self._create_job(payload)
        if template.startswith("/jobs/"):
            job = self._find_job(params["job_id"], query)
            if key == ("GET", "/jobs/{job_id}"):
                return Response(200, self.job_json(job))
            if key == ("PATCH", "/jobs/{job_id}"):
                return self._patch_job(job, payload)
            if key == ("DELETE", "/jobs/{job_id}"):
                self.manager.delete(job)
                return Response(200)
            if template == "/jobs/{job_id}/replicas":
                return Response(200, [self.replica_json(job, r) for r in list(job.replicas)])
            if template == "/jobs/{job_id}/events":
                return Response(200, [self.event_json(job, e) for e in list(job.events)])
            return self._replica_log(job, params["replica_id"], query)
        if template == "/dedicated-node-groups":
            return Response(200, [self.group_json(g) for g in self.node_groups])
        if template.startswith("/dedicated-node-groups/"):
            group = self._find_group(params["node_group_id"])
            if template.endswith("/nodes"):
                nodes = [self.node_json(group, n) for n in group["nodes"]]
                if _flag(query, "idle"):
                    nodes = [n for n in nodes if not n["status"]["workloads"]]
                return Response(200, nodes)
            return Response(200, self.group_json(group))
        if template == "/usersecrets":
            if method == "GET":
                with self.lock:
                    names = sorted(self.secrets)
                return Response(200, [{"name": n, "owner": USER} for n in names])
            return self._create_secrets(payload)
        if template == "/usersecrets/{secret_name}":
            with self.lock:
                if self.secrets.pop(params["secret_name"], None) is None:
                    raise ApiError(404, "NotFound", f"secret {params['secret_name']!r} not found")
            return Response(200)
        return self._logs(query)

    # -- jobs ------------------------------------------------------------------------------------
    def _find_job(self, job_id: str, query: dict) -> Job:
        mode = _one(query, "job_query_mode") or LeptonJobQueryMode.AliveAndArchive.value
        if mode not in QUERY_MODES:
            raise invalid(
                [Issue("job_query_mode", f"must be one of {sorted(QUERY_MODES)}")], "query"
            )
        job = self.manager.get(job_id)
        if job is not None and not _mode_matches(mode, job):
            job = None
        if job is None:
            raise ApiError(404, "NotFound", f"job {job_id!r} not found")
        return job

    def _list_jobs(self, query: dict) -> Response:
        issues = []
        mode = _one(query, "job_query_mode") or LeptonJobQueryMode.AliveOnly.value
        if mode not in QUERY_MODES:
            issues.append(Issue("job_query_mode", f"must be one of {sorted(QUERY_MODES)}"))
        statuses = query.get("status") or []
        for s in statuses:
            if s not in JOB_STATES:
                issues.append(Issue("status", f"{s!r} is not a job state"))
        paging = {}
        for name in ("page", "page_size"):
            raw = _one(query, name)
            if raw is not None:
                if not raw.isdigit() or int(raw) < 1:
                    issues.append(Issue(name, "must be a positive integer"))
                else:
                    paging[name] = int(raw)
        if issues:
            raise invalid(issues, "query")
        jobs = [j for j in self.manager.all() if not j.deleted and _mode_matches(mode, j)]
        q = _one(query, "q")
        if q:
            jobs = [j for j in jobs if q in j.name or q in j.id]
        selector = _one(query, "query")
        if selector:
            jobs = [j for j in jobs if _labels_match(j.metadata.get("labels") or {}, selector)]
        if statuses:
            jobs = [j for j in jobs if j.state in statuses]
        groups = query.get("node_groups") or []
        if groups:
            jobs = [
                j
                for j in jobs
                if set(groups)
                & set((j.spec.get("affinity") or {}).get("allowed_dedicated_node_groups") or [])
            ]
        creator = _one(query, "created_by")
        if creator:
            jobs = [j for j in jobs if j.metadata.get("created_by") == creator]
        jobs.sort(key=lambda j: j.created_at, reverse=True)
        if not paging:  # the unpaged form: a bare array (what JobAPI.list_matching parses)
            return Response(200, [self.job_json(j) for j in jobs])
        total = len(jobs)
        size = paging.get("page_size", 50)
        page = paging.get("page", 1)
        chunk = jobs[(page - 1) * size : page * size]
        body = {"jobs": [self.job_json(j) for j in chunk], "total": total}
        return Response(200, {**body, "page": page, "page_size": size})

    def _job_issues(self, job: LeptonJob, spec: dict) -> list[Issue]:
        """The SDK's own create-time checks (``validate_job_create``), with JSON paths."""
        issues: list[Issue] = []
        md = job.metadata
        where, name = (
            ("$.metadata.id", md.id_) if md.id_ is not None else ("$.metadata.name", md.name)
        )
        checks: list[tuple[str, Any, Any]] = [(where, validate_job_name, name or "")]
        for i, env in enumerate(job.spec.envs or ()):
            checks.append((f"$.spec.envs[{i}].name", validate_environment_variable_name, env.name))
        for i, mount in enumerate(job.spec.mounts or ()):
            checks.append((f"$.spec.mounts[{i}].mount_path", validate_mount_path, mount.mount_path))
        for key in md.labels or {}:
            checks.append((f"$.metadata.labels.{key}", validate_label_key, key))
        for path, check, value in checks:
            try:
                check(value)
            except ValueError as e:
                issues.append(Issue(path, str(e)))
        for name in ("completions", "parallelism"):
            value = getattr(job.spec, name)
            if value is not None and value <= 0:
                issues.append(Issue(f"$.spec.{name}", "must be a positive integer"))
        for i, mount in enumerate(job.spec.mounts or ()):
            rel = posixpath.normpath("/" + (mount.path or "")).lstrip("/")
            if ".." in (mount.path or "").split("/") or rel.startswith(".."):
                issues.append(Issue(f"$.spec.mounts[{i}].path", "must not contain '..'"))
            if "/" in mount.from_ or mount.from_ in (".", ".."):
                issues.append(Issue(f"$.spec.mounts[{i}].from", "is not a volume name"))
        for i, env in enumerate(job.spec.envs or ()):
            if env.value is not None and env.value_from is not None:
                issues.append(
                    Issue(f"$.spec.envs[{i}]", "set either value or value_from, not both")
                )
        command = (spec.get("container") or {}).get("command")
        if command is not None and not command:
            issues.append(Issue("$.spec.container.command", "must not be an empty list"))
        affinity = job.spec.affinity
        if affinity is not None:
            known = {g["id"]: g for g in self.node_groups}
            for i, gid in enumerate(affinity.allowed_dedicated_node_groups or ()):
                if gid not in known:
                    issues.append(
                        Issue(
                            f"$.spec.affinity.allowed_dedicated_node_groups[{i}]",
                            f"no dedicated node group with id {gid!r} (known: {sorted(known)})",
                        )
                    )
            allowed = [
                n["id"]
                for gid in (affinity.allowed_dedicated_node_groups or known)
                if gid in known
                for n in known[gid]["nodes"]
            ]
            for i, nid in enumerate(affinity.allowed_nodes_in_node_group or ()):
                if nid not in allowed:
                    issues.append(
                        Issue(
                            f"$.spec.affinity.allowed_nodes_in_node_group[{i}]",
                            f"node {nid!r} is not in the allowed node groups",
                        )
                    )
        return issues

    def _placement(self, spec: dict) -> list[dict[str, str]]:
        affinity = spec.get("affinity") or {}
        groups = [
            g
            for g in self.node_groups
            if g["id"] in (affinity.get("allowed_dedicated_node_groups") or ())
        ]
        groups = groups or self.node_groups[:1]
        nodes = [n for g in groups for n in g["nodes"]]
        wanted = affinity.get("allowed_nodes_in_node_group")
        if wanted:
            nodes = [n for n in nodes if n["id"] in wanted] or nodes
        return [{"id": n["id"], "name": n["name"]} for n in nodes]

    def _create_job(self, payload: Any) -> Response:
        model, issues = parse_strict(LeptonJob, payload)
        if model is None:
            raise invalid(issues, "job")
        spec = model.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        issues = self._job_issues(model, spec)
        if issues:
            raise invalid(issues, "job")
        md = model.metadata
        name = md.id_ if md.id_ is not None else md.name
        metadata = md.model_dump(mode="json", by_alias=True, exclude_none=True)
        with self.create_lock:
            if self.manager.name_taken(name):
                raise ApiError(409, "AlreadyExists", f"a job named {name!r} already exists")
            job_id = f"{name}-{random_suffix(4)}"
            now = int(time.time() * 1000)
            metadata.update(
                id=job_id,
                name=name,
                created_at=now,
                last_modified_at=now,
                version=1,
                created_by=USER,
                last_modified_by=USER,
                owner=USER,
            )
            metadata.setdefault("visibility", "private")
            job = Job(job_id, name, metadata, spec, self._placement(spec))
            self.manager.submit(job)
        return Response(200, self.job_json(job))

    def _patch_job(self, job: Job, payload: Any) -> Response:
        if not isinstance(payload, dict):
            raise invalid([Issue("$", "must be a JSON object")], "job update")
        issues = unknown_fields(LeptonJob, payload)
        md_patch = payload.get("metadata") or {}
        if not isinstance(md_patch, dict):
            raise invalid([Issue("$.metadata", "must be a JSON object")], "job update")
        for key in ("id", "name"):
            if key in md_patch and md_patch[key] not in (job.id, job.name):
                issues.append(Issue(f"$.metadata.{key}", "cannot be changed"))
        if issues:
            raise invalid(issues, "job update")
        with job.lock:
            if job.state == "Deleting":
                raise ApiError(409, "Conflict", f"job {job.id!r} is being deleted")
            spec_patch = payload.get("spec") or {}
            merged_spec = (
                deep_merge(job.spec, spec_patch) if isinstance(spec_patch, dict) else spec_patch
            )
            md = {k: v for k, v in md_patch.items() if k in ("labels", "visibility")}
            merged = {"metadata": {"id": job.name, **md}, "spec": merged_spec}
            model, issues = parse_strict(LeptonJob, merged)
            if model is None:
                raise invalid(issues, "job update")
            spec = model.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
            issues = self._job_issues(model, spec)
            if issues:
                raise invalid(issues, "job update")
            job.spec = spec
            job.nodes = self._placement(spec)  # used by the next (re)start
            job.metadata.update({k: v for k, v in md.items()})
            job.metadata["last_modified_at"] = int(time.time() * 1000)
            job.metadata["version"] = int(job.metadata.get("version") or 1) + 1
        stopped = spec_patch.get("stopped") if isinstance(spec_patch, dict) else None
        if stopped is True:
            self.manager.stop(job)
        elif stopped is False:
            self.manager.restart(job)
        return Response(200, self.job_json(job))

    def job_json(self, job: Job) -> dict:
        counts = job.counts()
        status = {
            "job_name": job.name,
            "state": job.state,
            **counts,
            "creation_time": int(job.created_at),
            "job_history": [],
        }
        if job.completion_time is not None:
            status["completion_time"] = int(job.completion_time)
        return {"metadata": dict(job.metadata), "spec": dict(job.spec), "status": status}

    def replica_json(self, job: Job, r) -> dict:
        subdomain = f"{job.id}-job-svc"
        return {
            "metadata": {
                "id": r.id,
                "name": r.id,
                "created_at": int(r.started_at * 1000),
            },
            "id": r.id,
            "status": {
                "node": {"name": r.node.get("name", ""), "id": r.node.get("id", "")},
                "domains": [{"name": f"worker-{r.index}.{subdomain}"}],
            },
        }

    def event_json(self, job: Job, e: dict) -> dict:
        return {
            "type": e["type"],
            "reason": e["reason"],
            "message": e["message"],
            "count": e["count"],
            "last_observed_time": iso(e["ts"]),
            "regarding": {"kind": "LeptonJob", "name": job.id},
        }

    def _replica_log(self, job: Job, replica_id: str, query: dict) -> Response:
        record = next((r for r in list(job.replicas) if r.id == replica_id), None)
        if record is None:
            raise ApiError(404, "NotFound", f"replica {replica_id!r} of job {job.id!r} not found")
        follow = _one(query, "follow") not in ("false", "0", "no")

        def stream() -> Iterator[bytes]:
            with open(record.log_path, "rb") as f:
                while True:
                    done = record.exit_code() is not None or job.deleted or not follow
                    data = f.read(1 << 16)
                    while data:
                        yield data
                        data = f.read(1 << 16)
                    if done:
                        return
                    time.sleep(0.05)

        return Response(200, stream=stream())

    def _logs(self, query: dict) -> Response:
        issues = []
        numbers = {}
        for name in ("start", "end", "limit"):
            raw = _one(query, name)
            if raw is not None:
                try:
                    numbers[name] = int(raw)
                except ValueError:
                    issues.append(Issue(name, "must be an integer"))
        direction = _one(query, "direction") or "backward"
        if direction not in ("forward", "backward"):
            issues.append(Issue("direction", "must be forward or backward"))
        if issues:
            raise invalid(issues, "query")
        job_id, replica_id = _one(query, "job"), _one(query, "replica")
        entries: list[tuple[int, dict, str]] = []
        jobs = [j for j in self.manager.all() if not j.deleted]
        if job_id:
            jobs = [j for j in jobs if j.id == job_id]
        for job in jobs:
            for r in list(job.replicas):
                if replica_id and r.id != replica_id:
                    continue
                labels = {"job": job.id, "replica": r.id}
                try:
                    lines = r.log_path.read_text(errors="replace").splitlines()
                except OSError:
                    continue
                base = int(r.started_at * 1e9)
                for i, line in enumerate(lines):
                    entries.append((base + i, labels, line))
        start, end = numbers.get("start"), numbers.get("end")
        entries = [
            e for e in entries if (start is None or e[0] >= start) and (end is None or e[0] < end)
        ]
        entries.sort(key=lambda e: e[0], reverse=direction == "backward")
        entries = entries[: numbers.get("limit", 5000)]
        streams: dict[tuple, dict] = {}
        for ts, labels, line in entries:
            key = tuple(sorted(labels.items()))
            streams.setdefault(key, {"stream": labels, "values": []})["values"].append(
                [str(ts), line]
            )
        return Response(
            200,
            {
                "status": "success",
                "data": {"resultType": "streams", "result": list(streams.values())},
            },
        )

    # -- other resources -----------------------------------------------------------------------------
    def _create_secrets(self, payload: Any) -> Response:
        if not isinstance(payload, list):
            raise invalid([Issue("$", "must be a JSON array of secrets")], "secrets")
        issues: list[Issue] = []
        items: list[Any] = []
        for i, raw in enumerate(payload):
            model, found = parse_strict(SecretItem, raw)
            issues += [Issue(f"$[{i}]" + x.path[1:], x.message) for x in found]
            if model is not None:
                try:
                    validate_environment_variable_name(model.name, is_secret=True)
                except ValueError as e:
                    issues.append(Issue(f"$[{i}].name", str(e)))
                if model.value is None:
                    issues.append(Issue(f"$[{i}].value", "is required"))
                items.append(model)
        if issues:
            raise invalid(issues, "secrets")
        with self.lock:
            for item in items:
                self.secrets[item.name] = item.value or ""
        return Response(200)

    def workspace_json(self) -> dict:
        jobs = [j for j in self.manager.all() if not j.deleted]
        return {
            "build_time": iso(self.started_at),
            "git_commit": "lepton-emulator",
            "workspace_name": self.config.workspace_id,
            "workspace_tier": "enterprise",
            "workspace_state": "normal",
            "supported_shapes": {
                "cpu.small": {"description": "1 CPU", "cpu": 1.0, "memory": 4096},
                "gpu.1xh100-80gb": {
                    "cpu": 16.0,
                    "memory": 65536,
                    "accelerator_type": "NVIDIA-H100-80GB",
                    "accelerator_num": 1.0,
                },
                "gpu.8xh100-80gb": {
                    "cpu": 128.0,
                    "memory": 1048576,
                    "accelerator_type": "NVIDIA-H100-80GB",
                    "accelerator_num": 8.0,
                },
            },
            "workspace_disk_usage_bytes": 0,
            "workloads": {
                "num_deployments": 0,
                "num_jobs": len(jobs),
                "num_pods": 0,
                "num_secrets": len(self.secrets),
                "num_image_pull_secrets": 0,
            },
            "resource_quota": {
                "limit": {"cpu": 1024.0, "memory": 8 << 20, "accelerator_num": 64.0},
                "used": {"cpu": 0.0, "memory": 0, "accelerator_num": 0.0},
            },
            "dedicated_node_group_only": True,
            "features": {
                "enable_new_deployment_api": False,
                "enable_secure_endpoint_defaults": False,
            },
        }

    def state(self) -> dict:
        jobs = []
        for job in sorted(self.manager.all(), key=lambda j: j.created_at):
            jobs.append(
                {
                    "id": job.id,
                    "name": job.name,
                    "state": job.state,
                    "message": job.message,
                    "states": [[s, iso(t)] for s, t in list(job.states)],
                    "deleted": job.deleted,
                    "archived": job.archived,
                    "mode": job.mode,
                    "created_at": iso(job.created_at),
                    "log_dir": str(self.manager.log_dir(job.id)),
                    "replicas": [r.describe() for r in list(job.replicas)],
                }
            )
        with self.lock:
            return {
                "url": self.url,
                "origin": self.origin,
                "workspace_id": self.config.workspace_id,
                "mode": self.config.mode,
                "data_dir": str(self.config.data_dir),
                "node_groups": [
                    {"id": g["id"], "name": g["name"], "nodes": [n["id"] for n in g["nodes"]]}
                    for g in self.node_groups
                ],
                "jobs": jobs,
                "secrets": sorted(self.secrets),
                "requests": dict(self.requests),
                "responses": dict(self.responses),
                "faults": [r.to_json() for r in self.faults],
            }

    def shutdown(self) -> None:
        self.manager.shutdown()


def _one(query: dict, name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _flag(query: dict, name: str) -> bool:
    return (_one(query, name) or "").lower() in ("true", "1", "yes")


def _mode_matches(mode: str, job: Job) -> bool:
    if mode == LeptonJobQueryMode.AliveOnly.value:
        return not job.archived
    if mode == LeptonJobQueryMode.ArchiveOnly.value:
        return job.archived
    return True


def _labels_match(labels: dict, selector: str) -> bool:
    """A Kubernetes-style equality selector: ``k=v``, ``k==v``, ``k!=v``, ``k``, comma-joined."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# HTTP


class Handler(http.Handler):
    server_version = "LeptonEmulator/1.0"
    reply_headers_first = True


EmulatorHTTPServer = http.EmulatorHTTPServer


def make_server(config: Config, host: str = "127.0.0.1", port: int = 0) -> EmulatorHTTPServer:
    """Build (but do not start) a server; ``server.emulator.url`` is the workspace URL."""
    return EmulatorHTTPServer((host, port), Emulator(config), Handler)


__all__ = ["Config", "Emulator", "EmulatorHTTPServer", "make_server", "json_path"]
