"""Reading a job's log file: whole lines, and with `should_tail` until the job has ended."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator


def follow_file(path: str, finished: Callable[[], bool], should_tail: bool) -> Iterator[str]:
    """Yield whole lines of `path`; with `should_tail`, keep reading until `finished()` is true
    and everything written before that has been read. Never waits on a finished job."""
    pending, delay, fh = "", 0.01, None
    try:
        while True:
            done = not should_tail or finished()
            if fh is None and os.path.exists(path):
                fh = open(path, encoding="utf-8", errors="replace", newline="")
            chunk = fh.read() if fh is not None else ""
            if chunk:
                delay = 0.01
                *lines, pending = (pending + chunk).split("\n")
                yield from (line + "\n" for line in lines)
                continue
            if done:
                if pending:
                    yield pending
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
    finally:
        if fh is not None:
            fh.close()
