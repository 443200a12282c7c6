"""Which filesystem a path lives on: SQLite's WAL needs shared memory on a single host."""

from __future__ import annotations

import os
import re

NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "lustre",
        "gpfs",
        "beegfs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "9p",
        "afs",
        "ocfs2",
        "gfs2",
        "fuse.juicefs",
        "wekafs",
        "virtiofs",
    }
)


def filesystem_type(path: str, mounts_file: str = "/proc/self/mounts") -> str | None:
    """The fstype of the mount holding `path`, or None when the mount table is unreadable."""
    target = os.path.realpath(path)
    best, best_type = "", None
    try:
        with open(mounts_file, encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount_point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[1])
                inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best):
                    best, best_type = mount_point, parts[2]
    except OSError:
        return None
    return best_type


def is_network_filesystem(path: str, mounts_file: str = "/proc/self/mounts") -> bool:
    """True for filesystems where SQLite WAL mode is unsafe (shared memory across hosts)."""
    fstype = filesystem_type(path, mounts_file)
    return fstype is not None and fstype in NETWORK_FILESYSTEMS
