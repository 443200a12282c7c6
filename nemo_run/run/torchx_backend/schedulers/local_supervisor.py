"""Supervision of local jobs: the process that outlives the launcher and records the outcome.

One interpreter supervises many jobs; no process is started per job but the job's own. It
runs one of two ways (see `local.py`), with the same code for a job either way:

* the job host (the default on Linux): one bare interpreter per launching process, started
  with `posix_spawn` in its own session and reading jobs from a socket pair at `HOST_FD`
  (`serve`). It supervises every job its launcher hands it, all in one poll loop, and exits
  once the launcher has closed its end (exited) and its last job has ended;
* one interpreter per job (`python -S -I -c "import local_supervisor; ..."`, the fallback,
  and the way anywhere but Linux), the spec on stdin (`main`; `python local_supervisor.py`
  works too).

A job arrives as a launch spec in `marshal` format (from the same interpreter) with its
status file: as a descriptor passed over the socket (SCM_RIGHTS) to the host, as stdout to
a per-job supervisor. The spec is never on disk, because replica environments may carry
credentials. This module imports only C modules of the standard library (no json, re or
subprocess: they triple an interpreter's start-up; `_signal`, not `signal`, which imports
enum) and nothing of the package.

Each job's replicas are started by this process with `posix_spawn` into a process group of
their own, led by the first replica; the leader is not reaped until the job ends (its zombie
keeps the group's id from being reused), so restarted replicas join the same group, and no
job's `kill 0` reaches another job or this process. Every replica carries the job's
`NEMORUN_APP_ID` environment marker, so the whole job can be found and cancelled without
this process. Replicas start with every catchable signal at its default disposition and
none blocked (Python ignores SIGPIPE and SIGXFSZ; a job must not inherit that).

Nothing a replica writes passes through this process: replicas write `stdout.log` and
`stderr.log` themselves (O_APPEND files opened by posix_spawn), so their output keeps flowing
if this process is killed. It builds `combined.log` by following both files, whole lines at a
time, and once there is something to copy records in `combined.offsets` how far it got, so
that a reader can continue from the two files where `combined.log` stops if this process
died without writing the status (no offsets file and an empty `combined.log`: nothing was
copied, the reader starts at 0). A failed replica restarts up to `retries` times.

`<app log dir>/status` is created, sized (its blocks reserved, so a job that fills the disk
cannot keep its outcome from being recorded) and locked by the launcher before the job is
handed over: the lock, which travels with the descriptor, tells readers a launch is under
way. It reads `pending` until a supervisor takes the job and overwrites that line with
`running <pid> <start ticks> <boot id> <host|job>`, before starting anything, so a job
whose status still reads `pending` when no process holds the file never started. A
canceller writes `CANCEL_MARK` in the file's last bytes (`cancel_offset`); this process reads
it before starting any replica, right after starting them, before any restart and every
POLL_MS, and then starts or restarts nothing more and ends the job's process group (SIGTERM,
SIGKILL after CANCEL_GRACE_S): the canceller, which looks for the job's processes by their
marker, cannot see one whose exec is not done yet. At the end the file is rewritten in place
with `terminated <0|1>`, one `exit <replica id> <code> <restarts> <role>` line per replica,
an optional `reason <text>` (an unusable spec, a replica that could not start, a full disk),
`ended_at <unix time>` and, written last, a line `end`: plain text any later process can
read. A file without the `end` line is not final.

Crash story. A bug or a bad spec in one job fails that job only (its status says why); the
host goes on with the others. Killed, the host takes no job's processes with it (each job
has a process group of its own, and the session has no terminal to hang up), but all the
jobs it supervised lose their recorder at once: each reads as running while any process with
its marker lives (and can still be cancelled), and afterwards as failed, its exit codes lost;
their `stdout.log`/`stderr.log` keep growing, and readers continue `combined.log` from them.
Requests still waiting in its socket when it dies are dropped, and those jobs read as never
started (their status files still say `pending`). A per-job supervisor killed loses only its
own job, the same way.
"""

from __future__ import annotations

import _socket
import gc
import marshal
import os
import resource
import select
import sys
import time
from _collections_abc import Callable  # loaded at start-up already (by os)

TYPE_CHECKING = False  # not imported from typing: importing typing would slow the start-up
if TYPE_CHECKING:
    import signal  # `_signal` has no stubs; `signal` has the same functions, typed
    from typing import Any
else:
    import _signal as signal  # built in; `signal` imports enum: +5 ms a start

STATUS_FILE = "status"
SUPERVISOR_LOG = "supervisor.log"  # why the job could not be supervised as asked
EXIT_CODE_FILE = "exit_code"  # written by supervisors before the status held every exit code
OFFSETS_FILE = "combined.offsets"
STATUS_PENDING = b"pending\n"  # as the launcher creates it
STATUS_TAKEN = b"running"  # first word once a supervisor has taken the job
STATUS_END = "end"
HEAD_MAX = 128  # bytes of the first line, pending or taken: the final text covers them
CANCEL_MARK = b"cancelled\n"
REASON_MAX = 1500  # bytes of the reason kept in the status file
POLL_MS = 50
CANCEL_GRACE_S = 5.0  # a cancelled job's processes get SIGTERM, then SIGKILL after this
CHUNK = 65536
CHUNKS_PER_POLL = 16  # per stream, so one chatty replica cannot starve the others
OFFSETS_FORMAT = "%020d %020d %020d\n"  # stdout offset, stderr offset, combined size: fixed width
HOST_FD = 3  # the host's end of the socket pair; 0-2 are /dev/null
HEADER_SIZE = 8  # a request: the body's length (little-endian), the status descriptor with it
FD_SIZE = 4  # bytes of one descriptor in SCM_RIGHTS data (a C int)
REQUEST_CHUNK = 1 << 16
FD_LIMIT = 1 << 16  # the host raises its soft limit of open files towards this
EX_SOFTWARE = 70

# Every signal a program can catch. glibc reserves 32 and 33 for itself: they are not valid
# signals for programs, and its posix_spawn leaves them ignored in the child whatever we ask.
ALL_SIGNALS = signal.valid_signals()
CATCHABLE = tuple(s for s in ALL_SIGNALS if s not in (signal.SIGKILL, signal.SIGSTOP))
APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND
TERMINATED: list[int] = []  # signals received and not yet applied to the jobs


def on_signal(signum: int, frame: object) -> None:
    TERMINATED.append(signum)  # a canceller signals every replica itself


def install_handlers() -> None:
    """SIGTERM (a shutdown, or a cancel of a per-job supervisor), Ctrl+C or a hang-up is
    noted, so the outcomes are still recorded; the jobs running then restart nothing."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)


def status_size(roles: list[str]) -> int:
    """Bytes the launcher reserves for the status file of a job with these replicas' roles:
    more than the final text can take, so rewriting it never needs a new block, plus the
    place of the cancel mark."""
    return 256 + REASON_MAX + sum(48 + len(role.encode()) for role in roles) + len(CANCEL_MARK)


def cancel_offset(size: int) -> int | None:
    """Where the cancel mark goes in a status file of `size` bytes; None for a file the
    launcher did not size (a supervisor run by hand): it cannot be cancelled that way."""
    return size - len(CANCEL_MARK) if size >= status_size([]) else None


def describe_error(error: BaseException) -> str:
    """`Type: message`, short; a disk error reads as its lower-case strerror plus the file."""
    if isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror.lower()}{where}"
    return f"{type(error).__name__}: {error}"


def _stderr(message: str) -> None:
    """A line on stderr (a per-job supervisor's supervisor.log; /dev/null in the host)."""
    try:
        os.write(2, f"nemo_run supervisor: {message}\n".encode())
    except OSError:
        pass


def own_identity(kind: bytes) -> bytes:
    """What the status file's first line says of this process: pid, start ticks (from
    /proc: with the boot id, no later process can be mistaken for it), boot id, kind."""
    ticks, boot = b"-1", b"-"
    try:
        with open("/proc/self/stat", "rb") as fh:
            ticks = fh.read().rsplit(b")", 1)[1].split()[19]
        with open("/proc/sys/kernel/random/boot_id", "rb") as fh:
            boot = fh.read().strip() or b"-"
    except (OSError, IndexError):
        pass
    return b"%d %s %s %s" % (os.getpid(), ticks, boot, kind)


def exit_code_of(result: Any) -> int:
    """A waitid result as an exit code: negative for a signal, like subprocess."""
    if result.si_code == os.CLD_EXITED:
        return int(result.si_status)
    return -int(result.si_status)


def spawn(
    args: list[str],
    env: dict[str, str],
    cwd: str,
    logs: tuple[str, str],
    group: int,
    scheduler: tuple[int, Any] | None,
) -> int:
    """Start one replica in process group `group` (0: a new one it leads): stdin /dev/null;
    stdout and stderr appended to its log files by the replica itself (nothing passes
    through us); every catchable signal at its default disposition and none blocked."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, logs[0], APPEND, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, logs[1], APPEND, 0o644),
    ]
    run = os.posix_spawn if os.sep in args[0] else os.posix_spawnp
    options: dict[str, Any] = {"setpgroup": group, "setsigdef": CATCHABLE, "setsigmask": ()}
    if scheduler is not None:
        options["scheduler"] = scheduler
    os.chdir(cwd)  # posix_spawn has no working-directory action (before Python 3.13)
    try:
        return run(args[0], args, env, file_actions=actions, **options)
    finally:
        os.chdir("/")  # a supervisor pins no job's folder (or file system)


class Status:
    """One job's status file, written in place (its blocks were reserved at launch)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.cancel_at: int | None = None
        if fd is not None:
            try:
                self.cancel_at = cancel_offset(os.fstat(fd).st_size)
            except OSError:
                self.fd = None

    def _pwrite(self, data: bytes, at: int) -> None:
        while data:
            done = os.pwrite(self.fd, data, at)  # type: ignore[arg-type]
            data, at = data[done:], at + done

    def taken(self, identity: bytes) -> None:
        """`running <identity>`: from now on this job may have processes."""
        if self.fd is not None:
            self._pwrite(STATUS_TAKEN + b" " + identity + b"\n", 0)

    def cancelled(self) -> bool:
        if self.fd is None or self.cancel_at is None:
            return False
        try:
            return os.pread(self.fd, len(CANCEL_MARK), self.cancel_at) == CANCEL_MARK
        except OSError:
            return False

    def write(
        self, terminated: bool, exits: list[tuple[int, int | None, int, str]], reason: str
    ) -> str:
        """The final text, its `end` line written last; '' or why it could not be written."""
        lines = [f"terminated {int(terminated)}"]
        for k, code, restarts, role in exits:
            lines.append(f"exit {k} {code} {restarts} {' '.join(role.splitlines())}")
        if reason:
            text = " ".join(reason.split()).encode()[:REASON_MAX].decode("utf-8", "ignore")
            lines.append(f"reason {text}")
        lines += [f"ended_at {time.time()}", ""]
        body = "\n".join(lines).encode()
        # `end` is written last, with what covers the rest of the first line
        end = (STATUS_END.encode() + b"\n").ljust(HEAD_MAX - len(body), b"\n")
        if self.fd is None:
            return "no status file"
        try:
            self._pwrite(body, 0)
            self._pwrite(end, len(body))
            if self.cancel_at is None or len(body) + len(end) > self.cancel_at:
                os.ftruncate(self.fd, len(body) + len(end))  # not sized by a launcher
        except OSError as e:
            return f"cannot write the status file: {describe_error(e)}"
        return ""

    def close(self) -> None:
        if self.fd is not None and self.fd > 2:
            os.close(self.fd)
        self.fd = None


class Replica:
    """One replica process, its log files and how far `combined.log` has copied them."""

    def __init__(self, spec: dict, job: Job) -> None:
        self.job = job
        self.role = str(spec["role"])
        self.k = int(spec["replica_id"])
        self.args = [str(a) for a in spec["args"]]
        if not self.args:
            raise ValueError(f"{self.name}: empty command line")
        self.env = dict(spec["env"])
        self.cwd = str(spec.get("cwd") or job.log_dir)
        self.logs = (str(spec["stdout"]), str(spec["stderr"]))
        self.combined_path = str(spec["combined"])
        self.dir = os.path.dirname(self.logs[0])
        self.pid: int | None = None
        self.pidfd: int | None = None
        self.returncode: int | None = None
        self.exit_code: int | None = None
        self.restarts = 0
        self.streams: list[list[int]] = []  # [read fd, offset] for stdout and stderr
        self.combined: int | None = None
        self.combined_size = 0
        self.offsets: int | None = None

    @property
    def name(self) -> str:
        return f"{self.role}[{self.k}]"

    def open_logs(self) -> None:
        """Create the replica's folder and its three logs; a failure only costs
        `combined.log` (and the replica's start, without a folder)."""
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            for path in self.logs:
                self.streams.append([os.open(path, os.O_RDONLY | os.O_CREAT, 0o644), 0])
            self.combined = os.open(self.combined_path, APPEND, 0o644)
            self.combined_size = os.fstat(self.combined).st_size
        except OSError as e:
            self.job.trouble(e, f"{self.name} combined log")

    def save_offsets(self) -> None:
        """How far `combined.log` got; the file is made before its first byte is copied."""
        if len(self.streams) < 2:
            return
        if self.offsets is None:
            self.offsets = os.open(
                os.path.join(self.dir, OFFSETS_FILE), os.O_RDWR | os.O_CREAT, 0o644
            )
        record = OFFSETS_FORMAT % (self.streams[0][1], self.streams[1][1], self.combined_size)
        os.pwrite(self.offsets, record.encode(), 0)

    def start(self) -> None:
        """Spawn the replica in the job's group (leading it when the job has none yet)."""
        self.returncode = None
        job = self.job
        try:
            self.pid = self._spawn()
        except Exception as e:  # noqa: BLE001 - any refusal (bad env, missing program) fails this replica
            self.pid, self.exit_code = None, 127
            why = f"{self.name} could not start {self.args[0]!r}: {describe_error(e)}"
            job.note(why)
            job.log(why)
            self.append_note(f"nemo_run: {why}\n", also=self.logs[1])
            return
        if job.leader is None:
            job.leader = self.pid
        try:
            self.pidfd = os.pidfd_open(self.pid)
            job.host.watch(self)
        except (AttributeError, OSError):  # no pidfd (old kernel): the 50 ms poll still sees it end
            self.pidfd = None

    def _spawn(self) -> int:
        job = self.job
        job.host.set_path(job.path)
        try:
            return spawn(
                self.args, self.env, self.cwd, self.logs, job.leader or 0, job.host.scheduler
            )
        except PermissionError:
            if job.leader is None:
                raise
            # the job's group is gone (its leader reaped by someone else): a group of its own
            return spawn(self.args, self.env, self.cwd, self.logs, 0, job.host.scheduler)

    def append_note(self, text: str, also: str | None = None) -> None:
        """A line of ours in `combined.log` (and optionally another log), counted in the offsets."""
        data = text.encode()
        try:
            if also is not None:
                fd = os.open(also, APPEND, 0o644)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
            if self.combined is not None:
                self.save_offsets()
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
                    if self.offsets is None:
                        self.save_offsets()
                    written = os.write(self.combined, data)
                    stream[1] += written
                    self.combined_size += written
                    self.save_offsets()
                except OSError as e:
                    self.job.trouble(e, f"{self.name} combined log")
                    return False
                if written < len(data):
                    return False
            more = more or budget == 0
        return more

    def ended(self) -> bool:
        """True once the current process has exited (its code is kept in `returncode`). The
        job's group leader stays a zombie until the job ends: its group outlives it."""
        if self.pid is None or self.returncode is not None:
            return True
        result = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if result is None:
            return False
        self.returncode = exit_code_of(result)
        if self.pid != self.job.leader:
            os.waitpid(self.pid, os.WNOHANG)
        self.unwatch()
        return True

    def unwatch(self) -> None:
        if self.pidfd is not None:
            self.job.host.unwatch(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None

    def close(self) -> None:
        self.unwatch()
        fds = [fd for fd, _ in self.streams] + [self.combined, self.offsets]
        self.streams, self.combined, self.offsets = [], None, None
        for fd in fds:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


class Job:
    """All replicas of one job, their restarts, and the reasons to report."""

    def __init__(self, spec: dict, status: Status, host: Host) -> None:
        self.status = status
        self.host = host
        self.log_dir = str(spec["log_dir"])
        self.retries = int(spec.get("retries", 0))
        self.path = str(spec.get("path") or "")  # the launcher's PATH: finds the programs
        self.log_path = os.path.join(self.log_dir, SUPERVISOR_LOG) if host.serving else None
        self.reasons: list[str] = []
        self.troubles: set[int | None] = set()
        self.terminated = False  # cancelled, or a per-job supervisor signalled
        self.cancelled = False  # the cancel mark: its processes are ended here too
        self.signalled: list[tuple[int, float]] = []  # (signal, when) sent to its group
        self.leader: int | None = None  # the job's process group
        self.replicas = [Replica(r, self) for r in spec["replicas"]]

    def note(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    def log(self, message: str) -> None:
        """A line in the job's supervisor.log, made only then; never raises."""
        if self.log_path is None:
            _stderr(message)
            return
        try:
            fd = os.open(self.log_path, APPEND, 0o644)
            try:
                os.write(fd, f"nemo_run supervisor: {message}\n".encode())
            finally:
                os.close(fd)
        except OSError:
            pass

    def trouble(self, error: OSError, what: str) -> None:
        """A write of ours failed (no space, read-only...): report it once per kind of error."""
        if error.errno not in self.troubles:  # a full disk fails every poll: say it once
            self.troubles.add(error.errno)
            text = describe_error(error)
            self.log(f"{text} writing the {what}")
            self.note(f"{text} writing the {what}; its logs may be incomplete")

    def bug(self, error: BaseException) -> None:
        """Our own error while handling this job: said once; the job goes on as it can."""
        text = f"supervisor error: {describe_error(error)}"
        if text not in self.reasons:
            self.log(text)
        self.note(text)

    def stopped(self) -> bool:
        """Cancelled (the mark in its status file), or a per-job supervisor signalled: nothing
        more starts."""
        if not self.cancelled and self.status.cancelled():
            self.cancelled = self.terminated = True
        if TERMINATED and not self.host.serving:
            self.terminated = True
        return self.terminated

    def start(self) -> None:
        """Mark the job taken, then start each replica, unless cancelled before; a cancel
        marked while they started (after the canceller looked for them) ends them here."""
        try:
            self.status.taken(self.host.identity)
        except OSError as e:
            self.log(f"cannot mark the status file taken: {describe_error(e)}")
        for replica in self.replicas:
            if self.stopped():
                replica.exit_code = -signal.SIGTERM
                self.note("cancelled before all replicas started")
                continue
            replica.open_logs()
            replica.start()
        self.enforce_cancel()

    def enforce_cancel(self) -> None:
        """A cancelled job's processes end even if the canceller missed some (one started
        as it looked): SIGTERM to the job's group, SIGKILL after the grace period."""
        self.stopped()  # reads the mark
        if self.leader is None or not self.cancelled:
            return
        if any(r.pid is not None and r.exit_code is None for r in self.replicas):
            now = time.monotonic()
            if not self.signalled:
                self.signal_group(signal.SIGTERM, now)
            elif len(self.signalled) == 1 and now - self.signalled[0][1] > CANCEL_GRACE_S:
                self.signal_group(signal.SIGKILL, now)

    def signal_group(self, sig: int, now: float) -> None:
        self.signalled.append((sig, now))
        try:
            os.killpg(self.leader, sig)  # type: ignore[arg-type]
        except OSError:
            pass

    def tick(self) -> bool:
        """Every POLL_MS: copy new output, and act on a cancel; True while output waits."""
        more = False
        for replica in self.replicas:
            if replica.exit_code is None and replica.copy(final=False):
                more = True
        self.enforce_cancel()
        return more

    def check(self, replica: Replica) -> None:
        """`replica` may have ended: restart it (unless cancelled) or keep its code."""
        if replica.exit_code is not None or not replica.ended():
            return
        try:
            replica.copy(final=True)
        except OSError as e:
            self.trouble(e, f"{replica.name} combined log")
        code = replica.returncode
        if code != 0 and replica.restarts < self.retries and not self.stopped():
            replica.restarts += 1
            replica.append_note(
                f"nemo_run: exit code {code}; restart {replica.restarts}/{self.retries}\n"
            )
            replica.start()
            self.enforce_cancel()
            return
        replica.exit_code = code

    def done(self) -> bool:
        return all(r.exit_code is not None for r in self.replicas)

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
        """Record the outcome, then let the group's leader go."""
        for replica in self.replicas:
            replica.close()
        self.check_space()
        exits = [(r.k, r.exit_code, r.restarts, r.role) for r in self.replicas]
        trouble = self.status.write(self.stopped(), exits, "; ".join(self.reasons))
        if trouble:
            self.log(trouble)
        self.status.close()
        if self.leader is not None:
            try:
                os.waitpid(self.leader, os.WNOHANG)
            except ChildProcessError:
                pass


class NoSpec(Exception):
    """The spec was cut short: the launcher died while handing over the job."""


def decode_spec(data: bytes) -> dict:
    try:
        spec = marshal.loads(data)
    except EOFError as e:
        raise NoSpec("never started: its launcher exited before handing over the job") from e
    if not isinstance(spec, dict):
        raise TypeError(f"expected a dict, got {type(spec).__name__}")
    return spec


class Host:
    """Supervises jobs, each independently: one poll loop over the launcher's socket (when
    serving) and a pidfd per running replica, copying logs every POLL_MS."""

    def __init__(self, sock_fd: int | None, kind: bytes, scheduler: tuple[int, Any] | None) -> None:
        self.serving = sock_fd is not None
        self.sock_fd = sock_fd
        self.identity = own_identity(kind)
        self.scheduler = scheduler
        self.poller = select.poll()
        self.jobs: list[Job] = []
        self.by_pidfd: dict[int, Replica] = {}
        self.buffer = b""
        self.fds: list[int | None] = []  # status descriptors received, in message order
        self.path = ""
        self.sock: Any = None
        if sock_fd is not None:
            self.sock = _socket.socket(fileno=sock_fd)
            self.sock.setblocking(False)
            self.poller.register(sock_fd, select.POLLIN)

    def watch(self, replica: Replica) -> None:
        self.poller.register(replica.pidfd, select.POLLIN)  # type: ignore[arg-type]
        self.by_pidfd[replica.pidfd] = replica  # type: ignore[index]

    def unwatch(self, pidfd: int) -> None:
        self.poller.unregister(pidfd)
        self.by_pidfd.pop(pidfd, None)

    def set_path(self, path: str) -> None:
        """posix_spawnp searches the PATH of this process: the job's, when it starts one."""
        if path and path != self.path:
            os.environ["PATH"] = self.path = path

    def take(self, get_spec: Callable[..., dict], status_fd: int | None, *args: Any) -> Job | None:
        """A new job (its spec `get_spec(*args)`): started, or (an unusable spec) recorded as
        failed with the reason."""
        status = None
        try:
            spec = get_spec(*args)
            if self.serving:
                status_fd = self.status_fd(status_fd, spec)
            status = Status(status_fd)
            job = Job(spec, status, self)
        except Exception as e:  # noqa: BLE001 - a bad spec is reported, never a crash
            reason = (
                str(e) if isinstance(e, NoSpec) else f"unusable launch spec: {describe_error(e)}"
            )
            _stderr(reason)
            status = status or Status(status_fd)
            trouble = status.write(False, [], reason)
            if trouble:
                _stderr(trouble)
            status.close()
            return None
        self.jobs.append(job)
        self.safely(job, job.start)
        return job

    def safely(self, job: Job, step: Callable[..., object], *args: Any) -> object:
        """Run one step of one job; our error there is that job's, not the others'."""
        try:
            return step(*args)
        except Exception as e:  # noqa: BLE001 - one job's trouble must not end the others
            job.bug(e)
            return None

    def receive(self) -> None:
        """Read what the launcher sent; start each whole request. End of file: the launcher
        exited; a request cut short is dropped (its job never starts)."""
        cloexec = getattr(_socket, "MSG_CMSG_CLOEXEC", 0)
        while self.sock is not None:
            try:
                data, ancillary, flags, _ = self.sock.recvmsg(
                    REQUEST_CHUNK, _socket.CMSG_SPACE(FD_SIZE * 4), cloexec
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, ancillary, flags = b"", [], 0
            fds = [
                int.from_bytes(raw[i : i + FD_SIZE], sys.byteorder)
                for level, kind, raw in ancillary
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
                for i in range(0, len(raw) - len(raw) % FD_SIZE, FD_SIZE)
            ]
            if fds or flags & getattr(_socket, "MSG_CTRUNC", 0):
                self.fds.append(fds[0] if fds else None)  # one per request, with its first bytes
                for extra in fds[1:]:
                    os.close(extra)
            if not data:
                self.hang_up()
                return
            self.buffer += data
            self.take_requests()

    def take_requests(self) -> None:
        while len(self.buffer) >= HEADER_SIZE:
            end = HEADER_SIZE + int.from_bytes(self.buffer[:HEADER_SIZE], "little")
            if len(self.buffer) < end:
                return
            body, self.buffer = self.buffer[HEADER_SIZE:end], self.buffer[end:]
            fd = self.fds.pop(0) if self.fds else None
            self.take(decode_spec, fd, body)

    @staticmethod
    def status_fd(fd: int | None, spec: dict) -> int | None:
        """The descriptor that came with the request, if it is that job's status file; else
        (never in practice: it was lost to a limit on open files) the file by its name."""
        try:
            path = os.path.join(str(spec["log_dir"]), STATUS_FILE)
            want = os.stat(path)
        except Exception:  # noqa: BLE001 - the spec is judged (and reported) by `take`
            return fd
        if fd is not None:
            got = os.fstat(fd)
            if (got.st_dev, got.st_ino) == (want.st_dev, want.st_ino):
                return fd
            os.close(fd)
        try:
            return os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return None

    def hang_up(self) -> None:
        """The launcher is gone: no more jobs will come."""
        if self.sock is not None:
            self.poller.unregister(self.sock_fd)  # type: ignore[arg-type]
            self.sock.close()
            self.sock = None
        for fd in self.fds:
            if fd is not None:
                os.close(fd)
        self.fds, self.buffer = [], b""

    def run(self) -> None:
        """Until the launcher is gone (or, for one job, it is taken) and every job ended."""
        last_copy = time.monotonic()
        more = False
        while self.sock is not None or self.jobs:
            timeout = 0 if more else (POLL_MS if self.jobs else -1)
            events = self.poller.poll(timeout)
            if TERMINATED:
                for job in self.jobs:
                    job.terminated = True
                if self.jobs or self.serving:
                    TERMINATED.clear()
            ended: list[Replica] = []
            for fd, _ in events:
                if fd == self.sock_fd:
                    self.receive()
                elif fd in self.by_pidfd:
                    ended.append(self.by_pidfd[fd])
            for replica in ended:
                self.safely(replica.job, replica.job.check, replica)
            now = time.monotonic()
            if more or now - last_copy >= POLL_MS / 1000 or not events:
                last_copy, more = now, False
                for job in self.jobs:
                    more = bool(self.safely(job, job.tick)) or more
                    for replica in job.replicas:
                        if replica.pidfd is None and replica.exit_code is None:
                            self.safely(job, job.check, replica)
            self.finish_ended()

    def finish_ended(self) -> None:
        for job in [j for j in self.jobs if j.done()]:
            self.jobs.remove(job)
            try:
                job.finish()
            except Exception as e:  # noqa: BLE001 - one job's trouble must not end the others
                job.bug(e)

    def fail_all(self, error: BaseException) -> None:
        """The loop itself failed: record every job's outcome as well as we can."""
        for job in self.jobs:
            job.bug(error)
            for replica in job.replicas:
                if replica.exit_code is None:
                    replica.exit_code = replica.returncode
            try:
                job.finish()
            except Exception:  # noqa: BLE001, S110 - nothing more can be recorded
                pass


def spawn_scheduler(policy: int) -> tuple[int, Any] | None:
    """Run as SCHED_BATCH when the launcher runs SCHED_OTHER: the same but for not
    preempting the launcher that wakes us with a job; replicas get SCHED_OTHER back."""
    if policy != os.SCHED_OTHER:
        return None  # replicas inherit the launcher's policy, as we did
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError:
        return None  # no harm done: only a little slower under load
    return (os.SCHED_OTHER, os.sched_param(0))


def close_fds_from(low: int, keep: int = -1) -> None:
    """Close every descriptor from `low` up but `keep` (posix_spawn passes on any that is
    not close-on-exec: the launcher's are none of ours)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(low, min(os.sysconf("SC_OPEN_MAX"), 65536)))
    for fd in fds:
        if fd >= low and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


def raise_fd_limit() -> None:
    """A host keeps ~5 descriptors per running replica: allow more than the usual 1024."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = FD_LIMIT if hard == resource.RLIM_INFINITY else min(hard, FD_LIMIT)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (OSError, ValueError):
        pass


def serve(sock_fd: int = HOST_FD, policy: int = -1) -> int:
    """Entry of the job host (the launcher's child, in a session of its own, stdio
    /dev/null): supervise every job that comes on `sock_fd` until the launcher has closed
    its end and the last job ended. `policy` is the launcher's scheduling policy."""
    os.chdir("/")  # hold no folder of the launcher's
    close_fds_from(3, keep=sock_fd)
    os.set_inheritable(sock_fd, False)  # no replica may hold it: the launcher would see us
    # alive after our death, and send jobs into the void
    raise_fd_limit()
    install_handlers()
    gc.freeze()  # what start-up made is never collected: collections stay short
    return run_host(Host(sock_fd, b"host", spawn_scheduler(policy)))


def read_spec() -> dict:
    """The launch spec from stdin (marshal: built in, and no env value ever touches the disk)."""
    chunks = []
    while chunk := os.read(0, 1 << 20):
        chunks.append(chunk)
    return decode_spec(b"".join(chunks))


def stdout_status() -> int | None:
    """A per-job supervisor's status file is its stdout; run by hand, `status` here."""
    try:
        if os.fstat(1).st_mode & 0o170000 == 0o100000:  # a regular file: the launcher's
            return 1
        return os.open(STATUS_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        _stderr(f"cannot open the status file: {describe_error(e)}")
        return None


def main() -> int:
    """Entry of a per-job supervisor: the spec comes on stdin; 2 when it is unusable."""
    install_handlers()
    host = Host(None, b"job", None)
    if host.take(read_spec, stdout_status()) is None:
        return 2
    return run_host(host)


def run_host(host: Host) -> int:
    """Supervise until the last job ended; a bug in the loop still records what it can."""
    try:
        host.run()
    except BaseException as e:  # noqa: BLE001 - a bug in the loop: record what we can
        host.fail_all(e)
        return EX_SOFTWARE
    return 0


if __name__ == "__main__":
    sys.exit(main())
