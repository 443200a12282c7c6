"""End to end: a committed symlink to a folder outside the repo, packaged so the archive holds
`lnk` and then `lnk/evil.txt`, must not let `extract` write into that folder."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

import nemo_run as run
from nemo_run.core.packaging.base import extract
from nemo_run.exceptions import ConfigError


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "evil.txt").write_text("packaged from outside\n")
    return folder


@pytest.fixture
def repo(tmp_path: Path, outside: Path) -> Path:
    """A repository whose only odd content is `lnk -> <absolute path of outside>`."""
    top = tmp_path / "repo"
    top.mkdir()
    (top / "train.py").write_text("print('hi')\n")
    (top / "lnk").symlink_to(outside)
    git(top, "init", "-q")
    git(top, "add", "-A")
    git(top, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    return top


PACKAGERS = {
    "hybrid": lambda: run.HybridPackager(
        sub_packagers={
            "": run.GitArchivePackager(include_pattern="lnk/*"),
            "extra": run.PatternPackager(include_pattern="lnk/*", relative_path=""),
        }
    ),
    "git": lambda: run.GitArchivePackager(include_pattern="lnk/*"),
}


@pytest.mark.parametrize("kind", list(PACKAGERS))
def test_symlinked_folder_in_the_archive_cannot_write_outside(kind, repo, outside, tmp_path):
    archive = PACKAGERS[kind]().package(str(repo), str(tmp_path / "job"), "code")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert tar.getmember("./lnk").issym()
    assert names.index("./lnk") < names.index("./lnk/evil.txt")

    (outside / "evil.txt").write_text("the victim\n")  # what an escaping write would clobber
    dest = tmp_path / "job" / "code"
    with pytest.raises(ConfigError, match=rf"archive {archive}: member '\./lnk'.*outside {dest}"):
        extract(archive, str(dest))
    assert [p.name for p in outside.iterdir()] == ["evil.txt"]
    assert (outside / "evil.txt").read_text() == "the victim\n"
    assert not dest.exists()
