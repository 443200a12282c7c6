"""Several worker processes released at the same instant, so their package calls overlap.

Each child imports the package and sets up, prints READY and waits for a line on stdin; the
harness releases all of them once all are ready, so process start-up is never timed.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from harness.procs import (
    BenchError,
    LineReader,
    Scratch,
    Side,
    parse_result,
    stderr_tail,
    worker_argv,
)


@dataclass
class Released:
    """The children's results, and when they were started, all ready, and released (epoch s)."""

    results: list[dict[str, Any]]
    launched: float
    ready: float
    go: float


def run_together(
    side: Side,
    scratch: Scratch,
    children_args: list[list[str]],
    homes: list[str] | None = None,
    timeout: float = 600,
) -> Released:
    """Start one worker per entry of `children_args` (in `scratch.home`, or each in its entry
    of `homes`), release them together, and return each one's result; a child that fails
    fails the whole step."""
    children: list[tuple[subprocess.Popen[str], LineReader, str]] = []
    try:
        launched = time.time()
        for i, args in enumerate(children_args):
            err_path = os.path.join(scratch.root, f"child{i}.err")
            with open(err_path, "w") as err:
                p = subprocess.Popen(
                    worker_argv(side, args),
                    cwd=scratch.cwd,
                    env=side.env(homes[i] if homes else scratch.home),
                    text=True,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                )
            assert p.stdout is not None
            reader = LineReader(p.stdout)
            reader.start()
            children.append((p, reader, err_path))
        for p, reader, err_path in children:
            if not reader.wait_for("READY", 300):
                raise BenchError(
                    f"{children_args[0][0]} did not get ready (rc={p.poll()}): "
                    + stderr_tail(err_path)
                )
        ready = go = time.time()
        for p, _, _ in children:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p, reader, err_path in children:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise BenchError(
                    f"{children_args[0][0]} did not finish in {timeout:.0f} s"
                ) from exc
            res = parse_result("".join(reader.drain()))
            if res is None or "error" in res:
                why = res["error"] if res else stderr_tail(err_path)
                raise BenchError(f"{children_args[0][0]} failed (rc={p.returncode}): {why}")
            results.append(res)
    finally:
        for p, _, _ in children:
            if p.poll() is None:
                p.kill()
                p.wait()
    return Released(results, launched, ready, go)
