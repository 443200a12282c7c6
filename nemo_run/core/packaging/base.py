"""The base packager ships no code: the task runs against what the target already has."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class Packager:
    """Ships nothing; local jobs run in the caller's working tree and environment."""

    debug: bool = False

    def package(self, path: str, job_dir: str, name: str) -> str | None:
        """Write the code archive for `path` into `job_dir`; returns its path, or None if nothing."""
        return None
