"""Disk trouble (full, read-only, no permission) said plainly, with the fix.

Every place that writes under the home folder (the job store, experiment files, job folders)
turns such errors into one message, so a full disk never reads as a corrupt store and the
advice never is to move a healthy file aside.
"""

from __future__ import annotations

import errno
import os

from nemo_run.exceptions import DiskError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
READ_ONLY = (errno.EROFS,)
NO_PERMISSION = (errno.EACCES, errno.EPERM)

# What SQLite reports for the same conditions (sqlite3 errors carry no errno).
_SQLITE_NO_SPACE = ("database or disk is full", "disk i/o error")
_SQLITE_READ_ONLY = ("readonly database", "read-only")


def kind_of(error: BaseException) -> str | None:
    """'no space', 'read-only' or 'permission' for disk trouble; None for anything else."""
    code = getattr(error, "errno", None)
    if code in NO_SPACE:
        return "no space"
    if code in READ_ONLY:
        return "read-only"
    if code in NO_PERMISSION:
        return "permission"
    text = str(error).lower()
    if any(s in text for s in _SQLITE_NO_SPACE) and "full" in text:
        return "no space"
    if any(s in text for s in _SQLITE_READ_ONLY):
        return "read-only"
    return None


def explain(error: BaseException, path: str, doing: str) -> str | None:
    """A one-line message for disk trouble while `doing` something to `path`, else None."""
    kind = kind_of(error)
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    if kind is None and "unable to open" in str(error) and _writable_fs_is_read_only(folder):
        kind = "read-only"  # SQLite cannot create its journal on a read-only filesystem
    if kind is None:
        return None
    if kind == "no space":
        return (
            f"no space left on the device holding {folder} while {doing}; free some space "
            f"there (df -h {folder}) or point NEMORUN_HOME at a larger disk"
        )
    if kind == "read-only":
        if _writable_fs_is_read_only(folder):
            return (
                f"{folder} is on a read-only filesystem, so nemo_run cannot keep records there "
                f"while {doing}; point NEMORUN_HOME at a writable folder"
            )
        return (
            f"{path} is read-only while {doing}; make it writable (chmod u+w) or point "
            "NEMORUN_HOME at a writable folder"
        )
    return (
        f"permission denied on {path} while {doing}; fix its ownership or mode, or point "
        "NEMORUN_HOME at a folder you own"
    )


def _writable_fs_is_read_only(folder: str) -> bool:
    """True when the filesystem itself is mounted read-only (not just a file's mode)."""
    probe = folder
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    try:
        return bool(os.statvfs(probe or "/").f_flag & os.ST_RDONLY)
    except OSError:
        return False


def raise_if_disk_trouble(error: BaseException, path: str, doing: str) -> None:
    """Re-raise disk trouble as a DiskError with a clear message; other errors pass through."""
    message = explain(error, path, doing)
    if message is not None:
        raise DiskError(message) from error
