"""`GitArchivePackager`: ship the committed tree at a ref (what `git archive` sees), submodules
included, plus optional extra files; uncommitted changes are refused or warned about."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import tarfile
from dataclasses import dataclass, field

from nemo_run.core.packaging.base import Packager, add_files
from nemo_run.core.packaging.pattern import PatternPackager
from nemo_run.exceptions import ConfigError

log = logging.getLogger(__name__)


def _git(cwd: str, *args: str) -> str:
    try:
        proc = subprocess.run(["git", "-C", cwd, *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise ConfigError("GitArchivePackager needs the git command; install git or use PatternPackager") from e
    if proc.returncode != 0:
        raise ConfigError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout


def _git_bytes(cwd: str, *args: str) -> bytes:
    proc = subprocess.run(["git", "-C", cwd, *args], capture_output=True, check=False)
    if proc.returncode != 0:
        raise ConfigError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


@dataclass(kw_only=True)
class GitArchivePackager(Packager):
    """The tree of `ref` (default HEAD) of the repository holding `basepath` (default: the
    task's working folder), optionally only `subpath` (which becomes the archive root)."""

    basepath: str = ""
    subpath: str = ""
    ref: str = "HEAD"
    include_submodules: bool = True
    include_pattern: str | list[str] = field(default_factory=list)
    include_pattern_relative_path: str | list[str] = ""
    check_uncommitted_changes: bool = False
    check_untracked_files: bool = False

    def __post_init__(self) -> None:
        if not self.ref:
            raise ConfigError("GitArchivePackager.ref must name a commit, branch or tag, e.g. 'HEAD'")
        if os.path.isabs(self.subpath) or ".." in self.subpath.split("/"):
            raise ConfigError(f"GitArchivePackager.subpath={self.subpath!r} must be relative, inside the repository")

    def _check_worktree(self, top: str) -> None:
        flags = ["--porcelain", "--ignore-submodules=none"]
        if not self.check_untracked_files:
            flags.append("--untracked-files=no")
        changed = [line[3:] for line in _git(top, "status", *flags).splitlines() if line.strip()]
        if not changed:
            return
        listing = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        if self.check_uncommitted_changes:
            raise ConfigError(
                f"uncommitted changes in {top}: {listing}; commit or stash them, or set "
                "check_uncommitted_changes=False to ship the last commit without them"
            )
        log.warning("shipping %s of %s without its uncommitted changes: %s", self.ref, top, listing)

    def package(self, path: str, job_dir: str, name: str) -> str:
        start = os.path.abspath(self.basepath or path)
        top = _git(start, "rev-parse", "--show-toplevel").strip()
        self._check_worktree(top)
        commit = _git(top, "rev-parse", "--verify", f"{self.ref}^{{commit}}").strip()
        sub = self.subpath.strip("/")
        archive = self.archive_path(job_dir, name)
        tree = f"{commit}:{sub}" if sub else commit
        with open(archive, "wb") as fh:
            fh.write(_git_bytes(top, "archive", "--format=tar", tree))
        with tarfile.open(archive, "a") as tar:
            if self.include_submodules:
                self._add_submodules(tar, top, commit, sub)
            if self.include_pattern:
                extra = PatternPackager(include_pattern=self.include_pattern,
                                        relative_path=self.include_pattern_relative_path)
                for root in sorted({r for r, _ in extra.files(top)}):
                    add_files(tar, root, [rel for r, rel in extra.files(top) if r == root])
        return archive

    def _add_submodules(self, tar: tarfile.TarFile, top: str, commit: str, sub: str) -> None:
        """Append each submodule's tree at the commit the superproject records."""
        listing = _git(top, "submodule", "status", "--recursive")
        for line in listing.splitlines():
            parts = line[1:].split()
            if len(parts) < 2:
                continue
            sha, rel = parts[0], parts[1]
            if line.startswith("-"):
                raise ConfigError(f"submodule {rel} of {top} is not checked out; run `git submodule update --init`")
            if sub and not (rel + "/").startswith(sub + "/"):
                continue
            prefix = os.path.relpath(rel, sub) if sub else rel
            data = _git_bytes(os.path.join(top, rel), "archive", "--format=tar", f"--prefix={prefix}/", sha)
            with tarfile.open(fileobj=io.BytesIO(data)) as sub_tar:
                for member in sub_tar.getmembers():
                    tar.addfile(member, sub_tar.extractfile(member) if member.isfile() else None)
