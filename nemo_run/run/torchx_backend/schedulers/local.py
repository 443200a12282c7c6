"""Local backend: jobs are detached process groups on this machine that outlive their launcher.

The app id is torchx's `<name>-<random suffix>`; the handle is
`local_persistent://<session>/<app id>`. Jobs run under `local_supervisor.py`, which writes
the replicas' exit codes and a `status` file when they end, so any later process can read
the real outcome. Every process a job runs carries the `NEMORUN_APP_ID=<app id>` environment
marker, so the job can be found, watched and cancelled even when nothing else about it
survived; a job's processes share a process group of their own (led by its first replica).

No interpreter and no process starts per job but the job's own. Each launching process has
one job host: a bare interpreter (`python -S -I`, running `local_supervisor.serve`) started
with `posix_spawn` at its first dry run or launch, in a session of its own, its stdio
/dev/null, holding one end of a socket pair. A launch sends it the launch spec (`marshal`,
in memory: never on disk) with the status file's descriptor; it starts the replicas with
`posix_spawn` and supervises every job of its launcher in one poll loop. The launch waits
for nothing: the request waits in the socket until the host reads it (the first launch
does not wait for the host's start-up). The host is the launcher's child, but neither
shares its session nor its terminal, and outlives it: it exits once the launcher's end of
the socket is closed (the launcher exited) and its last job ended. After `HOST_LAUNCHES`
launches a launcher starts a new host, and the old one ends with its last job.
`NEMORUN_LOCAL_SUPERVISOR=exec` (and any platform but Linux) starts a supervisor per job
instead, `python -S -I local_supervisor`, the spec on its stdin and the status file as its
stdout; it carries the job's marker.

Launch order, so a kill -9 of the launcher at any instant never leaves a job running without
a record: the job folder and its reserved, locked `status` file (reading `pending`); the
intent record (`launch: pending`, with the launcher's identity); the hand-over to the host;
the confirmation (the host's pid, start ticks and boot id: enough to tell it apart from a
later process that reuses the pid; `host: true`). A supervisor that takes a job first
writes `running <its identity>` in the status file, before starting anything. `describe`
settles a record left pending: it adopts the supervisor the status file names, reads
`starting` while the file is locked (by the launcher, or by the request in the host's
socket), and otherwise reports a job whose launcher died before handing it over. A request
cut short by the launcher's death is dropped by the host.

Cancel writes a mark in the status file's reserved tail, then SIGTERMs every process with
the job's marker, and SIGKILLs what is left after a grace period; while a live host holds
the job, the cancel also waits for the host's final status. The supervisor reads the mark
before starting anything and before any restart, and then starts and restarts nothing more
for that job; it also ends the job's process group itself (SIGTERM, SIGKILL after the same
grace), so a replica that was starting while the canceller looked (its environment not yet
readable) ends too. A cancel never signals a host: that would stop its other jobs. A launch
interrupted (Ctrl+C) after the hand-over cancels the job the same way before its record and
folder go.

Crash story of the host: killed, it takes no job's processes with it, but all the jobs it
supervised lose their recorder at once. Each reads RUNNING while any process with its
marker lives (cancel still ends them all), its `stdout.log` and `stderr.log` keep growing
(replicas write them), and readers continue `combined.log` from them; once its processes
are gone it reads FAILED: "the job's supervisor (pid N) was killed; its processes ended but
their exit codes are lost". A job still queued in the dead host's socket never started and
reads so. The launcher's next launch starts a new host. A bug or an unusable spec in one job
fails that job only.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import marshal
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

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
from torchx.specs import AppDef, AppState, ReplicaStatus, Role, RoleStatus

from nemo_run.config import default_job_dir
from nemo_run.config import get_nemorun_home as get_nemorun_home
from nemo_run.core import diskerrors, processes
from nemo_run.core.execution.base import Executor as Executor
from nemo_run.core.execution.local import LocalExecutor
from nemo_run.core.redact import redact_args, redact_env
from nemo_run.core.store import JobRecord, store_path
from nemo_run.exceptions import BackendError, ConfigError
from nemo_run.run.torchx_backend.schedulers import local_supervisor
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
    STATUS_PENDING,
    SUPERVISOR_LOG,
    status_size,
)
from nemo_run.run.torchx_backend.schedulers.logs import MAX_LINE, follow_file
from nemo_run.run.torchx_backend.schedulers.runopts import DryRun

if TYPE_CHECKING:  # `_signal` has no stubs; `signal` has the same functions, typed
    import signal as _signal
else:
    import _signal  # returns plain ints: no enum conversion of 64 signals a call

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
HOST_BOOT = (
    f"import sys; sys.path.append({os.path.dirname(SUPERVISOR)!r}); "
    "import local_supervisor; sys.exit(local_supervisor.serve(int(sys.argv[1]), int(sys.argv[2])))"
)
# How jobs are supervised: "host" (the default where it can be: Linux) or "exec" (an
# interpreter per job); "fork" (the former default) is taken to mean "host".
SUPERVISOR_MODE_ENV = "NEMORUN_LOCAL_SUPERVISOR"
SUPERVISOR_MODES = ("host", "exec", "fork")
CANCEL_GRACE_S = 5.0
READ_CHUNK = 65536
# each replica's log files (0.11.1's names for them)
COMBINED_LOG = "combined.log"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
STREAM_FILES = {
    None: COMBINED_LOG,
    Stream.COMBINED: COMBINED_LOG,
    Stream.STDOUT: STDOUT_LOG,
    Stream.STDERR: STDERR_LOG,
}
FCNTL_AVAILABLE = True  # 0.11.1's flag: this backend always locks with fcntl (Linux, macOS)


def __getattr__(name: str) -> Any:
    if name == "LOCAL_JOB_DIRS":  # the store file in use now, resolved on every access
        return store_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The names `__getattr__` serves too, so `dir()` and API tools see them."""
    return sorted([*globals(), "LOCAL_JOB_DIRS"])


def _proc_stats(pids: Iterable[int]) -> list[processes.ProcStat]:
    """The stats of those that still exist."""
    return [s for s in (processes.proc_stat(p) for p in pids) if s is not None]


def _log_file(path: str | None) -> str:
    """A replica's log file: torchx names them all when given a log dir, as it always is here."""
    if path is None:
        raise ValueError("a replica without log files: torchx was given no log dir")
    return os.path.abspath(path)


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


def _role_specs(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's role specs; a record imported from nemo-run 0.11.1 names its roles only."""
    roles = data.get("roles") or []
    return [{"name": r, "num_replicas": 1} if isinstance(r, str) else r for r in roles]


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
    except FileNotFoundError:
        combined = os.path.join(replica_dir, STREAM_FILES[None])
        if os.path.exists(combined) and os.path.getsize(combined) > 0:
            return  # copied by a supervisor from before offsets files: nothing safe
        out_at = err_at = copied = 0  # made before the first copy: nothing was copied
    except (OSError, ValueError):
        return
    paths = [os.path.join(replica_dir, STREAM_FILES[s]) for s in (Stream.STDOUT, Stream.STDERR)]
    fds: list[int | None] = []
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


# -- the job host ------------------------------------------------------------------------
# Measured costs (2 CPUs): a new interpreter per job is ~20 ms of CPU; a supervisor forked
# per job ~3 ms (copy-on-write faults as Python touches shared pages, and its own files).
# Under load those compete with the launchers for the CPUs. The host costs one interpreter
# start per launching process (at its first dry run, off the launch path), and per job only
# what the job needs: posix_spawn of its replicas (vfork: no page is copied), their log
# files, a pidfd, and the status written once. A launch sends one message and waits for no
# other process; the host runs as SCHED_BATCH (see `local_supervisor.spawn_scheduler`), so
# being woken by a launch does not preempt the launcher.
ALL_SIGNALS = _signal.valid_signals()
CATCHABLE = local_supervisor.CATCHABLE
HOST_TIMEOUT_S = 30.0  # a host that takes no request for this long (stopped?) is replaced
HOST_LAUNCHES = 256  # jobs one host is given: bounds its open files, and what a kill loses
NO_SIGPIPE = socket.MSG_NOSIGNAL  # a dead peer is an error here, never a signal that kills


class _HostRefused(Exception):
    """No host could be started or given the job here: nothing started."""


@dataclasses.dataclass
class _Host:
    """This process's job host (its child); `sock` is our end of the socket pair."""

    pid: int
    sock: socket.socket
    identity: dict[str, Any]
    launches: int = 0


_HOST: _Host | None = None
_HOST_LOCK = threading.Lock()  # one launch at a time on the socket
_RETIRED: list[int] = []  # hosts we stopped giving jobs to: reaped once they exit


def _forget_host() -> None:
    """In any child forked from this process: the host is not its own (each process gets
    its own), its socket must not keep that host alive, and the lock may have been held."""
    global _HOST, _HOST_LOCK
    if _HOST is not None:
        _HOST.sock.close()
        _HOST = None
    _RETIRED.clear()
    _HOST_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_host)


def _supervisor_mode() -> str:
    """'host' unless asked for 'exec' ('fork', the former default, means 'host'), or off
    Linux: a host names itself and is named through /proc, and waits on pidfds; elsewhere
    a supervisor per job (which needs neither) is the tested way."""
    asked = os.environ.get(SUPERVISOR_MODE_ENV, "").strip().lower()
    if asked and asked not in SUPERVISOR_MODES:
        raise ConfigError(
            f"{SUPERVISOR_MODE_ENV}={asked!r}: expected one of {', '.join(SUPERVISOR_MODES)}"
        )
    if asked == "exec" or not sys.platform.startswith("linux"):
        return "exec"
    return "host"


def _start_host() -> _Host:
    """posix_spawn the host: a new session, stdio /dev/null, our socket's other end at
    HOST_FD, every signal at its default; nothing of this process is copied."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.settimeout(HOST_TIMEOUT_S)
    moved = os.dup(theirs.fileno()) if theirs.fileno() == local_supervisor.HOST_FD else -1
    source = moved if moved >= 0 else theirs.fileno()
    policy = os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else -1
    try:
        pid = os.posix_spawn(
            sys.executable,
            [
                sys.executable,
                "-S",
                "-I",
                "-c",
                HOST_BOOT,
                str(local_supervisor.HOST_FD),
                str(policy),
            ],
            {"PATH": os.environ.get("PATH", os.defpath)},
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, 1, 2),
                (os.POSIX_SPAWN_DUP2, source, local_supervisor.HOST_FD),
            ],
            setsid=True,
            setsigdef=CATCHABLE,
            setsigmask=(),
        )
    except (OSError, ValueError) as e:
        ours.close()
        raise _HostRefused(f"cannot start the job host: {type(e).__name__}: {e}") from e
    finally:
        theirs.close()
        if moved >= 0:
            os.close(moved)
    stat = processes.proc_stat(pid)
    identity = {
        "pid": pid,
        "start_ticks": stat.start_ticks if stat else None,
        "boot_id": processes.boot_id(),
        "host": True,
    }
    return _Host(pid, ours, identity)


def _ensure_host() -> _Host:
    """The host the next launch goes to (started now if there is none, or the last one had
    its share of jobs). Called with _HOST_LOCK held."""
    global _HOST
    _reap_retired()
    if _HOST is not None and _HOST.launches >= HOST_LAUNCHES:
        _retire(_HOST)
        _HOST = None
    if _HOST is None:
        _HOST = _start_host()
    return _HOST


def _prestart_host() -> None:
    """At a dry run: the host boots while the caller goes on, so a launch never waits."""
    if _supervisor_mode() != "host":
        return
    with _HOST_LOCK:
        try:
            _ensure_host()
        except _HostRefused as e:  # the launch tries again, then falls back to exec
            log.debug("%s", e)


def _retire(host: _Host) -> None:
    """No more jobs for `host`: it sees the socket close and ends with its last job."""
    host.sock.close()
    _RETIRED.append(host.pid)


def _reap_retired() -> None:
    for pid in list(_RETIRED):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _RETIRED.remove(pid)


def _send_to_host(message: bytes, status_fd: int) -> dict[str, Any]:
    """Give the job to the host; its identity. A host found dead (or not reading) is
    replaced and the job sent again: a request it got only part of, it drops."""
    global _HOST
    for _ in range(3):
        host = _ensure_host()
        try:
            sent = socket.send_fds(host.sock, [message], [status_fd], NO_SIGPIPE)
            if sent < len(message):
                host.sock.sendall(message[sent:], NO_SIGPIPE)
        except OSError as e:  # it died, or hangs: start another
            log.debug("job host %s did not take the job: %s", host.pid, e)
            _retire(host)
            _HOST = None
            continue
        host.launches += 1
        return host.identity
    raise _HostRefused("no job host took the job")


def _withdraw(status_fd: int, app_id: str) -> None:
    """Undo a hand-over (the launch was interrupted): mark the job cancelled, so its
    supervisor starts nothing more, and end whatever it started already."""
    _mark_cancelled_fd(status_fd)
    marker = _marker(app_id)
    for pid in processes.find_env_marker(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _mark_cancelled_fd(fd: int) -> bool:
    """Write the cancel mark in a status file that is not final; False when it cannot be."""
    try:
        at = local_supervisor.cancel_offset(os.fstat(fd).st_size)
        head = os.pread(fd, len(local_supervisor.STATUS_PENDING), 0)
        if at is None or not head.startswith((b"pending", local_supervisor.STATUS_TAKEN)):
            return False
        os.pwrite(fd, local_supervisor.CANCEL_MARK, at)
        return True
    except OSError:
        return False


def _mark_cancelled(log_dir: str | None) -> bool:
    """The cancel mark in the job's status file (see `local_supervisor`)."""
    if not log_dir:
        return False
    try:
        fd = os.open(os.path.join(log_dir, STATUS_FILE), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return _mark_cancelled_fd(fd)
    finally:
        os.close(fd)


def _status_head(log_dir: str | None) -> tuple[str, dict[str, Any] | None]:
    """The status file's first word ('pending', 'running', '' once final or unreadable) and
    the identity of the supervisor that took the job (None before, or for a supervisor
    older than that line)."""
    if not log_dir:
        return "", None
    try:
        with open(os.path.join(log_dir, STATUS_FILE), "rb") as fh:
            words = fh.read(local_supervisor.HEAD_MAX).split(b"\n", 1)[0].split()
    except OSError:
        return "", None
    if not words or words[0] not in (b"pending", local_supervisor.STATUS_TAKEN):
        return "", None
    if len(words) < 5 or not words[1].isdigit():
        return words[0].decode(), None
    ticks = int(words[2]) if words[2].lstrip(b"-").isdigit() and int(words[2]) >= 0 else None
    boot = words[3].decode(errors="replace")
    identity = {
        "pid": int(words[1]),
        "start_ticks": ticks,
        "boot_id": "" if boot == "-" else boot,
        "host": words[4] == b"host",
    }
    return "running", identity


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
    def _submit_dryrun(self, app: AppDef, cfg: LocalExecutor) -> AppDryRunInfo[PopenRequest]:  # type: ignore[override]
        opts: LocalOpts = {"log_dir": cfg.job_dir or default_job_dir()}
        request = self._to_popen_request(app, opts)
        _check_entrypoints(request)
        _supervisor_mode()  # an unknown NEMORUN_LOCAL_SUPERVISOR fails here, before any launch
        _prestart_host()  # booting while the caller goes on: its launch will not wait for it
        return AppDryRunInfo(request, _format_request)

    def _app_id_of(self, request: PopenRequest) -> str:
        return request.app_id

    # -- schedule -------------------------------------------------------------------------
    def schedule(self, dryrun_info: DryRun[PopenRequest]) -> str:  # type: ignore[override]
        request = dryrun_info.request
        app, executor = dryrun_info.app, dryrun_info.executor
        retries = max((role.max_retries for role in app.roles), default=0) if app else 0
        app_id = request.app_id
        log_dir = os.path.abspath(request.log_dir)
        replicas = []
        for role_name, params in request.role_params.items():
            for k, param in enumerate(params):
                env = self._get_replica_env(param)
                env[APP_ID_ENV] = app_id
                replicas.append(
                    {
                        "role": role_name,
                        "replica_id": k,
                        "args": param.args,
                        "env": env,
                        "cwd": param.cwd,
                        "stdout": _log_file(param.stdout),
                        "stderr": _log_file(param.stderr),
                        "combined": _log_file(param.combined),
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
        path = os.environ.get("PATH", os.defpath)  # finds the programs, as when checked
        spec = {"log_dir": log_dir, "retries": retries, "replicas": replicas, "path": path}

        top = _first_missing_dir(log_dir)
        status_fd = self._create_job_dir(log_dir, top, replicas)
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
                identity = self._start_supervisor(log_dir, spec, app_id, status_fd)
            except BaseException:
                # A Ctrl+C may be delivered to another thread and raised here at any point,
                # the request perhaps sent: withdraw the job (harmless when nothing was sent)
                # before its record and folder go, so nothing of it runs without a record.
                _withdraw(status_fd, app_id)
                try:
                    self._launch_failed(app_id)
                except Exception as e:  # noqa: BLE001 - the record then reads "never started"
                    log.warning("could not drop the launch record of %s: %s", app_id, e)
                _remove_job_dir(log_dir, top)
                raise
        finally:
            os.close(status_fd)  # the supervisor (or the request on its way) holds the lock
        try:
            record = self._launch_confirmed(app_id, state=AppState.RUNNING.name, **identity)
        except Exception as e:  # noqa: BLE001 - the job runs; describe adopts it (status file)
            log.warning("job %s started but its record could not be confirmed: %s", app_id, e)
            return app_id
        if record.state == AppState.CANCELLED.name:  # cancelled while it was starting
            self._terminate(dataclasses.replace(record, data={**record.data, **identity}))
        return app_id

    def _create_job_dir(self, log_dir: str, top: str, replicas: list[dict[str, Any]]) -> int:
        """The job folder with its status file sized (its blocks reserved, so the outcome can
        be recorded on a disk the job fills) and locked; the status fd. The supervisor makes
        the replicas' folders. Disk trouble raises DiskError and leaves nothing behind."""
        try:
            os.makedirs(log_dir, mode=0o700)
        except FileExistsError as e:
            raise ConfigError(f"log dir {log_dir} already exists; app ids must be unique") from e
        except OSError as e:
            _remove_job_dir(log_dir, top)
            diskerrors.raise_if_disk_trouble(e, log_dir, "creating the job folder")
            raise
        fd = -1
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            fd = os.open(os.path.join(log_dir, STATUS_FILE), flags, 0o644)
            size = status_size([r["role"] for r in replicas])
            _write_all(fd, STATUS_PENDING.ljust(size, b"\n"))
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fd
        except BaseException as e:
            if fd >= 0:
                os.close(fd)
            _remove_job_dir(log_dir, top)
            if isinstance(e, OSError):
                diskerrors.raise_if_disk_trouble(e, log_dir, "creating the job folder")
            raise

    def _start_supervisor(
        self, log_dir: str, spec: dict[str, Any], app_id: str, status_fd: int
    ) -> dict[str, Any]:
        """Hand the job to this process's job host, or start a supervisor for it (the exec
        mode, or no host to be had); the supervisor's identity, for the record."""
        payload = marshal.dumps(spec)  # in memory only: replica environments may hold secrets
        if _supervisor_mode() == "host":
            try:
                return self._hand_over(payload, status_fd, app_id)
            except _HostRefused as e:  # nothing started: an interpreter may still be started
                log.debug("no job host for %s (%s); starting an interpreter", app_id, e)
        return self._exec_supervisor(log_dir, payload, app_id, status_fd)

    @staticmethod
    def _hand_over(payload: bytes, status_fd: int, app_id: str) -> dict[str, Any]:
        """Send the job to the host. Every signal stays blocked in this thread from before the
        hand-over until it is done, so a Ctrl+C cannot cut a request short; one pending is
        raised right after, and then the job is withdrawn (the launch is undone). Raises
        _HostRefused when nothing was handed over."""
        message = len(payload).to_bytes(local_supervisor.HEADER_SIZE, "little") + payload
        with _HOST_LOCK:
            mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, ALL_SIGNALS)
            try:
                identity = _send_to_host(message, status_fd)
            except BaseException:
                _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
                raise
            try:
                _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)  # a pending Ctrl+C raises here
            except BaseException:  # the launch is undone: so is the job, before its record goes
                _withdraw(status_fd, app_id)
                raise
            return identity

    def _exec_supervisor(
        self, log_dir: str, payload: bytes, app_id: str, status_fd: int
    ) -> dict[str, Any]:
        """The fallback: `python -S -I local_supervisor`, the spec written to its stdin, its
        stderr supervisor.log, its stdout the status file."""
        path = os.path.join(log_dir, SUPERVISOR_LOG)
        try:
            err_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as e:
            diskerrors.raise_if_disk_trouble(e, log_dir, "creating the job folder")
            raise
        try:
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
        finally:
            os.close(err_fd)
        try:
            assert proc.stdin is not None
            proc.stdin.write(payload)
            proc.stdin.close()
        except BrokenPipeError as e:
            proc.wait()
            with open(path, encoding="utf-8", errors="replace") as fh:
                detail = fh.read().strip()
            raise BackendError(f"the local job supervisor exited at start: {detail}") from e
        except BaseException:  # e.g. Ctrl+C mid-handover: the launch is undone, so stop it all
            _withdraw(status_fd, app_id)
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
            raise
        with self._children_lock:
            self._children.append(proc)
        stat = processes.proc_stat(proc.pid)
        return {
            "pid": proc.pid,
            "start_ticks": stat.start_ticks if stat else None,
            "boot_id": processes.boot_id(),
        }

    def _reap(self) -> None:
        """Collect exited supervisors this process started (per-job ones, and hosts it gave
        no more jobs), so they do not linger as zombies."""
        with self._children_lock:
            self._children = [p for p in self._children if p.poll() is None]
        if _RETIRED and _HOST_LOCK.acquire(blocking=False):
            try:
                _reap_retired()
            finally:
                _HOST_LOCK.release()

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
        status = _read_status(record.log_dir, _role_specs(data))
        if status is not None:
            return (*_state_from_status(status), status)
        if pending:
            adopted = self._adopt(record)
            if adopted is None:
                return self._unstarted_state(record)
            record, data = adopted, adopted.data
        if self._supervisor_alive(data):
            return AppState.RUNNING, "", None
        status = _read_status(record.log_dir, _role_specs(data))  # it may have just ended
        if status is not None:
            return (*_state_from_status(status), status)
        lost = self._lost_supervisor_text(data)
        if self._job_processes(record):
            return AppState.RUNNING, f"{lost}; its processes still run", None
        if _status_head(record.log_dir)[0] == "pending":  # never taken: nothing started
            if processes.is_locked(os.path.join(record.log_dir or "", STATUS_FILE)):
                return AppState.SUBMITTED, "starting", None
            msg = f"never started: its supervisor{self._pid_text(data)} ended before taking it"
            return AppState.FAILED, msg, {"replicas": []}
        return (
            AppState.FAILED,
            f"{lost}; its processes ended but their exit codes are lost",
            {"replicas": []},
        )

    @staticmethod
    def _supervisor_alive(data: dict[str, Any]) -> bool:
        pid = data.get("pid")
        if not pid:
            return False
        return processes.is_same_process_alive(
            pid, data.get("start_ticks") or -1, data.get("boot_id") or ""
        )

    @staticmethod
    def _pid_text(data: dict[str, Any]) -> str:
        return f" (pid {data['pid']})" if data.get("pid") else ""

    def _lost_supervisor_text(self, data: dict[str, Any]) -> str:
        pid = self._pid_text(data)
        if data.get("boot_id") and data["boot_id"] != processes.boot_id():
            return f"the host rebooted under the job's supervisor{pid}"
        return f"the job's supervisor{pid} was killed"

    def _job_processes(self, record: JobRecord) -> list[int]:
        """Live processes of the job: those that carry its marker (a job host carries none;
        a per-job supervisor does)."""
        return processes.find_env_marker(_marker(record.app_id))

    def _adopt(self, record: JobRecord) -> JobRecord | None:
        """A pending launch whose supervisor took the job (its launcher may have died before
        confirming it): record that supervisor, named by the status file's first line."""
        state, identity = _status_head(record.log_dir)
        if identity is None and state == "running":  # a supervisor older than that line
            return self._adopt_legacy(record)
        if identity is None:
            return None
        return self._launch_confirmed(record.app_id, state=AppState.RUNNING.name, **identity)

    def _adopt_legacy(self, record: JobRecord) -> JobRecord | None:
        """As `_adopt`, for a supervisor started before status files named it: the group
        leader holding the status file as its stdout, else the processes with the marker."""
        leader = None
        if record.log_dir:
            holders = processes.find_fd_holders(os.path.join(record.log_dir, STATUS_FILE), 1)
            leader = next((s for s in _proc_stats(holders) if s.pid == s.pgrp), None)
        if leader is not None:
            stats = [leader]
        else:
            stats = _proc_stats(processes.find_env_marker(_marker(record.app_id)))
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
        """A pending launch no supervisor took: starting, or never started."""
        data = record.data
        if record.log_dir and processes.is_locked(os.path.join(record.log_dir, STATUS_FILE)):
            return AppState.SUBMITTED, "starting", None  # the launcher, or a request on its way
        if self._launcher_alive(record):
            return AppState.SUBMITTED, "starting", None
        status = _read_status(record.log_dir, _role_specs(data))
        if status is not None:
            return (*_state_from_status(status), status)
        if _status_head(record.log_dir)[0] == "running" and self._supervisor_ran(record):
            msg = (
                "the job's supervisor was killed; its processes ended but their exit codes are lost"
            )
            return AppState.FAILED, msg, {"replicas": []}
        return AppState.FAILED, NEVER_STARTED, {"replicas": []}

    @staticmethod
    def _supervisor_ran(record: JobRecord) -> bool:
        """A supervisor older than status files naming it made each replica's offsets file
        before starting it."""
        for role in _role_specs(record.data):
            for k in range(int(role.get("num_replicas", 1))):
                if os.path.exists(
                    os.path.join(record.log_dir or "", role["name"], str(k), OFFSETS_FILE)
                ):
                    return True
        return False

    def _response(self, record: JobRecord, state: AppState, msg: str) -> DescribeAppResponse:
        final = (
            record.data.get("final") or _read_status(record.log_dir, _role_specs(record.data)) or {}
        )
        exit_codes = {(r["role"], r["replica_id"]): r for r in final.get("replicas", [])}
        roles, statuses = [], []
        for spec in _role_specs(record.data):
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
    def list(self) -> list[ListAppResponse]:
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
        counts = {r["name"]: int(r.get("num_replicas", 1)) for r in _role_specs(record.data)}
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
        self._terminate(record)

    def _terminate(self, record: JobRecord) -> None:
        """Mark the job cancelled in its status file (its supervisor starts and restarts
        nothing from then on, also when the request is still on its way, and ends the job's
        process group itself), then SIGTERM the job's processes, and SIGKILL whatever is left
        after a grace period. Done once none is left and no live job host still supervises
        the job (one that took it writes its final status once all its processes ended). A
        job host is never signalled: it supervises other jobs too. A supervisor from before
        job hosts (the leader of the job's group, without the marker) is, as it was then."""
        data = record.data
        if not _mark_cancelled(record.log_dir) and record.log_dir:
            log.warning("cannot mark %s cancelled in its status file", record.app_id)
        marker = _marker(record.app_id)
        legacy = data.get("pid") if data.get("pid") and not data.get("host") else None

        def members() -> list[int]:
            found = processes.find_env_marker(marker)
            if legacy and legacy not in found and self._supervisor_alive(data):
                found.append(legacy)
            return found

        def settled() -> bool:
            return not members() and not self._host_supervises(record)

        for sig, grace in ((signal.SIGTERM, CANCEL_GRACE_S), (signal.SIGKILL, CANCEL_GRACE_S)):
            if settled():
                return
            for pid in members():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline, delay = time.monotonic() + grace, 0.005
            while time.monotonic() < deadline:
                self._reap()
                if settled():
                    return
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        left = members()
        if left:
            log.warning("processes of job %s survived SIGKILL: %s", record.app_id, left)
        else:
            log.warning("job %s ended, but its supervisor has not recorded it yet", record.app_id)

    @staticmethod
    def _host_supervises(record: JobRecord) -> bool:
        """A live job host took the job and has not written its final status yet."""
        state, identity = _status_head(record.log_dir)
        return (
            state == "running"
            and identity is not None
            and identity["host"]
            and processes.is_same_process_alive(
                identity["pid"], identity["start_ticks"] or -1, identity["boot_id"]
            )
        )

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
