"""Helpers for the job store tests: cache reset and child processes running `_child.py`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import nemo_run.core.store as store_pkg
from nemo_run.core.store import sqlite as sqlite_mod

CHILD_SCRIPT = Path(__file__).with_name("_child.py")
CHILD_TIMEOUT = 60


def close_thread_connections() -> None:
    """Close the SQLite connections the store cached for the calling thread."""
    conns = getattr(sqlite_mod._local, "conns", None) or {}
    for conn in conns.values():
        conn.close()
    conns.clear()


def forget_open_stores() -> None:
    """Close this thread's cached connections and forget the store objects.

    The next `get_store()` then opens the file afresh, as a new process would.
    """
    close_thread_connections()
    store_pkg._stores.clear()


def child_env(home: Path | str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["NEMORUN_HOME"] = str(home)
    env.update(extra)
    return env


def start_child(home: Path | str, *args: str, **extra_env: str) -> subprocess.Popen[str]:
    """Start `_child.py` with `args` in its own interpreter; stdout and stderr are pipes."""
    return subprocess.Popen(
        [sys.executable, str(CHILD_SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(home, **extra_env),
    )


def run_child(home: Path | str, *args: str, **extra_env: str) -> str:
    """Run `_child.py` to completion and return its stdout; fail the test on a non-zero exit."""
    proc = start_child(home, *args, **extra_env)
    out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    assert proc.returncode == 0, f"child {args} exited {proc.returncode}:\n{err}"
    return out


@contextlib.contextmanager
def watchdog(procs: list[subprocess.Popen[str]], timeout: float = CHILD_TIMEOUT) -> Iterator[None]:
    """Kill `procs` if the block outlives `timeout`, so a blocking readline() cannot hang the suite.

    On exit, any child still running is killed and reaped, and its pipes are closed.
    """

    def kill_all() -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()

    timer = threading.Timer(timeout, kill_all)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        kill_all()
        for proc in procs:
            proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


def run_together(home: Path | str, go_file: Path, argv: list[list[str]]) -> list[str]:
    """Start one child per argv, wait until each says "ready", release them all, collect stdout.

    The children poll for `go_file` (see `_child.py`), so their work starts at the same time.
    """
    procs = [start_child(home, str(go_file), *args) for args in argv]
    with watchdog(procs):
        for proc, args in zip(procs, argv, strict=True):
            line = proc.stdout.readline()
            if line.strip() != "ready":
                proc.kill()
                _, err = proc.communicate(timeout=CHILD_TIMEOUT)
                pytest.fail(f"child {args} did not start: {line!r}\n{err}")
        go_file.touch()
        outputs = []
        for proc, args in zip(procs, argv, strict=True):
            out, err = proc.communicate(timeout=CHILD_TIMEOUT)
            assert proc.returncode == 0, f"child {args} exited {proc.returncode}:\n{err}"
            outputs.append(out)
        return outputs


def wait_until(
    predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition"
) -> None:
    """Poll `predicate` until it holds, failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)
