"""`GitArchivePackager`: ship the committed tree at a ref (what `git archive` sees), submodules
included, plus optional extra files; uncommitted changes are refused or warned about.

The archive is written once, front to back: git's tar output is streamed member by member into a
fresh tar, then each submodule's, then the pattern files. Appending to git's own output instead
(`tarfile.open(..., "a")`) leaves an unreadable archive.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from typing import IO

from nemo_run.core.atomic import atomic_writer
from nemo_run.core.packaging.base import Packager, add_files
from nemo_run.core.packaging.pattern import PatternPackager
from nemo_run.exceptions import ConfigError

log = logging.getLogger(__name__)


def _git_env() -> dict[str, str]:
    """English messages, so failures can be told apart by their text whatever the locale."""
    return {**os.environ, "LC_ALL": "C"}


def _run_git(cwd: str, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", "-C", cwd, *args], capture_output=True, text=True, check=False, env=_git_env()
        )
    except FileNotFoundError as e:
        raise ConfigError(
            "GitArchivePackager needs the git command; install git or use PatternPackager"
        ) from e


def _git(cwd: str, *args: str) -> str:
    proc = _run_git(cwd, *args)
    if proc.returncode != 0:
        raise ConfigError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout


def _toplevel(start: str) -> str:
    """The work tree holding `start`, with a clear error when there is none."""
    if not os.path.isdir(start):
        raise ConfigError(f"GitArchivePackager: {start} is not a folder; set basepath to one")
    proc = _run_git(start, "rev-parse", "--show-toplevel")
    if proc.returncode != 0 and "not a git repository" in proc.stderr:
        raise ConfigError(
            f"GitArchivePackager: {start} is not inside a git repository; "
            "run git init or use PatternPackager"
        )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ConfigError(f"git rev-parse --show-toplevel failed in {start}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _copy_members(src: tarfile.TarFile, out: tarfile.TarFile, seen: set[str]) -> None:
    """Copy `src` (read as a stream) into `out`, keeping the first member of each name."""
    for member in src:
        if member.name in seen:
            continue
        seen.add(member.name)
        out.addfile(member, src.extractfile(member) if member.isfile() else None)


def _stream_git_archive(
    cwd: str, tree: str, out: tarfile.TarFile, seen: set[str], prefix: str = ""
) -> None:
    """Stream `git archive` of `tree` into `out` without holding it all in memory."""
    args = ["git", "-C", cwd, "archive", "--format=tar"]
    if prefix:
        args.append(f"--prefix={prefix}/")
    # stderr goes to a file: a full pipe would stall git while we read stdout.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([*args, tree], stdout=subprocess.PIPE, stderr=err, env=_git_env())
        assert proc.stdout is not None
        unreadable: tarfile.ReadError | None = None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as src:
                _copy_members(src, out, seen)
            while proc.stdout.read(1 << 16):  # the end-of-archive padding: let git finish writing
                pass
        except tarfile.ReadError as e:
            unreadable = e
        finally:
            proc.stdout.close()
            returncode = proc.wait()
        if returncode != 0:
            err.seek(0)
            message = err.read().decode(errors="replace").strip()
            raise ConfigError(f"git archive {tree} failed in {cwd}: {message}") from unreadable
        if unreadable is not None:
            raise unreadable


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
            raise ConfigError(
                "GitArchivePackager.ref must name a commit, branch or tag, e.g. 'HEAD'"
            )
        if os.path.isabs(self.subpath) or ".." in self.subpath.split("/"):
            raise ConfigError(
                f"GitArchivePackager.subpath={self.subpath!r} must be relative, "
                "inside the repository"
            )

    def _check_worktree(self, top: str) -> None:
        flags = ["--porcelain", "--ignore-submodules=none"]
        if not self.check_untracked_files:
            flags.append("--untracked-files=no")
        changed = [line[3:] for line in _git(top, "status", *flags).splitlines() if line.strip()]
        if not changed:
            return
        more = f" and {len(changed) - 10} more" if len(changed) > 10 else ""
        listing = ", ".join(changed[:10]) + more
        if self.check_uncommitted_changes:
            raise ConfigError(
                f"uncommitted changes in {top}: {listing}; commit or stash them, or set "
                "check_uncommitted_changes=False to ship the last commit without them"
            )
        log.warning("shipping %s of %s without its uncommitted changes: %s", self.ref, top, listing)

    def package(self, path: str, job_dir: str, name: str) -> str:
        top = _toplevel(os.path.abspath(self.basepath or path))
        self._check_worktree(top)
        commit = _git(top, "rev-parse", "--verify", f"{self.ref}^{{commit}}").strip()
        archive = self.archive_path(job_dir, name)
        # Written beside the target and renamed in place: readers never see half an archive.
        with atomic_writer(archive, mode=0o600, fsync=False) as fh:
            self._write(fh, top, commit)
        return archive

    def _write(self, fh: IO[bytes], top: str, commit: str) -> None:
        """The whole archive in one pass; the commit id goes where `git archive` puts it."""
        sub = self.subpath.strip("/")
        tree = f"{commit}:{sub}" if sub else commit
        seen: set[str] = set()
        with tarfile.open(
            fileobj=fh, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": commit}
        ) as out:
            _stream_git_archive(top, tree, out, seen)
            if self.include_submodules:
                self._add_submodules(out, seen, top, sub)
            if self.include_pattern:
                self._add_patterns(out, top)

    def _add_submodules(self, out: tarfile.TarFile, seen: set[str], top: str, sub: str) -> None:
        """Add each submodule's tree at the commit `git submodule status` reports."""
        for line in _git(top, "submodule", "status", "--recursive").splitlines():
            parts = line[1:].split()
            if len(parts) < 2:
                continue
            sha, rel = parts[0], parts[1]
            if line.startswith("-"):
                raise ConfigError(
                    f"submodule {rel} of {top} is not checked out; "
                    "run `git submodule update --init`"
                )
            if sub and not (rel + "/").startswith(sub + "/"):
                continue
            prefix = os.path.relpath(rel, sub) if sub else rel
            prefix = "" if prefix == "." else prefix
            _stream_git_archive(os.path.join(top, rel), sha, out, seen, prefix)

    def _add_patterns(self, out: tarfile.TarFile, top: str) -> None:
        """Extra (possibly untracked) files, stored relative to their pattern's base."""
        extra = PatternPackager(
            include_pattern=self.include_pattern,
            relative_path=self.include_pattern_relative_path,
        )
        matches = extra.files(top)
        for root in sorted({r for r, _ in matches}):
            add_files(out, root, [rel for r, rel in matches if r == root])
