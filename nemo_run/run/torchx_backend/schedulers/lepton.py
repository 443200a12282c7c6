"""DGX Cloud Lepton backend: each job is one Lepton batch job (`nodes` replicas) in a
dedicated node group, driven through the leptonai SDK's v2 client.

The app id is the job's unique name (`^[a-z][a-z0-9-]*$`, <= 36 chars); the handle is
`lepton://<session>/<name>`. The record keeps the workspace id and URL (never the token);
a later process authenticates from `LEPTON_WORKSPACE_*` or the SDK's login record.
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

from nemo_run.core.clients.datamover import build_payload, chunk_groups, unpack_script
from nemo_run.core.execution.lepton import LeptonExecutor
from nemo_run.core.packaging.base import extract
from nemo_run.core.redact import redact_env
from nemo_run.core.store import JobRecord, store_path
from nemo_run.exceptions import BackendError, ConfigError
from nemo_run.run.torchx_backend.schedulers.api import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    SchedulerMixin,
    map_state,
    single_role_response,
    unique_name,
)
from nemo_run.run.torchx_backend.schedulers.logs import follow_file

log = logging.getLogger(__name__)

BACKEND = "lepton"
NAME_LIMIT = 36
HELPER_TIMEOUT_S = 600.0

LEPTON_STATES: dict[str, AppState] = {
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


def __getattr__(name: str) -> Any:
    if name == "LEPTON_JOB_DIRS":  # the store file in use now, resolved on every access
        return store_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def job_name(app_name: str) -> str:
    """A valid, unique Lepton job name: `^[a-z][a-z0-9-]*$`, at most 36 characters."""
    return unique_name(app_name, NAME_LIMIT)


def state_of(raw: Any) -> AppState:
    return map_state(LEPTON_STATES, raw, "Lepton")


@dataclass
class LeptonRequest:
    """One Lepton job to create; `str()` is the dry-run text (job spec and launch script)."""

    app: AppDef
    cmd: list[str]
    executor: LeptonExecutor
    name: str

    @property
    def job_dir(self) -> str:
        return f"{self.executor.nemo_run_dir.rstrip('/')}/{self.name}"

    def launch_script(self, with_code: bool) -> str:
        """Every replica: rank and rendezvous from Lepton's variables, a per-rank log on the
        shared mount, pipefail so the command's exit code is the job's. No network needed."""
        lines = [
            "#!/bin/bash",
            "set -o pipefail",
            'export NODE_RANK="${LEPTON_JOB_WORKER_INDEX:-${NODE_RANK:-0}}"',
            'export WORLD_SIZE="${LEPTON_JOB_TOTAL_WORKERS:-${WORLD_SIZE:-1}}"',
            'if [ -z "${MASTER_ADDR:-}" ] && [ -n "${LEPTON_SUBDOMAIN:-}" ]; then  # Lepton sets no torch vars',
            '  export MASTER_ADDR="${LEPTON_JOB_WORKER_HOSTNAME_PREFIX:-worker}-0.${LEPTON_SUBDOMAIN}"',
            "fi",
            'export MASTER_ADDR="${MASTER_ADDR:-localhost}" MASTER_PORT="${MASTER_PORT:-29400}"',
            f"mkdir -p {shlex.quote(self.job_dir)}/logs",
            *self.executor.pre_launch_commands,
        ]
        if with_code:
            lines.append(f"cd {shlex.quote(self.job_dir)}/code")
        lines.append(f'{shlex.join(self.cmd)} 2>&1 | tee "{self.job_dir}/logs/rank${{NODE_RANK}}.log"')
        return "\n".join(lines) + "\n"

    def job(self, node_group_id: str, node_ids: list[str], env: dict[str, str] | None = None,
            command: list[str] | None = None, replicas: int | None = None, name: str | None = None) -> dict[str, Any]:
        ex = self.executor
        nodes = replicas or ex.nodes
        envs = [{"name": k, "value": v} for k, v in sorted((env if env is not None else self.app.roles[0].env).items())]
        envs += [{"name": k, "value_from": {"secret_name_ref": v}} for k, v in sorted(ex.secret_vars.items())]
        spec: dict[str, Any] = {
            "resource_shape": ex.resource_shape,
            "affinity": {"allowed_dedicated_node_groups": [node_group_id]},
            "container": {"image": ex.container_image,
                          "command": command or ["bash", f"{self.job_dir}/launch.sh"]},
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
        if ex.queue_priority or ex.can_preempt or ex.can_be_preempted:
            spec["queue_config"] = {"priority_class": ex.queue_priority, "can_preempt": ex.can_preempt,
                                    "can_be_preempted": ex.can_be_preempted}
        if ex.node_reservation:
            spec["reservation_config"] = {"reservation_id": ex.node_reservation}
        if command is None:
            spec.update(ex.custom_spec)
        return {"metadata": {"name": name or self.name}, "spec": spec}

    def __str__(self) -> str:
        import json

        shown = self.job("<node group id>", [])
        for env in shown["spec"]["envs"]:
            if "value" in env:
                env["value"] = redact_env({env["name"]: env["value"]})[env["name"]]
        return (f"POST $LEPTON_WORKSPACE_URL/jobs\n{json.dumps(shown, indent=2)}\n# {self.job_dir}/launch.sh\n"
                f"{self.launch_script(self.executor.packager.ships_code)}")


class LeptonScheduler(SchedulerMixin, Scheduler[dict[str, str]]):  # type: ignore[misc]
    """Lepton batch jobs as torchx apps, durable through the job store."""

    def __init__(self, session_name: str) -> None:
        super().__init__(BACKEND, session_name)
        self._clients: dict[tuple[str | None, ...], Any] = {}

    def _run_opts(self) -> Any:
        from torchx.specs import runopts

        return runopts()

    def _client(self, record: JobRecord | None = None) -> Any:
        """A client for the credentials in force now (read on every call, cached per setting)."""
        key = tuple(os.environ.get(n) for n in ("LEPTON_WORKSPACE_ID", "LEPTON_WORKSPACE_TOKEN",
                                                "LEPTON_WORKSPACE_URL", "HOME"))
        client = self._clients.get(key)
        if client is None:
            from nemo_run.core.clients.lepton import LeptonClient

            client = self._clients[key] = LeptonClient()
        wanted = record.data.get("workspace_id") if record else None
        if wanted and wanted != client.workspace_id:
            raise ConfigError(f"job {record.app_id} belongs to Lepton workspace {wanted!r} but the credentials "
                              f"are for {client.workspace_id!r}; set LEPTON_WORKSPACE_ID={wanted}")
        return client

    # -- dry run ----------------------------------------------------------------------------
    def _submit_dryrun(self, app: AppDef, cfg: LeptonExecutor) -> AppDryRunInfo[LeptonRequest]:  # type: ignore[override]
        if len(app.roles) != 1:
            raise ConfigError(f"Lepton runs one role per job; {app.name!r} has {len(app.roles)}")
        name = job_name(app.name)
        role = macros.Values(img_root="", app_id=name, replica_id="0", rank0_env="MASTER_ADDR").apply(app.roles[0])
        app.roles = [role]
        return AppDryRunInfo(LeptonRequest(app=app, cmd=[role.entrypoint, *role.args], executor=cfg, name=name), str)

    def _app_id_of(self, request: LeptonRequest) -> str:
        return request.name

    # -- schedule ---------------------------------------------------------------------------
    def schedule(self, dryrun_info: AppDryRunInfo[LeptonRequest]) -> str:  # type: ignore[override]
        request = dryrun_info.request
        ex = request.executor
        client = self._client()
        group_id, node_ids = client.node_group(ex.node_group)
        with tempfile.TemporaryDirectory(prefix="nemo_run_lepton_") as scratch:
            archive = ex.packager.package(os.getcwd(), scratch, "code")
            script = request.launch_script(with_code=archive is not None)
            helpers = self._ship(client, request, group_id, node_ids, archive, script)
        created = client.create_job(request.job(group_id, node_ids))
        self._store().put(JobRecord(
            backend=self.backend, app_id=request.name, session=self.session_name,
            state=AppState.SUBMITTED.name, experiment_id=ex.experiment_id,
            log_dir=request.job_dir if ex.launched_from_cluster else None,
            data={"job_id": created.metadata.id_ or request.name, "workspace_id": client.workspace_id,
                  "url": client.url, "job_dir": request.job_dir,
                  "nodes": ex.nodes, "role": request.app.roles[0].name, "cmd": request.cmd,
                  "launched_from_cluster": ex.launched_from_cluster, "data_mover_jobs": helpers},
        ))
        return request.name

    def _ship(self, client: Any, request: LeptonRequest, group_id: str, node_ids: list[str],
              archive: str | None, script: str) -> int:
        """Code and launch script onto the shared mount: directly when mounted here, else by
        short helper jobs carrying the payload in environment variables (no argv limit)."""
        if request.executor.launched_from_cluster:
            os.makedirs(os.path.join(request.job_dir, "logs"), exist_ok=True)
            if archive:
                extract(archive, os.path.join(request.job_dir, "code"))
            path = os.path.join(request.job_dir, "launch.sh")
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(script)
            os.chmod(path, 0o755)
            return 0
        groups = chunk_groups(build_payload({"launch.sh": script.encode()}, archive))
        for index, chunks in enumerate(groups):
            command = ["sh", "-c", unpack_script(request.job_dir, len(chunks), first=index == 0,
                                                 last=index == len(groups) - 1)]
            name = f"{request.name[:NAME_LIMIT - 4].rstrip('-')}-m{index}"
            env = {f"NEMORUN_CHUNK_{i}": chunk for i, chunk in enumerate(chunks)}
            helper = client.create_job(request.job(group_id, node_ids, env=env, command=command, replicas=1,
                                                   name=name))
            helper_id = helper.metadata.id_ or name
            try:
                self._wait_helper(client, helper_id)
            finally:
                try:
                    client.delete_job(helper_id)
                except BackendError as e:
                    log.warning("could not delete Lepton helper job %s: %s", name, e)
        return len(groups)

    @staticmethod
    def _wait_helper(client: Any, name: str) -> None:
        deadline, delay = time.monotonic() + HELPER_TIMEOUT_S, 0.05
        while True:
            job = client.get_job(name)
            state = state_of(job.status.state) if job is not None and job.status else AppState.PENDING
            if state == AppState.SUCCEEDED:
                return
            if job is None or state in (AppState.FAILED, AppState.CANCELLED):
                raise BackendError(f"Lepton helper job {name} ended {state.name} while copying code")
            if time.monotonic() > deadline:
                raise BackendError(f"Lepton helper job {name} still {state.name} after {HELPER_TIMEOUT_S:.0f} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    # -- describe ---------------------------------------------------------------------------
    def describe(self, app_id: str) -> DescribeAppResponse | None:
        record = self._store().get(self.backend, app_id)
        if record is None:
            return None
        if record.state in TERMINAL_STATES or "job_id" not in record.data:
            return self._response(record, AppState[record.state], record.data.get("msg", ""))
        try:
            job = self._client(record).get_job(record.data["job_id"])
        except BackendError as e:
            if e.status is not None and e.status < 500 and e.status != 429:
                raise
            return self._response(record, AppState[record.state], f"Lepton did not answer: {e}")
        if job is None:
            state, raw, msg = AppState.CANCELLED, "Deleted", "the job was deleted in the workspace before it finished"
        else:
            raw = getattr(job.status.state, "value", job.status.state) if job.status else "Starting"
            state, msg = state_of(raw), f"state {raw}"
        if is_terminal(state):
            record = self._record_final(app_id, state.name, lepton_state=raw, msg=msg)
            state = AppState[record.state]
        elif raw != record.data.get("lepton_state") or state.name != record.state:
            record = self._store().update(self.backend, app_id, state=state.name, if_state_in=ACTIVE_STATES,
                                          data={"lepton_state": raw})
        return self._response(record, state, msg)

    def _response(self, record: JobRecord, state: AppState, msg: str) -> DescribeAppResponse:
        cmd = record.data.get("cmd") or [""]
        return single_role_response(record, state, msg, nodes=int(record.data.get("nodes", 1)), entrypoint=cmd[0],
                                    args=cmd[1:], ui_url=record.data.get("url"))

    # -- list -------------------------------------------------------------------------------
    def list(self) -> list[ListAppResponse]:  # type: ignore[override]
        records = self._store().list(self.backend)
        active = [r for r in records if r.state not in TERMINAL_STATES and "job_id" in r.data]
        if active:
            try:
                live = {j.metadata.id_: j for j in self._client().list_jobs()}
            except (ConfigError, BackendError) as e:
                log.warning("Lepton states not refreshed: %s", e)
                live = None
            for record in active if live is not None else ():
                job = live.get(record.data.get("job_id"))
                raw = getattr(job.status.state, "value", "Starting") if job and job.status else "Deleted"
                state = state_of(raw)
                if is_terminal(state):
                    self._record_final(record.app_id, state.name, lepton_state=raw)
                record.state = state.name
        return [ListAppResponse(app_id=r.app_id, state=AppState[r.state], app_handle=r.handle) for r in records]

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
        self._check_replica(app_id, {record.data.get("role", "main"): int(record.data.get("nodes", 1))}, role_name, k)
        return self._matching(self._lines(record, k, should_tail), regex)

    def _lines(self, record: JobRecord, k: int, should_tail: bool) -> Iterator[str]:
        path = f"{record.data.get('job_dir', '')}/logs/rank{k}.log"
        if record.data.get("launched_from_cluster") and os.path.isdir(os.path.dirname(path)):
            yield from follow_file(path, lambda: self._finished(record.app_id), should_tail)
            return
        yield from self._api_lines(record, k, should_tail, path)

    def _api_lines(self, record: JobRecord, k: int, should_tail: bool, path: str) -> Iterator[str]:
        """The k-th replica's log through the API, re-read until the job ends (never forever)."""
        client, seen, delay, job_id = self._client(record), 0, 0.2, record.data["job_id"]
        while True:
            finished = not should_tail or self._finished(record.app_id)
            replicas = client.replica_ids(job_id) if client.get_job(job_id) is not None else []
            if k >= len(replicas):
                if finished:
                    if not replicas:
                        yield (f"nemo_run: Lepton no longer serves the logs of {record.app_id}; they are on the "
                               f"shared mount at {path}\n")
                    return
            else:
                text = client.log(job_id, replicas[k], timeout=2)
                end = len(text) if finished else text.rfind("\n") + 1  # whole lines until the end
                if end > seen:
                    yield from text[seen:end].splitlines(keepends=True)
                    seen, delay = end, 0.2
                if finished:
                    return
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    # -- cancel -----------------------------------------------------------------------------
    def _stop(self, record: JobRecord) -> None:
        self._client(record).stop_job(record.data["job_id"])


def create_scheduler(session_name: str, **kwargs: Any) -> LeptonScheduler:
    """Entry point for the `lepton` torchx scheduler."""
    return LeptonScheduler(session_name)
