"""Local backend: jobs are detached process groups on this machine that outlive their launcher.

The app id is torchx's `<name>-<random suffix>`; the handle is
`local_persistent://<session>/<app id>`. Each job runs under `local_supervisor.py`, which
writes the replicas' exit codes and a `status` file when they end, so any later process can
read the real outcome. Every process of a job (the supervisor included) carries the
`NEMORUN_APP_ID=<app id>` environment marker, so the job can be found, watched and cancelled
even when nothing else about it survived.

Launch order, so a kill -9 of the launcher at any instant never leaves a job running without
a record: the job folder and its reserved, locked `status` file; the intent record
(`launch: pending`, with the launcher's identity); the supervisor; the confirmation (its pid,
start ticks and boot id: enough to tell it apart from a later process that reuses the pid).
`describe` settles a record left pending: it adopts a supervisor found by its marker, reads
the status of a job that already ended, or reports a job whose launcher died before starting
it. The state is always the processes' truth: a job whose supervisor was killed stays RUNNING
while any of its processes lives, and its logs keep flowing (replicas write their log files
themselves).
"""

from __future__ import annotations

import dataclasses
import fcntl
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
from collections.abc import Callable, Iterable, Iterator
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
from nemo_run.core import diskerrors, processes
from nemo_run.core.execution.local import LocalExecutor
from nemo_run.core.redact import redact_args, redact_env
from nemo_run.core.store import JobRecord, store_path
from nemo_run.exceptions import BackendError, ConfigError
from nemo_run.run.torchx_backend.schedulers.api import (
    LAUNCH,
    LAUNCH_PENDING,
    NEVER_STARTED,
    TERMINAL_STATES,
    SchedulerMixin,
)
from nemo_run.run.torchx_backend.schedulers.local_supervisor import (
    EXIT_CODE_FILE,
    OFFSETS_FILE,
    STATUS_END,
    STATUS_FILE,
    STATUS_RUNNING,
    status_size,
)
from nemo_run.run.torchx_backend.schedulers.logs import MAX_LINE, follow_file

log = logging.getLogger(__name__)

BACKEND = "local_persistent"
APP_ID_ENV = "NEMORUN_APP_ID"  # in every process of a job: finds it when no record names it
SUPERVISOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "local_supervisor.py")
# Imported rather than run as a script, so its cached bytecode is used (compiling it is ~3 ms
# a job); appended to sys.path, so nothing in this folder can shadow the standard library.
SUPERVISOR_BOOT = (
    f"import sys; sys.path.append({os.path.dirname(SUPERVISOR)!r}); "
    "import local_supervisor; sys.exit(local_supervisor.main())"
)
SUPERVISOR_LOG = "supervisor.log"
CANCEL_GRACE_S = 5.0
READ_CHUNK = 65536
STREAM_FILES = {
    None: "combined.log",
    Stream.COMBINED: "combined.log",
    Stream.STDOUT: "stdout.log",
    Stream.STDERR: "stderr.log",
}


def __getattr__(name: str) -> Any:
    if name == "LOCAL_JOB_DIRS":  # the store file in use now, resolved on every access
        return store_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_job_dir() -> str:
    """Where jobs without an experiment keep their logs: `$NEMORUN_HOME/jobs`."""
    return os.path.join(get_nemorun_home(), "jobs")


def _marker(app_id: str) -> bytes:
    return f"{APP_ID_ENV}={app_id}".encode()


def _format_request(request: PopenRequest) -> str:
    """Dry-run text: one command line per replica, with secrets in arguments and env masked."""
    lines = [f"app_id: {request.app_id}", f"log_dir: {request.log_dir}"]
    for role, params in request.role_params.items():
        for k, p in enumerate(params):
            lines.append(f"{role}[{k}]: {subprocess.list2cmdline(redact_args(p.args))}")
            lines.append(f"  cwd: {p.cwd}")
            for key, value in sorted(redact_env(p.env).items()):
                lines.append(f"  env {key}={value}")
    return "\n".join(lines)


def _read_status(log_dir: str | None, roles: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The supervisor's final outcome, or None while it has not written one."""
    if not log_dir:
        return None
    try:
        with open(os.path.join(log_dir, STATUS_FILE), encoding="utf-8", errors="replace") as fh:
            lines = fh.read().split("\n")
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("unreadable job status in %s: %s", log_dir, e)
        return None
    atomic = lines[0].startswith("ended_at ")  # written whole by supervisors before 'end' lines
    if STATUS_END not in lines and not atomic:
        return None  # still running (or a rewrite half done)
    fields: dict[str, str] = {}
    exits: list[dict[str, Any]] = []
    try:
        for line in lines:
            key, _, value = line.partition(" ")
            if key == "exit":
                k, code, restarts, role = value.split(" ", 3)
                exits.append(
                    {
                        "role": role,
                        "replica_id": int(k),
                        "restarts": int(restarts),
                        "exit_code": None if code == "None" else int(code),
                    }
                )
            elif value:
                fields[key] = value
        status: dict[str, Any] = {
            "ended_at": float(fields["ended_at"]),
            "terminated_by_signal": fields.get("terminated", "0").strip() == "1",
            "replicas": exits,
        }
    except (KeyError, ValueError) as e:
        log.warning("unreadable job status in %s: %s", log_dir, e)
        return None
    if fields.get("reason"):
        status["reason"] = fields["reason"]
    elif not exits:  # an older supervisor: one exit_code file per replica
        status["replicas"] = _exit_code_files(log_dir, roles)
    return status


def _exit_code_files(log_dir: str, roles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    replicas = []
    for role in roles:
        for k in range(int(role.get("num_replicas", 1))):
            path = os.path.join(log_dir, role["name"], str(k), EXIT_CODE_FILE)
            try:
                with open(path, encoding="utf-8") as fh:
                    code, restarts = (int(v) for v in fh.read().split())
            except (OSError, ValueError):
                code, restarts = None, 0
            replicas.append(
                {"role": role["name"], "replica_id": k, "exit_code": code, "restarts": restarts}
            )
    return replicas


def _state_from_status(status: dict[str, Any]) -> tuple[AppState, str]:
    reason = status.get("reason", "")
    if not status["replicas"]:  # the supervisor could not start any replica
        return AppState.FAILED, reason or "the job ended without recording exit codes"
    failed = [r for r in status["replicas"] if r["exit_code"] != 0]
    if not failed:
        return AppState.SUCCEEDED, reason
    first = failed[0]
    msg = f"{first['role']}[{first['replica_id']}] exited with code {first['exit_code']}"
    if len(failed) > 1:
        msg += f" ({len(failed)} replicas failed)"
    return AppState.FAILED, f"{msg}; {reason}" if reason else msg


def _exit_code(status: dict[str, Any]) -> int | None:
    """The job's exit code: the first non-zero replica code, else 0 (None when unknown)."""
    codes = [r["exit_code"] for r in status.get("replicas", []) if r.get("exit_code") is not None]
    if not codes:
        return None
    return next((c for c in codes if c != 0), 0)


def _first_missing_dir(path: str) -> str:
    """The outermost folder of `path` that does not exist yet: what a failed launch removes."""
    missing, parent = path, os.path.dirname(path)
    while parent != missing and not os.path.exists(parent):
        missing, parent = parent, os.path.dirname(parent)
    return missing


def _remove_job_dir(log_dir: str, top: str) -> None:
    """Remove a job folder a failed launch created, and the empty parents it created."""
    shutil.rmtree(log_dir, ignore_errors=True)
    folder = os.path.dirname(log_dir)
    while len(folder) >= len(top) and folder.startswith(top):
        try:
            os.rmdir(folder)  # only when empty: a concurrent launch may share it
        except OSError:
            return
        folder = os.path.dirname(folder)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _follow_streams(
    replica_dir: str, finished: Callable[[], bool], should_tail: bool
) -> Iterator[str]:
    """The combined stream past the end of `combined.log`, read from `stdout.log` and
    `stderr.log` where the (dead) supervisor's offsets say it stopped copying them."""
    try:
        with open(os.path.join(replica_dir, OFFSETS_FILE), "rb") as fh:
            out_at, err_at, copied = (int(v) for v in fh.read().split()[:3])
    except (OSError, ValueError):
        return  # no offsets (a supervisor before them, or one killed at start): nothing safe
    paths = [os.path.join(replica_dir, STREAM_FILES[s]) for s in (Stream.STDOUT, Stream.STDERR)]
    fds = []
    try:
        for path in paths:
            try:
                fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            except FileNotFoundError:
                fds.append(None)
        positions = [out_at, err_at]
        combined = os.path.join(replica_dir, STREAM_FILES[None])
        extra = (os.path.getsize(combined) if os.path.exists(combined) else 0) - copied
        if extra > 0:  # copied into combined.log, but killed before the offsets said so
            with open(combined, "rb") as fh:
                fh.seek(copied)
                tail = fh.read(extra)
            for i, fd in enumerate(fds):
                if fd is not None and os.pread(fd, extra, positions[i]) == tail:
                    positions[i] += extra
                    break
        pending = [b"", b""]
        delay = 0.01
        while True:
            done = not should_tail or finished()
            got = False
            for i, fd in enumerate(fds):
                data = os.pread(fd, READ_CHUNK, positions[i]) if fd is not None else b""
                if data:
                    got = True
                    positions[i] += len(data)
                    *lines, pending[i] = (pending[i] + data).split(b"\n")
                    yield from (line.decode("utf-8", "replace") + "\n" for line in lines)
                    while len(pending[i]) > MAX_LINE:  # bounded memory: a long line in pieces
                        yield pending[i][:MAX_LINE].decode("utf-8", "replace")
                        pending[i] = pending[i][MAX_LINE:]
            if got:
                delay = 0.01
                continue
            if done:
                yield from (p.decode("utf-8", "replace") for p in pending if p)
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
    finally:
        for fd in fds:
            if fd is not None:
                os.close(fd)


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
        app_id = request.app_id
        log_dir = os.path.abspath(request.log_dir)
        replicas, replica_dirs = [], []
        for role_name, params in request.role_params.items():
            for k, param in enumerate(params):
                replica_dirs.append(os.path.abspath(request.role_log_dirs[role_name][k]))
                env = self._get_replica_env(param)
                env[APP_ID_ENV] = app_id
                replicas.append(
                    {
                        "role": role_name,
                        "replica_id": k,
                        "args": param.args,
                        "env": env,
                        "cwd": param.cwd,
                        "stdout": os.path.abspath(param.stdout),
                        "stderr": os.path.abspath(param.stderr),
                        "combined": os.path.abspath(param.combined),
                    }
                )
        roles = [
            {
                "name": role.name,
                "entrypoint": role.entrypoint,
                "args": list(role.args),
                "num_replicas": role.num_replicas,
            }
            for role in (app.roles if app else [])
        ] or [
            {"name": r, "entrypoint": "", "args": [], "num_replicas": len(p)}
            for r, p in request.role_params.items()
        ]
        spec = {"log_dir": log_dir, "retries": retries, "replicas": replicas}

        top = _first_missing_dir(log_dir)
        status_fd, err_fd = self._create_job_dir(log_dir, top, replica_dirs, replicas)
        try:
            try:
                self._put_intent(
                    app_id,
                    experiment_id=executor.experiment_id if executor else None,
                    log_dir=log_dir,
                    data={"roles": roles, "retries": retries},  # it adds the launcher's identity
                )
            except BaseException:
                _remove_job_dir(log_dir, top)
                raise
            try:
                proc = self._start_supervisor(log_dir, spec, app_id, status_fd, err_fd)
            except BaseException:
                try:
                    self._launch_failed(app_id)
                except Exception as e:  # noqa: BLE001 - the record then reads "never started"
                    log.warning("could not drop the launch record of %s: %s", app_id, e)
                _remove_job_dir(log_dir, top)
                raise
        finally:
            os.close(status_fd)  # the supervisor holds the lock from here on
            os.close(err_fd)
        stat = processes.proc_stat(proc.pid)
        identity = {
            "pid": proc.pid,
            "start_ticks": stat.start_ticks if stat else None,
            "boot_id": processes.boot_id(),
        }
        try:
            record = self._launch_confirmed(app_id, state=AppState.RUNNING.name, **identity)
        except Exception as e:  # noqa: BLE001 - the job runs; describe adopts it by its marker
            log.warning("job %s started but its record could not be confirmed: %s", app_id, e)
            return app_id
        if record.state == AppState.CANCELLED.name:  # cancelled while it was starting
            self._terminate(dataclasses.replace(record, data={**record.data, **identity}))
        return app_id

    def _create_job_dir(
        self, log_dir: str, top: str, replica_dirs: list[str], replicas: list[dict[str, Any]]
    ) -> tuple[int, int]:
        """The job folder with its status file sized (its blocks reserved, so the outcome can
        be recorded on a disk the job fills) and locked; (status fd, supervisor.log fd).
        Disk trouble raises DiskError and leaves nothing behind."""
        try:
            os.makedirs(log_dir, mode=0o700)
        except FileExistsError as e:
            raise ConfigError(f"log dir {log_dir} already exists; app ids must be unique") from e
        except OSError as e:
            _remove_job_dir(log_dir, top)
            diskerrors.raise_if_disk_trouble(e, log_dir, "creating the job folder")
            raise
        fds: list[int] = []
        try:
            for folder in replica_dirs:
                os.makedirs(folder, mode=0o700, exist_ok=True)
            flags = os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            fds.append(os.open(os.path.join(log_dir, STATUS_FILE), os.O_RDWR | flags, 0o644))
            size = status_size([r["role"] for r in replicas])
            _write_all(fds[0], STATUS_RUNNING.ljust(size, b"\n"))
            fcntl.flock(fds[0], fcntl.LOCK_EX)
            fds.append(os.open(os.path.join(log_dir, SUPERVISOR_LOG), os.O_WRONLY | flags, 0o644))
            return fds[0], fds[1]
        except BaseException as e:
            for fd in fds:
                os.close(fd)
            _remove_job_dir(log_dir, top)
            if isinstance(e, OSError):
                diskerrors.raise_if_disk_trouble(e, log_dir, "creating the job folder")
            raise

    def _start_supervisor(
        self, log_dir: str, spec: dict[str, Any], app_id: str, status_fd: int, err_fd: int
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-S", "-I", "-c", SUPERVISOR_BOOT],
            stdin=subprocess.PIPE,
            stdout=status_fd,
            stderr=err_fd,
            cwd=log_dir,
            start_new_session=True,
            close_fds=True,
            env={"PATH": os.environ.get("PATH", os.defpath), APP_ID_ENV: app_id},
        )
        try:
            assert proc.stdin is not None
            proc.stdin.write(marshal.dumps(spec))
            proc.stdin.close()
        except BrokenPipeError as e:
            proc.wait()
            with open(
                os.path.join(log_dir, SUPERVISOR_LOG), encoding="utf-8", errors="replace"
            ) as fh:
                detail = fh.read().strip()
            raise BackendError(f"the local job supervisor exited at start: {detail}") from e
        except BaseException:  # e.g. Ctrl+C mid-handover: the launch is undone, so stop it all
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
            raise
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
                record = self._record_final(
                    app_id,
                    state.name,
                    msg=msg,
                    final=final,
                    exit_code=_exit_code(final),
                    ended_at=final.get("ended_at", time.time()),
                )
                state, msg = AppState[record.state], record.data.get("msg", msg)
        return self._response(record, state, msg)

    def _live_state(self, record: JobRecord) -> tuple[AppState, str, dict[str, Any] | None]:
        """(state, message, final status to persist or None while the job is still running)."""
        data = record.data
        pending = data.get(LAUNCH) == LAUNCH_PENDING
        if not pending and "pid" not in data:  # imported from nemo-run 0.11.1: no process
            return AppState.UNKNOWN, "imported from nemo-run 0.11.1 without process details", None
        self._reap()
        status = _read_status(record.log_dir, data.get("roles", []))
        if status is not None:
            return (*_state_from_status(status), status)
        if pending:
            adopted = self._adopt(record)
            if adopted is None:
                return self._unstarted_state(record)
            record, data = adopted, adopted.data
        if self._supervisor_alive(data):
            return AppState.RUNNING, "", None
        status = _read_status(record.log_dir, data.get("roles", []))  # it may have just ended
        if status is not None:
            return (*_state_from_status(status), status)
        lost = self._lost_supervisor_text(data)
        if self._job_processes(record):
            return AppState.RUNNING, f"{lost}; its processes still run", None
        return (
            AppState.FAILED,
            f"{lost}; its processes ended but their exit codes are lost",
            {"replicas": []},
        )

    @staticmethod
    def _supervisor_alive(data: dict[str, Any]) -> bool:
        pid = data.get("pid")
        return bool(pid) and processes.is_same_process_alive(
            pid, data.get("start_ticks") or -1, data.get("boot_id") or ""
        )

    @staticmethod
    def _lost_supervisor_text(data: dict[str, Any]) -> str:
        pid = f" (pid {data['pid']})" if data.get("pid") else ""
        if data.get("boot_id") and data["boot_id"] != processes.boot_id():
            return f"the host rebooted under the job's supervisor{pid}"
        return f"the job's supervisor{pid} was killed"

    def _job_processes(self, record: JobRecord) -> list[int]:
        """Live processes of the job: its process group's members that carry its marker."""
        marker = _marker(record.app_id)
        pgid = record.data.get("pid")
        if pgid:
            return processes.marked_group_members(pgid, marker)
        return processes.find_env_marker(marker)

    def _adopt(self, record: JobRecord) -> JobRecord | None:
        """A pending launch whose launcher died after starting the supervisor: find the job's
        processes by their marker and record the supervisor (its group leader) as confirmed."""
        stats = [processes.proc_stat(p) for p in processes.find_env_marker(_marker(record.app_id))]
        stats = [s for s in stats if s is not None]
        if not stats:
            return None
        leader = next((s for s in stats if s.pid == s.pgrp), None)
        return self._launch_confirmed(
            record.app_id,
            state=AppState.RUNNING.name,
            pid=leader.pid if leader else stats[0].pgrp,
            start_ticks=leader.start_ticks if leader else None,
            boot_id=processes.boot_id(),
        )

    def _unstarted_state(self, record: JobRecord) -> tuple[AppState, str, dict[str, Any] | None]:
        """A pending launch with no process to show for it: starting, or never started."""
        data = record.data
        if record.log_dir and processes.is_locked(os.path.join(record.log_dir, STATUS_FILE)):
            return AppState.SUBMITTED, "starting", None  # the launcher, or a supervisor pre-exec
        if self._launcher_alive(record):
            return AppState.SUBMITTED, "starting", None
        status = _read_status(record.log_dir, data.get("roles", []))
        if status is not None:
            return (*_state_from_status(status), status)
        if self._supervisor_ran(record):
            msg = (
                "the job's supervisor was killed; its processes ended but their exit codes are lost"
            )
            return AppState.FAILED, msg, {"replicas": []}
        return AppState.FAILED, NEVER_STARTED, {"replicas": []}

    @staticmethod
    def _supervisor_ran(record: JobRecord) -> bool:
        """The supervisor creates each replica's offsets file before starting it."""
        for role in record.data.get("roles", []):
            for k in range(int(role.get("num_replicas", 1))):
                if os.path.exists(
                    os.path.join(record.log_dir or "", role["name"], str(k), OFFSETS_FILE)
                ):
                    return True
        return False

    def _response(self, record: JobRecord, state: AppState, msg: str) -> DescribeAppResponse:
        final = (
            record.data.get("final")
            or _read_status(record.log_dir, record.data.get("roles", []))
            or {}
        )
        exit_codes = {(r["role"], r["replica_id"]): r for r in final.get("replicas", [])}
        roles, statuses = [], []
        for spec in record.data.get("roles", []):
            name, count = spec["name"], int(spec.get("num_replicas", 1))
            roles.append(
                Role(
                    name=name,
                    image="",
                    entrypoint=spec.get("entrypoint", ""),
                    args=list(spec.get("args", [])),
                    num_replicas=count,
                )
            )
            replicas = []
            for k in range(count):
                done = exit_codes.get((name, k))
                if done is None:
                    replica_state = state
                else:
                    replica_state = (
                        AppState.SUCCEEDED if done["exit_code"] == 0 else AppState.FAILED
                    )
                    if state == AppState.CANCELLED:
                        replica_state = state
                replicas.append(
                    ReplicaStatus(id=k, state=replica_state, role=name, hostname="localhost")
                )
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
            warnings.warn(
                "local log lines carry no timestamps: since/until are ignored", stacklevel=2
            )
        replica_dir = os.path.join(record.log_dir or "", role_name, str(k))
        if streams in (None, Stream.COMBINED):
            return self._matching(self._combined(app_id, replica_dir, should_tail), regex)
        path = os.path.join(replica_dir, STREAM_FILES[streams])
        return self._matching(follow_file(path, lambda: self._finished(app_id), should_tail), regex)

    def _combined(self, app_id: str, replica_dir: str, should_tail: bool) -> Iterator[str]:
        """`combined.log`, then (when its supervisor died without writing its status) the
        rest of the replica's output, read from `stdout.log` and `stderr.log`."""

        def combined_done() -> bool:  # the job ended, or combined.log will not grow again
            return self._finished(app_id) or self._supervisor_lost(app_id)

        lost_at_start = self._supervisor_lost(app_id)
        path = os.path.join(replica_dir, STREAM_FILES[None])
        yield from follow_file(path, combined_done, should_tail)
        if lost_at_start or (should_tail and self._supervisor_lost(app_id)):
            yield from _follow_streams(replica_dir, lambda: self._finished(app_id), should_tail)

    def _supervisor_lost(self, app_id: str) -> bool:
        """The supervisor died without writing the status: `combined.log` grows no more."""
        record = self._store().get(self.backend, app_id)
        if record is None or not record.data.get("pid") or self._supervisor_alive(record.data):
            return False
        return _read_status(record.log_dir, []) is None

    # -- cancel ---------------------------------------------------------------------------
    def _stop(self, record: JobRecord) -> None:
        if record.data.get(LAUNCH) == LAUNCH_PENDING and not record.data.get("pid"):
            record = self._await_start(record)
        if record.data.get("pid"):
            self._terminate(record)

    def _await_start(self, record: JobRecord) -> JobRecord:
        """A cancel during a launch: wait (briefly) until the supervisor can be named."""
        deadline = time.monotonic() + CANCEL_GRACE_S
        status = os.path.join(record.log_dir or "", STATUS_FILE)
        while True:
            current = self._store().get(self.backend, record.app_id) or record
            if current.data.get("pid"):
                return current
            adopted = self._adopt(current)
            if adopted is not None:
                return adopted
            if not processes.is_locked(status) or time.monotonic() > deadline:
                return current  # nothing started; a launcher still alive sees the cancel
            time.sleep(0.02)

    def _terminate(self, record: JobRecord) -> None:
        """SIGTERM the job's processes, then SIGKILL whatever is left after a grace period."""
        data = record.data
        pgid = data["pid"]
        marker = _marker(record.app_id)

        def members() -> list[int]:
            leader_alive = self._supervisor_alive(data)
            return [
                p
                for p in processes.group_members(pgid)
                if (p == pgid and leader_alive) or processes.has_env_marker(p, marker)
            ]

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
            search = os.pathsep.join(
                p for p in (param.env.get("PATH"), os.environ.get("PATH")) if p
            )
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
