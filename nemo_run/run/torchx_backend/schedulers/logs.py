"""Reading a job's log file: whole lines, and with `should_tail` until the job has ended.

Reads in bounded chunks, so memory stays constant whatever the size of the log (a line
longer than `MAX_LINE` is yielded in pieces rather than held whole).
"""

from __future__ import annotations

import codecs
import os
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

CHUNK = 1 << 16
MAX_LINE = 1 << 20


def split_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Whole lines (with their newline) from a stream of byte chunks; the rest at the end."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for chunk in chunks:
        text = pending + decoder.decode(chunk)
        start = 0
        while True:
            end = text.find("\n", start)
            if end < 0:
                break
            yield text[start : end + 1]
            start = end + 1
        pending = text[start:]
        while len(pending) > MAX_LINE:
            yield pending[:MAX_LINE]
            pending = pending[MAX_LINE:]
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


def _chunks(fh: BinaryIO) -> Iterator[bytes]:
    while True:
        chunk = fh.read(CHUNK)
        if not chunk:
            return
        yield chunk


def read_lines(path: str) -> Iterator[str]:
    """Every line of a finished log file, read a chunk at a time."""
    with open(path, "rb") as fh:
        yield from split_lines(_chunks(fh))


def follow_file(path: str, finished: Callable[[], bool], should_tail: bool) -> Iterator[str]:
    """Yield whole lines of `path`; with `should_tail`, keep reading until `finished()` is true
    and everything written before that has been read. Never waits on a finished job."""

    def chunks() -> Iterator[bytes]:
        delay, fh = 0.01, None
        try:
            while True:
                done = not should_tail or finished()
                if fh is None and os.path.exists(path):
                    fh = open(path, "rb")  # noqa: SIM115 - closed in finally
                got = False
                if fh is not None:
                    for chunk in _chunks(fh):
                        got = True
                        yield chunk
                if got:
                    delay = 0.01
                    continue
                if done:
                    return
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        finally:
            if fh is not None:
                fh.close()

    return split_lines(chunks())


def follow_text(
    read: Callable[[], str | None],
    finished: Callable[[], bool],
    gone: Callable[[], str | None],
    should_tail: bool,
) -> Iterator[str]:
    """Lines of a log an API serves whole on every read (`read()`: its text, or None when it
    cannot be had now). With `should_tail`, re-read, backing off to 2 s, until `finished()`;
    only whole lines are yielded until then. A finished job whose log cannot be read ends
    with the note `gone()` gives (when it gives one)."""
    seen, delay = 0, 0.2
    while True:
        done = not should_tail or finished()
        text = read()
        if text is None and done:
            note = gone()
            if note:
                yield note
            return
        if text is not None:
            end = len(text) if done else text.rfind("\n") + 1
            if end > seen:
                yield from text[seen:end].splitlines(keepends=True)
                seen, delay = end, 0.2
        if done:
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
