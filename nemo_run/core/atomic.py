"""Writing a whole file so that readers see the old or the new content, never a part."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading

_serial = itertools.count()


def atomic_write(path: str, data: bytes | str, *, mode: int = 0o600, fsync: bool = True) -> None:
    """Write to a temp file beside `path` (unique per process, thread and call), then rename it
    over `path`; the temp file is removed when anything fails, so none is ever left behind."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}.{next(_serial)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
