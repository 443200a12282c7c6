"""Writing a whole file so that readers see the old or the new content, never a part.

Every file the package writes whole (experiment records, profiles, a Docker job's saved logs,
code archives) goes through here. The one exception is `local_supervisor.py`, which runs as a
bare interpreter with built-in modules only and keeps a copy of its own.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Iterator
from typing import BinaryIO

_serial = itertools.count()


@contextlib.contextmanager
def atomic_writer(path: str, *, mode: int = 0o600, fsync: bool = True) -> Iterator[BinaryIO]:
    """A binary file to fill (in one go or streamed); on a clean exit it replaces `path`.

    It is a temp file beside `path` (unique per process, thread and call), renamed over `path`
    when the block ends; when anything fails the temp file is removed, so none is left behind,
    and `path` keeps its old content. `mode` is filtered by the umask, as `open()` does."""
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}.{next(_serial)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str, data: bytes | str, *, mode: int = 0o600, fsync: bool = True) -> None:
    """Replace `path` with `data` (text is written as UTF-8); see `atomic_writer`."""
    with atomic_writer(path, mode=mode, fsync=fsync) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
