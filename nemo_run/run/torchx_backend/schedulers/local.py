"""Local backend: jobs are detached process groups on this machine that outlive their launcher.

The app id is torchx's `<name>-<random suffix>`; the handle is
`local_persistent://<session>/<app id>`. Each job runs under `local_supervisor.py`, which
owns the replicas' pipes and writes their exit codes and a `status` file when they end, so
any later process can read the real outcome. The job store record holds the supervisor's
pid, start ticks and boot id: enough to tell the job apart from a later process that reuses
the pid, and to cancel its whole process group.
"""

from __future__ import annotations

import logging
import marshal
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from torchx.schedulers.api import (
    AppDryRunInfo,
    DescribeAppResponse,
    ListAppResponse,
    Stream,
)
from torchx.schedulers.local_scheduler import (
    CWDImageProvider,
    ImageProvider,
    LocalOpts,
    LocalScheduler,
    PopenRequest,
)
from torchx.specs import AppState, ReplicaStatus, Role, RoleStatus

from nemo_run.config import get_nemorun_home
from nemo_run.core import processes
from nemo_run.core.execution.local import LocalExecutor
from nemo_run.core.redact import redact_env
from nemo_run.core.store import JobRecord, store_path
from nemo_run.exceptions import BackendError, ConfigError
from nemo_run.run.torchx_backend.schedulers.api import TERMINAL_STATES, SchedulerMixin
from nemo_run.run.torchx_backend.schedulers.local_supervisor import EXIT_CODE_FILE, STATUS_FILE
from nemo_run.run.torchx_backend.schedulers.logs import follow_file

log = logging.getLogger(__name__)

BACKEND = "local_persistent"
APP_ID_ENV = "NEMORUN_APP_ID"  # set in every replica, so cancel can find strays by environment
SUPERVISOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "local_supervisor.py")
CANCEL_GRACE_S = 5.0
STREAM_FILES = {None: "combined.log", Stream.COMBINED: "combined.log",
                Stream.STDOUT: "stdout.log", Stream.STDERR: "stderr.log"}


def __getattr__(name: str) -> Any:
    if name == "LOCAL_JOB_DIRS":  # the store file in use now, resolved on every access
        return store_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_job_dir() -> str:
    """Where jobs without an experiment keep their logs: `$NEMORUN_HOME/jobs`."""
    return os.path.join(get_nemorun_home(), "jobs")


def _format_request(request: PopenRequest) -> str:
    """Dry-run text: one command line per replica, with secret-looking env values masked."""
    lines = [f"app_id: {request.app_id}", f"log_dir: {request.log_dir}"]
    for role, params in request.role_params.items():
        for k, p in enumerate(params):
            lines.append(f"{role}[{k}]: {subprocess.list2cmdline(p.args)}")
            lines.append(f"  cwd: {p.cwd}")
            for key, value in sorted(redact_env(p.env).items()):
                lines.append(f"  env {key}={value}")
    return "\n".join(lines)


def _read_status(log_dir: str | None, roles: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The supervisor's final outcome, or None while it has not written one."""
    if not log_dir:
        return None
    try:
        with open(os.path.join(log_dir, STATUS_FILE), encoding="utf-8") as fh:
            fields = dict(line.split(" ", 1) for line in fh.read().splitlines() if " " in line)
        status: dict[str, Any] = {"ended_at": float(fields["ended_at"]),
                                  "terminated_by_signal": fields.get("terminated", "0").strip() == "1",
                                  "replicas": []}
        for role in roles:
            for k in range(int(role.get("num_replicas", 1))):
                path = os.path.join(log_dir, role["name"], str(k), EXIT_CODE_FILE)
                try:
                    with open(path, encoding="utf-8") as fh:
                        code, restarts = (int(v) for v in fh.read().split())
                except FileNotFoundError:
                    code, restarts = None, 0
                status["replicas"].append({"role": role["name"], "replica_id": k,
                                           "exit_code": code, "restarts": restarts})
        return status
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as e:
        log.warning("unreadable job status in %s: %s", log_dir, e)
        return None


def _state_from_status(status: dict[str, Any]) -> tuple[AppState, str]:
    failed = [r for r in status["replicas"] if r["exit_code"] != 0]
    if not failed:
        return AppState.SUCCEEDED, ""
    first = failed[0]
    return AppState.FAILED, (
        f"{first['role']}[{first['replica_id']}] exited with code {first['exit_code']}"
        + (f" ({len(failed)} replicas failed)" if len(failed) > 1 else "")
    )


def _exit_code(status: dict[str, Any]) -> int | None:
    """The job's exit code: the first non-zero replica code, else 0 (None when unknown)."""
    codes = [r["exit_code"] for r in status.get("replicas", []) if r.get("exit_code") is not None]
    if not codes:
        return None
    return next((c for c in codes if c != 0), 0)


class PersistentLocalScheduler(SchedulerMixin, LocalScheduler):
    """torchx's LocalScheduler, made durable: describe, logs, cancel and list from any process."""

    def __init__(
        self,
        session_name: str,
        image_provider_class: Any = CWDImageProvider,
        cache_size: int = 100,
        extra_paths: list[str] | None = None,
        experiment: Any = None,
    ) -> None:
        handlers = _signal_handlers()
        super().__init__(session_name, image_provider_class, cache_size, extra_paths)
        _restore_signal_handlers(handlers)  # torchx installs its own; Ctrl+C must stay ours
        self.backend = BACKEND
        self.experiment = experiment
        self._children: list[subprocess.Popen[bytes]] = []
        self._children_lock = threading.Lock()

    # -- dry run --------------------------------------------------------------------------
    def _submit_dryrun(self, app: Any, cfg: LocalExecutor) -> AppDryRunInfo[PopenRequest]:  # type: ignore[override]
        opts: LocalOpts = {"log_dir": cfg.job_dir or default_job_dir()}
        request = self._to_popen_request(app, opts)
        _check_entrypoints(request)
        return AppDryRunInfo(request, _format_request)

    def _app_id_of(self, request: PopenRequest) -> str:
        return request.app_id

    # -- schedule -------------------------------------------------------------------------
    def schedule(self, dryrun_info: AppDryRunInfo[PopenRequest]) -> str:
        request = dryrun_info.request
        app = dryrun_info._app
        executor = dryrun_info._cfg if isinstance(dryrun_info._cfg, LocalExecutor) else None
        retries = max((role.max_retries for role in app.roles), default=0) if app else 0
        try:
            os.makedirs(request.log_dir, mode=0o700)
        except FileExistsError as e:
            raise ConfigError(f"log dir {request.log_dir} already exists; app ids must be unique") from e

        replicas = []
        for role_name, params in request.role_params.items():
            for k, param in enumerate(params):
                os.makedirs(request.role_log_dirs[role_name][k], mode=0o700, exist_ok=True)
                env = self._get_replica_env(param)
                env[APP_ID_ENV] = request.app_id
                replicas.append({
                    "role": role_name, "replica_id": k, "args": param.args, "env": env,
                    "cwd": param.cwd, "stdout": param.stdout, "stderr": param.stderr,
                    "combined": param.combined,
                })
        spec = {"log_dir": request.log_dir, "retries": retries, "replicas": replicas}
        proc = self._start_supervisor(request.log_dir, spec)
        stat = processes.proc_stat(proc.pid)
        roles = [
            {"name": role.name, "entrypoint": role.entrypoint, "args": list(role.args),
             "num_replicas": role.num_replicas}
            for role in (app.roles if app else [])
        ] or [{"name": r, "entrypoint": "", "args": [], "num_replicas": len(p)}
              for r, p in request.role_params.items()]
        self._store().put(JobRecord(
            backend=self.backend,
            app_id=request.app_id,
            session=self.session_name,
            state=AppState.RUNNING.name,
            experiment_id=executor.experiment_id if executor else None,
            log_dir=request.log_dir,
            data={
                "pid": proc.pid,
                "start_ticks": stat.start_ticks if stat else None,
                "boot_id": processes.boot_id(),
                "roles": roles,
                "retries": retries,
            },
        ))
        return request.app_id

    def _start_supervisor(self, log_dir: str, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
        supervisor_log = os.path.join(log_dir, "supervisor.log")
        with open(supervisor_log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-S", "-I", SUPERVISOR],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                cwd=log_dir, start_new_session=True, close_fds=True,
                env={"PATH": os.environ.get("PATH", os.defpath)},
            )
        try:
            assert proc.stdin is not None
            proc.stdin.write(marshal.dumps(spec))
            proc.stdin.close()
        except BrokenPipeError as e:
            proc.wait()
            with open(supervisor_log, encoding="utf-8", errors="replace") as fh:
                detail = fh.read().strip()
            raise BackendError(f"the local job supervisor exited at start: {detail}") from e
        with self._children_lock:
            self._children.append(proc)
        return proc

    def _reap(self) -> None:
        """Collect exited supervisors this process started, so they do not linger as zombies."""
        with self._children_lock:
            self._children = [p for p in self._children if p.poll() is None]

    # -- describe -------------------------------------------------------------------------
    def describe(self, app_id: str) -> DescribeAppResponse | None:
        record = self._store().get(self.backend, app_id)
        if record is None:
            return None
        msg = record.data.get("msg", "")
        if record.state in TERMINAL_STATES:
            state = AppState[record.state]
        else:
            state, msg, final = self._live_state(record)
            if final is not None:
                record = self._record_final(app_id, state.name, msg=msg, final=final, exit_code=_exit_code(final),
                                            ended_at=final.get("ended_at", time.time()))
                state, msg = AppState[record.state], record.data.get("msg", msg)
        return self._response(record, state, msg)

    def _live_state(self, record: JobRecord) -> tuple[AppState, str, dict[str, Any] | None]:
        """(state, message, final status to persist or None while the job is still running)."""
        data = record.data
        if "pid" not in data:  # imported from nemo-run 0.11.1: no process to look at
            return AppState.UNKNOWN, "imported from nemo-run 0.11.1 without process details", None
        self._reap()
        for attempt in range(2):  # the job may finish between reading status and checking the pid
            status = _read_status(record.log_dir, data.get("roles", []))
            if status is not None:
                state, msg = _state_from_status(status)
                return state, msg, status
            if attempt == 0 and processes.is_same_process_alive(
                data["pid"], data.get("start_ticks") or -1, data.get("boot_id", "")
            ):
                return AppState.RUNNING, "", None
        msg = "the job's supervisor ended without recording exit codes (killed, or the host rebooted)"
        return AppState.FAILED, msg, {"replicas": []}

    def _response(self, record: JobRecord, state: AppState, msg: str) -> DescribeAppResponse:
        final = record.data.get("final") or _read_status(record.log_dir, record.data.get("roles", [])) or {}
        exit_codes = {(r["role"], r["replica_id"]): r for r in final.get("replicas", [])}
        roles, statuses = [], []
        for spec in record.data.get("roles", []):
            name, count = spec["name"], int(spec.get("num_replicas", 1))
            roles.append(Role(name=name, image="", entrypoint=spec.get("entrypoint", ""),
                              args=list(spec.get("args", [])), num_replicas=count))
            replicas = []
            for k in range(count):
                done = exit_codes.get((name, k))
                if done is None:
                    replica_state = state
                else:
                    replica_state = AppState.SUCCEEDED if done["exit_code"] == 0 else AppState.FAILED
                    if state == AppState.CANCELLED:
                        replica_state = state
                replicas.append(ReplicaStatus(id=k, state=replica_state, role=name, hostname="localhost"))
            statuses.append(RoleStatus(role=name, replicas=replicas))
        resp = DescribeAppResponse()
        resp.app_id = record.app_id
        resp.state = state
        resp.msg = msg
        resp.num_restarts = sum(r.get("restarts", 0) for r in exit_codes.values())
        resp.ui_url = f"file://{record.log_dir}"
        resp.roles = roles
        resp.roles_statuses = statuses
        return resp

    # -- list -----------------------------------------------------------------------------
    def list(self) -> list[ListAppResponse]:  # type: ignore[override]
        out = []
        for record in self._store().list(self.backend):
            state = AppState[record.state]
            if record.state not in TERMINAL_STATES:
                desc = self.describe(record.app_id)
                state = desc.state if desc else state
            out.append(ListAppResponse(app_id=record.app_id, state=state, app_handle=record.handle))
        return out

    # -- logs -----------------------------------------------------------------------------
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
        counts = {r["name"]: int(r.get("num_replicas", 1)) for r in record.data.get("roles", [])}
        self._check_replica(app_id, counts, role_name, k)
        if since or until:
            warnings.warn("local log lines carry no timestamps: since/until are ignored", stacklevel=2)
        path = os.path.join(record.log_dir or "", role_name, str(k), STREAM_FILES[streams])
        return self._matching(follow_file(path, lambda: self._finished(app_id), should_tail), regex)

    # -- cancel ---------------------------------------------------------------------------
    def _stop(self, record: JobRecord) -> None:
        if "pid" in record.data:
            self._terminate(record)

    def _terminate(self, record: JobRecord) -> None:
        """SIGTERM the job's process group, then SIGKILL whatever is left after a grace period."""
        data = record.data
        pgid = data["pid"]
        marker = f"{APP_ID_ENV}={record.app_id}".encode()

        def members() -> list[int]:
            leader_alive = processes.is_same_process_alive(pgid, data.get("start_ticks") or -1,
                                                          data.get("boot_id", ""))
            return [p for p in processes.group_members(pgid)
                    if (p == pgid and leader_alive) or processes.has_env_marker(p, marker)]

        for sig, grace in ((signal.SIGTERM, CANCEL_GRACE_S), (signal.SIGKILL, CANCEL_GRACE_S)):
            targets = members()
            if not targets:
                return
            for pid in targets:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline, delay = time.monotonic() + grace, 0.005
            while time.monotonic() < deadline:
                self._reap()
                if not members():
                    return
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        log.warning("processes of job %s survived SIGKILL: %s", record.app_id, members())

    def close(self) -> None:
        """Detached jobs outlive this scheduler: only reap finished supervisors."""
        self._reap()


def _check_entrypoints(request: PopenRequest) -> None:
    """Fail the dry run, naming the role, when a replica's program cannot be found."""
    for role, params in request.role_params.items():
        for param in params:
            exe = param.args[0]
            search = os.pathsep.join(p for p in (param.env.get("PATH"), os.environ.get("PATH")) if p)
            if os.sep in exe:
                found = os.access(os.path.join(param.cwd or "", exe), os.X_OK)
            else:
                found = shutil.which(exe, path=search) is not None
            if not found:
                raise ConfigError(
                    f"role {role!r}: entrypoint {exe!r} is not an executable on PATH; "
                    "install it or give its full path"
                )


def _signal_handlers() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore_signal_handlers(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


def create_scheduler(
    session_name: str,
    cache_size: int = 100,
    extra_paths: list[str] | None = None,
    **kwargs: Any,
) -> PersistentLocalScheduler:
    """Entry point for the `local_persistent` torchx scheduler."""
    image_provider: type[ImageProvider] = kwargs.pop("image_provider_class", CWDImageProvider)
    return PersistentLocalScheduler(
        session_name=session_name,
        image_provider_class=image_provider,
        cache_size=cache_size,
        extra_paths=extra_paths,
        experiment=kwargs.pop("experiment", None),
    )
