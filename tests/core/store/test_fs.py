"""Network filesystem detection from a mount table in /proc/mounts format."""

from __future__ import annotations

import os

import pytest

from nemo_run.core.store.fs import filesystem_type, is_network_filesystem


@pytest.fixture
def root(tmp_path) -> str:
    """A real, symlink-free folder under which the fake mount points live."""
    return os.path.realpath(tmp_path)


@pytest.fixture
def mounts(tmp_path, root):
    """Write a fake mount table and return its path."""
    path = tmp_path / "mounts"
    lines = [  # deeper mounts first, so matching order alone cannot pick the right one
        f"server:/deep {root}/shared/scratch/team nfs rw 0 0",
        f"/dev/vdb {root}/shared/scratch ext4 rw 0 0",
        f"server:/export {root}/shared nfs4 rw,vers=4.2 0 0",
        f"//nas/share {root}/with\\040space cifs rw 0 0",
        f"lustre@o2ib:/fs {root}/données lustre rw 0 0",
        f"tmpfs {root}/shared2 tmpfs rw 0 0",
        "malformed-line",
        "proc /proc proc rw 0 0",
        "/dev/vda / ext4 rw,relatime 0 0",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    "relative, fstype",
    [
        ("shared/jobs.db", "nfs4"),
        ("shared", "nfs4"),
        ("shared/scratch/jobs.db", "ext4"),
        ("shared/scratch/team/x/jobs.db", "nfs"),
        ("shared2/jobs.db", "tmpfs"),  # a name prefix is not a path prefix
        ("sharedx/jobs.db", "ext4"),
        ("with space/jobs.db", "cifs"),
        ("données/jobs.db", "lustre"),
    ],
)
def test_filesystem_type_longest_mount_point_wins(mounts, root, relative, fstype):
    assert filesystem_type(os.path.join(root, relative), mounts) == fstype


@pytest.mark.parametrize(
    "relative, network",
    [
        ("shared/jobs.db", True),
        ("shared/scratch/jobs.db", False),
        ("shared/scratch/team/jobs.db", True),
        ("shared2/jobs.db", False),
        ("with space/jobs.db", True),
        ("données/jobs.db", True),
        ("elsewhere/jobs.db", False),
    ],
)
def test_is_network_filesystem(mounts, root, relative, network):
    assert is_network_filesystem(os.path.join(root, relative), mounts) is network


def test_symlinks_are_resolved_before_matching(mounts, root):
    os.makedirs(os.path.join(root, "shared", "real"))
    os.symlink(os.path.join(root, "shared", "real"), os.path.join(root, "link"))
    assert is_network_filesystem(os.path.join(root, "link", "jobs.db"), mounts) is True


def test_later_mount_on_the_same_point_wins(tmp_path, root):
    path = tmp_path / "stacked"
    path.write_text(
        f"/dev/vda / ext4 rw 0 0\n/dev/vdb {root} ext4 rw 0 0\nsrv:/x {root} nfs4 rw 0 0\n"
    )
    assert filesystem_type(os.path.join(root, "jobs.db"), str(path)) == "nfs4"


def test_unreadable_mount_table(tmp_path):
    missing = str(tmp_path / "no-such-mounts")
    assert filesystem_type("/anything", missing) is None
    assert is_network_filesystem("/anything", missing) is False


def test_undecodable_mount_table_does_not_crash(tmp_path, root):
    path = tmp_path / "mounts"
    path.write_bytes(
        b"/dev/vda / ext4 rw 0 0\nsrv:/x /mnt/caf\xe9 nfs rw 0 0\n"
        + f"srv:/y {root}/net nfs4 rw 0 0\n".encode()
    )
    assert filesystem_type(os.path.join(root, "net", "jobs.db"), str(path)) == "nfs4"
    assert filesystem_type(os.path.join(root, "local"), str(path)) == "ext4"


def test_this_machine_mount_table_is_readable(tmp_path):
    if not os.path.exists("/proc/self/mounts"):
        pytest.skip("no /proc on this system")
    assert filesystem_type(str(tmp_path)) is not None
