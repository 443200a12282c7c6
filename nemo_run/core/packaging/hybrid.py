"""`HybridPackager`: several packagers' archives merged into one `.tar.gz`, each under its own
folder, or all at the archive's root with `extract_at_root=True`.

Names follow 0.11.1's archives: `<folder>/.` then `<folder>/./<file>` (`.` and `./<file>` at
the root). When two sub-packagers ship the same name, the later one wins, as unpacking
0.11.1's archive does; the archive holds each name once.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import tempfile
from dataclasses import dataclass, field

from nemo_run.core.atomic import atomic_writer
from nemo_run.core.packaging.base import (
    COMPRESS_LEVEL,
    Packager,
    folder_entry,
    has_control,
    parent_folders,
    rename,
)
from nemo_run.exceptions import ConfigError


def _relative(name: str) -> str:
    """A member name without `./` and trailing slashes ('.' for the root itself)."""
    return posixpath.normpath(name.lstrip("/")) if name.strip("/") else "."


def _shown(prefix: str, rel: str) -> str:
    """The name 0.11.1 gives `rel` under `prefix`: `p/.`, `p/./rel`, `.` or `./rel`."""
    inner = "." if rel == "." else f"./{rel}"
    return f"{prefix}/{inner}" if prefix else inner


def _key(prefix: str, rel: str) -> str:
    return posixpath.normpath(posixpath.join(prefix, rel)) if prefix else rel


def _merge(out: tarfile.TarFile, parts: list[tuple[str, str]]) -> None:
    """Copy each (prefix, archive) into `out`; a name shipped again later replaces it, and
    folders that no archive lists get an entry of their own (as 0.11.1's archives have)."""
    last: dict[str, tuple[int, int]] = {}
    for i, (prefix, part) in enumerate(parts):
        with tarfile.open(part) as tar:
            for j, member in enumerate(tar.getmembers()):
                last[_key(prefix, _relative(member.name))] = (i, j)
    made: set[str] = set()
    for i, (prefix, part) in enumerate(parts):
        with tarfile.open(part) as tar:
            for j, member in enumerate(tar.getmembers()):
                rel = _relative(member.name)
                if last[_key(prefix, rel)] != (i, j):
                    continue
                for folder in parent_folders(rel):
                    key = _key(prefix, folder)
                    if key not in last and key not in made:
                        made.add(key)
                        out.addfile(folder_entry(_shown(prefix, folder)))
                data = tar.extractfile(member) if member.isfile() else None
                rename(member, _shown(prefix, rel))
                if member.islnk():  # hardlinks name another member: it moved too
                    member.linkname = _shown(prefix, _relative(member.linkname))
                out.addfile(member, data)


@dataclass(kw_only=True)
class HybridPackager(Packager):
    """`sub_packagers` maps a folder of the archive ('' for its root) to the packager that
    fills it; with `extract_at_root=True` every packager's files go to the root instead."""

    #: Folder name in the archive -> the packager whose archive goes there.
    sub_packagers: dict[str, Packager] = field(default_factory=dict)
    #: Put every sub-packager's files at the archive's root instead of under its folder.
    extract_at_root: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_folders()

    def _check_folders(self) -> None:
        for folder, packager in self.sub_packagers.items():
            if (
                not isinstance(folder, str)
                or os.path.isabs(folder)
                or ".." in folder.split("/")
                or has_control(folder)
            ):
                raise ConfigError(
                    f"HybridPackager.sub_packagers key {folder!r} must be a folder relative to "
                    "the archive's root, e.g. 'code' ('' for the root itself)"
                )
            if not isinstance(packager, Packager):
                raise ConfigError(
                    f"HybridPackager.sub_packagers[{folder!r}] must be a Packager, e.g. "
                    f"run.GitArchivePackager(), got {type(packager).__name__}"
                )

    def _parts(self) -> list[tuple[str, Packager]]:
        self._check_folders()
        if not self.sub_packagers:
            raise ConfigError(
                "HybridPackager.sub_packagers is empty; map folders to packagers, e.g. "
                "{'code': run.GitArchivePackager()}, or use run.Packager() to ship nothing"
            )
        return list(self.sub_packagers.items())

    def _prefix(self, folder: str) -> str:
        if self.extract_at_root or not folder.strip("/"):
            return ""
        return posixpath.normpath(folder.strip("/"))

    def _check_code(self, path: str) -> None:
        for _, packager in self._parts():
            packager._check_code(path)

    def package(self, path: str | os.PathLike[str], job_dir: str, name: str) -> str:
        """`<job_dir>/<name>.tar.gz` holding each sub-packager's files under its folder."""
        parts = self._parts()
        path = os.path.abspath(os.fspath(path))
        archive = self.archive_path(job_dir, name)
        with tempfile.TemporaryDirectory(dir=job_dir, prefix=f".{name}-parts-") as scratch:
            built = [
                (self._prefix(folder), packager.package(path, scratch, f"{name}_{index}"))
                for index, (folder, packager) in enumerate(parts)
            ]
            with (
                atomic_writer(archive, mode=0o600, fsync=False) as fh,
                tarfile.open(archive, "w:gz", fh, compresslevel=COMPRESS_LEVEL) as out,
            ):
                _merge(out, [(prefix, part) for prefix, part in built if part])
        return archive
