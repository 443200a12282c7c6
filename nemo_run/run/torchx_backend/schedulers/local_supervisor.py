"""Supervisor of one local job: the process that outlives the launcher and records the outcome.

Run as `python -S -I local_supervisor.py` in a new session. It imports only built-in modules
(no json, re or subprocess: those tripled its start-up), so a job costs about one bare
interpreter start. Every replica it starts shares its process group, so one `killpg`
cancels the whole job. The launch spec arrives on stdin in `marshal` format from the same
interpreter, never on disk, because replica environments may carry credentials.

It copies each replica's stdout and stderr into `stdout.log`, `stderr.log` and an
interleaved `combined.log`, restarts a failed replica up to `retries` times, writes
`<replica dir>/exit_code` ("<code> <restarts>") as each replica ends, and finally
`<app log dir>/status` ("ended_at <unix time>" and "terminated <0|1>"): plain text, so any
later process (any Python version) can read the outcome.
"""

from __future__ import annotations

import marshal
import os
import select
import signal
import sys
import time

STATUS_FILE = "status"
EXIT_CODE_FILE = "exit_code"
DRAIN_AFTER_EXIT_S = 0.2  # grandchildren may keep a pipe open; stop reading shortly after exit


def write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _open_log(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


class Replica:
    """One replica process and its three log files."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.pid: int | None = None
        self.exit_code: int | None = None
        self.restarts = 0
        self.exited_at: float | None = None
        self.pipes: dict[int, int] = {}  # read end -> log fd of that stream
        self.stdout = _open_log(spec["stdout"])
        self.stderr = _open_log(spec["stderr"])
        self.combined = _open_log(spec["combined"])

    def start(self, poller: select.poll) -> None:
        self.exited_at, self.exit_code = None, None
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1),
            (os.POSIX_SPAWN_DUP2, err_w, 2),
        ]
        try:
            if self.spec.get("cwd"):
                os.chdir(self.spec["cwd"])
            program = self.spec["args"][0]
            spawn = os.posix_spawn if os.sep in program else os.posix_spawnp
            self.pid = spawn(program, self.spec["args"], self.spec["env"], file_actions=actions)
        except OSError as e:
            message = f"nemo_run: cannot start {self.spec['args'][0]!r}: {e}\n".encode()
            os.write(self.stderr, message)
            os.write(self.combined, message)
            self.pid, self.exit_code = None, 127
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            return
        finally:
            os.chdir(self.spec["log_dir"])
        os.close(out_w)
        os.close(err_w)
        for read_end, log_fd in ((out_r, self.stdout), (err_r, self.stderr)):
            self.pipes[read_end] = log_fd
            poller.register(read_end, select.POLLIN | select.POLLHUP)

    def close_pipe(self, fd: int, poller: select.poll) -> None:
        poller.unregister(fd)
        os.close(fd)
        del self.pipes[fd]

    def reap(self) -> bool:
        """True once the process has exited (its code is kept in `returncode`)."""
        if self.pid is None:
            return True
        if self.exited_at is not None:
            return True
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.returncode = os.waitstatus_to_exitcode(status)
        self.exited_at = time.monotonic()
        return True

    def running(self) -> bool:
        return self.pid is not None and (bool(self.pipes) or self.exited_at is None)


def supervise(spec: dict) -> None:
    terminated = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal terminated
        terminated = True  # replicas got the same signal through the process group

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    poller = select.poll()
    replicas = []
    for replica_spec in spec["replicas"]:
        replica_spec["log_dir"] = spec["log_dir"]
        replicas.append(Replica(replica_spec))
    by_fd: dict[int, Replica] = {}
    for replica in replicas:
        replica.start(poller)
        by_fd.update(dict.fromkeys(replica.pipes, replica))
    retries = int(spec.get("retries", 0))

    while any(r.running() for r in replicas):
        try:
            events = poller.poll(50)
        except InterruptedError:
            events = []
        for fd, _ in events:
            replica = by_fd[fd]
            chunk = os.read(fd, 65536)
            if chunk:
                os.write(replica.pipes[fd], chunk)
                os.write(replica.combined, chunk)
            else:
                replica.close_pipe(fd, poller)
        now = time.monotonic()
        for replica in replicas:
            if replica.pid is None or replica.exit_code is not None or not replica.reap():
                continue
            if replica.pipes and now - replica.exited_at < DRAIN_AFTER_EXIT_S:
                continue
            for fd in list(replica.pipes):
                replica.close_pipe(fd, poller)
            replica.exit_code = replica.returncode
            if replica.exit_code != 0 and replica.restarts < retries and not terminated:
                replica.restarts += 1
                note = f"nemo_run: exit code {replica.exit_code}; restart {replica.restarts}/{retries}\n"
                os.write(replica.combined, note.encode())
                replica.start(poller)
                by_fd.update(dict.fromkeys(replica.pipes, replica))
                continue
            write_atomically(os.path.join(os.path.dirname(replica.spec["stdout"]), EXIT_CODE_FILE),
                             f"{replica.exit_code} {replica.restarts}\n")
    for replica in replicas:
        if replica.pid is None:  # never started: record why it failed
            write_atomically(os.path.join(os.path.dirname(replica.spec["stdout"]), EXIT_CODE_FILE),
                             f"{replica.exit_code} 0\n")
    write_atomically(os.path.join(spec["log_dir"], STATUS_FILE),
                     f"ended_at {time.time()}\nterminated {int(terminated)}\n")


if __name__ == "__main__":
    launch_spec = marshal.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    supervise(launch_spec)
