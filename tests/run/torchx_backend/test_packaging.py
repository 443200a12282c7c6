"""Task -> AppDef conversion."""

from __future__ import annotations

import sys

import pytest

import nemo_run as run
from nemo_run.core.runners import partial as partial_runner
from nemo_run.run.torchx_backend.packaging import package


def scale(x: int = 1, factor: int = 2) -> int:
    return x * factor


def test_inline_bash_is_one_argument_with_args_as_positional():
    app = package("t", run.Script(inline="echo \"$1\" 'q'", args=["a b"]), run.LocalExecutor())
    role = app.roles[0]
    assert role.entrypoint == "bash"
    assert role.args == ["-c", "echo \"$1\" 'q'", "inline", "a b"]


def test_python_script_uses_the_executors_interpreter(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("print(1)")
    role = package(
        "t", run.Script(path=str(script), args=["--lr", "1"]), run.LocalExecutor()
    ).roles[0]
    assert role.entrypoint == sys.executable
    assert role.args == [str(script), "--lr", "1"]


def test_module_script():
    role = package("t", run.Script(path="json.tool", m=True), run.LocalExecutor()).roles[0]
    assert role.args[:2] == ["-m", "json.tool"]


def test_partial_runs_through_a_module_entry_point_and_round_trips():
    role = package("t", run.Partial(scale, x=21), run.LocalExecutor()).roles[0]
    assert role.args[:2] == ["-m", "nemo_run.core.runners.partial"]
    assert partial_runner.run(role.args[2]) == 42
    assert partial_runner.run(partial_runner.encode(run.Config(scale, x=5, factor=3))) == 15


def test_env_retries_and_replicas_reach_the_role():
    ex = run.LocalExecutor(env_vars={"A": "1", "B": "2"}, retries=2, ntasks_per_node=2)
    role = package("t", run.Script(inline="true", env={"B": "3"}), ex).roles[0]
    assert role.env["A"] == "1" and role.env["B"] == "3"
    assert role.max_retries == 2 and role.num_replicas == 2
    assert role.env["WORLD_SIZE"] == "2"


def test_torchrun_launcher_wraps_python():
    ex = run.LocalExecutor(launcher="torchrun", ntasks_per_node=4)
    role = package("t", run.Script(path="pkg.train", m=True), ex).roles[0]
    assert role.entrypoint == sys.executable
    assert role.args[:2] == ["-m", "torch.distributed.run"]
    assert role.args[role.args.index("--nproc-per-node") + 1] == "4"
    assert role.args[-2:] == ["-m", "pkg.train"]
    assert role.num_replicas == 1


def test_not_a_task():
    with pytest.raises(
        run.ConfigError, match="must be a run.Script, run.Partial or run.Config, got int"
    ):
        package("t", 3, run.LocalExecutor())
