"""A full or read-only home gives a clear error that says so, never the advice to move a
healthy store aside; runs on small tmpfs mounts, so only as root."""

from __future__ import annotations

import os
import subprocess

import pytest

from nemo_run.core.store import JobRecord, get_store
from nemo_run.exceptions import DiskError


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MiB tmpfs; its mount point, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    target = tmp_path / "small"
    target.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(target)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _fill(folder) -> None:
    with open(folder / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass


def test_full_disk_says_no_space(tmpfs):
    home = tmpfs / "home"
    store = get_store(str(home))
    store.put(JobRecord("local_persistent", "before"))
    _fill(tmpfs)
    with pytest.raises(DiskError, match="no space") as info:
        for i in range(2000):  # the WAL grows until the disk is full
            store.put(JobRecord("local_persistent", f"job-{i}", data={"pad": "x" * 4000}))
    assert "mv " not in str(info.value) and ".broken" not in str(info.value)
    os.remove(tmpfs / "filler")
    assert store.get("local_persistent", "before") is not None  # the store is healthy


def test_read_only_home_says_read_only(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    source, home = tmp_path / "rw", tmp_path / "ro"
    source.mkdir()
    home.mkdir()
    get_store(str(source)).put(JobRecord("local_persistent", "before"))
    for args in (["--bind", str(source), str(home)], ["-o", "remount,bind,ro", str(home)]):
        if subprocess.run(["mount", *args], capture_output=True).returncode != 0:
            subprocess.run(["umount", str(home)], check=False)
            pytest.skip("cannot make a read-only bind mount here")
    try:
        from nemo_run.core.store.sqlite import SqliteJobStore

        existing = SqliteJobStore(str(home / "jobs.db"))  # as a new process would open it
        with pytest.raises(DiskError, match="read-only") as info:
            existing.put(JobRecord("local_persistent", "after"))
        assert ".broken" not in str(info.value)
        with pytest.raises(DiskError, match="read-only"):
            SqliteJobStore(str(home / "sub" / "jobs.db")).put(JobRecord("local_persistent", "x"))
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


def test_cli_run_on_a_full_home_says_no_space_in_one_line(tmpfs):
    import sys

    home = tmpfs / "home"
    home.mkdir()
    _fill(tmpfs)
    proc = subprocess.run(
        [sys.executable, "-m", "nemo_run.cli.nemorun", "run", "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NEMORUN_HOME": str(home)},
    )
    assert proc.returncode == 3, proc.stderr
    assert "no space" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    leftovers = [p for p in home.rglob("*") if ".tmp" in p.name]
    assert leftovers == []
