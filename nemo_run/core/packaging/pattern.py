"""`PatternPackager`: ship files matching glob patterns; no git needed."""

from __future__ import annotations

import glob
import os
import tarfile
from dataclasses import dataclass, field

from nemo_run.core.packaging.base import Packager, add_files
from nemo_run.exceptions import ConfigError


@dataclass(kw_only=True)
class PatternPackager(Packager):
    """Files matching `include_pattern` (globs, `**` allowed), stored relative to `relative_path`."""

    include_pattern: str | list[str] = field(default_factory=list)
    relative_path: str | list[str] = ""

    def __post_init__(self) -> None:
        patterns = self._patterns()
        if not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise ConfigError(
                "PatternPackager.include_pattern needs one or more glob patterns, e.g. 'src/**/*.py'"
            )
        bases = self._bases(len(patterns))
        if len(bases) != len(patterns):
            raise ConfigError(
                "PatternPackager.relative_path must be one path or one per include_pattern"
            )

    def _patterns(self) -> list[str]:
        return (
            [self.include_pattern]
            if isinstance(self.include_pattern, str)
            else list(self.include_pattern)
        )

    def _bases(self, count: int) -> list[str]:
        if isinstance(self.relative_path, str):
            return [self.relative_path] * count
        return list(self.relative_path)

    def files(self, path: str) -> list[tuple[str, str]]:
        """(root, path relative to root) for every matching file."""
        out = []
        patterns = self._patterns()
        for pattern, base in zip(patterns, self._bases(len(patterns)), strict=True):
            root = os.path.abspath(os.path.join(path, base)) if base else os.path.abspath(path)
            full = pattern if os.path.isabs(pattern) else os.path.join(path, pattern)
            for match in glob.glob(full, recursive=True):
                if os.path.isfile(match):
                    rel = os.path.relpath(os.path.abspath(match), root)
                    if rel.startswith(".."):
                        raise ConfigError(f"{match} is outside relative_path {root}")
                    out.append((root, rel))
        return out

    def package(self, path: str, job_dir: str, name: str) -> str:
        matches = self.files(path)
        if not matches:
            raise ConfigError(f"PatternPackager: no file under {path} matches {self._patterns()}")
        archive = self.archive_path(job_dir, name)
        with tarfile.open(archive, "w") as tar:
            for root in sorted({r for r, _ in matches}):
                add_files(tar, root, [rel for r, rel in matches if r == root])
        return archive
