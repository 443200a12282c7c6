"""Supervisor of one local job: the process that outlives the launcher and records the outcome.

Run as `python -S -I local_supervisor.py` (standard library only, so it starts in ~15 ms and
needs no site-packages) in a new session; every replica it starts shares its process group,
so one `killpg` cancels the whole job. The launch spec arrives as JSON on stdin, never on
disk, because replica environments may carry credentials.

It copies each replica's stdout and stderr into `stdout.log`, `stderr.log` and an interleaved
`combined.log`, restarts a failed replica up to `retries` times, and finally writes
`<app log dir>/status.json` atomically: the only source of exit codes for later processes.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time

STATUS_FILE = "status.json"
DRAIN_AFTER_EXIT_S = 0.2  # grandchildren may keep a pipe open; stop reading shortly after exit


class Replica:
    """One replica process and its three log files."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.exit_code: int | None = None
        self.restarts = 0
        self.proc: subprocess.Popen | None = None
        self.open_pipes = 0
        self.exited_at: float | None = None
        self.stdout = open(spec["stdout"], "ab", buffering=0)
        self.stderr = open(spec["stderr"], "ab", buffering=0)
        self.combined = open(spec["combined"], "ab", buffering=0)

    def start(self, selector: selectors.BaseSelector) -> None:
        self.exited_at = None
        try:
            self.proc = subprocess.Popen(
                self.spec["args"], env=self.spec["env"], cwd=self.spec.get("cwd") or None,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        except OSError as e:
            message = f"nemo_run: cannot start {self.spec['args'][0]!r}: {e}\n".encode()
            self.stderr.write(message)
            self.combined.write(message)
            self.proc, self.exit_code = None, 127
            return
        selector.register(self.proc.stdout, selectors.EVENT_READ, (self, self.stdout))
        selector.register(self.proc.stderr, selectors.EVENT_READ, (self, self.stderr))
        self.open_pipes = 2

    def running(self) -> bool:
        return self.proc is not None and (self.open_pipes > 0 or self.proc.poll() is None)


def _write_status(path: str, replicas: list[Replica], terminated: bool, started_at: float) -> None:
    status = {
        "started_at": started_at,
        "ended_at": time.time(),
        "terminated_by_signal": terminated,
        "replicas": [
            {"role": r.spec["role"], "replica_id": r.spec["replica_id"],
             "exit_code": r.exit_code, "restarts": r.restarts}
            for r in replicas
        ],
    }
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(status, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def supervise(spec: dict) -> int:
    started_at = time.time()
    terminated = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal terminated
        terminated = True  # replicas got the same signal through the process group

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    selector = selectors.DefaultSelector()
    replicas = [Replica(r) for r in spec["replicas"]]
    for replica in replicas:
        replica.start(selector)
    retries = int(spec.get("retries", 0))

    while any(r.running() for r in replicas):
        for key, _ in selector.select(timeout=0.05):
            replica, stream_file = key.data
            chunk = os.read(key.fd, 65536)
            if chunk:
                stream_file.write(chunk)
                replica.combined.write(chunk)
            else:
                selector.unregister(key.fileobj)
                key.fileobj.close()
                replica.open_pipes -= 1
        now = time.monotonic()
        for replica in replicas:
            proc = replica.proc
            if proc is None or proc.poll() is None:
                continue
            if replica.exited_at is None:
                replica.exited_at = now
            if replica.open_pipes and now - replica.exited_at > DRAIN_AFTER_EXIT_S:
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None and not pipe.closed:
                        selector.unregister(pipe)
                        pipe.close()
                replica.open_pipes = 0
            if replica.open_pipes == 0 and replica.exit_code is None:
                replica.exit_code = proc.returncode
                if replica.exit_code != 0 and replica.restarts < retries and not terminated:
                    replica.restarts += 1
                    note = f"nemo_run: exit code {replica.exit_code}; restart {replica.restarts}/{retries}\n"
                    replica.combined.write(note.encode())
                    replica.exit_code = None
                    replica.start(selector)
    _write_status(os.path.join(spec["log_dir"], STATUS_FILE), replicas, terminated, started_at)
    return 0


if __name__ == "__main__":
    launch_spec = json.load(sys.stdin)
    sys.stdin.close()
    sys.exit(supervise(launch_spec))
