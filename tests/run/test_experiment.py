"""Experiments on real local processes, observed and controlled from other processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import nemo_run as run
from nemo_run.core.store import get_store
from nemo_run.exceptions import ConfigError, UnknownExperimentError
from tests.helpers import REPO, run_python, wait_for


def stamp(path) -> str:
    """Shell that appends '<event> <time>' lines to `path`."""
    return f'echo "start $(date +%s.%N)" >> "{path}"; sleep 0.05; echo "end $(date +%s.%N)" >> "{path}"'


def times(path) -> dict[str, float]:
    return {k: float(v) for k, v in (line.split() for line in path.read_text().splitlines())}


def test_dependents_start_after_dependencies_succeeded(tmp_path):
    with run.Experiment("deps") as exp:
        first = exp.add(run.Script(inline=stamp(tmp_path / "a")), name="a")
        exp.add(run.Script(inline=stamp(tmp_path / "b")), name="b", dependencies=[first])
        exp.add(run.Script(inline=stamp(tmp_path / "c")), name="c", dependencies=["b"])
        exp.run()
    a, b, c = times(tmp_path / "a"), times(tmp_path / "b"), times(tmp_path / "c")
    assert a["end"] <= b["start"] and b["end"] <= c["start"]
    assert {s["state"] for s in exp.status(return_dict=True).values()} == {"SUCCEEDED"}


def test_independent_tasks_run_in_parallel(tmp_path):
    # each waits for the other's marker: this only finishes if both run at the same time
    left, right = tmp_path / "left", tmp_path / "right"
    meet = 'touch "{me}"; for i in $(seq 400); do [ -e "{other}" ] && exit 0; sleep 0.025; done; exit 1'
    exp = run.Experiment("parallel")
    exp.add(run.Script(inline=meet.format(me=left, other=right)), name="l")
    exp.add(run.Script(inline=meet.format(me=right, other=left)), name="r")
    exp.run()
    assert [s["state"] for s in exp.status(return_dict=True).values()] == ["SUCCEEDED", "SUCCEEDED"]


def test_failed_dependency_skips_dependents_with_reason():
    exp = run.Experiment("fail")
    exp.add(run.Script(inline="exit 4"), name="bad")
    exp.add(run.Script(inline="true"), name="child", dependencies=["bad"])
    exp.add(run.Script(inline="true"), name="grandchild", dependencies=["child"])
    exp.add(run.Script(inline="true"), name="other")
    exp.run()
    status = exp.status(return_dict=True)
    assert status["bad"]["state"] == "FAILED" and status["bad"]["exit_code"] == 4
    assert status["child"] == {
        **status["child"],
        "state": "SKIPPED",
        "handle": None,
        "reason": "not run: dependency 'bad' ended FAILED",
    }
    assert status["grandchild"]["reason"] == "not run: dependency 'child' did not run"
    assert status["other"]["state"] == "SUCCEEDED"


def test_sequential_runs_in_add_order(tmp_path):
    exp = run.Experiment("seq")
    for name in ("x", "y"):
        exp.add(run.Script(inline=stamp(tmp_path / name)), name=name)
    exp.run(sequential=True)
    assert times(tmp_path / "x")["end"] <= times(tmp_path / "y")["start"]


def test_task_group_is_one_job_with_a_role_per_task():
    exp = run.Experiment("group")
    exp.add(
        [run.Script(inline="echo server"), run.Script(path="json.tool", m=True, args=["--help"])],
        name="pair",
    )
    exp.run()
    status = exp.status(return_dict=True)["pair"]
    assert status["state"] == "SUCCEEDED"
    lines = list(exp.log_lines("pair"))
    assert "[inline:0] server\n" in lines and any(line.startswith("[tool:0]") for line in lines)


def test_detached_experiment_reopened_in_another_process(tmp_path):
    gate = tmp_path / "gate"
    launcher = run_python(f"""
        import nemo_run as run
        exp = run.Experiment("reopen")
        exp.add(run.Script(inline='echo prepared'), name="prep")
        exp.add(run.Script(inline='while [ ! -e "{gate}" ]; do sleep 0.02; done; echo trained'),
                name="train", dependencies=["prep"])
        exp.add(run.Script(inline='echo never'), name="eval", dependencies=["train"])
        exp.run(detach=True)
        print(exp.id)
    """)
    exp_id = launcher.stdout.strip().splitlines()[-1]
    exp = run.Experiment.from_id(exp_id)
    assert run.Experiment.from_title("reopen").id == exp_id
    wait_for(
        lambda: exp.status(return_dict=True)["train"]["state"] == "RUNNING", what="train to start"
    )
    assert list(exp.log_lines("prep")) == ["prepared\n"]
    # cancel from a third process: the running task and the one still waiting for it
    run_python(f"""
        import nemo_run as run
        exp = run.Experiment.from_id("{exp_id}")
        exp.cancel("train")
        exp.cancel("eval")
    """)
    final = exp.wait(timeout=30)
    assert final["prep"]["state"] == "SUCCEEDED"
    assert final["train"]["state"] == "CANCELLED"
    assert final["eval"]["state"] in ("CANCELLED", "SKIPPED") and final["eval"]["handle"] is None


def test_bad_input_fails_before_anything_launches(nemorun_home):
    exp = run.Experiment("bad")
    exp.add(run.Script(inline="true"), name="a")
    assert exp.add(run.Script(inline="true"), name="a") == "a_1"  # 0.11.1: suffixed
    exp.add(run.Script(inline="true"), name="b", dependencies=["zzz"])
    with pytest.raises(
        ConfigError,
        match=r"'b' depends on 'zzz', which is not in the experiment \(tasks: 'a', 'a_1', 'b'\)",
    ):
        exp.run()
    cyc = run.Experiment("cycle")
    cyc.add(run.Script(inline="true"), name="p", dependencies=["q"])
    cyc.add(run.Script(inline="true"), name="q", dependencies=["p"])
    with pytest.raises(ConfigError, match="dependency cycle: p -> q -> p"):
        cyc.run()
    assert not (nemorun_home / "experiments").exists() and not (nemorun_home / "jobs.db").exists()
    with pytest.raises(UnknownExperimentError, match="no experiment with id 'nope'"):
        run.Experiment.from_id("nope")
    with pytest.raises(UnknownExperimentError, match="no experiment titled 'nope'"):
        run.Experiment.from_title("nope")


def test_unknown_task_id_lists_the_tasks():
    exp = run.Experiment("t")
    exp.add(run.Script(inline="true"), name="only")
    exp.run()
    with pytest.raises(UnknownExperimentError, match="has no task 'other'; its tasks: only"):
        exp.logs("other")


def test_wait_times_out_on_a_running_experiment(tmp_path):
    exp = run.Experiment("slow")
    exp.add(run.Script(inline=f'while [ ! -e "{tmp_path}/go" ]; do sleep 0.02; done'), name="w")
    exp.run(detach=True)
    with pytest.raises(TimeoutError):
        exp.wait(timeout=0.2)
    (tmp_path / "go").touch()
    assert exp.wait(timeout=30)["w"]["state"] == "SUCCEEDED"


def test_ctrl_c_cancels_running_jobs(tmp_path):
    started = tmp_path / "started"
    script = tmp_path / "attached.py"
    script.write_text(
        textwrap.dedent(f"""
        import nemo_run as run
        exp = run.Experiment("interrupt")
        exp.add(run.Script(inline='touch "{started}"; sleep 300'), name="long")
        exp.add(run.Script(inline='true'), name="after", dependencies=["long"])
        exp.run()
    """)
    )
    child = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(started.exists, what="the task to start")
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode != 0
    assert "Interrupted: cancelling the running jobs" in err and "Cancelled 1 job(s): long" in err
    [record] = get_store().list()
    assert record.state == "CANCELLED"
    exp = run.Experiment.from_title("interrupt")
    status = exp.status(return_dict=True)
    assert status["long"]["state"] == "CANCELLED"
    assert status["after"]["reason"] == "not run: experiment interrupted"


def test_experiment_files_hold_no_secret(tmp_path):
    exp = run.Experiment("secret")
    exp.add(
        run.Script(inline="true"),
        executor=run.LocalExecutor(env_vars={"WANDB_API_KEY": "wandb-7f3e9"}),
    )
    exp.run()
    blob = open(os.path.join(exp.dir, "experiment.json")).read()
    assert "wandb-7f3e9" not in blob and "WANDB_API_KEY" in blob
