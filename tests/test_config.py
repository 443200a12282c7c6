"""Home folder resolution, Script validation, and executor validation."""

from __future__ import annotations

import os

import pytest

import nemo_run as run
from nemo_run.config import get_nemorun_home, set_nemorun_home


def test_home_resolves_on_every_call(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMORUN_HOME", str(tmp_path / "env"))
    assert get_nemorun_home() == str(tmp_path / "env")
    set_nemorun_home(tmp_path / "override")
    assert get_nemorun_home() == str(tmp_path / "override")
    set_nemorun_home(None)
    monkeypatch.delenv("NEMORUN_HOME")
    assert get_nemorun_home() == os.path.join(os.path.expanduser("~"), ".nemo_run")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of path= .* got neither"),
        ({"path": "a.sh", "inline": "echo"}, "exactly one of path= .* got both"),
        ({"inline": "echo", "args": "--x"}, "Script.args must be a list"),
        ({"inline": "echo", "env": {"": "x"}}, "Script.env: environment variable name ''"),
        ({"inline": "echo", "env": {"A=B": "x"}}, "'A=B' is invalid"),
        ({"inline": "echo", "env": {"A": 1}}, r"Script.env\['A'\] must be a string"),
    ],
)
def test_script_rejects_bad_input(kwargs, message):
    with pytest.raises(run.ConfigError, match=message):
        run.Script(**kwargs)


def test_script_entrypoint_defaults():
    assert run.Script(path="train.py").entrypoint == "python"
    assert run.Script(path="pkg.mod", m=True).entrypoint == "python"
    assert run.Script(path="run.sh").entrypoint == "bash"
    assert run.Script(inline="echo").entrypoint == "bash"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": 0}, "LocalExecutor.nodes must be an integer >= 1, got 0"),
        ({"nodes": 2}, "runs on this one machine"),
        ({"ntasks_per_node": 0}, "ntasks_per_node must be an integer >= 1"),
        ({"retries": -1}, "retries must be an integer >= 0"),
        ({"env_vars": {"": "1"}}, "LocalExecutor.env_vars: environment variable name ''"),
        ({"env_vars": {"X=Y": "1"}}, "'X=Y' is invalid"),
        ({"launcher": "mpirun"}, "launcher='mpirun' is not known"),
        ({"packager": "git"}, "packager must be a Packager"),
    ],
)
def test_local_executor_rejects_bad_input(kwargs, message):
    with pytest.raises(run.ConfigError, match=message):
        run.LocalExecutor(**kwargs)


def test_missing_script_file_is_caught_before_launch(nemorun_home):
    with pytest.raises(run.ConfigError, match="does-not-exist.sh.* does not exist"):
        run.run(run.Script(path="does-not-exist.sh"), executor=run.LocalExecutor())
    assert list(nemorun_home.iterdir()) == []


def test_executor_assign_places_job_under_experiment(tmp_path):
    ex = run.LocalExecutor()
    ex.assign("exp-1", str(tmp_path), "task-0", "task-0")
    assert ex.experiment_id == "exp-1"
    assert ex.job_dir == str(tmp_path / "task-0")
    assert ex.clone() is not ex and ex.clone().job_dir == ex.job_dir
