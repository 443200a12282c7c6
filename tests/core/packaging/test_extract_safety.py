"""`extract` on hostile archives: nothing may be written, or linked to, outside the destination.

Each archive is built member by member with `tarfile`, in the order an attacker (or an unlucky
symlink in a packaged tree) would produce. Every test runs with tarfile's `data` filter and
without it, since our own checks must stand on their own.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from nemo_run.core.packaging import base
from nemo_run.core.packaging.base import extract
from nemo_run.exceptions import ConfigError

VICTIM = b"original\n"


@pytest.fixture(params=["data-filter", "own-checks-only"], autouse=True)
def filter_mode(request, monkeypatch):
    """Run each test with and without tarfile's `data` filter (absent before Python 3.11.4)."""
    if request.param == "own-checks-only":
        monkeypatch.setattr(base, "_DATA_FILTER", {})
    return request.param


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """The sandbox holding the archive, the destination and its sibling `outside`."""
    path = tmp_path / "box"
    path.mkdir()
    return path


@pytest.fixture
def outside(box: Path) -> Path:
    """A sibling of the destination holding a victim file; it must never change."""
    folder = box / "outside"
    folder.mkdir()
    (folder / "victim.txt").write_bytes(VICTIM)
    return folder


@pytest.fixture
def dest(box: Path) -> Path:
    return box / "dest"


def regular(name: str, data: bytes = b"evil\n", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info, None


def folder(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, None


def special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def build(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> str:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def assert_untouched(outside: Path, box: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (outside / "victim.txt").read_bytes() == VICTIM
    assert sorted(p.name for p in box.iterdir() if p.name != "code.tar") in (
        ["dest", "outside"],
        ["outside"],
    )


def refused(archive: str, dest: Path, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        extract(archive, str(dest))


HOSTILE = {
    "symlink then a file through it": lambda out: [
        symlink("lnk", str(out)),
        regular("lnk/evil.txt"),
    ],
    "relative symlink then a file through it": lambda out: [
        symlink("lnk", "../outside"),
        regular("lnk/evil.txt"),
    ],
    "symlink then overwrite it": lambda out: [
        symlink("v", str(out / "victim.txt")),
        regular("v"),
    ],
    "relative symlink then overwrite it": lambda out: [
        symlink("v", "../outside/victim.txt"),
        regular("v"),
    ],
    "relative escape": lambda out: [symlink("lnk", "../.."), regular("lnk/tmp/evil.txt")],
    "escape from a sub-folder": lambda out: [
        folder("a"),
        folder("a/b"),
        symlink("a/b/up", "../../.."),
    ],
    "hardlink to an absolute path": lambda out: [hardlink("h", "/etc/passwd")],
    "hardlink to the victim": lambda out: [hardlink("h", str(out / "victim.txt"))],
    "hardlink climbing out": lambda out: [hardlink("h", "../outside/victim.txt")],
    "hardlink to a parent": lambda out: [hardlink("h", "../x")],
    "hardlink to nothing in the archive": lambda out: [hardlink("h", "missing.txt")],
    "absolute name": lambda out: [regular(str(out / "abs.txt"))],
    "dot-dot name": lambda out: [regular("../outside/evil.txt")],
    "dot-dot inside a name": lambda out: [regular("a/../../outside/evil.txt")],
    "fifo": lambda out: [special("pipe", tarfile.FIFOTYPE)],
    "character device": lambda out: [special("null", tarfile.CHRTYPE)],
    "block device": lambda out: [special("disk", tarfile.BLKTYPE)],
    # Each link looks inside when it is created; together they lead to ../outside.
    "symlink chain": lambda out: [
        folder("s"),
        symlink("l1", "p/../outside"),
        symlink("s/up", ".."),
        symlink("p", "s/up"),
        regular("l1/evil.txt"),
    ],
    "symlink chain left dangling out": lambda out: [
        folder("s"),
        symlink("l1", "p/../outside"),
        symlink("s/up", ".."),
        symlink("p", "s/up"),
    ],
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archive_is_refused_and_nothing_is_written(case, box, dest, outside):
    archive = build(box / "code.tar", regular("good.txt", b"ok\n"), *HOSTILE[case](outside))
    refused(archive, dest, match=rf"archive {box}/code.tar: member '")
    assert_untouched(outside, box)
    assert not dest.exists()  # checked before anything, even the destination, is created


def test_message_names_the_member_and_the_symlink(box, dest, outside):
    members = HOSTILE["symlink chain"](outside)
    archive = build(box / "code.tar", *members)
    refused(
        archive,
        dest,
        match=rf"^archive {box}/code.tar: member 'l1/evil.txt' would be written outside "
        rf"{dest} \(through symlink 'l1'\); remove the symlink from the packaged tree or "
        "exclude it$",
    )


def test_symlink_messages(box, dest, outside):
    refused(build(box / "a.tar", symlink("lnk", str(outside))), dest, "points outside")
    inside = os.path.join(os.path.realpath(dest), "x")
    refused(build(box / "e.tar", symlink("lnk", inside)), dest, "absolute path .*relative links")
    refused(build(box / "b.tar", symlink("lnk", "../..")), dest, "points outside")
    refused(build(box / "c.tar", special("p", tarfile.FIFOTYPE)), dest, "is a fifo")
    refused(build(box / "d.tar", regular("../x")), dest, r"'\.\.' component")


def test_nul_in_a_member_name(box, dest, outside):
    info, data = regular("placeholder")
    info.pax_headers = {"path": "evil\x00.txt"}
    archive = build(box / "code.tar", (info, data))
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["evil\x00.txt"]
    refused(archive, dest, "NUL byte")


def test_symlink_already_in_the_destination_is_not_followed_out(box, dest, outside):
    dest.mkdir()
    (dest / "lnk").symlink_to(outside)
    archive = build(box / "code.tar", regular("lnk/evil.txt"))
    refused(archive, dest, r"member 'lnk/evil.txt' would be written outside .*symlink 'lnk'")
    assert_untouched(outside, box)


def test_a_file_replaces_a_symlink_already_in_the_destination(box, dest, outside):
    dest.mkdir()
    (dest / "v").symlink_to(outside / "victim.txt")
    extract(build(box / "code.tar", regular("v", b"new\n")), str(dest))
    assert not (dest / "v").is_symlink() and (dest / "v").read_bytes() == b"new\n"
    assert_untouched(outside, box)


def test_the_disk_changing_after_the_checks_is_caught_before_writing(box, dest, outside):
    """Defence in depth: the real parent folder is checked again right before each write."""
    archive = build(box / "code.tar", folder("sub"), regular("sub/evil.txt"))
    dest.mkdir()
    root = os.path.realpath(dest)
    with tarfile.open(archive) as tar:
        planner = base._Planner(archive, str(dest), root)
        steps = planner.plan(tar.getmembers())
        (dest / "sub").symlink_to(outside)  # swapped in after planning
        with pytest.raises(ConfigError, match="sub' would be written outside"):
            base._Extractor(tar, planner).run(steps)
    assert_untouched(outside, box)


def test_in_tree_links_extract(box, dest):
    archive = build(
        box / "code.tar",
        folder("docs"),
        regular("docs/v2/index.md", b"v2\n"),
        symlink("docs/latest", "v2"),
        symlink("top", "docs/latest/index.md"),
        symlink("dangling", "not/yet"),
        regular("docs/latest/new.md", b"new\n"),  # written through an in-tree link
        hardlink("same.md", "docs/v2/index.md"),
        regular("./dot/x.txt", b"x\n"),
    )
    for _ in range(2):  # extracting again over the result works too
        extract(archive, str(dest))
        assert os.readlink(dest / "docs" / "latest") == "v2"
        assert (dest / "top").read_bytes() == b"v2\n"
        assert (dest / "docs" / "v2" / "new.md").read_bytes() == b"new\n"
        assert (dest / "same.md").read_bytes() == b"v2\n"
        assert (dest / "dot" / "x.txt").read_bytes() == b"x\n"
        assert os.readlink(dest / "dangling") == "not/yet"


def test_permissions_are_those_of_the_data_filter(box, dest):
    archive = build(
        box / "code.tar",
        folder("d", mode=0o777),
        regular("d/suid", mode=0o4777),
        regular("d/shared", mode=0o666),
        regular("d/private", mode=0o400),
    )
    extract(archive, str(dest))

    def mode(name: str) -> int:
        return stat.S_IMODE(os.stat(dest / name).st_mode)

    assert mode("d") == 0o755
    assert mode("d/suid") == 0o755
    assert mode("d/shared") == 0o644
    assert mode("d/private") == 0o600
