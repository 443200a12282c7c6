"""Supervisor of one local job: the process that outlives the launcher and records the outcome.

It starts one of two ways (see `local.py`), and behaves the same after that:

* forked, with no new interpreter (the default on Linux): the launcher's starter (`serve`)
  forks spares, each in its own session and process group (`wait_as_spare`); a spare given a
  job (the launch spec in `marshal` format and the status file's descriptor, over a socket
  pair) supervises it (`become_supervisor`, `run_forked`);
* run in a new session as `python -S -I -c "import local_supervisor; ..."` (the fallback), so
  its cached bytecode is used (`python local_supervisor.py` works too); the spec arrives on
  stdin in `marshal` format from the same interpreter.

Either way the spec is never on disk, because replica environments may carry credentials. It
imports only built-in modules (no json, re or subprocess: those tripled an exec'd start-up;
`_signal`, not `signal`, which imports enum), and nothing of the package: what it shares with
it (writing a file atomically) it keeps a copy of. Every replica shares its process group and its
`NEMORUN_APP_ID` environment marker, so the whole job can be found and cancelled.

Nothing a replica writes passes through this process: replicas write `stdout.log` and
`stderr.log` themselves (O_APPEND files opened by posix_spawn), so their output keeps flowing
if this process is killed. It builds `combined.log` by following both files, whole lines at a
time, and records in `combined.offsets` how far it got, so that a reader can continue from
the two files where `combined.log` stops if this process died without writing its status.

Replicas start with every catchable signal at its default disposition and none blocked
(Python ignores SIGPIPE and SIGXFSZ; a job must not inherit that). A failed replica restarts
up to `retries` times; `<replica dir>/exit_code` ("<code> <restarts>") is written as each
replica ends. A cancel that arrives before a replica starts (a forked supervisor keeps signals
blocked until its handlers are in place) starts none: each reads as ended by that signal.

`<app log dir>/status` is created and sized by the launcher before this process starts, so a
job that fills the disk cannot keep its outcome from being recorded; it arrives locked, as
stdout, and the lock tells readers that a launch is under way even before this process can
be named. It reads `running` until the end, when it is rewritten in place with
`terminated <0|1>`, one `exit <replica id> <code> <restarts> <role>` line per replica, an
optional `reason <text>` (an unusable spec, a replica that could not start, a full disk),
`ended_at <unix time>` and a last line `end`: plain text any later process can read. A file
without the `end` line is not final (a reader may see a rewrite half done).
"""

from __future__ import annotations

import gc
import marshal
import os
import select
import sys
import time
from _collections_abc import Callable  # loaded at start-up already (by os)

TYPE_CHECKING = False  # not imported from typing: importing typing would slow the start-up
if TYPE_CHECKING:
    import signal  # `_signal` has no stubs; `signal` has the same functions, typed
    from typing import Any, NoReturn
else:
    import _signal as signal  # built in; `signal` imports enum: +5 ms a job

STATUS_FILE = "status"
SUPERVISOR_LOG = "supervisor.log"  # this process's stderr: why it could not do its work
EXIT_CODE_FILE = "exit_code"
OFFSETS_FILE = "combined.offsets"
STATUS_RUNNING = b"running\n"
STATUS_END = "end"
REASON_MAX = 1500  # bytes of the reason kept in the status file
POLL_MS = 50
CHUNK = 65536
CHUNKS_PER_POLL = 16  # per stream, so one chatty replica cannot starve the others
OFFSETS_FORMAT = "%020d %020d %020d\n"  # stdout offset, stderr offset, combined size: fixed width
STARTER_FD = 3  # the starter's socket; 0-2 are /dev/null, so received descriptors are above
HEADER_SIZE = 8  # a request: the body's length (little-endian), with the status descriptor
FD_SIZE = 4  # bytes of one descriptor in SCM_RIGHTS data (a C int)
REQUEST_CHUNK = 1 << 16
POLICY = -1  # the scheduling policy supervisors run their job with (see `serve`)
FIRST_ONLY_IDLE_MS = 1000


# Every signal a program can catch. glibc reserves 32 and 33 for itself: they are not valid
# signals for programs, and its posix_spawn leaves them ignored in the child whatever we ask.
ALL_SIGNALS = signal.valid_signals()
CATCHABLE = tuple(s for s in ALL_SIGNALS if s not in (signal.SIGKILL, signal.SIGSTOP))
APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND
TERMINATED: list[int] = []  # signals received (a cancel): failed replicas are not restarted
FORKED = False  # run by `run_forked`: no supervisor.log until there is something to log


def on_signal(signum: int, frame: object) -> None:
    TERMINATED.append(signum)  # the canceller signals every replica itself


def install_handlers() -> None:
    """A cancel (SIGTERM), Ctrl+C or a hang-up is noted, so the outcome is still recorded."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)


def default_signals(ignored: tuple[int, ...] = (signal.SIGPIPE, signal.SIGXFSZ)) -> None:
    """Every catchable signal at its default disposition but `ignored` (by default those an
    exec'd interpreter ignores), and no wakeup fd: a process forked from the launcher must
    never run the launcher's Python handlers or write to its wakeup fd."""
    signal.set_wakeup_fd(-1)
    for sig in CATCHABLE:
        signal.signal(sig, signal.SIG_IGN if sig in ignored else signal.SIG_DFL)


def reset_signals() -> None:
    """A forked supervisor's signals: those of an exec'd one, then the mask lifted. The
    starter set every other signal to its default already (`serve`). It arrives with every
    signal blocked, so a cancel sent while it was starting is pending, and is delivered to
    `on_signal` here (then no replica starts)."""
    TERMINATED.clear()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the starter ignores it; we wait for ours
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    install_handlers()
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def status_size(roles: list[str]) -> int:
    """Bytes the launcher reserves for the status file of a job with these replicas' roles:
    more than the final text can take, so rewriting it never needs a new block."""
    return 256 + REASON_MAX + sum(48 + len(role.encode()) for role in roles)


def spawn(args: list[str], env: dict[str, str], cwd: str | None, stdout: str, stderr: str) -> int:
    """Start one replica: stdin /dev/null; stdout and stderr appended to its log files by the
    replica itself (nothing passes through us); every catchable signal at its default
    disposition (Python ignores SIGPIPE and SIGXFSZ) and none blocked."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, stdout, APPEND, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, stderr, APPEND, 0o644),
    ]
    here = os.getcwd()
    if cwd:
        os.chdir(cwd)  # posix_spawn has no working-directory action (before Python 3.13)
    try:
        run = os.posix_spawn if os.sep in args[0] else os.posix_spawnp
        return run(args[0], args, env, file_actions=actions, setsigdef=CATCHABLE, setsigmask=())
    finally:
        if cwd:
            os.chdir(here)


def write_atomically(path: str, text: str) -> None:
    """Write-temp-then-rename; the temp file is removed when any step fails (e.g. no space).
    The package's `core.atomic.atomic_write`, copied: this process imports no package module."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            data = text.encode()
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def describe_error(error: BaseException) -> str:
    """`Type: message`, short; a disk error reads as its lower-case strerror plus the file."""
    if isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror.lower()}{where}"
    return f"{type(error).__name__}: {error}"


class Status:
    """The job's status file, rewritten in place (its blocks were reserved at launch)."""

    def __init__(self) -> None:
        self.fd: int | None = None
        try:
            if os.fstat(1).st_mode & 0o170000 == 0o100000:  # a regular file: the launcher's
                self.fd = 1
            else:  # run by hand: a status file in the working directory
                self.fd = os.open(STATUS_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            _log(f"cannot open the status file: {describe_error(e)}")

    def write(
        self, terminated: bool, exits: list[tuple[int, int | None, int, str]], reason: str
    ) -> None:
        lines = [f"terminated {int(terminated)}"]
        for k, code, restarts, role in exits:
            lines.append(f"exit {k} {code} {restarts} {' '.join(role.splitlines())}")
        if reason:
            text = " ".join(reason.split()).encode()[:REASON_MAX].decode("utf-8", "ignore")
            lines.append(f"reason {text}")
        lines += [f"ended_at {time.time()}", STATUS_END, ""]
        data = "\n".join(lines).encode()
        if self.fd is None:
            return
        try:  # in place, then cut: a reader never sees a half-written file as final
            done = 0
            while done < len(data):
                done += os.pwrite(self.fd, data[done:], done)
            os.ftruncate(self.fd, len(data))
        except OSError as e:
            _log(f"cannot write the status file: {describe_error(e)}")


LOG_FILE: list[str] = []  # a forked supervisor's supervisor.log, created on first use


def _log(message: str) -> None:
    """A line in supervisor.log (this process's stderr); never raises. A forked supervisor
    creates the file only then: most jobs have nothing to say there."""
    try:
        while LOG_FILE:
            fd = os.open(LOG_FILE.pop(), APPEND, 0o644)
            os.dup2(fd, 2)
            os.close(fd)
        os.write(2, f"nemo_run supervisor: {message}\n".encode())
    except OSError:
        pass


class Replica:
    """One replica process, its log files and how far `combined.log` has copied them."""

    def __init__(self, spec: dict, job: Job) -> None:
        self.job = job
        self.role = str(spec["role"])
        self.k = int(spec["replica_id"])
        self.args = list(spec["args"])
        if not self.args:
            raise ValueError(f"{self.name}: empty command line")
        self.env = dict(spec["env"])
        self.cwd = spec.get("cwd") or None
        self.stdout_path = str(spec["stdout"])
        self.stderr_path = str(spec["stderr"])
        self.combined_path = str(spec["combined"])
        self.dir = os.path.dirname(self.stdout_path)
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.returncode: int | None = None
        self.exit_code: int | None = None
        self.restarts = 0
        self.streams: list[list] = []  # [read fd, offset] for stdout and stderr
        self.combined: int | None = None
        self.combined_size = 0
        self.offsets: int | None = None

    @property
    def name(self) -> str:
        return f"{self.role}[{self.k}]"

    def open_logs(self) -> None:
        """Create the replica's folder, its three logs and the offsets file; a failure only
        costs `combined.log` (and the replica's start, without a folder)."""
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            for path in (self.stdout_path, self.stderr_path):
                self.streams.append([os.open(path, os.O_RDONLY | os.O_CREAT, 0o644), 0])
            self.combined = os.open(
                self.combined_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
            self.combined_size = os.fstat(self.combined).st_size
            self.offsets = os.open(
                os.path.join(self.dir, OFFSETS_FILE), os.O_RDWR | os.O_CREAT, 0o644
            )
            self.save_offsets()
        except OSError as e:
            self.job.trouble(e, f"{self.name} combined log")

    def save_offsets(self) -> None:
        if self.offsets is None or len(self.streams) < 2:
            return
        record = OFFSETS_FORMAT % (self.streams[0][1], self.streams[1][1], self.combined_size)
        os.pwrite(self.offsets, record.encode(), 0)

    def start(self) -> None:
        self.returncode = None
        try:
            self.pid = spawn(self.args, self.env, self.cwd, self.stdout_path, self.stderr_path)
        except Exception as e:  # noqa: BLE001 - any refusal (bad env, missing program) fails this replica
            self.pid, self.exit_code = None, 127
            why = f"{self.name} could not start {self.args[0]!r}: {describe_error(e)}"
            self.job.note(why)
            _log(why)
            self.append_note(f"nemo_run: {why}\n", also=self.stderr_path)
            return
        try:
            self.pidfd = os.pidfd_open(self.pid)
            self.job.poller.register(self.pidfd, select.POLLIN)
        except (AttributeError, OSError):  # no pidfd (old kernel): the 50 ms poll still reaps
            self.pidfd = None

    def append_note(self, text: str, also: str | None = None) -> None:
        """A line of ours in `combined.log` (and optionally another log), counted in the offsets."""
        data = text.encode()
        try:
            if also is not None:
                fd = os.open(also, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
            if self.combined is not None:
                self.combined_size += os.write(self.combined, data)
                self.save_offsets()
        except OSError as e:
            self.job.trouble(e, f"{self.name} logs")

    def copy(self, final: bool) -> bool:
        """Copy whole new lines of stdout and stderr into `combined.log` (everything when
        `final`); True while more is waiting than one poll may copy."""
        if self.combined is None:
            return False
        more = False
        for stream in self.streams:
            budget = -1 if final else CHUNKS_PER_POLL  # final: until the end of the file
            while budget != 0:
                budget -= 1
                fd, offset = stream
                data = os.pread(fd, CHUNK, offset)
                if not data:
                    break
                if not final and not (len(data) == CHUNK and b"\n" not in data):
                    data = data[: data.rfind(b"\n") + 1]  # keep a partial line for later
                    if not data:
                        break
                try:
                    written = os.write(self.combined, data)
                except OSError as e:
                    self.job.trouble(e, f"{self.name} combined log")
                    return False
                stream[1] += written
                self.combined_size += written
                self.save_offsets()
                if written < len(data):
                    return False
            more = more or budget == 0
        return more

    def reap(self) -> bool:
        """True once the current process has exited (its code is kept in `returncode`)."""
        if self.pid is None or self.returncode is not None:
            return True
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.returncode = os.waitstatus_to_exitcode(status)
        if self.pidfd is not None:
            self.job.poller.unregister(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None
        return True

    def record_exit(self) -> None:
        try:
            write_atomically(
                os.path.join(self.dir, EXIT_CODE_FILE), f"{self.exit_code} {self.restarts}\n"
            )
        except OSError as e:
            self.job.trouble(e, f"{self.name} exit code file")


class Job:
    """All replicas of one job, their restarts, and the reasons to report."""

    def __init__(self, spec: dict, status: Status) -> None:
        self.status = status
        self.log_dir = str(spec["log_dir"])
        self.retries = int(spec.get("retries", 0))
        if FORKED:
            LOG_FILE[:] = [os.path.join(self.log_dir, SUPERVISOR_LOG)]
        if spec.get("path"):  # the launcher's PATH when it launched: what finds the programs
            os.environ["PATH"] = str(spec["path"])
        self.poller = select.poll()
        self.reasons: list[str] = []
        self.troubles: set[int | None] = set()
        self.replicas = [Replica(r, self) for r in spec["replicas"]]
        os.chdir(self.log_dir)

    def note(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    def trouble(self, error: OSError, what: str) -> None:
        """A write of ours failed (no space, read-only...): report it once per kind of error."""
        if error.errno not in self.troubles:  # a full disk fails every poll: say it once
            self.troubles.add(error.errno)
            text = describe_error(error)
            _log(f"{text} writing the {what}")
            self.note(f"{text} writing the {what}; its logs may be incomplete")

    def run(self) -> None:
        for replica in self.replicas:
            replica.open_logs()
            if TERMINATED:  # cancelled while starting: start nothing more
                replica.exit_code = -TERMINATED[0]
                self.note("cancelled before all replicas started")
                continue
            replica.start()
        try:
            self.loop()
        except Exception as e:  # noqa: BLE001 - a bug here must not lose the outcome
            self.note(f"supervisor error: {describe_error(e)}")
            _log(f"supervisor error: {describe_error(e)}")
            for replica in self.replicas:
                if replica.exit_code is None and replica.pid is not None:
                    _, status = os.waitpid(replica.pid, 0)
                    replica.exit_code = os.waitstatus_to_exitcode(status)
        self.check_space()

    def loop(self) -> None:
        timeout = POLL_MS
        while any(r.exit_code is None for r in self.replicas):
            self.poller.poll(timeout)
            timeout = POLL_MS
            for replica in self.replicas:
                if replica.copy(final=False):
                    timeout = 0
            for replica in self.replicas:
                if replica.exit_code is not None or not replica.reap():
                    continue
                replica.copy(final=True)
                code = replica.returncode
                if code != 0 and replica.restarts < self.retries and not TERMINATED:
                    replica.restarts += 1
                    replica.append_note(
                        f"nemo_run: exit code {code}; restart {replica.restarts}/{self.retries}\n"
                    )
                    replica.start()
                    continue
                replica.exit_code = code
                replica.record_exit()

    def check_space(self) -> None:
        """A job that filled the disk may leave no write of ours failing: look once at the end."""
        try:
            fs = os.statvfs(self.log_dir)
        except OSError:
            return
        full = fs.f_blocks > 0 and fs.f_bavail == 0  # some FUSE filesystems report 0 blocks
        if full and not any("no space" in r for r in self.reasons):
            self.note(f"no space left on device holding {self.log_dir}; its logs may be incomplete")

    def finish(self) -> None:
        for replica in self.replicas:
            if replica.pid is None:  # never started: its exit code says why it failed
                replica.record_exit()
        exits = [(r.k, r.exit_code, r.restarts, r.role) for r in self.replicas]
        self.status.write(bool(TERMINATED), exits, "; ".join(self.reasons))


class NoSpec(Exception):
    """Stdin ended before a whole spec arrived: the launcher died while starting the job."""


def read_spec() -> dict:
    """The launch spec from stdin (marshal: built in, and no env value ever touches the disk)."""
    chunks = []
    while chunk := os.read(0, 1 << 20):
        chunks.append(chunk)
    return decode_spec(b"".join(chunks))


def decode_spec(data: bytes) -> dict:
    try:
        spec = marshal.loads(data)
    except EOFError as e:
        raise NoSpec("never started: its launcher exited before handing over the job") from e
    if not isinstance(spec, dict):
        raise TypeError(f"expected a dict, got {type(spec).__name__}")
    return spec


def main() -> int:
    """Entry of an exec'd supervisor: the spec comes on stdin."""
    install_handlers()
    return supervise(read_spec)


def run_forked(spec: bytes) -> int:
    """Entry of a supervisor forked by the starter, with stdin and stdout (the status file)
    in place and the spec in memory. The caller must `os._exit` with the returned code, never
    return into the code of the process it was forked from."""
    global FORKED
    FORKED = True
    reset_signals()
    return supervise(lambda: decode_spec(spec))


def serve(sock_fd: int = STARTER_FD, first_only: bool = False, policy: int = -1) -> bool:
    """The starter's loop: each byte read from the socket at `sock_fd` asks for one spare, a
    process that will supervise one job. Once the spare leads its own session and process
    group it announces itself on that socket: "<pid>\\n", with the launcher's end of a
    socket pair to it attached. What the starter cannot do it says as "!<reason>\\n". Spares
    are reaped by the kernel (SIGCHLD ignored). Returns False when the launcher's end closed;
    with `first_only`, True after one request, once a second one waits or a second passed
    (the caller, a copy of the launcher, then execs a smaller starter, which reads it).

    The starter and its spares run as SCHED_BATCH, which differs from the launcher's usual
    SCHED_OTHER only in not preempting the process that wakes them: the launcher hands a job
    over and finishes its launch before the spare runs. A spare given a job returns to
    `policy` (the launcher's; -1: this process's own), so replicas get the usual one."""
    import _socket  # noqa: PLC0415 - only the forked path needs it (see the docstring)

    global POLICY
    POLICY = os.sched_getscheduler(0) if policy < 0 else policy
    if POLICY == os.SCHED_OTHER:
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except OSError:
            pass  # no harm done: only a little slower under load
    default_signals(ignored=(signal.SIGPIPE, signal.SIGCHLD))
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    gc.disable()  # our objects, as they are now, are shared with every spare: no collection
    gc.freeze()  # here or there may touch (copy) their pages
    sock = _socket.socket(fileno=sock_fd)
    sock.settimeout(None)
    try:
        while sock.recv(1):
            try:
                fork_spare(_socket)
            except OSError as e:
                sock.sendall(f"!{describe_error(e)}\n".encode())
            if first_only:  # exec once a second request comes, or after a second idle (a
                # copy of the launcher must not live on); not if the launcher exits first
                waiting = select.poll()
                waiting.register(sock_fd, select.POLLIN)
                return not waiting.poll(FIRST_ONLY_IDLE_MS) or bool(sock.recv(1, _socket.MSG_PEEK))
        return False
    finally:
        sock.detach()  # the descriptor stays open: an exec may carry it on


def fork_spare(_socket: Any) -> None:
    """Fork one spare (with every signal blocked: a cancel stays pending in it until its
    handlers are in place); it announces itself."""
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, ALL_SIGNALS)
        try:
            if os.fork() == 0:
                wait_as_spare(ours.fileno(), theirs.fileno())
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    finally:
        ours.close()
        theirs.close()


def wait_as_spare(launcher_end: int, own_end: int) -> NoReturn:
    """A spare: its own session and process group, then announced (so a cancel that names it
    reaches its group), then no descriptor but stdio (/dev/null) and its end of the pair. It
    waits there for one job (the spec, and the status file's descriptor) and
    supervises it. Its end closing first (the launcher exited, or gave up mid-request) ends
    it having started nothing. Its signals stay blocked until it has a job."""
    import _socket  # noqa: PLC0415 - only the forked path needs it (see the docstring)

    code = 0
    try:
        os.setsid()
        starter = _socket.socket(fileno=STARTER_FD)
        fd = launcher_end.to_bytes(FD_SIZE, sys.byteorder)
        starter.sendmsg([b"%d\n" % os.getpid()], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd)])
        starter.detach()
        os.close(STARTER_FD)  # the starter's only descriptors: 0-2 (/dev/null), 3 and the pair
        os.close(launcher_end)
        request, fds = receive_job(own_end)
        if request is not None:
            code = 70  # EX_SOFTWARE: an unsupervised job (its status file still reads running)
            become_supervisor(request, fds, own_end)
    except BaseException as e:  # noqa: BLE001 - a supervisor that cannot run says why
        _log(f"cannot start: {describe_error(e)}")
    finally:
        os._exit(code)  # never the code of the process it was forked from


def receive_job(sock_fd: int) -> tuple[bytes | None, list[int]]:
    """One request: HEADER_SIZE bytes of length, the body, the status file's descriptor with
    the first bytes; (None, descriptors) when it is cut short."""
    import _socket  # noqa: PLC0415 - only the forked path needs it (see the docstring)

    sock = _socket.socket(fileno=sock_fd)
    sock.settimeout(None)
    try:
        data, ancillary, _, _ = sock.recvmsg(REQUEST_CHUNK, _socket.CMSG_SPACE(FD_SIZE))
        fds = [
            int.from_bytes(raw[i : i + FD_SIZE], sys.byteorder)
            for level, kind, raw in ancillary
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
            for i in range(0, len(raw) - len(raw) % FD_SIZE, FD_SIZE)
        ]
        end = -1
        while end < 0 or len(data) < end:
            if end < 0 and len(data) >= HEADER_SIZE:
                end = HEADER_SIZE + int.from_bytes(data[:HEADER_SIZE], "little")
                continue
            chunk = sock.recv(REQUEST_CHUNK)
            if not chunk:
                return None, fds
            data += chunk
        return data[HEADER_SIZE:end], fds
    finally:
        sock.detach()


def become_supervisor(request: bytes, fds: list[int], sock_fd: int) -> NoReturn:
    """stdout the status file (which names this process to the launcher), no other
    descriptor but /dev/null as stdin and stderr (supervisor.log replaces it when there is
    something to say); then supervise the job of `request` and exit."""
    (status_fd,) = fds
    if POLICY >= 0 and os.sched_getscheduler(0) != POLICY:
        try:
            os.sched_setscheduler(0, POLICY, os.sched_param(0))  # allowed: same nice value
        except OSError as e:
            _log(f"replicas keep the spare's scheduling policy: {describe_error(e)}")
    gc.enable()  # for our own objects (a starter forked from the launcher froze its own)
    os.dup2(status_fd, 1)
    for fd in {status_fd, sock_fd} - {0, 1, 2}:
        os.close(fd)
    os._exit(run_forked(request))


def close_fds_from(low: int, keep: int = -1) -> None:
    """Close every descriptor from `low` up but `keep`."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(low, os.sysconf("SC_OPEN_MAX")))
    for fd in fds:
        if fd >= low and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


def supervise(get_spec: Callable[[], dict]) -> int:
    """Run the job the spec describes and record its outcome; 2 when the spec is unusable."""
    status = Status()
    try:
        job = Job(get_spec(), status)
    except NoSpec as e:
        reason = str(e)
        _log(reason)
        status.write(False, [], reason)
        return 2
    except Exception as e:  # noqa: BLE001 - a bad spec is reported, never a crash
        reason = f"unusable launch spec: {describe_error(e)}"
        _log(reason)
        status.write(False, [], reason)
        return 2
    job.run()
    job.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
