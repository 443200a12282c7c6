"""`PatternPackager`: ship the files that glob patterns name; no git needed.

As in nemo-run 0.11.1, a pattern is expanded like a shell glob and each match is taken as
`find <match> -type f` takes it: a folder brings every regular file under it (hidden ones too),
symlinks are left out. Relative patterns and relative `relative_path`s are read from the
folder launched from (the `path` given to `package`), and files are stored in the archive
relative to their pattern's `relative_path`. Unlike 0.11.1, `**` matches across folders, and a
pattern that matches nothing is an error rather than a silently smaller archive.
"""

from __future__ import annotations

import glob
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nemo_run.core.atomic import atomic_writer
from nemo_run.core.packaging.base import COMPRESS_LEVEL, Packager, as_text
from nemo_run.exceptions import ConfigError


@dataclass(frozen=True)
class Match:
    """One file to ship: where it is, and its name in the archive (relative to its base)."""

    source: str
    name: str


def as_list(value: object) -> list[str] | None:
    """A pattern field as a list of strings (a single string is one entry); None if neither."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def pattern_pairs(
    owner: str, patterns: object, bases: object, bases_field: str
) -> list[tuple[str, str]]:
    """(pattern, base) pairs, empty patterns dropped (as 0.11.1 skips them). A single base
    string serves every pattern; a list must have one base per pattern."""
    pattern_list = as_list(patterns)
    base_list = as_list(bases)
    if pattern_list is None:
        raise ConfigError(
            f"{owner}.include_pattern must be a string or a list of strings, got {patterns!r}"
        )
    if base_list is None:
        raise ConfigError(f"{owner}.{bases_field} must be a string or a list of strings")
    if isinstance(bases, str):
        base_list = base_list * len(pattern_list)
    if len(base_list) != len(pattern_list):
        raise ConfigError(
            f"{owner}.{bases_field} has {len(base_list)} entries for {len(pattern_list)} "
            f"include_pattern entries; give one per pattern, or a single string for all"
        )
    return [(p, b) for p, b in zip(pattern_list, base_list, strict=True) if p]


def _files_under(match: str) -> Iterator[str]:
    """Regular files at `match`: itself, or everything under it for a folder (never
    following symlinks, which are left out, as `find -type f` does)."""
    try:
        mode = os.lstat(match).st_mode
    except OSError:
        return
    if stat.S_ISREG(mode):
        yield match
    elif stat.S_ISDIR(mode):
        for folder, dirs, files in os.walk(match):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(folder, name)
                if stat.S_ISREG(os.lstat(full).st_mode):
                    yield full


def _expand(pattern: str, cwd: str) -> list[str]:
    """What a shell makes of `pattern` in `cwd`: the sorted matches, or the pattern itself
    when nothing matches (so a name holding `[` still names its file)."""
    full = os.path.join(glob.escape(cwd), pattern)  # `cwd` is a folder, never a pattern
    matches = sorted(glob.glob(full, recursive=True))
    literal = os.path.join(cwd, pattern)
    return matches or ([literal] if os.path.lexists(literal) else [])


def match_files(
    owner: str, pairs: list[tuple[str, str]], cwd: str, default_base: str
) -> list[Match]:
    """Every file the (pattern, base) pairs name, relative patterns and bases read from `cwd`;
    an empty base means `default_base`. A pattern matching no file is refused."""
    out: list[Match] = []
    seen: set[str] = set()
    for pattern, base in pairs:
        root = os.path.abspath(os.path.join(cwd, base)) if base else default_base
        full = os.path.join(cwd, pattern)  # an absolute pattern stays as it is
        found = [f for m in _expand(pattern, cwd) for f in _files_under(m)]
        if not found:
            raise ConfigError(
                f"{owner}: include_pattern {pattern!r} matches no file ({full}); fix the "
                "pattern (relative ones are read from the folder you launch from) or drop it"
            )
        for source in found:
            name = os.path.relpath(source, root)
            if name == ".." or name.startswith("../"):
                raise ConfigError(
                    f"{owner}: {source} (from include_pattern {pattern!r}) is outside its "
                    f"relative_path {root}; set a relative_path that contains it"
                )
            if name not in seen:
                seen.add(name)
                out.append(Match(source, name))
    return out


def add_match(tar: tarfile.TarFile, match: Match, name: str) -> None:
    """Add one matched file under `name`, read through its open handle (no second lookup)."""
    with open(match.source, "rb") as fh:
        info = tar.gettarinfo(arcname=name, fileobj=fh)
        if info.islnk():  # a second name of a file already added: ship it as its own file
            info.type, info.linkname, info.size = tarfile.REGTYPE, "", os.fstat(fh.fileno()).st_size
        tar.addfile(info, fh)


@dataclass(kw_only=True)
class PatternPackager(Packager):
    """Files matching `include_pattern` (globs or folders), stored relative to `relative_path`
    (one for all patterns, or one per pattern; '' is the folder launched from)."""

    #: Glob patterns or folders to ship, e.g. `"src/**/*.py"`, `"configs"` or an absolute path.
    include_pattern: str | list[str]
    #: What archive names are relative to (0.11.1's `tar -C`): one path, or one per pattern.
    relative_path: str | list[str]

    def __post_init__(self) -> None:
        self.include_pattern = as_paths(self.include_pattern)
        self.relative_path = as_paths(self.relative_path)
        super().__post_init__()
        self._pairs()

    def _pairs(self) -> list[tuple[str, str]]:
        return pattern_pairs(
            type(self).__name__, self.include_pattern, self.relative_path, "relative_path"
        )

    def _matches(self, path: str) -> list[Match]:
        pairs = self._pairs()
        if not pairs:
            raise ConfigError(
                f"{type(self).__name__}.include_pattern is empty; give one or more patterns "
                "(e.g. 'src/**/*.py' or a folder), or use run.Packager() to ship nothing"
            )
        return match_files(type(self).__name__, pairs, path, path)

    def _check_code(self, path: str) -> None:
        self._matches(path)

    def package(self, path: str | os.PathLike[str], job_dir: str, name: str) -> str:
        """`<job_dir>/<name>.tar.gz` holding the matched files (names as 0.11.1 writes them:
        relative to their base, no folder entries)."""
        matches = self._matches(os.path.abspath(os.fspath(path)))
        archive = self.archive_path(job_dir, name)
        with (
            atomic_writer(archive, mode=0o600, fsync=False) as fh,
            tarfile.open(archive, "w:gz", fh, compresslevel=COMPRESS_LEVEL) as tar,
        ):
            for match in matches:
                add_match(tar, match, match.name)
        return archive


def as_paths(value: Any) -> Any:
    """Path objects (alone or in a list) as text; anything else is left for the type check."""
    if isinstance(value, (list, tuple)):
        return [as_text(v) for v in value]
    return as_text(value)


__all__ = ["PatternPackager"]
