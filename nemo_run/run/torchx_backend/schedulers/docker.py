"""Docker backend: each replica is a container on the local engine, labelled with its job.

The app id is torchx's `<name>-<random suffix>`; the handle is
`docker_persistent://<session>/<app id>`. The job store record lists the job's containers;
`describe` inspects them by label, and when all have ended it saves their logs into the job
dir, records the exit codes, and removes the containers. A container that disappears
before its outcome was recorded reads UNKNOWN, never SUCCEEDED.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from torchx.schedulers.api import AppDryRunInfo, DescribeAppResponse, ListAppResponse, Stream
from torchx.schedulers.docker_scheduler import DockerScheduler
from torchx.schedulers.ids import make_unique
from torchx.specs import AppDef, AppState, ReplicaStatus, Role, RoleStatus, is_terminal, macros

from nemo_run.config import default_job_dir
from nemo_run.core.atomic import atomic_writer
from nemo_run.core.clients.docker import (
    ContainerGoneError,
    ContainerInfo,
    ContainerSpec,
    DockerEngine,
)
from nemo_run.core.diskerrors import raise_if_disk_trouble
from nemo_run.core.execution.base import RUNDIR_SPECIAL_NAME as RUNDIR_SPECIAL_NAME
from nemo_run.core.execution.base import Executor as Executor
from nemo_run.core.execution.docker import (
    CONTAINER_CODE_DIR,
    CONTAINER_JOB_DIR,
    LABEL_ID,
    DockerContainer,
    DockerExecutor,
    DockerJobRequest,
    parse_ulimit,
    parse_volume,
)
from nemo_run.core.execution.docker import RUNDIR_NAME as RUNDIR_NAME
from nemo_run.core.packaging.base import code_archive, extract, host_code_link
from nemo_run.core.store import JobRecord
from nemo_run.exceptions import BackendError, ConfigError
from nemo_run.run.torchx_backend.schedulers.api import (
    LAUNCH,
    LAUNCH_PENDING,
    NEVER_STARTED,
    TERMINAL_STATES,
    SchedulerMixin,
)
from nemo_run.run.torchx_backend.schedulers.logs import read_lines, split_lines

log = logging.getLogger(__name__)

BACKEND = "docker_persistent"
LABEL_APP_ID = LABEL_ID  # the executor module's name for it, as in 0.11.1
LABEL_ROLE = "nemo_run.role"
LABEL_REPLICA = "nemo_run.replica_id"
LABEL_SESSION = "nemo_run.session"
DEFAULT_NETWORK = "nemo_run"
ENGINE_NETWORKS = frozenset({"host", "none", "bridge"})  # the engine's own: never created
_REFERENCE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
STOP_TIMEOUT_S = 5
# Programs that start a node's processes themselves: each replica running one is a node.
NODE_AGENTS = frozenset({"torchrun", "ft_launcher"})
CONTAINER_STATES = {
    "created": AppState.SUBMITTED,
    "restarting": AppState.RUNNING,  # a retry in progress
    "running": AppState.RUNNING,
    "paused": AppState.PENDING,
    "removing": AppState.RUNNING,
    "dead": AppState.FAILED,
}
LOG_FILES = {
    None: "combined.log",
    Stream.COMBINED: "combined.log",
    Stream.STDOUT: "stdout.log",
    Stream.STDERR: "stderr.log",
}


def _container_name(app_id: str, role: str, replica: int) -> str:
    name = re.sub(r"[^a-zA-Z0-9_.-]", "-", f"{app_id}-{role}-{replica}")
    return name if name[0].isalnum() else f"n{name}"


def _hostname(name: str) -> str:
    """A valid DNS label (<= 63 chars, [a-z0-9-]) that stays unique when truncated."""
    label = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-") or "replica"
    if len(label) <= 63:
        return label
    digest = hashlib.sha1(label.encode()).hexdigest()[:8]
    return f"{label[:54].rstrip('-')}-{digest}"


def _replica_state(container: ContainerInfo) -> tuple[AppState, int | None]:
    status = container.status
    if status == "exited":
        code = container.exit_code
        return (AppState.SUCCEEDED if code == 0 else AppState.FAILED), code
    mapped = CONTAINER_STATES.get(status)
    if mapped is None:
        log.warning("unmapped Docker container status %r; reporting UNKNOWN", status)
        return AppState.UNKNOWN, None
    return mapped, None


def _combine(states: list[AppState]) -> AppState:
    """Any FAILED -> FAILED; else any unfinished -> that state; all SUCCEEDED -> SUCCEEDED."""
    if any(s == AppState.FAILED for s in states):
        return AppState.FAILED
    unfinished = [s for s in states if not is_terminal(s)]
    if unfinished:
        return unfinished[0]
    return AppState.SUCCEEDED if states else AppState.UNKNOWN


class PersistentDockerScheduler(SchedulerMixin, DockerScheduler):
    """torchx's DockerScheduler with durable records: describe, logs, cancel from any process."""

    def __init__(self, session_name: str) -> None:
        super().__init__(session_name)
        self.backend = BACKEND
        self.stop_on_close = False
        self._client: Any = None
        self._scheduled: list[str] = []

    # -- engine -----------------------------------------------------------------------------
    @property
    def _engine(self) -> DockerEngine:
        if self._client is None:
            self._client = DockerEngine()
        return self._client

    def _containers(self, app_id: str) -> dict[tuple[str, int], ContainerInfo]:
        found = self._engine.containers(LABEL_APP_ID, app_id)
        return {(c.labels[LABEL_ROLE], int(c.labels[LABEL_REPLICA])): c for c in found}

    # -- dry run ----------------------------------------------------------------------------
    def _submit_dryrun(self, app: AppDef, cfg: DockerExecutor) -> AppDryRunInfo[DockerJobRequest]:  # type: ignore[override]
        cfg.validate()  # fields may have been set after construction: check them all now
        if cfg.run_as_group and len(cfg.resource_group) != len(app.roles):
            raise ConfigError(
                f"DockerExecutor.merge grouped {len(cfg.resource_group)} executors but the job has "
                f"{len(app.roles)} tasks; merge one executor per task (or a single one)"
            )
        app_id = make_unique(re.sub(r"[^a-z0-9-]", "-", app.name.lower()).strip("-") or "job")
        log_dir = os.path.join(cfg.job_dir or default_job_dir(), self.session_name, app_id)
        # the first container, by its name on the job's network, is where torchrun's nodes
        # meet; on the host's network (no container names there) it is this host
        rank0 = (
            "localhost"
            if cfg.network == "host"
            else _hostname(_container_name(app_id, app.roles[0].name, 0))
        )
        link = host_code_link(cfg.packager)  # symlink_from_remote_dir: a host folder is the code
        retries = max(role.max_retries for role in app.roles)
        containers = []
        for index, role in enumerate(app.roles):
            ex = cfg.role_executor(index)
            volumes: dict[str, dict[str, str]] = {
                log_dir: {"bind": CONTAINER_JOB_DIR, "mode": "rw"}
            }
            for volume in ex.volumes:
                source, target, mode = parse_volume(volume)
                if source.startswith(RUNDIR_SPECIAL_NAME):  # "/$nemo_run/...": the job's folder
                    source = log_dir + source[len(RUNDIR_SPECIAL_NAME) :]
                volumes[source] = {"bind": target, "mode": mode}
            if link:
                volumes[link] = {"bind": CONTAINER_CODE_DIR, "mode": "rw"}
            extra = dict(ex.additional_kwargs)
            if retries and extra.get("auto_remove"):
                raise ConfigError(
                    "DockerExecutor: retries need a restart policy, which Docker refuses with "
                    "auto_remove=True; drop auto_remove from additional_kwargs"
                )
            for k in range(role.num_replicas):
                replica = macros.Values(
                    img_root="", app_id=app_id, replica_id=str(k), rank0_env="TORCHX_RANK0_HOST"
                ).apply(role)
                name = _container_name(app_id, role.name, k)
                node = _node_variables(ex, rank0, role, k)
                env = {"TORCHX_RANK0_HOST": rank0, "MASTER_ADDR": rank0, **node, **replica.env}
                env = {key: _expand(value, env, node) for key, value in env.items()}
                env["NEMORUN_APP_ID"] = app_id
                kwargs: dict[str, Any] = {
                    "name": name,
                    "environment": env,
                    "labels": {
                        LABEL_APP_ID: app_id,
                        LABEL_ROLE: role.name,
                        LABEL_REPLICA: str(k),
                        LABEL_SESSION: self.session_name,
                    },
                    "network": ex.network or DEFAULT_NETWORK,
                    "volumes": volumes,
                    "init": True,  # an init as PID 1 forwards SIGTERM, so cancel does not wait out the grace
                    "hostname": _hostname(name),
                }
                if cfg.packager.ships_code:
                    kwargs["working_dir"] = CONTAINER_CODE_DIR
                for key, value in (
                    ("shm_size", ex.shm_size),
                    ("runtime", ex.runtime),
                    ("ipc_mode", ex.ipc_mode),
                    ("healthcheck", ex.healthcheck or None),  # {} (the default): none
                ):
                    if value is not None:
                        kwargs[key] = value
                if ex.privileged:
                    kwargs["privileged"] = True
                if ex.ulimits:
                    kwargs["ulimits"] = list(ex.ulimits)
                if ex.num_gpus:
                    kwargs["gpus"] = ex.num_gpus
                if retries:
                    kwargs["restart_policy"] = {"Name": "on-failure", "MaximumRetryCount": retries}
                for key, value in extra.items():  # labels and env merge; ours identify the job
                    if key in ("labels", "environment") and isinstance(value, dict):
                        value = {**value, **kwargs[key]}
                    kwargs[key] = value
                command = [replica.entrypoint, *replica.args]
                containers.append(
                    DockerContainer(
                        name=name,
                        image=ex.container_image,
                        command=[_expand(word, env, node) for word in command],  # no shell
                        role=role.name,
                        replica_id=k,
                        hostname=kwargs["hostname"],
                        kwargs=kwargs,
                    )
                )
        return AppDryRunInfo(
            DockerJobRequest(id=app_id, executor=cfg, containers=containers, log_dir=log_dir), str
        )

    def _app_id_of(self, request: DockerJobRequest) -> str:
        return request.id

    # -- schedule ---------------------------------------------------------------------------
    def schedule(self, dryrun_info: AppDryRunInfo[DockerJobRequest]) -> str:  # type: ignore[override]
        request = dryrun_info.request
        executor = request.executor
        self._check_engine(request)
        self._put_intent(
            request.id,
            experiment_id=executor.experiment_id,
            log_dir=request.log_dir,
            data={"containers": request.summary(), "image": executor.container_image},
        )
        try:
            self._start(request)
        except BaseException:
            self._launch_failed(request.id)
            raise
        self._launch_confirmed(request.id, state=AppState.RUNNING.name)
        self._scheduled.append(request.id)
        return request.id

    def _start(self, request: DockerJobRequest) -> None:
        """Job folder, code, then every container; on failure nothing is left behind."""
        try:
            os.makedirs(request.log_dir, mode=0o700, exist_ok=False)
        except OSError as e:
            raise_if_disk_trouble(e, request.log_dir, "creating the job folder")
            raise
        try:
            archive = code_archive(request.executor.packager, os.getcwd(), request.log_dir)
            if archive:
                extract(archive, os.path.join(request.log_dir, "code"))
            configs = os.path.join(request.executor.job_dir, "configs")
            if request.executor.job_dir and os.path.isdir(configs):  # from package_configs()
                shutil.copytree(configs, os.path.join(request.log_dir, "configs"))
            for container in request.containers:
                self._engine.run(_spec(container))
        except BaseException:
            for created in self._containers(request.id).values():
                if not self._quietly(self._engine.remove, created.id):
                    log.warning("could not remove %s after a failed launch", created.name)
            shutil.rmtree(request.log_dir, ignore_errors=True)
            raise

    def _check_engine(self, request: DockerJobRequest) -> None:
        """Images present (or pullable) and GPUs supported, before any container exists."""
        for image in sorted({c.image for c in request.containers}):
            self._engine.ensure_image(image)
        gpus = next((c.kwargs["gpus"] for c in request.containers if c.kwargs.get("gpus")), None)
        if gpus:
            runtimes = self._engine.runtimes()
            if "nvidia" not in runtimes and request.executor.runtime != "nvidia":
                raise ConfigError(
                    f"DockerExecutor.num_gpus={gpus} but this engine has no GPU runtime (runtimes: "
                    f"{', '.join(sorted(runtimes))}); install the NVIDIA container toolkit or drop num_gpus"
                )
        for network in sorted({c.kwargs.get("network") or "" for c in request.containers}):
            if network and network not in ENGINE_NETWORKS:
                self._engine.ensure_network(network)

    @staticmethod
    def _quietly(call: Any, *args: Any) -> bool:
        """Best-effort engine call (cleanup): False when it did not succeed."""
        try:
            return call(*args) is not False
        except BackendError as e:
            log.debug("%s%s: %s", getattr(call, "__name__", call), args, e)
            return False

    # -- describe ---------------------------------------------------------------------------
    def describe(self, app_id: str) -> DescribeAppResponse | None:
        record = self._store().get(self.backend, app_id)
        if record is None:
            return None
        if record.state in TERMINAL_STATES or record.data.get("final"):
            return self._response(record, AppState[record.state], record.data.get("final", {}))
        expected = record.data.get("containers", [])
        if not expected:  # imported from nemo-run 0.11.1: nothing to inspect
            return self._response(
                record, AppState.UNKNOWN, {}, "imported without container details"
            )
        found = self._containers(app_id)
        if record.data.get(LAUNCH) == LAUNCH_PENDING and len(found) < len(expected):
            if self._launcher_alive(record):  # still creating its containers
                return self._response(record, AppState.SUBMITTED, {}, "starting")
            if not found:
                record = self._record_final(app_id, AppState.FAILED.name, msg=NEVER_STARTED)
                return self._response(record, AppState[record.state], {})
        replicas: dict[tuple[str, int], dict[str, Any]] = {}
        for spec in expected:
            key = (spec["role"], spec["replica_id"])
            container = found.get(key)
            if container is None:
                replicas[key] = {
                    "state": AppState.UNKNOWN.name,
                    "exit_code": None,
                    "note": "container vanished before its outcome was recorded",
                }
                continue
            state, code = _replica_state(container)
            replicas[key] = {
                "state": state.name,
                "exit_code": code,
                "restarts": container.restart_count,
            }
        state = _combine([AppState[r["state"]] for r in replicas.values()])
        if state == AppState.UNKNOWN and all(r.get("note") for r in replicas.values()):
            state = AppState.FAILED  # every container vanished: the outcome is lost for good
        all_done = all(
            AppState[r["state"]] in (AppState.SUCCEEDED, AppState.FAILED) or r.get("note")
            for r in replicas.values()
        )
        final = self._finalize(record, found, replicas, state) if all_done else {}
        return self._response(record, state, final or {"replicas": _listing(replicas)})

    def _finalize(
        self,
        record: JobRecord,
        found: dict[tuple[str, int], Any],
        replicas: dict[tuple[str, int], dict[str, Any]],
        state: AppState,
    ) -> dict[str, Any]:
        """Save logs into the job dir, record the outcome, then remove the containers. Several
        processes may finish one job at once: each writes complete files under its own temp
        names, and one whose containers were removed meanwhile reads the outcome recorded."""
        for (role, k), container in found.items():
            if not self._save_logs(record, role, k, container):
                latest = self._store().get(self.backend, record.app_id)
                if latest is not None and latest.data.get("final"):
                    return latest.data["final"]  # another process finished it first
        codes = [r["exit_code"] for r in replicas.values() if r.get("exit_code") is not None]
        listing, ended_at = _listing(replicas), time.time()
        final = {"replicas": listing, "ended_at": ended_at}
        record = self._record_final(
            record.app_id,
            state.name,
            final=final,
            ended_at=ended_at,
            msg=_outcome_message(listing),
            exit_code=next((c for c in codes if c != 0), 0) if codes else None,
        )
        self._remove(found.values())
        return record.data.get("final", final)

    def _remove(self, containers: Iterable[ContainerInfo]) -> None:
        """Remove them; one already gone (or being removed by another process) is fine."""
        for container in containers:
            self._quietly(self._engine.remove, container.id)

    def _save_logs(self, record: JobRecord, role: str, k: int, container: ContainerInfo) -> bool:
        """Copy a container's logs into the job dir (streamed, constant memory); False when the
        container is gone or being removed (another process got there first)."""
        folder = os.path.join(record.log_dir or "", role, str(k))
        os.makedirs(folder, exist_ok=True)
        for stream, (out, err) in (
            (Stream.STDOUT, (True, False)),
            (Stream.STDERR, (False, True)),
            (Stream.COMBINED, (True, True)),
        ):
            target = os.path.join(folder, LOG_FILES[stream])
            try:  # mode as open() gives; no fsync: the containers still hold the logs meanwhile
                with atomic_writer(target, mode=0o666, fsync=False) as fh:
                    for chunk in self._engine.logs(container.id, stdout=out, stderr=err):
                        fh.write(chunk)
            except ContainerGoneError as e:
                log.debug("logs of %s unavailable: %s", container.name, e)
                return False
        return True

    def _response(
        self, record: JobRecord, state: AppState, final: dict[str, Any], msg: str = ""
    ) -> DescribeAppResponse:
        outcome = {(r["role"], r["replica_id"]): r for r in final.get("replicas", [])}
        roles: dict[str, Role] = {}
        statuses: dict[str, RoleStatus] = {}
        for spec in record.data.get("containers", []):
            role = roles.setdefault(
                spec["role"],
                Role(
                    name=spec["role"],
                    image=spec.get("image", ""),
                    entrypoint=spec["command"][0],
                    args=spec["command"][1:],
                    num_replicas=0,
                ),
            )
            role.num_replicas += 1
            done = outcome.get((spec["role"], spec["replica_id"]), {})
            replica_state = AppState[done["state"]] if done.get("state") else state
            if state == AppState.CANCELLED and not is_terminal(replica_state):
                replica_state = state
            statuses.setdefault(spec["role"], RoleStatus(spec["role"], [])).replicas.append(
                ReplicaStatus(
                    id=spec["replica_id"],
                    state=replica_state,
                    role=spec["role"],
                    hostname=spec["name"],
                )
            )
        msg = msg or _outcome_message(list(outcome.values()))
        resp = DescribeAppResponse(
            app_id=record.app_id,
            state=state,
            msg=msg or record.data.get("msg", ""),
            roles=list(roles.values()),
            roles_statuses=list(statuses.values()),
        )
        resp.num_restarts = sum(r.get("restarts", 0) for r in outcome.values())
        resp.ui_url = f"file://{record.log_dir}"
        return resp

    # -- list -------------------------------------------------------------------------------
    def list(self) -> list[ListAppResponse]:
        out = {}
        for record in self._store().list(self.backend):
            state = AppState[record.state]
            if record.state not in TERMINAL_STATES:
                desc = self.describe(record.app_id)
                state = desc.state if desc else state
            out[record.app_id] = ListAppResponse(
                app_id=record.app_id, state=state, app_handle=record.handle
            )
        try:  # containers labelled by nemo_run whose launcher never recorded them
            for container in self._engine.containers(LABEL_APP_ID):
                app_id = container.labels[LABEL_APP_ID]
                if app_id not in out:
                    state, _ = _replica_state(container)
                    session = container.labels.get(LABEL_SESSION, self.session_name)
                    out[app_id] = ListAppResponse(
                        app_id=app_id,
                        state=state,
                        app_handle=f"{self.backend}://{session}/{app_id}",
                    )
        except BackendError as e:
            log.warning("listing containers skipped: %s", e)
        return list(out.values())

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
        counts: dict[str, int] = {}
        for spec in record.data.get("containers", []):
            counts[spec["role"]] = counts.get(spec["role"], 0) + 1
        self._check_replica(app_id, counts, role_name, k)
        return self._matching(
            self._lines(record, role_name, k, since, until, should_tail, streams), regex
        )

    def _lines(
        self,
        record: JobRecord,
        role: str,
        k: int,
        since: datetime | None,
        until: datetime | None,
        should_tail: bool,
        streams: Stream | None,
    ) -> Iterator[str]:
        container = (
            None if record.data.get("final") else self._containers(record.app_id).get((role, k))
        )
        if container is not None:
            try:
                yield from split_lines(
                    self._engine.logs(
                        container.id,
                        follow=should_tail,
                        since=since,
                        until=until,
                        stdout=streams != Stream.STDERR,
                        stderr=streams != Stream.STDOUT,
                    )
                )
                return
            except ContainerGoneError as e:  # removed while we read: the saved copy has everything
                log.debug("container logs of %s ended: %s", container.name, e)
                record = self._store().get(self.backend, record.app_id) or record
                if not record.data.get("final"):
                    self.describe(record.app_id)
        path = os.path.join(record.log_dir or "", role, str(k), LOG_FILES[streams])
        if not os.path.exists(path):
            if not record.data.get("final"):
                self.describe(record.app_id)  # the job may have just ended: save its logs now
        if not os.path.exists(path):
            log.warning(
                "no logs kept for %s %s[%d] (its container is gone)", record.app_id, role, k
            )
            return
        yield from read_lines(path)

    # -- cancel / close ---------------------------------------------------------------------
    def _stop(self, record: JobRecord) -> None:
        for container in self._containers(record.app_id).values():
            try:
                self._engine.stop(container.id, STOP_TIMEOUT_S)
            except ContainerGoneError:
                continue  # removed meanwhile: nothing left to stop

    def _after_stop(self, record: JobRecord) -> None:
        """Keep the stopped containers' logs and outcome, then remove them."""
        found = self._containers(record.app_id)
        replicas = {}
        for key, container in found.items():
            try:
                _, code = _replica_state(self._engine.inspect(container.id))
            except ContainerGoneError:  # removed meanwhile by another process
                code = None
            replicas[key] = {"state": AppState.CANCELLED.name, "exit_code": code}
            self._save_logs(record, key[0], key[1], container)
        final = {"replicas": _listing(replicas), "ended_at": time.time()}
        self._store().update(
            self.backend, record.app_id, data={"final": final, "ended_at": final["ended_at"]}
        )
        self._remove(found.values())

    def close(self) -> None:
        """Detached jobs outlive this scheduler; with `stop_on_close`, cancel the ones it started."""
        if self.stop_on_close:
            for app_id in self._scheduled:
                self._cancel_existing(app_id)
        if self._client is not None:
            self._client.close()
            self._client = None


def _outcome_message(replicas: list[dict[str, Any]]) -> str:
    """Why a job ended as it did: the first failed replica, or the first that vanished."""
    failed = [r for r in replicas if r.get("exit_code") not in (None, 0)]
    if failed:
        return f"{failed[0]['role']}[{failed[0]['replica_id']}] exited with code {failed[0]['exit_code']}"
    vanished = [r for r in replicas if r.get("note")]
    return vanished[0]["note"] if vanished else ""


def _listing(replicas: dict[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": role, "replica_id": k, **info} for (role, k), info in replicas.items()]


def _node_variables(executor: DockerExecutor, rank0: str, role: Role, k: int) -> dict[str, str]:
    """The executor's macro variables (`macro_values()`) for replica `k` of `role`: the first
    container's address and the processes per node; every container of a role that runs a
    node agent (torchrun, ft_launcher) is a node of its own (node rank k of the role's
    replicas), the containers of any other role are the processes of one node (rank 0 of 1)."""
    names = executor.macro_values()
    agent = os.path.basename(role.entrypoint) in NODE_AGENTS
    nodes = role.num_replicas if agent else 1
    return {
        names.head_node_ip_var: rank0,
        names.num_nodes_var: str(nodes),
        names.node_rank_var: str(k if agent else 0),
        names.nproc_per_node_var: str(executor.nproc_per_node()),
    }


def _expand(text: str, env: dict[str, str], node: dict[str, str]) -> str:
    """References `$NAME` / `${NAME}` to the node variables replaced by their values in the
    container's environment: commands run without a shell. Other references, and those in
    text with blanks (an inline script, run by its own shell), stay as written."""
    if "$" not in text or any(c.isspace() for c in text):
        return text

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env.get(name, node[name]) if name in node else match.group(0)

    return _REFERENCE.sub(value, text)


def _spec(container: DockerContainer) -> ContainerSpec:
    """The engine request for one container of the job (ulimits parsed into numbers)."""
    settings = dict(container.kwargs)
    if "ulimits" in settings:
        settings["ulimits"] = [parse_ulimit(u) for u in settings["ulimits"]]
    return ContainerSpec(image=container.image, command=list(container.command), settings=settings)


def create_scheduler(session_name: str, **kwargs: Any) -> PersistentDockerScheduler:
    """Entry point for the `docker_persistent` torchx scheduler (`stop_on_close=True` to cancel
    this instance's jobs on close)."""
    scheduler = PersistentDockerScheduler(session_name)
    scheduler.stop_on_close = bool(kwargs.get("stop_on_close", False))
    return scheduler
