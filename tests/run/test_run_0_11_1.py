"""`run.run`, `run.Script` and `run.Plugin` as nemo-run 0.11.1 callers use them (issue 13)."""

from __future__ import annotations

import inspect
import json
import os
import stat
from dataclasses import dataclass, field

import pytest
from torchx.specs import AppState

import nemo_run as run
from nemo_run.core.execution.base import RUNDIR_NAME as BASE_RUNDIR_NAME
from nemo_run.run.experiment_files import EXPERIMENT_FILE
from nemo_run.run.torchx_backend.runner import get_runner

CALLS: list[tuple[str, float]] = []


def train(lr: float = 0.1, steps: int = 3, api_token: str = "") -> float:
    CALLS.append(("train", lr))
    return lr


def job_log(result: run.RunResult) -> str:
    return "".join(get_runner().log_lines(result.handle, result.roles[0], 0))


def files_under(folder) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]


# -- run.run: signature and direct runs ---------------------------------------------------------
def test_signature_matches_0_11_1():
    params = inspect.signature(run.run).parameters
    assert list(params) == [
        "fn_or_script",
        "executor",
        "plugins",
        "name",
        "dryrun",
        "direct",
        "detach",
        "tail_logs",
        "log_level",
    ]
    defaults = {k: p.default for k, p in params.items() if k != "fn_or_script"}
    assert defaults == {
        "executor": None,
        "plugins": None,
        "name": "",
        "dryrun": False,
        "direct": False,
        "detach": False,
        "tail_logs": True,
        "log_level": "INFO",
    }


def test_no_executor_calls_the_partial_in_this_process(nemorun_home):
    CALLS.clear()
    result = run.run(run.Partial(train, lr=0.5))
    assert CALLS == [("train", 0.5)]
    assert result.ok and result.handle == "direct://train"
    assert files_under(nemorun_home) == []  # no job, no experiment


def test_direct_with_an_executor_still_runs_here():
    CALLS.clear()
    run.run(run.Partial(train, lr=0.7), executor=run.LocalExecutor(), direct=True)
    assert CALLS == [("train", 0.7)]


def test_direct_script_runs_as_a_child_and_streams_its_output(capsys):
    script = run.Script(
        inline='echo "parent=$PPID greet=$GREET"; echo oops >&2', env={"GREET": "hi"}
    )
    result = run.run(script, direct=True)
    out = capsys.readouterr()
    assert f"parent={os.getpid()} greet=hi" in out.out and "oops" in out.err
    assert result.ok


def test_direct_script_without_tail_logs_is_quiet_and_failure_raises(capsys):
    run.run(run.Script(inline="echo hidden"), tail_logs=False)
    assert "hidden" not in capsys.readouterr().out
    with pytest.raises(run.JobFailedError, match="exited with code 3"):
        run.run(run.Script(inline="exit 3"))


# -- dry runs -----------------------------------------------------------------------------------
def test_direct_dryrun_prints_0_11_1_table_and_masks_secrets(capsys, nemorun_home):
    CALLS.clear()
    result = run.run(run.Partial(train, lr=0.5, api_token="s3cr3t-value"), dryrun=True)
    out = capsys.readouterr().out
    assert f"Dry run for task {__name__}:train" in out and "Resolved Arguments" in out
    for text in ("Argument Name", "lr", "0.5", "steps", "3", "api_token"):
        assert text in out
    assert "s3cr3t-value" not in out and "s3cr3t-value" not in (result.dryrun or "")
    assert CALLS == [] and result.state == AppState.UNSUBMITTED
    assert files_under(nemorun_home) == []


def test_direct_dryrun_of_a_script_shows_the_command(capsys):
    result = run.run(run.Script("./train.sh", args=["--token", "abc123"]), dryrun=True)
    out = capsys.readouterr().out
    assert "Dry run for script train.sh" in out and "bash ./train.sh --token" in out
    assert "abc123" not in out and result.handle == ""


def test_executor_dryrun_prints_experiment_and_task_then_our_text(capsys, nemorun_home):
    result = run.run(run.Script(inline="echo hi"), executor=run.LocalExecutor(), dryrun=True)
    out = capsys.readouterr().out
    assert "dryrun..." in out and "Task inline" in out and 'bash -c "echo hi"' in out
    assert result.dryrun and 'bash -c "echo hi"' in result.dryrun
    assert files_under(nemorun_home) == []


# -- tail_logs ----------------------------------------------------------------------------------
def test_attached_run_streams_the_task_output_by_default(capsys):
    result = run.run(run.Script(inline="echo streamed-by-default"), executor=run.LocalExecutor())
    assert "streamed-by-default" in capsys.readouterr().out
    assert result.ok


def test_tail_logs_false_keeps_output_in_the_job_logs_only(capsys):
    result = run.run(
        run.Script(inline="echo kept-in-logs"), executor=run.LocalExecutor(), tail_logs=False
    )
    assert "kept-in-logs" not in capsys.readouterr().out
    assert job_log(result) == "kept-in-logs\n"


def test_detach_with_default_tail_logs_returns_a_handle():
    result = run.run(run.Script(inline="true"), executor=run.LocalExecutor(), detach=True)
    assert result.handle.startswith("local_persistent://")
    assert get_runner().wait_until_done(result.handle, timeout=20).state == AppState.SUCCEEDED


def test_bad_arguments_are_refused_before_anything_starts(nemorun_home):
    with pytest.raises(run.ConfigError, match="log_level='LOUD'"):
        run.run(run.Script(inline="true"), run.LocalExecutor(), log_level="LOUD")
    with pytest.raises(run.ConfigError, match=r"plugins\[0\] must be a run.Plugin"):
        run.run(run.Script(inline="true"), run.LocalExecutor(), plugins=["env"])  # type: ignore[list-item]
    with pytest.raises(run.ConfigError, match="must be a run.Script, run.Partial or run.Config"):
        run.run("echo hi")
    assert files_under(nemorun_home) == []


# -- run.Script ---------------------------------------------------------------------------------
def test_script_takes_its_path_positionally_with_0_11_1_defaults():
    script = run.Script("./train.sh")
    assert script.path == "./train.sh" and script.entrypoint == "bash"
    assert (script.args, script.env, script.m, script.metadata) == ([], {}, False, {})
    params = inspect.signature(run.Script).parameters
    assert list(params) == ["path", "inline", "args", "env", "entrypoint", "m", "metadata"]
    assert params["entrypoint"].default == "bash"
    assert run.Script("train.py").entrypoint == "python"  # a documented difference
    assert run.Script("train.py", entrypoint="bash").entrypoint == "bash"


def test_script_get_name():
    assert run.Script("./scripts/train.sh").get_name() == "train.sh"
    assert run.Script(inline='  echo "hi there"; ls').get_name() == "echo_hi_t"
    assert run.Script("pkg.mod", m=True).get_name() == "pkg.mod"


def test_script_to_command():
    assert run.Script("./x.sh", args=["a"]).to_command() == ["./x.sh", "a"]
    assert run.Script("./x.sh").to_command(with_entrypoint=True) == ["bash", "./x.sh"]
    module = run.Script("pkg.mod", entrypoint="python", m=True, args=["--a", "1"])
    assert module.to_command(with_entrypoint=True) == ["python", "-m", "pkg.mod", "--a", "1"]
    inline = run.Script(inline='echo "hi"')
    assert inline.to_command() == ["-c", '"echo \\"hi\\""']
    assert inline.to_command(with_entrypoint=True)[0] == "bash"


def test_script_to_command_writes_inline_text_to_a_file(tmp_path):
    script = run.Script(inline="cat /nemo_run/code/x")
    target = tmp_path / "scripts" / "job.sh"
    assert script.to_command(filename=str(target)) == ["/nemo_run/scripts/job.sh"]
    assert target.read_text() == "#!/usr/bin/bash\ncat /nemo_run/code/x"
    assert os.stat(target).st_mode & stat.S_IXUSR
    local = script.to_command(
        with_entrypoint=True, filename=str(target), is_local=True, substitute_rundir_path="/jobs/1"
    )
    assert local == ["bash", str(target)]
    assert target.read_text() == "#!/usr/bin/bash\ncat /jobs/1/code/x"


def test_script_refuses_m_without_python():
    with pytest.raises(run.ConfigError, match="m=True runs `python -m`"):
        run.Script("pkg.mod", m=True, entrypoint="bash")


def test_rundir_name():
    from nemo_run.config import RUNDIR_NAME
    from nemo_run.core.script import RUNDIR_NAME as SCRIPT_RUNDIR_NAME

    assert RUNDIR_NAME == SCRIPT_RUNDIR_NAME == BASE_RUNDIR_NAME == "nemo_run"


# -- run.Plugin ---------------------------------------------------------------------------------
@dataclass(kw_only=True)
class EnvPlugin(run.Plugin):
    value: str = "on"
    api_token: str = ""
    seen: list[str] = field(default_factory=list, repr=False)

    def setup(self, task, executor):
        self.seen.append(self.experiment_id)
        executor.env_vars["FROM_PLUGIN"] = self.value


class ArgsPlugin(run.Plugin):
    def setup(self, task, executor):
        if isinstance(task, run.Script):
            task.args.append("--from-plugin")
        else:
            task.lr = 0.9


class LauncherPlugin(run.Plugin):
    def setup(self, task, executor):
        executor.launcher = "torchrun"


@pytest.fixture
def fake_torchrun(tmp_path, monkeypatch):
    """A `torchrun` on PATH that says it ran and runs nothing (torch is not installed here)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    exe = folder / "torchrun"
    exe.write_text("#!/bin/sh\necho fake-torchrun\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_plugins_in_run_run_edit_env_and_args_not_the_callers_objects(capsys):
    executor = run.LocalExecutor()
    script = run.Script(inline='echo "env=$FROM_PLUGIN args=$*"')
    plugin = EnvPlugin(value="yes")
    result = run.run(script, executor=executor, plugins=[plugin, ArgsPlugin()], name="plug")
    assert job_log(result) == "env=yes args=--from-plugin\n"
    assert plugin.seen == [result.experiment_id] and plugin.experiment_id == result.experiment_id
    assert executor.env_vars == {} and script.args == []


def test_a_single_plugin_edits_a_partial(capsys):
    result = run.run(run.Partial(train), executor=run.LocalExecutor(), plugins=EnvPlugin())
    assert result.ok
    dry = run.run(
        run.Partial(train, lr=0.1), executor=run.LocalExecutor(), plugins=ArgsPlugin(), dryrun=True
    ).dryrun
    assert dry and "FROM_PLUGIN" not in dry  # only the plugin given applies
    partial = run.Partial(train, lr=0.1)
    exp = run.Experiment("partial-args")
    exp.add(partial, name="t", plugins=[ArgsPlugin()])
    assert exp._planned[0].tasks[0].lr == 0.9 and partial.lr == 0.1


def test_launcher_plugin(fake_torchrun, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.py").write_text("print('t')\n")
    dry = run.run(
        run.Script("./t.py"), executor=run.LocalExecutor(), plugins=[LauncherPlugin()], dryrun=True
    ).dryrun
    assert dry and "torchrun" in dry
    plain = run.run(run.Script("./t.py"), executor=run.LocalExecutor(), dryrun=True).dryrun
    assert plain and "torchrun" not in plain


def test_experiment_add_applies_plugins_and_a_reopened_experiment_lists_them(
    fake_torchrun, nemorun_home
):
    with run.Experiment("plugged") as exp:
        exp.add(
            run.Script(inline='echo "env=$FROM_PLUGIN"'),
            name="envs",
            plugins=[EnvPlugin(value="v1", api_token="tok-s3cr3t")],
        )
        exp.add(run.Script(inline="true"), name="launch", plugins=[LauncherPlugin()])
        exp.add(run.Script(inline="true"), name="bare")
        exp.run(tail_logs=False)
    status = exp.status(return_dict=True)
    assert {k: v["state"] for k, v in status.items()} == dict.fromkeys(
        ("envs", "launch", "bare"), "SUCCEEDED"
    )
    assert "".join(exp.log_lines("envs")) == "env=v1\n"
    assert "".join(exp.log_lines("launch")) == "fake-torchrun\n"

    reopened = run.Experiment.from_id(exp.id)
    plugins = reopened.plugins
    assert [p["type"] for p in plugins["envs"]] == [f"{__name__}.EnvPlugin"]
    assert plugins["envs"][0]["value"] == "v1" and plugins["envs"][0]["api_token"] == "***"
    assert plugins["envs"][0]["experiment_id"] == exp.id
    assert [p["type"] for p in plugins["launch"]] == [f"{__name__}.LauncherPlugin"]
    assert plugins["bare"] == []
    record = json.loads(open(os.path.join(exp.dir, EXPERIMENT_FILE)).read())
    assert record["tasks"][1]["executor"]["launcher"].startswith("Torchrun(")
    for path in files_under(nemorun_home):
        with open(path, "rb") as fh:
            assert b"tok-s3cr3t" not in fh.read(), path
