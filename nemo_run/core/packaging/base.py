"""Packagers decide how a task's code reaches where it runs: each writes one `.tar.gz` archive.

The base `Packager` ships nothing (the image or host already has the code). Subclasses write
`<job_dir>/<name>.tar.gz`, as nemo-run 0.11.1 does; backends extract it into the job's `code`
folder (Docker mounts the job folder at `/nemo_run`, so the code is at `/nemo_run/code`) or
upload it. With `symlink_from_remote_dir` nothing is shipped: the job's code folder is that
folder, already on the target. `extract` below unpacks archives, refusing any that would write
outside their destination.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import stat
import tarfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypedDict, TypeVar

from nemo_run.core.config_mixin import ConfigurableMixin
from nemo_run.core.execution.fields import check_field_types
from nemo_run.exceptions import ConfigError

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)
P = TypeVar("P", bound="Packager")
ARCHIVE_SUFFIX = ".tar.gz"
COMPRESS_LEVEL = 6  # gzip's own default: level 9 costs twice the time for ~1% on source trees


@dataclass(kw_only=True)
class Packager(ConfigurableMixin):
    """Ships nothing: the job runs code that is already where it runs (image, host, mount).

    The base of every packager. `debug` asks launchers for their debug flags;
    `symlink_from_remote_dir` names a folder already on the target that becomes the job's
    code folder instead of a shipped archive (for packagers that ship code)."""

    debug: bool = False
    symlink_from_remote_dir: str | None = None

    def __post_init__(self) -> None:
        self.symlink_from_remote_dir = as_text(self.symlink_from_remote_dir)
        check_field_types(self)
        self._check_link()

    def package(self, path: str | os.PathLike[str], job_dir: str, name: str) -> str | None:
        """Ship nothing (None). Packagers that ship code write `<job_dir>/<name>.tar.gz` from
        `path` (the folder launched from) and return its path."""
        return None

    def setup(self) -> None:
        """Runs before the job starts (0.11.1's hook); nothing to prepare by default."""

    def check(self, path: str | os.PathLike[str]) -> None:
        """Raise now the ConfigError that packaging `path` would raise later, so a bad setting
        fails before anything starts (fields can be changed after construction). With a
        `code_link` nothing is packaged, so only the link is checked."""
        self._check_link()
        if self.code_link is None:
            self._check_code(os.path.abspath(os.fspath(path)))

    def _check_code(self, path: str) -> None:
        """What `package(path, ...)` would refuse, found without writing anything."""

    @property
    def ships_code(self) -> bool:
        """True for packagers that produce an archive (any that override `package`)."""
        return type(self).package is not Packager.package

    @property
    def code_link(self) -> str | None:
        """The folder on the target used as the job's code folder instead of an archive:
        `symlink_from_remote_dir` for packagers that ship code, else None (as in 0.11.1, the
        base Packager with a link still ships, and links, nothing)."""
        return self.symlink_from_remote_dir if self.ships_code else None

    def archive_path(self, job_dir: str, name: str) -> str:
        """Where this package goes: unique per job dir, so parallel experiments never collide."""
        os.makedirs(job_dir, exist_ok=True)
        return os.path.join(job_dir, f"{name}{ARCHIVE_SUFFIX}")

    def _check_link(self) -> None:
        link = self.symlink_from_remote_dir
        if link is None:
            return
        if not isinstance(link, str) or not os.path.isabs(link) or has_control(link):
            raise ConfigError(
                f"{type(self).__name__}.symlink_from_remote_dir={link!r} must be the absolute "
                "path of a folder on the target (e.g. '/lustre/me/code'), or None to ship code"
            )


def code_archive(packager: Packager, path: str | os.PathLike[str], job_dir: str) -> str | None:
    """The archive a backend ships for a job, `<job_dir>/code.tar.gz`; None when nothing is
    shipped (the base Packager, or `code_link` set: the code is already on the target)."""
    if packager.code_link is not None:
        packager.check(path)  # only the link: nothing is packaged
        return None
    return packager.package(path, job_dir, "code")


def folder_entry(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    """A folder member made up for the archive (0.11.1's archives list every folder)."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, int(time.time())
    return info


def parent_folders(name: str) -> list[str]:
    """The folders above a relative member name, outermost first, the root as '.'."""
    if name in ("", "."):
        return []
    parts = name.split("/")[:-1]
    return [".", *("/".join(parts[: n + 1]) for n in range(len(parts)))]


def rename(member: tarfile.TarInfo, name: str) -> None:
    """Give a member read from one archive a new name for another; its pax `path` and
    `linkpath` records (long names) would otherwise override the new name when written."""
    member.name = name
    member.pax_headers = {
        k: v for k, v in member.pax_headers.items() if k not in ("path", "linkpath")
    }


def host_code_link(packager: Packager) -> str | None:
    """`code_link` for a backend whose target is this host (Docker): the folder must exist
    here, or the engine would make an empty one and the job would run no code."""
    link = packager.code_link
    if link is not None:
        packager.check(os.getcwd())  # with a link set, only the link itself is checked
        if not os.path.isdir(link):
            raise ConfigError(
                f"{type(packager).__name__}.symlink_from_remote_dir={link!r} is not a folder on "
                "this host, where the containers run; create it, fix the path, or set it to "
                "None to ship the code"
            )
    return link


def as_text(value: Any) -> Any:
    """Path objects as their text (0.11.1 accepts them where it expects path strings)."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def has_control(text: str) -> bool:
    """NUL, newlines and other control characters: never part of a path a script can carry."""
    return any(ord(c) < 32 or c == "\x7f" for c in text)


# --- Safe extraction -------------------------------------------------------------------------
#
# Archives come from packagers that add whatever the user's tree holds, symlinks included, so a
# link such as `lnk -> /etc` followed by a member `lnk/passwd` must never write outside the
# destination. Python's `data` filter is not enough on its own (3.11.7 has known bypasses), so
# every member is first checked against a model of the destination (what is on disk, overlaid
# with what earlier members create), and nothing is written unless the whole archive passes.


class _ExtractFilter(TypedDict, total=False):
    filter: Literal["data"]


_MAX_LINK_HOPS = 40  # the depth Linux follows before ELOOP
_DATA_FILTER: _ExtractFilter = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FILTER_ERRORS: tuple[type[Exception], ...] = (
    (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()
)


class _Escape(Exception):
    """A path resolved outside the destination; `link` names the symlink that led out."""

    def __init__(self, link: str) -> None:
        super().__init__(link)
        self.link = link


class _Unresolvable(Exception):
    """A path cannot be followed (symlink loop, or a file used as a folder); not an escape."""


@dataclass
class _Node:
    """One entry of the modelled destination."""

    kind: str  # "dir", "file" (made by this archive), "link", or "other" (a non-folder on disk)
    target: str = ""  # symlink target, as stored
    member: str = ""  # name of the archive member that made it ('' if it was already on disk)


@dataclass
class _Step:
    """One member to extract, at its physical path (no symlink on the way) under the root."""

    member: tarfile.TarInfo
    path: tuple[str, ...]
    linkname: str = ""  # hardlinks: the physical path of the file they link to


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


class _Tree:
    """The destination as extraction would leave it so far: disk, overlaid with earlier members.

    Paths are tuples of components relative to `root` (the destination's realpath).
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.nodes: dict[tuple[str, ...], _Node] = {}  # what the archive creates
        self._disk: dict[tuple[str, ...], _Node | None] = {}  # what was there before

    def node(self, path: tuple[str, ...]) -> _Node | None:
        if path in self.nodes:
            return self.nodes[path]
        if path not in self._disk:
            self._disk[path] = self._on_disk(path)
        return self._disk[path]

    def _on_disk(self, path: tuple[str, ...]) -> _Node | None:
        full = os.path.join(self.root, *path)
        try:
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                return _Node("link", os.readlink(full))
        except OSError:  # missing, or a parent is not a folder
            return None
        return _Node("dir" if stat.S_ISDIR(mode) else "other")

    def resolve(self, parts: list[str], follow_last: bool = True) -> tuple[str, ...]:
        """Physical path of `parts`, following symlinks like the kernel would."""
        done: list[str] = []
        todo = list(reversed(parts))  # a stack: next component last
        hops, via = 0, ""
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    raise _Escape(via)
                done.pop()
                continue
            here = (*done, part)
            node = self.node(here)
            if node is not None and node.kind == "link" and (todo or follow_last):
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    raise _Unresolvable("too many levels of symlinks")
                via = via or node.member or "/".join(here)  # the one the path itself names
                done, rest = self.link_start(done, node.target, via)
                todo.extend(reversed(rest))
                continue
            if node is not None and node.kind in ("file", "other") and todo:
                raise _Unresolvable(f"{'/'.join(here)!r} is a file, not a folder")
            done.append(part)
        return tuple(done)

    def link_start(self, done: list[str], target: str, via: str) -> tuple[list[str], list[str]]:
        """Where resolution continues after a link: its folder, or the root for absolute ones."""
        if not os.path.isabs(target):
            return done, target.split("/")
        if target != self.root and not target.startswith(self.root.rstrip("/") + "/"):
            raise _Escape(via)
        return [], target[len(self.root) :].split("/")


class _Planner:
    """Checks every member against the modelled destination before anything is written."""

    def __init__(self, archive: str, destination: str, root: str) -> None:
        self.archive = archive
        self.destination = destination
        self.tree = _Tree(root)

    def refuse(self, name: str, why: str) -> ConfigError:
        return ConfigError(f"archive {self.archive}: member {name!r} {why}")

    def plan(self, members: list[tarfile.TarInfo]) -> list[_Step]:
        steps = [step for member in members if (step := self._step(member)) is not None]
        # A later member can turn an earlier, harmless link into one that leads out
        # (`a -> b/x`, then `b -> /etc`), so links are checked again against the final tree.
        for path, node in list(self.tree.nodes.items()):
            if node.kind == "link" and node.member:
                self._check_link_target(node.member, path[:-1], node.target)
        return steps

    def _step(self, member: tarfile.TarInfo) -> _Step | None:
        parts = self._member_parts(member)
        if member.isdir():
            return _Step(member, self._folder(member.name, parts)) if parts else None
        if not (member.isreg() or member.issym() or member.islnk()):
            raise self.refuse(
                member.name,
                f"is a {_special_kind(member)}; only files, folders and links are allowed",
            )
        path = (*self._folder(member.name, parts[:-1]), parts[-1])
        existing = self.tree.node(path)
        if existing is not None and existing.kind == "dir":
            raise self.refuse(member.name, "would replace a folder of the same name")
        linkname = ""
        if member.issym():
            node = self._symlink(member, path[:-1])
        else:
            if member.islnk():
                linkname = self._hardlink(member)
            node = _Node("file", member=member.name)
        self.tree.nodes[path] = node
        return _Step(member, path, linkname)

    def _member_parts(self, member: tarfile.TarInfo) -> list[str]:
        name = member.name
        if "\x00" in name:
            raise self.refuse(name, "contains a NUL byte")
        if name.startswith("/") or os.path.isabs(name):
            raise self.refuse(name, "has an absolute path; archives must hold relative paths")
        if ".." in name.split("/"):
            raise self.refuse(
                name, "has a '..' component; archives must not climb out of their root"
            )
        parts = _parts(name)
        if not parts and not member.isdir():
            raise self.refuse(name, "has an empty name")
        return parts

    def _folder(self, name: str, parts: list[str]) -> tuple[str, ...]:
        """Physical path of the folder `parts`, recording the folders extraction would create."""
        try:
            path = self.tree.resolve(parts)
        except _Escape as e:
            raise self.refuse(name, self.outside(e.link)) from None
        except _Unresolvable as e:
            raise self.refuse(name, f"cannot be extracted: {e}") from None
        for end in range(1, len(path) + 1):
            node = self.tree.node(path[:end])
            if node is None:
                self.tree.nodes[path[:end]] = _Node("dir")
            elif node.kind != "dir":
                raise self.refuse(
                    name, f"needs {'/'.join(path[:end])!r} to be a folder, not a file"
                )
        return path

    def outside(self, link: str) -> str:
        where = f"would be written outside {self.destination}"
        if not link:
            return where
        return (
            f"{where} (through symlink {link!r}); remove the symlink from the packaged tree "
            "or exclude it"
        )

    def _symlink(self, member: tarfile.TarInfo, folder: tuple[str, ...]) -> _Node:
        target = member.linkname
        if not target or "\x00" in target:
            raise self.refuse(member.name, "is a symlink with an empty or NUL-holding target")
        self._check_link_target(member.name, folder, target)
        if os.path.isabs(target):  # inside today, but not wherever the tree is moved or mounted
            raise self.refuse(
                member.name,
                f"is a symlink to the absolute path {target!r}; only relative links are allowed, "
                "so replace it with one or exclude it",
            )
        return _Node("link", target, member.name)

    def _check_link_target(self, name: str, folder: tuple[str, ...], target: str) -> None:
        try:
            if os.path.isabs(target):
                start, rest = self.tree.link_start([], target, "")
                self.tree.resolve([*start, *rest])
            else:
                self.tree.resolve([*folder, *target.split("/")])
        except _Escape:
            raise self.refuse(
                name,
                f"is a symlink to {target!r}, which points outside {self.destination}; "
                "remove the symlink from the packaged tree or exclude it",
            ) from None
        except _Unresolvable:
            pass  # dangling or looping, but inside: harmless, like any broken link

    def _hardlink(self, member: tarfile.TarInfo) -> str:
        """Physical path of the file a hardlink shares; it must be one this archive made."""
        target = member.linkname
        parts = target.split("/")
        bad = not target or "\x00" in target or os.path.isabs(target) or ".." in parts
        try:
            path = () if bad else self.tree.resolve(_parts(target))
        except (_Escape, _Unresolvable):
            bad = True
        node = None if bad or not path else self.tree.node(path)
        if node is None or node.kind != "file":
            raise self.refuse(
                member.name,
                f"is a hardlink to {target!r}, which is not a file extracted earlier from "
                "this archive",
            )
        return "/".join(path)


def _special_kind(member: tarfile.TarInfo) -> str:
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    return f"special member (type {member.type!r})"


def _safe_mode(member: tarfile.TarInfo) -> int:
    """The `data` filter's permissions: no setuid/setgid/sticky, no group/other write."""
    mode = member.mode & 0o755
    if member.isdir():
        return mode | 0o700
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def _sanitized(step: _Step) -> tarfile.TarInfo:
    """A copy of the member at its physical path, with safe permissions and our ownership."""
    member = copy.copy(step.member)
    member.name = "/".join(step.path)
    if member.islnk():
        member.linkname = step.linkname
    member.mode = _safe_mode(member)
    member.uid, member.gid = os.getuid(), os.getgid()
    member.uname = member.gname = ""
    return member


class _Extractor:
    """Writes planned members one by one, re-checking the real parent folder before each."""

    def __init__(self, tar: tarfile.TarFile, planner: _Planner) -> None:
        self.tar = tar
        self.planner = planner
        self.root = planner.tree.root

    def run(self, steps: list[_Step]) -> None:
        folders: list[tuple[str, int]] = []
        for step in steps:
            target = os.path.join(self.root, *step.path)
            if step.member.isdir():
                self._make_folders(step, step.path)
                folders.append((target, _safe_mode(step.member)))
                continue
            self._make_folders(step, step.path[:-1])
            self._clear(step, target)
            try:
                self.tar.extract(_sanitized(step), self.root, numeric_owner=True, **_DATA_FILTER)
            except _FILTER_ERRORS as e:
                raise self.planner.refuse(step.member.name, f"was refused by tarfile: {e}") from e
        for target, mode in reversed(folders):  # last, so read-only folders can still be filled
            if not os.path.islink(target):
                os.chmod(target, mode)

    def _make_folders(self, step: _Step, path: tuple[str, ...]) -> None:
        """Create `path` one folder at a time, never through a link (the disk may have
        changed since planning), then confirm that its real path is the expected one."""
        folder = self.root
        for part in path:
            folder = os.path.join(folder, part)
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder)  # does not follow a link that is already there
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                self._moved(step, folder, "became a symlink or file")
        real = os.path.realpath(folder)
        if real != folder:
            self._moved(step, folder, f"resolves to {real}")

    def _moved(self, step: _Step, folder: str, how: str) -> NoReturn:
        raise self.planner.refuse(
            step.member.name,
            f"{self.planner.outside('')}: {folder} {how} after the archive was checked",
        )

    def _clear(self, step: _Step, target: str) -> None:
        """Remove what sits at `target`, so a write replaces a link instead of following it."""
        if os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target)):
            os.unlink(target)
        elif os.path.lexists(target):
            raise self.planner.refuse(step.member.name, "would replace a folder of the same name")


def extract(archive: str, destination: str) -> None:
    """Unpack a package archive into `destination`, refusing any archive that would write,
    or leave a link, outside it (raises ConfigError, before anything is written)."""
    archive = os.path.abspath(os.fspath(archive))
    destination = os.path.abspath(os.fspath(destination))
    root = os.path.realpath(destination)
    with tarfile.open(archive) as tar:
        planner = _Planner(archive, destination, root)
        steps = planner.plan(tar.getmembers())
        os.makedirs(destination, exist_ok=True)
        if os.path.realpath(destination) != root:
            raise ConfigError(f"archive {archive}: {destination} changed while being extracted to")
        _Extractor(tar, planner).run(steps)


__all__ = ["Packager"]
