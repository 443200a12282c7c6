"""Running one side's processes: a fresh home per step, worker commands, timed commands.

Every measurement runs in separate processes with their own `$NEMORUN_HOME` and working
directory, so neither side sees the other's `nemo_run` or records.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
WORKER = BENCH_DIR / "worker.py"
RESULT_TAG = "@@RESULT "


class BenchError(Exception):
    """A measurement failed; the message ends up in the table's error list."""


def log(msg: str) -> None:
    """Progress goes to stderr so stdout holds only the table."""
    print(msg, file=sys.stderr, flush=True)


def short(text: str, limit: int = 400) -> str:
    """One line of at most `limit` characters, for table notes and error cells."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Side:
    """One implementation under test: its interpreter and what its processes get on top."""

    name: str  # "ours" or "peer"
    python: str
    extra_env: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    unavailable: str | None = None

    def env(self, home: str) -> dict[str, str]:
        """The caller's environment without its PYTHONPATH/NEMORUN_HOME, which would leak the
        harness's package or records into the side's processes."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NEMORUN_HOME")}
        env.update(self.extra_env)
        env["NEMORUN_HOME"] = home
        return env


class Scratch:
    """A fresh NEMORUN_HOME plus a working directory and a job dir, removed afterwards."""

    def __init__(self, tag: str) -> None:
        self.root = tempfile.mkdtemp(prefix=f"nemo-bench-{tag}-")
        self.home = os.path.join(self.root, "home")
        self.cwd = os.path.join(self.root, "cwd")
        self.jobs = os.path.join(self.root, "jobs")
        for d in (self.home, self.cwd, self.jobs):
            os.makedirs(d)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def parse_result(stdout: str) -> dict[str, Any] | None:
    """The worker's `@@RESULT {json}` line; whatever else the package printed is ignored."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    return None


def worker_argv(side: Side, args: list[str]) -> list[str]:
    return [side.python, str(WORKER), *args]


def run_worker(side: Side, scratch: Scratch, args: list[str], timeout: float) -> dict[str, Any]:
    """Run one worker command under `side`'s interpreter and return its JSON result."""
    try:
        proc = subprocess.run(
            worker_argv(side, args),
            cwd=scratch.cwd,
            env=side.env(scratch.home),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"worker {args[0]} timed out after {timeout:.0f} s") from exc
    result = parse_result(proc.stdout)
    if result is None:
        raise BenchError(
            f"worker {args[0]} exited {proc.returncode} without a result: "
            + short(proc.stderr[-2000:] or proc.stdout[-2000:])
        )
    if "error" in result:
        raise BenchError(f"worker {args[0]}: {result['error']}")
    return result


def timed_run(
    side: Side, scratch: Scratch, code: str, stdout: Any, timeout: float
) -> tuple[float, str]:
    """Wall time of `python -c code` as a whole process, and its stdout when `stdout` is
    subprocess.PIPE; raises if the process fails."""
    err_path = os.path.join(scratch.root, "stderr.txt")
    with open(err_path, "w") as err:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [side.python, "-c", code],
                cwd=scratch.cwd,
                env=side.env(scratch.home),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=err,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"`python -c {code!r}` timed out after {timeout:.0f} s") from exc
        elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        with open(err_path, errors="replace") as f:
            tail = f.read()[-2000:]
        raise BenchError(f"`python -c {code!r}` exited {proc.returncode}: {short(tail)}")
    return elapsed, proc.stdout or ""


def timed_cmd(
    side: Side, scratch: Scratch, argv: list[str], out_path: str, timeout: float
) -> tuple[float, int, str]:
    """Wall time of `argv` as a whole process (stdout to `out_path`), its exit status and the
    tail of its stderr."""
    err_path = os.path.join(scratch.root, "cmd-stderr.txt")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                argv,
                cwd=scratch.cwd,
                env=side.env(scratch.home),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"`{' '.join(argv[1:])}` timed out after {timeout:.0f} s") from exc
        elapsed = time.perf_counter() - t0
    return elapsed, proc.returncode, stderr_tail(err_path)


def stderr_tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return short(f.read()[-2000:])
    except OSError:
        return ""


class LineReader(threading.Thread):
    """Collects a child's stdout lines without blocking the harness."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []

    def run(self) -> None:
        for line in iter(self.stream.readline, ""):
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, marker: str, timeout: float) -> bool:
        """Wait for a line equal to `marker`; False on EOF or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                return False
            if line is None:
                self.lines.put(None)
                return False
            self.seen.append(line)
            if line.rstrip("\n") == marker:
                return True

    def drain(self) -> list[str]:
        """All remaining lines (call after the child has exited)."""
        self.join(timeout=30)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return self.seen
