"""Packagers decide how a task's code reaches a remote target: each writes one tar archive.

The base `Packager` ships nothing (the image or host already has the code). Subclasses write
`<job_dir>/<name>.tar` with the code at the archive's top level; executors then extract it
to `/nemo_run/code` (Docker mounts the job dir at `/nemo_run`) or upload it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tarfile


@dataclass(kw_only=True)
class Packager:
    """Ships nothing; local jobs run in the caller's working tree and environment."""

    debug: bool = False

    def package(self, path: str, job_dir: str, name: str) -> str | None:
        """Write the code archive for `path` into `job_dir`; returns its path, or None if nothing."""
        return None

    @property
    def ships_code(self) -> bool:
        """True for packagers that produce an archive (any that override `package`)."""
        return type(self).package is not Packager.package

    def archive_path(self, job_dir: str, name: str) -> str:
        """Where this package goes: unique per job dir, so parallel experiments never collide."""
        os.makedirs(job_dir, exist_ok=True)
        return os.path.join(job_dir, f"{name}.tar")


def add_files(tar: tarfile.TarFile, root: str, relative_paths: list[str], prefix: str = "") -> None:
    """Add files (relative to `root`) under `prefix` in the archive, skipping ones already there."""
    present = set(tar.getnames())
    for rel in sorted(set(relative_paths)):
        arcname = os.path.normpath(os.path.join(prefix, rel)) if prefix else os.path.normpath(rel)
        if arcname in present:
            continue
        tar.add(os.path.join(root, rel), arcname=arcname, recursive=False)
        present.add(arcname)


def extract(archive: str, destination: str) -> None:
    """Unpack a package archive, refusing members that would land outside `destination`."""
    import tarfile

    os.makedirs(destination, exist_ok=True)
    with tarfile.open(archive) as tar:
        base = os.path.realpath(destination)
        for member in tar.getmembers():
            target = os.path.realpath(os.path.join(base, member.name))
            if target != base and not target.startswith(base + os.sep):
                raise ValueError(f"archive member {member.name!r} escapes {destination}")
        tar.extractall(destination)
