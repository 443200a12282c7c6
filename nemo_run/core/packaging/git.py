"""`GitArchivePackager`: ship the committed tree at a ref (what `git archive` sees), submodules
included, plus optional extra files matched by `include_pattern`.

The archive is `<job_dir>/<name>.tar.gz` with every name under `./` (a `.` entry first), as
nemo-run 0.11.1 writes it. It is written once, front to back: git's tar output is streamed
member by member into the new archive, then each submodule's, then the extra files. An extra
file replaces a committed file of the same name (0.11.1 unpacks its pieces in that order).
Untracked files and uncommitted changes are refused when the `check_*` flags ask for it,
with the list of files and the fix.
"""

from __future__ import annotations

import logging
import os
import posixpath
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from typing import IO

from nemo_run.core.atomic import atomic_writer
from nemo_run.core.packaging.base import (
    COMPRESS_LEVEL,
    Packager,
    as_text,
    folder_entry,
    parent_folders,
    rename,
)
from nemo_run.core.packaging.pattern import Match, add_match, as_paths, match_files, pattern_pairs
from nemo_run.exceptions import ConfigError

logger = logging.getLogger(__name__)

_SHOWN = 10  # files named in a refusal; the rest are counted


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
            "GitArchivePackager needs the git command; install git, or give the executor "
            "packager=run.Packager() (ship nothing) or run.PatternPackager(...)"
        ) from e


def _git(cwd: str, *args: str) -> str:
    proc = _run_git(cwd, *args)
    if proc.returncode != 0:
        raise ConfigError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout


def _toplevel(start: str) -> str:
    """The work tree holding `start`, with a clear error when there is none."""
    if not os.path.isdir(start):
        raise ConfigError(
            f"GitArchivePackager: {start} is not a folder; set basepath to a folder inside a "
            "git repository"
        )
    proc = _run_git(start, "rev-parse", "--show-toplevel")
    if proc.returncode != 0 and "not a git repository" in proc.stderr:
        raise ConfigError(
            f"GitArchivePackager: {start} is not inside a git repository, so there is no "
            "committed code to package; run `git init` there and commit your code, or give "
            "the executor packager=run.Packager() to ship nothing (or run.PatternPackager(...) "
            "to ship files by pattern)"
        )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ConfigError(f"git rev-parse --show-toplevel failed in {start}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _changed_files(top: str) -> list[str]:
    """Tracked files (and submodules) whose content differs from the last commit."""
    out = _git(
        top, "status", "--porcelain", "-z", "--untracked-files=no", "--ignore-submodules=none"
    )
    fields = iter(out.split("\0"))
    changed = []
    for entry in fields:
        if len(entry) < 4:
            continue
        changed.append(entry[3:])
        if "R" in entry[:2] or "C" in entry[:2]:
            next(fields, None)  # a rename or copy is followed by its source path
    return changed


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


@dataclass
class _Plan:
    """Everything `package` needs, worked out (and checked) before anything is written."""

    top: str  # the repository's work tree
    commit: str
    tree: str  # what `git archive` is given: the commit, or `<commit>:<subpath>`
    subpath: str
    extras: list[Match]


class _Writer:
    """Fills one archive: names go under `./`, each name once, extra files win."""

    def __init__(self, out: tarfile.TarFile, extras: list[Match]) -> None:
        self.out = out
        self.extras = extras
        self.replaced = {posixpath.normpath(m.name) for m in extras}
        self.seen: set[str] = set()

    def copy(self, src: tarfile.TarFile, prefix: str = "") -> None:
        """Copy `src` (read as a stream) under `prefix`."""
        for member in src:
            key = posixpath.normpath(posixpath.join(prefix, member.name))
            if key in self.seen or (key in self.replaced and not member.isdir()):
                continue
            self.seen.add(key)
            rename(member, f"./{key}")
            self.out.addfile(member, src.extractfile(member) if member.isfile() else None)

    def add_extras(self) -> None:
        """The extra files, each after the folders above it that the tree did not have."""
        for match in self.extras:
            key = posixpath.normpath(match.name)
            for folder in parent_folders(key)[1:]:
                if folder not in self.seen:
                    self.seen.add(folder)
                    self.out.addfile(folder_entry(f"./{folder}"))
            add_match(self.out, match, f"./{key}")


def _stream_git_archive(cwd: str, tree: str, writer: _Writer, prefix: str = "") -> None:
    """Stream `git archive` of `tree` into the archive without holding it all in memory."""
    # stderr goes to a file: a full pipe would stall git while we read stdout.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            ["git", "-C", cwd, "archive", "--format=tar", tree],
            stdout=subprocess.PIPE,
            stderr=err,
            env=_git_env(),
        )
        stdout: IO[bytes] = proc.stdout  # type: ignore[assignment]  # set by stdout=PIPE
        unreadable: tarfile.ReadError | None = None
        try:
            with tarfile.open(fileobj=stdout, mode="r|") as src:
                writer.copy(src, prefix)
            while stdout.read(1 << 16):  # the end-of-archive padding: let git finish writing
                pass
        except tarfile.ReadError as e:
            unreadable = e
        finally:
            stdout.close()
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
    folder launched from), optionally only `subpath` (which becomes the archive's root), plus
    the files `include_pattern` matches (committed or not)."""

    #: A folder inside the repository to package; '' means the folder launched from.
    basepath: str = ""
    #: Only this folder of the repository (relative to its top); it becomes the job's root.
    subpath: str = ""
    #: The branch, tag or commit whose tree is shipped.
    ref: str = "HEAD"
    #: Ship each submodule's checked-out tree at its path.
    include_submodules: bool = True
    #: Extra files (globs or folders, e.g. untracked data), relative to the launch folder.
    include_pattern: str | list[str] = ""
    #: What the extra files' names are relative to; '' means the repository's top.
    include_pattern_relative_path: str | list[str] = ""
    #: Refuse to package while tracked files have changes that are not committed.
    check_uncommitted_changes: bool = False
    #: Refuse to package while the repository has untracked (and not ignored) files.
    check_untracked_files: bool = False

    def __post_init__(self) -> None:
        self.basepath = as_text(self.basepath)
        self.subpath = as_text(self.subpath)
        self.include_pattern = as_paths(self.include_pattern)
        self.include_pattern_relative_path = as_paths(self.include_pattern_relative_path)
        super().__post_init__()
        self._check_fields()

    def _check_fields(self) -> None:
        name = type(self).__name__
        if not self.ref or not isinstance(self.ref, str):
            raise ConfigError(f"{name}.ref must name a commit, branch or tag, e.g. 'HEAD'")
        sub = self.subpath
        if not isinstance(sub, str) or os.path.isabs(sub) or ".." in sub.split("/"):
            raise ConfigError(
                f"{name}.subpath={sub!r} must be a folder relative to the repository's top, "
                "e.g. 'src' (or '' for all of it)"
            )
        self._pairs()

    def _pairs(self) -> list[tuple[str, str]]:
        return pattern_pairs(
            type(self).__name__,
            self.include_pattern,
            self.include_pattern_relative_path,
            "include_pattern_relative_path",
        )

    # -- checks ---------------------------------------------------------------------------
    def _check_worktree(self, top: str, warn: bool) -> None:
        """Refuse (or, unasked and when `warn`, log) what the archive of a commit leaves out."""
        if self.check_untracked_files:
            out = _git(top, "ls-files", "--others", "--exclude-standard", "-z")
            untracked = [n for n in out.split("\0") if n]
            if untracked:
                raise ConfigError(
                    f"GitArchivePackager.check_untracked_files=True and {top} has untracked "
                    f"files, which would not be shipped: {_listing(untracked)}; commit them "
                    "(git add, git commit), list them in .gitignore, or set "
                    "check_untracked_files=False (include_pattern can ship them uncommitted)"
                )
        if not (self.check_uncommitted_changes or warn):
            return
        changed = _changed_files(top)
        if not changed:
            return
        if self.check_uncommitted_changes:
            raise ConfigError(
                f"GitArchivePackager.check_uncommitted_changes=True and {top} has uncommitted "
                f"changes: {_listing(changed)}; commit or stash them, or set "
                "check_uncommitted_changes=False to ship the last commit without them"
            )
        logger.warning(
            "shipping %s of %s without its uncommitted changes: %s",
            self.ref,
            top,
            _listing(changed),
        )

    def _commit(self, top: str) -> str:
        """The commit `ref` names, with the fix when it names none."""
        proc = _run_git(top, "rev-parse", "--verify", "--quiet", f"{self.ref}^{{commit}}")
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
        if _run_git(top, "rev-parse", "--verify", "--quiet", "HEAD").returncode != 0:
            raise ConfigError(
                f"GitArchivePackager: {top} has no commit yet, so there is nothing to package; "
                "commit your code first (git add -A && git commit -m 'first')"
            )
        raise ConfigError(
            f"GitArchivePackager.ref={self.ref!r} names no commit in {top}; use a branch, tag "
            "or commit of that repository (e.g. 'HEAD')"
        )

    def _plan(self, path: str, warn: bool = False) -> _Plan:
        """Check everything `package` depends on, in the order a user would fix it."""
        self._check_fields()
        top = _toplevel(os.path.abspath(self.basepath or path))
        self._check_worktree(top, warn)
        commit = self._commit(top)
        sub = self.subpath.strip("/")
        tree = f"{commit}:{sub}" if sub else commit
        if sub and _run_git(top, "cat-file", "-t", tree).stdout.strip() != "tree":
            raise ConfigError(
                f"GitArchivePackager.subpath={self.subpath!r} is not a folder of {top} at "
                f"{self.ref}; give a folder relative to the repository's top"
            )
        extras = match_files(type(self).__name__, self._pairs(), path, top)
        return _Plan(top, commit, tree, sub, extras)

    def _check_code(self, path: str) -> None:
        self._plan(path)

    # -- writing --------------------------------------------------------------------------
    def package(self, path: str | os.PathLike[str], job_dir: str, name: str) -> str:
        """`<job_dir>/<name>.tar.gz` with the tree of `ref` (see the class docstring)."""
        plan = self._plan(os.path.abspath(os.fspath(path)), warn=True)
        archive = self.archive_path(job_dir, name)
        # Written beside the target and renamed in place: readers never see half an archive.
        with atomic_writer(archive, mode=0o600, fsync=False) as fh:
            self._write(archive, fh, plan)
        return archive

    def _write(self, archive: str, fh: IO[bytes], plan: _Plan) -> None:
        """The whole archive in one pass; the commit id goes where `git archive` puts it."""
        with tarfile.open(
            archive,
            "w:gz",
            fh,
            compresslevel=COMPRESS_LEVEL,
            format=tarfile.PAX_FORMAT,
            pax_headers={"comment": plan.commit},
        ) as out:
            out.addfile(folder_entry(".", 0o775))  # 0.11.1's archives start with it
            writer = _Writer(out, plan.extras)
            _stream_git_archive(plan.top, plan.tree, writer)
            if self.include_submodules:
                self._add_submodules(writer, plan)
            writer.add_extras()

    def _add_submodules(self, writer: _Writer, plan: _Plan) -> None:
        """Add each submodule's tree at the commit `git submodule status` reports."""
        top, sub = plan.top, plan.subpath
        for line in _git(top, "submodule", "status", "--recursive").splitlines():
            parts = line[1:].split()
            if len(parts) < 2:
                continue
            sha, rel = parts[0], parts[1]
            if line.startswith("-"):
                raise ConfigError(
                    f"submodule {rel} of {top} is not checked out; run `git submodule update "
                    "--init --recursive`, or set include_submodules=False"
                )
            if sub and not (rel + "/").startswith(sub + "/"):
                continue
            prefix = posixpath.relpath(rel, sub) if sub else rel
            _stream_git_archive(
                os.path.join(top, rel), sha, writer, "" if prefix == "." else prefix
            )


__all__ = ["GitArchivePackager"]
