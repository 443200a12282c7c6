"""Packagers on real git repositories (with a submodule and uncommitted changes) and globs."""

from __future__ import annotations

import logging
import os
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor

import pytest

import nemo_run as run
from nemo_run.core.packaging.base import extract
from nemo_run.exceptions import ConfigError


def git(cwd, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(
        ["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True, env=env
    ).stdout


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def repo(tmp_path):
    """A repository with committed files, a submodule, and an uncommitted edit."""
    lib = tmp_path / "lib"
    write(lib / "lib.py", "LIB = 1\n")
    git(lib, "init", "-q")
    git(lib, "add", ".")
    git(lib, "commit", "-qm", "lib")
    main = tmp_path / "main"
    write(main / "train.py", "print('committed')\n")
    write(main / "src" / "model.py", "MODEL = 1\n")
    write(main / "data" / "extra.cfg", "lr=1\n")
    git(main, "init", "-q")
    git(main, "add", "train.py", "src")
    git(
        main,
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        str(lib),
        "third_party/lib",
    )
    git(main, "commit", "-qm", "main")
    write(main / "train.py", "print('uncommitted')\n")
    return main


def members(archive: str) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_git_archive_ships_the_commit_with_submodules(repo, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        archive = run.GitArchivePackager().package(str(repo), str(tmp_path / "job"), "code")
    files = members(archive)
    assert files["train.py"] == b"print('committed')\n"
    assert files["third_party/lib/lib.py"] == b"LIB = 1\n"
    assert "data/extra.cfg" not in files
    assert "without its uncommitted changes: train.py" in caplog.text


def test_uncommitted_changes_refused_when_asked(repo, tmp_path):
    with pytest.raises(ConfigError, match="uncommitted changes in .*: train.py; commit or stash"):
        run.GitArchivePackager(check_uncommitted_changes=True).package(
            str(repo), str(tmp_path / "j"), "code"
        )


def test_subpath_ref_and_extra_patterns(repo, tmp_path):
    packager = run.GitArchivePackager(subpath="src", include_pattern="data/*.cfg")
    files = members(packager.package(str(repo), str(tmp_path / "j"), "code"))
    assert set(files) == {"model.py", "data/extra.cfg"}
    git(repo, "tag", "v1")
    write(repo / "src" / "model.py", "MODEL = 2\n")
    git(repo, "commit", "-qam", "two")
    old = members(
        run.GitArchivePackager(ref="v1", subpath="src").package(str(repo), str(tmp_path / "k"), "c")
    )
    assert old["model.py"] == b"MODEL = 1\n"


def test_not_a_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # never look above
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(
        ConfigError,
        match=r"plain is not inside a git repository; run git init "
        "or use PatternPackager$",
    ):
        run.GitArchivePackager().package(str(plain), str(tmp_path / "j"), "code")
    with pytest.raises(ConfigError, match="missing is not a folder"):
        run.GitArchivePackager(basepath=str(tmp_path / "missing")).package(
            ".", str(tmp_path / "j"), "c"
        )
    assert not (tmp_path / "j" / "code.tar").exists()


def test_parallel_packaging_from_one_folder_does_not_collide(repo, tmp_path):
    def package(i: int) -> str:
        return run.GitArchivePackager().package(str(repo), str(tmp_path / f"job{i}"), "code")

    with ThreadPoolExecutor(4) as pool:
        archives = list(pool.map(package, range(8)))
    assert len(set(archives)) == 8
    assert all(members(a)["train.py"] == b"print('committed')\n" for a in archives)


def test_pattern_and_hybrid_packagers(repo, tmp_path):
    pattern = run.PatternPackager(include_pattern=["src/**/*.py", "data/*"], relative_path="")
    assert set(members(pattern.package(str(repo), str(tmp_path / "p"), "code"))) == {
        "src/model.py",
        "data/extra.cfg",
    }
    hybrid = run.HybridPackager(
        sub_packagers={
            "": run.GitArchivePackager(subpath="src"),
            "configs": run.PatternPackager(include_pattern="data/*.cfg", relative_path="data"),
        }
    )
    assert set(members(hybrid.package(str(repo), str(tmp_path / "h"), "code"))) == {
        "model.py",
        "configs/extra.cfg",
    }
    with pytest.raises(ConfigError, match="no file under"):
        run.PatternPackager(include_pattern="*.nothing").package(
            str(repo), str(tmp_path / "n"), "code"
        )
    with pytest.raises(ConfigError, match="needs one or more glob patterns"):
        run.PatternPackager(include_pattern=[])


@pytest.mark.docker
def test_packaged_code_runs_in_docker_at_nemo_run_code(repo, docker_image, monkeypatch):
    monkeypatch.chdir(repo)
    ex = run.DockerExecutor(container_image=docker_image, packager=run.GitArchivePackager())
    result = run.run(run.Script(path="train.py"), executor=ex, name="code")
    from nemo_run.run.torchx_backend.runner import get_runner

    assert list(get_runner().log_lines(result.handle, "code", 0)) == ["committed\n"]


def commit_all(cwd, message: str = "x") -> None:
    git(cwd, "add", "-A")
    git(cwd, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message)


@pytest.fixture
def plain_repo(tmp_path):
    """A repository without submodules, plus an untracked file for the pattern options."""
    top = tmp_path / "plain"
    write(top / "a.txt", "hi\n")
    write(top / "src" / "model.py", "MODEL = 1\n")
    (top / "run.sh").write_text("#!/bin/sh\n")
    (top / "run.sh").chmod(0o755)
    git(top, "init", "-q")
    commit_all(top)
    write(top / "data" / "extra.cfg", "lr=1\n")  # untracked
    return top


def readable(archive: str) -> dict[str, bytes]:
    """Every file of `archive`, read back both with tarfile and through `extract`."""
    files = members(archive)
    out = os.path.join(os.path.dirname(archive), "extracted")
    extract(archive, out)
    for name, data in files.items():
        with open(os.path.join(out, name), "rb") as fh:
            assert fh.read() == data
    return files


def test_plain_repo_with_defaults_is_readable(plain_repo, tmp_path):
    job = tmp_path / "job"
    archive = run.GitArchivePackager().package(str(plain_repo), str(job), "code")
    assert archive == str(job / "code.tar")
    assert readable(archive) == {
        "a.txt": b"hi\n",
        "src/model.py": b"MODEL = 1\n",
        "run.sh": b"#!/bin/sh\n",
    }
    assert os.access(job / "extracted" / "run.sh", os.X_OK)
    assert sorted(os.listdir(job)) == ["code.tar", "extracted"]  # no partial file left behind
    with open(archive, "rb") as fh:  # the commit id stays where `git archive` puts it
        commit_id = subprocess.run(
            ["git", "get-tar-commit-id"], stdin=fh, capture_output=True, text=True, check=True
        ).stdout.strip()
    assert commit_id == git(plain_repo, "rev-parse", "HEAD").strip()


def test_plain_repo_with_include_pattern_and_subpath(plain_repo, tmp_path):
    with_extra = run.GitArchivePackager(include_pattern="data/*.cfg")
    files = readable(with_extra.package(str(plain_repo), str(tmp_path / "p"), "code"))
    assert set(files) == {"a.txt", "src/model.py", "run.sh", "data/extra.cfg"}
    only_src = run.GitArchivePackager(subpath="src")
    assert readable(only_src.package(str(plain_repo), str(tmp_path / "s"), "code")) == {
        "model.py": b"MODEL = 1\n"
    }
    both = run.GitArchivePackager(
        subpath="src", include_pattern="data/*.cfg", include_pattern_relative_path="data"
    )
    assert set(readable(both.package(str(plain_repo), str(tmp_path / "b"), "code"))) == {
        "model.py",
        "extra.cfg",
    }


def test_submodule_under_subpath_and_nested_folders(repo, tmp_path):
    packager = run.GitArchivePackager(subpath="third_party")
    assert readable(packager.package(str(repo), str(tmp_path / "j"), "code")) == {
        "lib/lib.py": b"LIB = 1\n"
    }
    everything = run.GitArchivePackager(include_pattern="data/*")
    files = readable(everything.package(str(repo), str(tmp_path / "k"), "code"))
    assert set(files) == {
        "train.py",
        "src/model.py",
        ".gitmodules",
        "third_party/lib/lib.py",
        "data/extra.cfg",
    }
    with tarfile.open(os.path.join(tmp_path, "k", "code.tar")) as tar:
        names = tar.getnames()
    assert len(names) == len(set(names))  # the submodule's folder is listed once


def test_pattern_and_hybrid_packagers_on_a_plain_repo(plain_repo, tmp_path):
    pattern = run.PatternPackager(include_pattern="**/*.py")
    assert readable(pattern.package(str(plain_repo), str(tmp_path / "p"), "code")) == {
        "src/model.py": b"MODEL = 1\n"
    }
    hybrid = run.HybridPackager(
        sub_packagers={
            "": run.GitArchivePackager(),
            "extra": run.PatternPackager(include_pattern="data/*.cfg", relative_path="data"),
            "again": run.GitArchivePackager(subpath="src"),
        }
    )
    files = readable(hybrid.package(str(plain_repo), str(tmp_path / "h"), "code"))
    assert set(files) == {"a.txt", "src/model.py", "run.sh", "extra/extra.cfg", "again/model.py"}
