"""`HybridPackager`: several packagers, each into its own sub-folder of one archive."""

from __future__ import annotations

import os
import tarfile
import tempfile
from dataclasses import dataclass, field

from nemo_run.core.packaging.base import Packager
from nemo_run.exceptions import ConfigError


@dataclass(kw_only=True)
class HybridPackager(Packager):
    """`sub_packagers` maps a folder name ('' for the root) to the packager that fills it."""

    sub_packagers: dict[str, Packager] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.sub_packagers:
            raise ConfigError("HybridPackager.sub_packagers needs at least one {folder: Packager}")
        for folder, packager in self.sub_packagers.items():
            if os.path.isabs(folder) or ".." in folder.split("/"):
                raise ConfigError(f"HybridPackager folder {folder!r} must be a relative path")
            if not isinstance(packager, Packager):
                raise ConfigError(f"HybridPackager.sub_packagers[{folder!r}] must be a Packager")

    def package(self, path: str, job_dir: str, name: str) -> str:
        archive = self.archive_path(job_dir, name)
        with tempfile.TemporaryDirectory(dir=job_dir) as scratch, tarfile.open(archive, "w") as out:
            for index, (folder, packager) in enumerate(self.sub_packagers.items()):
                part = packager.package(path, scratch, f"part{index}")
                if part is None:
                    continue
                with tarfile.open(part) as tar:
                    for member in tar.getmembers():
                        data = tar.extractfile(member) if member.isfile() else None
                        member.name = (
                            os.path.normpath(os.path.join(folder, member.name))
                            if folder
                            else member.name
                        )
                        out.addfile(member, data)
        return archive
