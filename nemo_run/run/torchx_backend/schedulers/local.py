"""Local backend: jobs are detached process groups on this machine that outlive their launcher.

The app id is torchx's `<name>-<random suffix>`; the handle is
`local_persistent://<session>/<app id>`. Each job runs under `local_supervisor.py`, which
writes the replicas' exit codes and a `status` file when they end, so any later process can
read the real outcome. Every process the job runs carries the `NEMORUN_APP_ID=<app id>`
environment marker, so the job can be found, watched and cancelled even when nothing else
about it survived; they share the supervisor's process group.

No interpreter starts per job. Each launching process has a starter, a copy of it forked at
its first launch, in a new session, that forks spares: each spare makes its own session and
process group, then waits for one job. A launch hands a spare the launch spec (`marshal`, in
memory: never on disk) with the status file's descriptor over a socket pair,
and the spare becomes the job's supervisor, running the loop of the already imported
`local_supervisor` module. So the supervisor is not the launcher's child, shares neither its
session nor its terminal, and outlives it. `NEMORUN_LOCAL_SUPERVISOR=exec` (and any platform
but Linux) starts `python -S -I local_supervisor` per job instead, the spec on its stdin:
macOS's system libraries are unsafe in a child that did not exec. Either way the supervisor
holds the job's status file as its stdout, which names it; an exec'd one also carries the
job's marker. (The starter and the first supervisor share the launcher's memory pages as they
were at the fork; later supervisors are forked from a bare interpreter the starter execs.)

Crash story of the starter: killed, it takes no job with it (each supervisor has its own
session) and leaves no launch ambiguous (a spare has a job only once the launcher has sent it
one, to a pid it already knows); the next launch forks a new starter. Spares not used end
when their socket closes, the launcher or the starter having died.

Launch order, so a kill -9 of the launcher at any instant never leaves a job running without
a record: the job folder and its reserved, locked `status` file; the intent record
(`launch: pending`, with the launcher's identity); the supervisor; the confirmation (its pid,
start ticks and boot id: enough to tell it apart from a later process that reuses the pid).
`describe` settles a record left pending: it adopts a supervisor found by its status file,
reads the status of a job that already ended, or reports a job whose launcher died before
starting it. The state is always the processes' truth: a job whose supervisor was killed
stays RUNNING while any of its processes lives, and its logs keep flowing (replicas write
their log files themselves).
"""

from __future__ import annotations

import dataclasses
import fcntl
import gc
import logging
import marshal
import os
import re
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
from typing import TYPE_CHECKING, Any, NoReturn

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
from nemo_run.core import diskerrors, processes
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
    STATUS_RUNNING,
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
STARTER_BOOT = (
    f"import sys; sys.path.append({os.path.dirname(SUPERVISOR)!r}); "
    "import local_supervisor; local_supervisor.serve(policy=int(sys.argv[1]))"
)
# How the supervisor starts: "fork" (the default where it is safe: Linux) or "exec".
SUPERVISOR_MODE_ENV = "NEMORUN_LOCAL_SUPERVISOR"
SUPERVISOR_MODES = ("fork", "exec")
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


# -- starting the supervisor ---------------------------------------------------------------
# Measured costs (2 CPUs): a new interpreter per job is ~20 ms of CPU. Forking the launcher
# per job is ~1 ms of page-table copy, then a copy-on-write fault (~3.5 us here) for every
# page either side writes: ~500 in the launcher and ~500 in the supervisor per job. And any
# round trip to another process waits for that process to get a CPU: under load, that wait
# is most of a launch. So each launching process has a starter: a copy of it, forked at its
# first fork-mode launch, that forks spares, processes that will each supervise one job. A
# spare is announced (pid, and our end of a socket pair to it) only once it leads its own
# session and process group; a launch hands the job to a spare already announced (the spec
# in memory, the status file's descriptor with it) and asks for the next one, so
# it waits for no other process. The starter forks the first spare from the launcher's image
# and then (once a second is asked for, or a second later) execs a bare interpreter that forks
# the rest (far cheaper to fork than the launcher, and small: the first supervisor, like any
# forked process, shares the launcher's memory pages as they were, and keeps them while its
# job runs). It exits when the launcher does; so does an unused spare.
#
# The launcher may run other threads: fork copies only the calling thread, so the starter
# (until its exec) and the first spare touch nothing another thread may hold (no logging, no
# job store, no sqlite, no import): only os and socket calls, marshal and the supervisor
# module, imported already. Python 3.12+ warns about any fork in a threaded process; this one
# is safe, so that warning is silenced for this module only.
warnings.filterwarnings(
    "ignore",
    message=r"This process \(pid=\d+\) is multi-threaded, use of fork\(\)",
    category=DeprecationWarning,
    module=re.escape(__name__),
)
ALL_SIGNALS = _signal.valid_signals()
STARTER_TIMEOUT_S = 30.0  # a starter or spare that does not answer in this time is dropped
SPARES_AHEAD = 2  # one may still be starting when the next launch comes
NO_SIGPIPE = socket.MSG_NOSIGNAL  # a dead peer is an error here, never a signal that kills


class _ForkRefused(Exception):
    """No supervisor can be forked here (fork failed, a subinterpreter...): nothing started."""


class _StarterLost(Exception):
    """The starter died or hung: it started nothing for the launch under way."""


@dataclasses.dataclass
class _Starter:
    """The process that forks spares (our child); `sock` is our end of the socket pair."""

    pid: int
    sock: socket.socket
    asked: int = 0  # spares asked for and not announced yet
    launches: int = 0


_STARTER: _Starter | None = None
_STARTER_LOCK = threading.Lock()  # one launch at a time on the socket


def _forget_starter() -> None:
    """In any child forked from this process: the starter is not its own (each process gets
    its own), its socket must not keep that starter alive, and the lock may have been held."""
    global _STARTER, _STARTER_LOCK
    if _STARTER is not None:
        _STARTER.sock.close()
        _STARTER = None
    _STARTER_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_starter)


def _supervisor_mode() -> str:
    """'fork' unless asked for 'exec', or off Linux. macOS's system libraries (Objective-C
    runtime, CoreFoundation, libdispatch) are not safe to use in a child that did not exec, and
    Python's multiprocessing stopped forking there for that reason; nor has macOS the /proc
    this backend names processes by."""
    asked = os.environ.get(SUPERVISOR_MODE_ENV, "").strip().lower()
    if asked and asked not in SUPERVISOR_MODES:
        raise ConfigError(
            f"{SUPERVISOR_MODE_ENV}={asked!r}: expected one of {', '.join(SUPERVISOR_MODES)}"
        )
    if asked == "exec" or not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return "exec"
    return "fork"


def _fork_supervisor(payload: bytes, status_fd: int) -> int:
    """The pid of a forked supervisor that has the job (its group id too).

    Every signal stays blocked in this thread from before the handover until the pid is
    known, so a Ctrl+C cannot leave a supervisor started but unnamed; a pending one is raised
    right after, and then the launch is undone. Raises _ForkRefused when nothing started."""
    with _STARTER_LOCK:
        mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, ALL_SIGNALS)
        try:
            pid = _hand_over(payload, status_fd)
        except BaseException:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
            raise
        try:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)  # a pending Ctrl+C raises here
        except BaseException:  # the launch is undone: so is the job, before its record goes
            _kill_supervisor(pid)
            raise
        return pid


def _hand_over(payload: bytes, status_fd: int) -> int:
    """Give the job to a spare; a lost starter is replaced, a spare that died before taking
    the job is skipped (neither started anything)."""
    global _STARTER
    message = len(payload).to_bytes(local_supervisor.HEADER_SIZE, "little") + payload
    for _ in range(SPARES_AHEAD + 2):  # announced spares may have died since
        if _STARTER is None:
            _STARTER = _start_starter()
        starter = _STARTER
        try:
            pid, spare = _take_spare(starter)
        except _StarterLost as e:
            log.debug("the supervisor starter (pid %s) was lost: %s", starter.pid, e)
            _STARTER = None
            _drop_starter(starter)
            continue
        try:
            sent = socket.send_fds(spare, [message], [status_fd], NO_SIGPIPE)  # one wake-up
            if sent < len(message):
                spare.sendall(message[sent:], NO_SIGPIPE)
        except OSError as e:  # it died, or hangs: a job cut short is dropped by the spare
            log.debug("spare supervisor %s did not take the job: %s", pid, e)
            continue
        finally:
            spare.close()
        starter.launches += 1
        try:  # a process that launched twice launches more: have the next spares ready (two:
            # one may still be starting), so the next launch waits for nothing
            while starter.launches > 1 and starter.asked < SPARES_AHEAD:
                _ask_spare(starter)
        except OSError:
            pass  # the next launch finds the starter lost
        return pid
    raise _ForkRefused("no spare supervisor could be had")


def _ask_spare(starter: _Starter) -> None:
    starter.sock.sendall(b"S", NO_SIGPIPE)
    starter.asked += 1


def _take_spare(starter: _Starter) -> tuple[int, socket.socket]:
    """The next spare's announcement (asked for now if it was not): its pid, and a socket to
    it. Raises _StarterLost, or _ForkRefused when the starter cannot fork."""
    fds: list[int] = []
    try:
        if not starter.asked:
            _ask_spare(starter)
        line = b""
        while not line.endswith(b"\n"):
            chunk, received, _, _ = socket.recv_fds(starter.sock, 64, 1)
            fds += received
            if not chunk:
                raise _StarterLost("it exited")
            line += chunk
    except OSError as e:  # reset, broken pipe, timeout
        for fd in fds:
            os.close(fd)
        raise _StarterLost(f"{type(e).__name__}: {e}") from e
    starter.asked -= 1
    if line.startswith(b"!") or len(fds) != 1 or not line[:-1].isdigit():
        for fd in fds:
            os.close(fd)
        if line.startswith(b"!"):
            raise _ForkRefused(line[1:].decode(errors="replace").strip())
        raise _StarterLost(f"unexpected announcement {line[:80]!r}")
    spare = socket.socket(fileno=fds[0])
    spare.settimeout(STARTER_TIMEOUT_S)
    return int(line), spare


def _start_starter() -> _Starter:
    """Fork the starter (this thread's signals are blocked by the caller)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.settimeout(STARTER_TIMEOUT_S)
    launcher = os.getpid()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # no collection (no finalizer of ours) may run in the child before it starts
    try:
        pid = os.fork()
    except (OSError, RuntimeError) as e:
        ours.close()
        theirs.close()
        raise _ForkRefused(f"{type(e).__name__}: {e}") from e
    finally:
        if gc_was_enabled and os.getpid() == launcher:
            gc.enable()
    if pid == 0:
        _run_starter(theirs.fileno())  # never returns
    theirs.close()
    return _Starter(pid, ours)


def _drop_starter(starter: _Starter) -> None:
    """Make sure a lost starter is gone, and reap it (it is our child). The spares it forked
    and we did not take see their sockets close, and exit."""
    try:
        os.kill(starter.pid, signal.SIGKILL)
    except OSError:
        pass
    starter.sock.close()
    try:
        os.waitpid(starter.pid, 0)
    except ChildProcessError:
        pass


def _kill_supervisor(pid: int) -> None:
    """Undo a launch: the supervisor's process group (it leads one from its announcement)."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            return
        except OSError:
            pass


def _run_starter(sock_fd: int) -> NoReturn:
    """The starter, in the launcher's child: a new session (the launcher's Ctrl+C or hang-up
    does not reach it), stdio /dev/null, the socket at fd 3 and no other descriptor. It forks
    the first spare from this copy of the launcher; asked for a second (or after a second
    idle, so no copy of the launcher lives on), it execs a bare interpreter to fork that one
    and the rest (a request waits in the socket meanwhile). A process that launches once and
    exits never pays for that interpreter."""
    try:
        gc.freeze()  # the launcher's objects are never collected here: none of their
        # finalizers runs (one could close a descriptor number now reused)
        os.dup2(sock_fd, local_supervisor.STARTER_FD)
        null = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(null, target)
        local_supervisor.close_fds_from(3, keep=local_supervisor.STARTER_FD)
        os.setsid()
        if local_supervisor.serve(first_only=True) and sys.executable:
            policy = str(local_supervisor.POLICY)  # the launcher's, for the supervisors
            try:
                os.execve(
                    sys.executable,
                    [sys.executable, "-S", "-I", "-c", STARTER_BOOT, policy],
                    # every symbol bound once here, not again in each supervisor forked
                    {"PATH": os.environ.get("PATH", os.defpath), "LD_BIND_NOW": "1"},
                )
            except OSError:  # no interpreter to exec: fork them all from this copy
                local_supervisor.serve()
    except BaseException:  # noqa: BLE001, S110 - the launcher sees the socket close
        pass
    finally:
        os._exit(0)  # never the launcher's code, exit handlers or buffered output


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
                pid = self._start_supervisor(log_dir, spec, app_id, status_fd)
            except BaseException:
                try:
                    self._launch_failed(app_id)
                except Exception as e:  # noqa: BLE001 - the record then reads "never started"
                    log.warning("could not drop the launch record of %s: %s", app_id, e)
                _remove_job_dir(log_dir, top)
                raise
        finally:
            os.close(status_fd)  # the supervisor holds the lock from here on
        stat = processes.proc_stat(pid)
        identity = {
            "pid": pid,
            "start_ticks": stat.start_ticks if stat else None,
            "boot_id": processes.boot_id(),
        }
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
            _write_all(fd, STATUS_RUNNING.ljust(size, b"\n"))
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
    ) -> int:
        """Start the job's supervisor in its own session, as the leader of its own process
        group; its pid (also its group id). Forked where that is safe, else an interpreter."""
        payload = marshal.dumps(spec)  # in memory only: replica environments may hold secrets
        if _supervisor_mode() == "fork":
            try:
                return _fork_supervisor(payload, status_fd)
            except _ForkRefused as e:  # nothing started: an interpreter may still be started
                log.debug(
                    "cannot fork the supervisor of %s (%s); starting an interpreter", app_id, e
                )
        return self._exec_supervisor(log_dir, payload, app_id, status_fd)

    def _exec_supervisor(self, log_dir: str, payload: bytes, app_id: str, status_fd: int) -> int:
        """The fallback: `python -S -I local_supervisor`, the spec written to its stdin, its
        stderr supervisor.log (a forked one creates that file only to write in it)."""
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
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
            raise
        with self._children_lock:
            self._children.append(proc)
        return proc.pid

    def _reap(self) -> None:
        """Collect exited supervisors this process started, so they do not linger as zombies
        (forked ones are not its children)."""
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
        if not pid:
            return False
        return processes.is_same_process_alive(
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
        """A pending launch whose launcher died after starting the supervisor: record the
        supervisor as confirmed. It is the group leader holding the job's status file as its
        stdout (a forked one carries no marker: it has its launcher's environment); once it is
        gone, the job's processes are found by their marker, and their group named."""
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
        """A pending launch with no process to show for it: starting, or never started."""
        data = record.data
        if record.log_dir and processes.is_locked(os.path.join(record.log_dir, STATUS_FILE)):
            return AppState.SUBMITTED, "starting", None  # the launcher, or a starting supervisor
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
