"""Packagers on real git repositories, checked against what nemo-run 0.11.1's packagers do:
`<job_dir>/<name>.tar.gz` archives, names under `./` for git (`<folder>/./` in a hybrid),
folders named by `include_pattern`, refusals of untracked files and uncommitted changes."""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import re
import shutil
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import nemo_run as run
from nemo_run.core.packaging.base import code_archive, extract, host_code_link
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


def commit_all(cwd, message: str = "x") -> None:
    git(cwd, "add", "-A")
    git(cwd, "commit", "-qm", message)


@pytest.fixture(autouse=True)
def no_repository_above(tmp_path, monkeypatch):
    """git must not find a repository above the test's folder (e.g. a checkout in /tmp)."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))


@pytest.fixture
def repo(tmp_path):
    """A repository with committed files, a submodule, and an uncommitted edit."""
    lib = tmp_path / "lib"
    write(lib / "lib.py", "LIB = 1\n")
    git(lib, "init", "-q")
    commit_all(lib, "lib")
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


@pytest.fixture
def plain_repo(tmp_path):
    """One commit, no submodule; an untracked folder `extra` (nested, with a hidden file) and
    an ignored log file."""
    top = tmp_path / "plain"
    write(top / "a.txt", "hi\n")
    write(top / "src" / "model.py", "MODEL = 1\n")
    write(top / ".gitignore", "*.log\n")
    (top / "run.sh").write_text("#!/bin/sh\n")
    (top / "run.sh").chmod(0o755)
    git(top, "init", "-q")
    commit_all(top)
    write(top / "extra" / "e.txt", "e\n")
    write(top / "extra" / "sub" / "s.txt", "s\n")
    write(top / "extra" / ".hidden", "h\n")
    write(top / "debug.log", "ignored\n")
    return top


def names(archive: str) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


def members(archive: str) -> dict[str, bytes]:
    """Files by name without the `./` that 0.11.1's names carry."""
    with tarfile.open(archive) as tar:
        return {
            os.path.normpath(m.name): tar.extractfile(m).read()
            for m in tar.getmembers()
            if m.isfile()
        }


def readable(archive: str) -> dict[str, bytes]:
    """Every file of `archive`, read back both with tarfile and through `extract`."""
    files = members(archive)
    out = os.path.join(os.path.dirname(archive), "extracted")
    extract(archive, out)
    for name, data in files.items():
        with open(os.path.join(out, name), "rb") as fh:
            assert fh.read() == data
    return files


COMMITTED = {"a.txt": b"hi\n", "src/model.py": b"MODEL = 1\n", "run.sh": b"#!/bin/sh\n"}


# -- archives as 0.11.1 writes them ----------------------------------------------------------------
def test_git_archive_is_a_gzipped_tar_named_like_0_11_1s(plain_repo, tmp_path):
    job = tmp_path / "job"
    archive = run.GitArchivePackager().package(plain_repo, str(job), "code")
    assert archive == str(job / "code.tar.gz")
    with open(archive, "rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"  # gzip
    listed = names(archive)
    assert listed[0] == "."
    assert all(n.startswith("./") for n in listed[1:])
    assert {"./src", "./src/model.py", "./a.txt", "./run.sh", "./.gitignore"} <= set(listed)
    assert readable(archive) == {**COMMITTED, ".gitignore": b"*.log\n"}
    assert os.access(job / "extracted" / "run.sh", os.X_OK)
    assert sorted(os.listdir(job)) == ["code.tar.gz", "extracted"]  # no partial file left behind
    with gzip.open(archive) as tar:  # the commit id stays where `git archive` puts it
        commit_id = subprocess.run(
            ["git", "get-tar-commit-id"], input=tar.read(), capture_output=True, check=True
        ).stdout.strip()
    assert commit_id.decode() == git(plain_repo, "rev-parse", "HEAD").strip()


def test_git_archive_ships_the_commit_with_submodules(repo, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        archive = run.GitArchivePackager().package(str(repo), str(tmp_path / "job"), "code")
    files = readable(archive)
    assert files["train.py"] == b"print('committed')\n"
    assert files["third_party/lib/lib.py"] == b"LIB = 1\n"
    assert "data/extra.cfg" not in files
    assert "without its uncommitted changes: train.py" in caplog.text
    listed = names(archive)
    assert len(listed) == len(set(listed))  # the submodule's folder is listed once


def test_subpath_and_ref(repo, tmp_path):
    only_src = run.GitArchivePackager(subpath="src")
    assert names(only_src.package(repo, str(tmp_path / "s"), "code")) == [".", "./model.py"]
    git(repo, "tag", "v1")
    write(repo / "src" / "model.py", "MODEL = 2\n")
    git(repo, "commit", "-qam", "two")
    old = run.GitArchivePackager(ref="v1", subpath="src").package(repo, str(tmp_path / "k"), "c")
    assert members(old) == {"model.py": b"MODEL = 1\n"}
    lib = run.GitArchivePackager(subpath="third_party")
    assert readable(lib.package(repo, str(tmp_path / "j"), "code")) == {"lib/lib.py": b"LIB = 1\n"}


def test_pattern_archive_names_files_relative_to_relative_path(plain_repo, tmp_path):
    """0.11.1: files only (no folder entries), no `./`, names relative to relative_path."""
    at_top = run.PatternPackager(
        include_pattern=str(plain_repo / "extra"), relative_path=plain_repo
    )
    archive = at_top.package(plain_repo, str(tmp_path / "p"), "code")
    assert archive == str(tmp_path / "p" / "code.tar.gz")
    assert sorted(names(archive)) == ["extra/.hidden", "extra/e.txt", "extra/sub/s.txt"]
    inside = run.PatternPackager(
        include_pattern=str(plain_repo / "extra" / "*"), relative_path=str(plain_repo / "extra")
    )
    assert sorted(names(inside.package(plain_repo, str(tmp_path / "q"), "code"))) == [
        "e.txt",
        "sub/s.txt",
    ]  # a shell glob: `*` leaves hidden files out, a matched folder brings all it holds


def test_hybrid_puts_each_packager_under_its_folder(plain_repo, tmp_path):
    hybrid = run.HybridPackager(
        sub_packagers={
            "code": run.GitArchivePackager(subpath="src"),
            "extra": run.PatternPackager(
                include_pattern=str(plain_repo / "extra" / "*"),
                relative_path=str(plain_repo / "extra"),
            ),
        }
    )
    job = tmp_path / "h"
    archive = hybrid.package(plain_repo, str(job), "code")
    assert archive == str(job / "code.tar.gz")
    assert sorted(names(archive)) == [
        "code/.",
        "code/./model.py",
        "extra/.",
        "extra/./e.txt",
        "extra/./sub",
        "extra/./sub/s.txt",
    ]
    assert sorted(os.listdir(job)) == ["code.tar.gz"]  # the parts are gone
    assert readable(archive) == {
        "code/model.py": b"MODEL = 1\n",
        "extra/e.txt": b"e\n",
        "extra/sub/s.txt": b"s\n",
    }


def test_hybrid_extract_at_root_merges_and_later_packagers_win(plain_repo, tmp_path):
    write(plain_repo / "over" / "a.txt", "replaced\n")
    hybrid = run.HybridPackager(
        sub_packagers={
            "one": run.GitArchivePackager(),
            "two": run.PatternPackager(
                include_pattern=str(plain_repo / "over" / "a.txt"),
                relative_path=str(plain_repo / "over"),
            ),
        },
        extract_at_root=True,
    )
    archive = hybrid.package(plain_repo, str(tmp_path / "h"), "code")
    listed = names(archive)
    assert "." in listed and "./a.txt" in listed and not any(n.startswith("one") for n in listed)
    assert len(listed) == len(set(listed))
    assert readable(archive) == {**COMMITTED, ".gitignore": b"*.log\n", "a.txt": b"replaced\n"}
    root = run.HybridPackager(sub_packagers={"": run.GitArchivePackager(subpath="src")})
    assert names(root.package(plain_repo, str(tmp_path / "r"), "code")) == [".", "./model.py"]


# -- include_pattern -------------------------------------------------------------------------------
def test_include_pattern_naming_a_folder_ships_all_its_files(plain_repo, tmp_path, monkeypatch):
    monkeypatch.chdir(plain_repo)
    want = {"extra/e.txt": b"e\n", "extra/sub/s.txt": b"s\n", "extra/.hidden": b"h\n"}
    pattern = run.PatternPackager(include_pattern="extra", relative_path="")
    assert readable(pattern.package(plain_repo, str(tmp_path / "p"), "code")) == want
    with_git = run.GitArchivePackager(include_pattern="extra")
    archive = with_git.package(plain_repo, str(tmp_path / "g"), "code")
    assert readable(archive) == {**COMMITTED, ".gitignore": b"*.log\n", **want}
    assert {"./extra", "./extra/sub"} <= set(names(archive))  # folders listed, as in 0.11.1
    relative = run.GitArchivePackager(
        subpath="src", include_pattern="extra/*", include_pattern_relative_path="extra"
    )
    assert readable(relative.package(plain_repo, str(tmp_path / "r"), "code")) == {
        "model.py": b"MODEL = 1\n",
        "e.txt": b"e\n",
        "sub/s.txt": b"s\n",
    }


def test_relative_patterns_are_read_from_the_launch_folder(plain_repo, tmp_path, monkeypatch):
    """As 0.11.1 (its `find` runs in the current folder): from `src`, 'data' is src/data, and
    it is stored relative to the repository's top."""
    write(plain_repo / "src" / "data" / "d.cfg", "d\n")
    launch = plain_repo / "src"
    monkeypatch.chdir(launch)
    packager = run.GitArchivePackager(include_pattern="data")
    files = readable(packager.package(launch, str(tmp_path / "j"), "code"))
    assert files["src/data/d.cfg"] == b"d\n"
    pattern = run.PatternPackager(include_pattern=["data", "../a.txt"], relative_path="..")
    assert readable(pattern.package(launch, str(tmp_path / "p"), "code")) == {
        "src/data/d.cfg": b"d\n",
        "a.txt": b"hi\n",
    }


def test_names_with_glob_characters_are_shell_like(tmp_path):
    launch = tmp_path / "run [1]"  # the launch folder's own brackets are no pattern
    write(launch / "data[1].txt", "one\n")
    write(launch / "data1.txt", "glob\n")
    by_glob = run.PatternPackager(include_pattern="data[1].txt", relative_path="")
    assert members(by_glob.package(launch, str(tmp_path / "a"), "code")) == {"data1.txt": b"glob\n"}
    (launch / "data1.txt").unlink()  # no match: the shell passes the name on as it is
    assert members(by_glob.package(launch, str(tmp_path / "b"), "code")) == {
        "data[1].txt": b"one\n"
    }


def test_an_extra_file_replaces_the_committed_one(plain_repo, tmp_path):
    """0.11.1 unpacks the git tree, then the pattern files: the working copy wins."""
    write(plain_repo / "a.txt", "edited\n")
    packager = run.GitArchivePackager(include_pattern=str(plain_repo / "a.txt"))
    archive = packager.package(plain_repo, str(tmp_path / "j"), "code")
    assert names(archive).count("./a.txt") == 1
    assert readable(archive)["a.txt"] == b"edited\n"


def test_patterns_that_match_nothing_are_refused(plain_repo, tmp_path):
    job = tmp_path / "j"
    with pytest.raises(ConfigError, match=r"include_pattern 'nothing/\*' matches no file"):
        run.PatternPackager(include_pattern="nothing/*", relative_path="").package(
            plain_repo, str(job), "code"
        )
    with pytest.raises(ConfigError, match="GitArchivePackager: include_pattern 'missing'"):
        run.GitArchivePackager(include_pattern="missing").package(plain_repo, str(job), "code")
    with pytest.raises(ConfigError, match="include_pattern is empty; give one or more"):
        run.PatternPackager(include_pattern="", relative_path="").package(plain_repo, str(job), "c")
    with pytest.raises(ConfigError, match="relative_path has 1 entries for 2 include_pattern"):
        run.PatternPackager(include_pattern=["a", "b"], relative_path=["x"])
    with pytest.raises(ConfigError, match="outside its relative_path"):
        run.PatternPackager(include_pattern="a.txt", relative_path="src").package(
            plain_repo, str(job), "code"
        )
    assert not job.exists() or os.listdir(job) == []


# -- refusals --------------------------------------------------------------------------------------
def test_untracked_files_are_refused_when_asked(plain_repo, tmp_path):
    job = tmp_path / "j"
    packager = run.GitArchivePackager(check_untracked_files=True)
    with pytest.raises(ConfigError) as refused:
        packager.package(plain_repo, str(job), "code")
    message = str(refused.value)
    assert "check_untracked_files=True" in message and str(plain_repo) in message
    assert "extra/e.txt" in message and "extra/.hidden" in message
    assert "debug.log" not in message  # ignored files do not count
    assert "git add" in message and ".gitignore" in message
    assert "check_untracked_files=False" in message
    assert not job.exists()
    with pytest.raises(ConfigError, match="untracked files"):
        packager.check(plain_repo)  # at dry run, before anything starts
    git(plain_repo, "add", "extra")
    git(plain_repo, "commit", "-qm", "extra")
    assert "./extra/sub/s.txt" in names(packager.package(plain_repo, str(job), "code"))


def test_untracked_files_alone_are_not_uncommitted_changes(plain_repo, tmp_path):
    """0.11.1 checks the two separately: `git diff-index HEAD` sees no untracked file."""
    packager = run.GitArchivePackager(check_uncommitted_changes=True)
    assert readable(packager.package(plain_repo, str(tmp_path / "j"), "code"))["a.txt"] == b"hi\n"
    default = run.GitArchivePackager()
    assert "./extra/e.txt" not in names(default.package(plain_repo, str(tmp_path / "k"), "c"))


def test_uncommitted_changes_refused_when_asked(repo, tmp_path):
    with pytest.raises(ConfigError, match="uncommitted changes: train.py; commit or stash"):
        run.GitArchivePackager(check_uncommitted_changes=True).package(
            str(repo), str(tmp_path / "j"), "code"
        )
    git(repo, "mv", "src/model.py", "src/renamed.py")
    with pytest.raises(ConfigError, match=r"changes: src/renamed.py, train.py;"):
        run.GitArchivePackager(check_uncommitted_changes=True).check(repo)


def test_outside_a_repository_the_error_names_the_fixes(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ConfigError) as refused:
        run.GitArchivePackager().package(str(plain), str(tmp_path / "j"), "code")
    message = str(refused.value)
    assert f"{plain} is not inside a git repository" in message
    assert "git init" in message and "packager=run.Packager()" in message
    assert "run.PatternPackager" in message
    with pytest.raises(ConfigError, match="missing is not a folder"):
        run.GitArchivePackager(basepath=str(tmp_path / "missing")).package(
            ".", str(tmp_path / "j"), "c"
        )
    assert not (tmp_path / "j").exists()


def test_a_repository_without_commits_or_with_a_bad_ref(tmp_path, plain_repo):
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(ConfigError, match="has no commit yet.*git add -A && git commit"):
        run.GitArchivePackager().check(empty)
    with pytest.raises(ConfigError, match=r"ref='nope' names no commit in"):
        run.GitArchivePackager(ref="nope").check(plain_repo)
    with pytest.raises(ConfigError, match=r"subpath='nope' is not a folder of"):
        run.GitArchivePackager(subpath="nope").check(plain_repo)
    with pytest.raises(ConfigError, match="subpath='../x' must be a folder relative"):
        run.GitArchivePackager(subpath="../x")
    packager = run.GitArchivePackager()
    packager.ref = ""  # fields set after construction are checked when it is used
    with pytest.raises(ConfigError, match="ref must name a commit"):
        packager.check(plain_repo)


def test_hybrid_refusals(plain_repo, tmp_path):
    with pytest.raises(ConfigError, match="sub_packagers is empty"):
        run.HybridPackager().package(plain_repo, str(tmp_path / "j"), "code")
    with pytest.raises(ConfigError, match=r"sub_packagers\['x'\] must be a Packager"):
        run.HybridPackager(sub_packagers={"x": "git"})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="key '../up' must be a folder relative"):
        run.HybridPackager(sub_packagers={"../up": run.Packager()})
    hybrid = run.HybridPackager(
        sub_packagers={"c": run.GitArchivePackager(check_untracked_files=True)}
    )
    with pytest.raises(ConfigError, match="untracked files"):
        hybrid.check(plain_repo)


def test_parallel_packaging_from_one_folder_does_not_collide(repo, tmp_path):
    def package(i: int) -> str:
        return run.GitArchivePackager().package(str(repo), str(tmp_path / f"job{i}"), "code")

    with ThreadPoolExecutor(4) as pool:
        archives = list(pool.map(package, range(8)))
    assert len(set(archives)) == 8
    assert all(members(a)["train.py"] == b"print('committed')\n" for a in archives)


# -- the API of 0.11.1 -----------------------------------------------------------------------------
def fields_of(cls: type) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = "required"
    return out


def test_fields_and_defaults_are_0_11_1s():
    base = {"debug": False, "symlink_from_remote_dir": None}
    assert fields_of(run.Packager) == base
    assert fields_of(run.GitArchivePackager) == {
        **base,
        "basepath": "",
        "subpath": "",
        "ref": "HEAD",
        "include_submodules": True,
        "include_pattern": "",
        "include_pattern_relative_path": "",
        "check_uncommitted_changes": False,
        "check_untracked_files": False,
    }
    assert fields_of(run.PatternPackager) == {
        **base,
        "include_pattern": "required",
        "relative_path": "required",
    }
    assert fields_of(run.HybridPackager) == {**base, "sub_packagers": {}, "extract_at_root": False}
    with pytest.raises(TypeError):
        run.PatternPackager(include_pattern="x")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        run.Packager(True)  # type: ignore[misc]  # keyword-only, as in 0.11.1
    assert run.Packager().package(Path("."), "/nonexistent", "code") is None
    assert run.Packager().setup() is None
    assert repr(run.Packager(debug=True)) == "Packager(debug=True, symlink_from_remote_dir=None)"


@pytest.mark.parametrize(
    "packager",
    [
        run.Packager(debug=True),
        run.GitArchivePackager(
            subpath="src", include_pattern=["a", "b"], check_untracked_files=True
        ),
        run.PatternPackager(include_pattern="x", relative_path="", symlink_from_remote_dir="/r"),
        run.HybridPackager(
            sub_packagers={
                "code": run.GitArchivePackager(),
                "data": run.PatternPackager(include_pattern=["d"], relative_path=["/"]),
            },
            extract_at_root=True,
        ),
    ],
    ids=lambda p: type(p).__name__,
)
def test_to_config_round_trips(packager):
    import fiddle as fdl

    config = packager.to_config()
    assert isinstance(config, run.Config) and fdl.get_callable(config) is type(packager)
    built = fdl.build(config)
    assert built == packager and built is not packager
    if isinstance(packager, run.HybridPackager):
        assert isinstance(config.sub_packagers["code"], run.Config)  # nested ones too
        config.sub_packagers["code"].ref = "v1"
        assert packager.sub_packagers["code"].ref == "HEAD"  # the config is a copy


def test_config_graphs_as_0_11_1(tmp_path):
    packager = run.GitArchivePackager(subpath="src")
    assert "GitArchivePackager" in packager.visualize().source
    assert "subpath" in packager.diff(run.GitArchivePackager()).source
    target = tmp_path / "config.svg"
    if shutil.which("dot"):
        packager.save_config_img(str(target))
        assert target.read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
    else:
        with pytest.raises(ConfigError, match="install Graphviz"):
            packager.save_config_img(str(target))
        assert packager._repr_svg_() == repr(packager)  # the text, as 0.11.1 shows it


def executor_default(cls: type) -> object:
    return {f.name: f for f in dataclasses.fields(cls)}["packager"].default_factory()


def test_executor_defaults_are_0_11_1s():
    assert executor_default(run.DockerExecutor) == run.GitArchivePackager()
    assert executor_default(run.SkypilotExecutor) == run.GitArchivePackager()
    for cls in (run.LocalExecutor, run.DGXCloudExecutor, run.LeptonExecutor):
        assert type(executor_default(cls)) is run.Packager
    assert run.DockerExecutor(container_image="i").packager == run.GitArchivePackager()


def test_docker_dry_run_outside_a_repository_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = run.Script(inline="echo hi")
    with pytest.raises(ConfigError, match="not inside a git repository.*packager=run.Packager()"):
        run.run(task, executor=run.DockerExecutor(container_image="i"), dryrun=True)
    ex = run.DockerExecutor(container_image="i", packager=run.Packager())
    assert run.run(task, executor=ex, dryrun=True).dryrun


def test_path_objects_are_accepted_as_in_0_11_1(plain_repo, tmp_path):
    packager = run.GitArchivePackager(basepath=plain_repo, subpath=Path("src"))  # type: ignore[arg-type]
    assert packager.basepath == str(plain_repo) and packager.subpath == "src"
    assert members(packager.package(tmp_path, str(tmp_path / "j"), "code")) == {
        "model.py": b"MODEL = 1\n"
    }


# -- symlink_from_remote_dir -----------------------------------------------------------------------
def test_symlink_from_remote_dir_ships_nothing(plain_repo, tmp_path):
    link = str(tmp_path / "remote-code")
    packager = run.GitArchivePackager(symlink_from_remote_dir=link, check_untracked_files=True)
    assert packager.code_link == link
    job = tmp_path / "job"
    assert code_archive(packager, plain_repo, str(job)) is None  # nor are its checks run
    assert not job.exists()
    packager.check(tmp_path)  # not a repository: irrelevant, nothing is packaged
    assert run.Packager(symlink_from_remote_dir=link).code_link is None  # ships nothing anyway
    normal = run.GitArchivePackager()
    assert code_archive(normal, plain_repo, str(job)) == str(job / "code.tar.gz")
    with pytest.raises(ConfigError, match="symlink_from_remote_dir='rel' must be the absolute"):
        run.GitArchivePackager(symlink_from_remote_dir="rel")
    with pytest.raises(ConfigError, match="is not a folder on this host"):
        host_code_link(packager)
    os.mkdir(link)
    assert host_code_link(packager) == link


@pytest.mark.docker
def test_packaged_code_runs_in_docker_at_nemo_run_code(repo, docker_image, monkeypatch):
    monkeypatch.chdir(repo)
    ex = run.DockerExecutor(container_image=docker_image)  # GitArchivePackager by default
    result = run.run(run.Script(path="train.py"), executor=ex, name="code")
    from nemo_run.run.torchx_backend.runner import get_runner

    assert list(get_runner().log_lines(result.handle, "code", 0)) == ["committed\n"]


@pytest.mark.docker
def test_docker_runs_the_code_of_symlink_from_remote_dir(tmp_path, docker_image, monkeypatch):
    code = tmp_path / "shared-code"
    write(code / "train.py", "print('from the linked folder')\n")
    monkeypatch.chdir(tmp_path)  # no repository here: nothing is packaged
    packager = run.GitArchivePackager(symlink_from_remote_dir=str(code))
    ex = run.DockerExecutor(container_image=docker_image, packager=packager)
    result = run.run(run.Script(path="train.py"), executor=ex, name="linked")
    from nemo_run.run.torchx_backend.runner import get_runner

    assert list(get_runner().log_lines(result.handle, "linked", 0)) == ["from the linked folder\n"]


REMOTE_EXECUTORS = {
    "dgx": lambda packager: run.DGXCloudExecutor(
        project_name="p",
        container_image="i",
        pvcs=[{"claimName": "c", "path": "/n"}],
        pvc_nemo_run_dir="/n/jobs",
        packager=packager,
    ),
    "lepton": lambda packager: run.LeptonExecutor(
        container_image="i",
        nemo_run_dir="/ws/n",
        resource_shape="cpu.small",
        node_group="g",
        mounts=[{"path": "/s", "from": "f", "mount_path": "/ws"}],
        packager=packager,
    ),
    "skypilot": lambda packager: run.SkypilotExecutor(packager=packager),
}


@pytest.mark.parametrize("backend", list(REMOTE_EXECUTORS))
def test_remote_jobs_run_in_the_linked_folder(backend, tmp_path, monkeypatch):
    """The dry run shows the job's code folder linked to (or changed to) the remote folder;
    nothing is packaged, so no repository is needed here."""
    monkeypatch.chdir(tmp_path)
    packager = run.GitArchivePackager(symlink_from_remote_dir="/shared/my code")
    ex = REMOTE_EXECUTORS[backend](packager)
    text = run.run(run.Script(inline="echo hi"), executor=ex, dryrun=True).dryrun
    if backend == "skypilot":
        import yaml

        assert "\ncd '/shared/my code'\n" in yaml.safe_load(text)["run"]
    else:
        link = re.search(r"ln -sfn '/shared/my code' (\S+)/code\ncd (\S+)/code\n", text)
        assert link and link.group(1) == link.group(2)
    with pytest.raises(ConfigError, match="not inside a git repository"):
        run.run(
            run.Script(inline="echo hi"),
            executor=REMOTE_EXECUTORS[backend](run.GitArchivePackager()),
            dryrun=True,
        )
