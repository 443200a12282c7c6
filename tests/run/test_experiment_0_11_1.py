"""`run.Experiment` as nemo-run 0.11.1 documents it, plus the two asked-for extensions:
`reset(skip_succeeded=True)` and dependencies on another experiment's job (any backend)."""

from __future__ import annotations

import inspect
import logging

import pytest
from torchx.specs import AppState

import nemo_run as run
from nemo_run.exceptions import ConfigError, JobFailedError
from nemo_run.run.job import Job, JobGroup


def count_runs(path) -> str:
    """Shell that appends one line to `path` per run."""
    return f'echo run >> "{path}"'


def runs(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def write_line(path: str, text: str) -> None:
    with open(path, "a") as f:
        f.write(text + "\n")


def states(exp: run.Experiment) -> dict[str, str]:
    return {tid: row["state"] for tid, row in exp.status(return_dict=True).items()}


# -- signatures and constructor ---------------------------------------------------------------
def test_signatures_match_0_11_1():
    params = inspect.signature(run.Experiment.__init__).parameters
    assert list(params)[1:] == [
        "title",
        "executor",
        "id",
        "log_level",
        "_reconstruct",
        "jobs",
        "base_dir",
        "clean_mode",
        "enable_goodbye_message",
        "threadpool_workers",
        "skip_status_at_exit",
        "serialize_metadata_for_scripts",
    ]
    defaults = {n: p.default for n, p in params.items()}
    assert defaults["log_level"] == "INFO" and defaults["threadpool_workers"] == 16
    assert defaults["enable_goodbye_message"] is True and defaults["clean_mode"] is False
    add = list(inspect.signature(run.Experiment.add).parameters)
    assert add[1:] == ["task", "executor", "name", "plugins", "tail_logs", "dependencies"]
    assert list(inspect.signature(run.Experiment.dryrun).parameters)[1:] == [
        "log",
        "exist_ok",
        "delete_exp_dir",
    ]
    assert list(inspect.signature(run.Experiment.logs).parameters)[1:3] == ["job_id", "regex"]
    assert list(inspect.signature(run.Experiment.cancel).parameters)[1:] == ["job_id"]
    assert "direct" in inspect.signature(run.Experiment.run).parameters


def test_constructor_defaults_and_bad_values():
    exp = run.Experiment("ctor")
    assert isinstance(exp.executor, run.LocalExecutor)  # 0.11.1 defaults to a LocalExecutor
    assert exp.jobs == [] and exp.tasks == []
    with pytest.raises(ConfigError, match="log_level must be one of"):
        run.Experiment("x", log_level="LOUD")
    with pytest.raises(ConfigError, match="threadpool_workers must be a positive int"):
        run.Experiment("x", threadpool_workers=0)
    with pytest.raises(ConfigError, match="clean_mode must be True or False"):
        run.Experiment("x", clean_mode="yes")
    with pytest.raises(ConfigError, match="executor must be a run.Executor"):
        run.Experiment("x", executor="local")


def test_jobs_argument_and_views():
    script = run.Script(inline="true")
    exp = run.Experiment(
        "views",
        jobs=[
            Job(id="one", task=script, executor=run.LocalExecutor()),
            JobGroup(id="pair", tasks=[script, script], executors=[run.LocalExecutor()]),
        ],
    )
    assert [j.id for j in exp.jobs] == ["one", "pair"]
    assert isinstance(exp.jobs[1], JobGroup) and exp.jobs[0].state == AppState.UNSUBMITTED
    assert exp.tasks[0] is not None and len(exp.tasks[1]) == 2


# -- add ----------------------------------------------------------------------------------
def test_repeated_name_is_suffixed_with_a_warning(caplog):
    exp = run.Experiment("dup")
    with caplog.at_level(logging.WARNING, logger="nemo_run"):
        assert exp.add(run.Script(inline="true"), name="a") == "a"
        assert exp.add(run.Script(inline="true"), name="a") == "a_1"
        assert exp.add(run.Script(inline="true"), name="a") == "a_2"
    assert "already has a task named 'a'; this one is named 'a_1'" in caplog.text
    exp.run()
    assert states(exp) == {"a": "SUCCEEDED", "a_1": "SUCCEEDED", "a_2": "SUCCEEDED"}
    dirs = {row["job_dir"] for row in exp.status(return_dict=True).values()}
    assert len(dirs) == 3  # each its own job folder (0.11.1 shared one)


def test_add_tail_logs_prints_that_task_only(capfd):
    exp = run.Experiment("tail", enable_goodbye_message=False)
    exp.add(run.Script(inline="echo loud-task"), name="loud", tail_logs=True)
    exp.add(run.Script(inline="echo quiet-task"), name="quiet")
    exp.run()
    out = capfd.readouterr().out
    assert "loud-task" in out and "quiet-task" not in out


# -- run, status, logs, cancel --------------------------------------------------------------
def test_run_status_logs_and_goodbye(capsys):
    with run.Experiment("basic") as exp:
        exp.add(run.Script(inline="echo hello-a"), name="a")
        exp.add(run.Script(inline="exit 3"), name="b")
        exp.run()
    out = capsys.readouterr().out
    assert f'run.Experiment.from_id("{exp.id}")' in out  # the goodbye message
    assert states(exp) == {"a": "SUCCEEDED", "b": "FAILED"}
    exp.logs("a")
    assert "hello-a" in capsys.readouterr().out
    exp.logs(job_id="a", regex="nothing-matches")
    assert "hello-a" not in capsys.readouterr().out
    assert exp.cancel(job_id="a") == ["a"]  # already ended: acted on, stays SUCCEEDED
    assert states(exp)["a"] == "SUCCEEDED"


def test_clean_mode_prints_no_goodbye_nor_status(capsys):
    with run.Experiment("quiet", clean_mode=True) as exp:
        exp.add(run.Script(inline="true"), name="a")
        exp.run()
    assert exp.id not in capsys.readouterr().out


def test_direct_runs_in_this_process_in_dependency_order(tmp_path):
    exp = run.Experiment("direct")
    exp.add(run.Script(inline=f'echo second >> "{tmp_path}/order"'), name="b", dependencies=["a"])
    exp.add(run.Script(inline=f'echo first >> "{tmp_path}/order"'), name="a")
    exp.run(direct=True)
    assert (tmp_path / "order").read_text().split() == ["first", "second"]
    failing = run.Experiment("direct-fail")
    failing.add(run.Script(inline="exit 5"), name="bad")
    with pytest.raises(JobFailedError, match="exit code 5"):
        failing.run(direct=True)


# -- dryrun, catalog, to_config -----------------------------------------------------------
def test_dryrun_log_false_prints_nothing_and_writes_nothing(capsys, nemorun_home):
    exp = run.Experiment("dry")
    exp.add(run.Script(inline="echo hi"), name="a")
    texts = exp.dryrun(log=False, exist_ok=True, delete_exp_dir=False)
    assert set(texts) == {"a"} and capsys.readouterr().out == ""
    exp.dryrun()
    assert "# task a" in capsys.readouterr().out
    assert not (nemorun_home / "experiments").exists()
    with pytest.raises(ConfigError, match="exist_ok must be True or False"):
        exp.dryrun(exist_ok="no")


def test_catalog_lists_titles_and_ids():
    first = run.Experiment("cat", enable_goodbye_message=False)
    first.add(run.Script(inline="true"), name="a")
    first.run()
    second = run.Experiment("cat", enable_goodbye_message=False)
    second.add(run.Script(inline="true"), name="a")
    second.run()
    assert run.Experiment.catalog("cat") == [first.id, second.id]
    assert run.Experiment.catalog() == ["cat"]
    assert run.Experiment.catalog("none-such") == []


def test_to_config_builds_an_equal_experiment():
    import fiddle as fdl

    exp = run.Experiment("cfg", log_level="debug", threadpool_workers=4)
    cfg = exp.to_config()
    built = fdl.build(cfg)
    assert isinstance(built, run.Experiment)
    assert (built.title, built.id, built.log_level, built.threadpool_workers) == (
        "cfg",
        exp.id,
        "DEBUG",
        4,
    )
    assert isinstance(built.executor, run.LocalExecutor)


# -- reset ----------------------------------------------------------------------------------
def test_reset_reruns_everything_by_default(tmp_path):
    exp = run.Experiment("reset", enable_goodbye_message=False)
    exp.add(run.Script(inline=count_runs(tmp_path / "ok")), name="ok")
    exp.add(run.Script(inline=count_runs(tmp_path / "bad") + "; exit 1"), name="bad")
    exp.run()
    old_id = exp.id
    assert exp.reset() is exp and exp.id != old_id
    exp.run()
    assert runs(tmp_path / "ok") == 2 and runs(tmp_path / "bad") == 2
    assert run.Experiment.from_id(old_id).status(return_dict=True)["ok"]["state"] == "SUCCEEDED"


def test_reset_skip_succeeded_reruns_only_what_did_not_succeed(tmp_path):
    flag = tmp_path / "fixed"
    exp = run.Experiment("rerun", enable_goodbye_message=False)
    exp.add(run.Script(inline=count_runs(tmp_path / "prep")), name="prep")
    flaky = f'{count_runs(tmp_path / "train")}; [ -e "{flag}" ]'
    exp.add(run.Script(inline=flaky), name="train", dependencies=["prep"])
    exp.add(run.Script(inline=count_runs(tmp_path / "eval")), name="eval", dependencies=["train"])
    exp.run()
    assert states(exp) == {"prep": "SUCCEEDED", "train": "FAILED", "eval": "SKIPPED"}
    prep_handle = exp.status(return_dict=True)["prep"]["handle"]
    flag.touch()
    exp.reset(skip_succeeded=True)
    assert [j.id for j in exp.jobs] == ["train", "eval"]
    assert exp.jobs[0].dependencies == [prep_handle]  # met at once: prep already SUCCEEDED
    exp.run()
    assert states(exp) == {"train": "SUCCEEDED", "eval": "SUCCEEDED"}
    assert (runs(tmp_path / "prep"), runs(tmp_path / "train"), runs(tmp_path / "eval")) == (1, 2, 1)
    with pytest.raises(ConfigError, match="nothing to rerun"):
        exp.reset(skip_succeeded=True)


def test_reset_before_run_and_of_a_reopened_experiment(caplog):
    exp = run.Experiment("r2", enable_goodbye_message=False)
    exp.add(run.Script(inline="true"), name="a")
    with caplog.at_level(logging.WARNING, logger="nemo_run"):
        assert exp.reset() is exp
    assert "has not run yet" in caplog.text
    exp.run()
    assert states(exp) == {"a": "SUCCEEDED"}


def test_reopened_experiment_resets_and_runs_again_from_its_folder(tmp_path, monkeypatch):
    """0.11.1's way to relaunch: `Experiment.from_id(id).reset()` then `run()`, in a later
    process; secret env values were not saved, and come from the environment then."""
    out = tmp_path / "out.txt"
    monkeypatch.setenv("HF_TOKEN", "tok-at-launch")
    exp = run.Experiment("again", executor=run.LocalExecutor(env_vars={"A": "1"}))
    exp.add(
        run.Script(inline=f'echo "$A $HF_TOKEN $0" >> "{out}"', env={"HF_TOKEN": "tok-at-launch"}),
        name="first",
    )
    exp.add(run.Script(inline="exit 3"), name="second", dependencies=["first"])
    exp.run()
    saved = list((tmp_path / "home").glob("**/tasks.json"))
    assert saved
    for path in saved:
        assert "tok-at-launch" not in path.read_text()
        assert path.stat().st_mode & 0o777 == 0o600

    monkeypatch.setenv("HF_TOKEN", "tok-at-reset")
    again = run.Experiment.from_id(exp.id).reset(skip_succeeded=False)
    assert again.id != exp.id
    again.run()
    assert states(again) == {"first": "SUCCEEDED", "second": "FAILED"}
    assert out.read_text().splitlines()[-1].startswith("1 tok-at-reset")

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(ConfigError, match=r"HF_TOKEN is not set.*export"):
        run.Experiment.from_id(again.id).reset()


def test_reopened_reset_refuses_a_secret_argument_it_could_not_save():
    exp = run.Experiment("argsecret", enable_goodbye_message=False)
    exp.add(run.Script(inline="true", args=["--api-key", "k-123"]), name="a")
    exp.run()
    with pytest.raises(ConfigError, match="held a secret, which was not saved"):
        run.Experiment.from_id(exp.id).reset()


def test_reopened_partial_task_reruns_with_skip_succeeded(tmp_path):
    exp = run.Experiment("partials", enable_goodbye_message=False)
    exp.add(run.Partial(write_line, path=str(tmp_path / "p.txt"), text="x"), name="ok")
    exp.add(run.Script(inline="exit 1"), name="bad")
    exp.run()
    again = run.Experiment.from_id(exp.id).reset(skip_succeeded=True)
    again.run()
    assert set(states(again)) == {"bad"}  # only what did not succeed
    assert (tmp_path / "p.txt").read_text() == "x\n"


# -- dependencies on another experiment's job -----------------------------------------------
def finished_handle(title: str, inline: str) -> str:
    exp = run.Experiment(title, enable_goodbye_message=False)
    exp.add(run.Script(inline=inline), name="up")
    exp.run()
    return exp.status(return_dict=True)["up"]["handle"]


def test_dependency_on_another_experiments_succeeded_job_runs(tmp_path):
    handle = finished_handle("upstream", "true")
    exp = run.Experiment("downstream", enable_goodbye_message=False)
    exp.add(run.Script(inline=count_runs(tmp_path / "down")), name="down", dependencies=[handle])
    exp.run()
    assert states(exp) == {"down": "SUCCEEDED"} and runs(tmp_path / "down") == 1


def test_dependency_on_another_experiments_failed_job_skips_with_reason(tmp_path):
    handle = finished_handle("upstream-bad", "exit 2")
    exp = run.Experiment("downstream-bad", enable_goodbye_message=False)
    exp.add(run.Script(inline=count_runs(tmp_path / "down")), name="down", dependencies=[handle])
    exp.run()
    row = exp.status(return_dict=True)["down"]
    assert (
        row["state"] == "SKIPPED" and row["reason"] == f"not run: dependency {handle} ended FAILED"
    )
    assert runs(tmp_path / "down") == 0


def test_dependency_on_a_running_job_waits_for_it(tmp_path):
    go = tmp_path / "go"
    up = run.Experiment("up-running", enable_goodbye_message=False)
    up.add(run.Script(inline=f'while [ ! -e "{go}" ]; do sleep 0.02; done'), name="up")
    up.run(detach=True)
    handle = up.status(return_dict=True)["up"]["handle"]
    down = run.Experiment("down-waiting", enable_goodbye_message=False)
    down.add(run.Script(inline="true"), name="down", dependencies=[handle])
    down.run(detach=True)  # a detached driver waits on the other experiment's job
    assert states(down)["down"] == "WAITING"
    go.touch()
    assert down.wait(timeout=30)["down"]["state"] == "SUCCEEDED"


def test_bad_external_dependencies_fail_before_anything_starts(nemorun_home):
    exp = run.Experiment("bad-ext")
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        exp.add(run.Script(inline="true"), name="a", dependencies=["nope://s/x"])
    exp.add(run.Script(inline="true"), name="a", dependencies=["local_persistent://nemo_run/x-1"])
    with pytest.raises(ConfigError, match="which the job store does not know"):
        exp.run()
    assert not (nemorun_home / "experiments").exists()


def test_a_task_that_cannot_be_saved_still_runs_and_reset_says_why():
    from pathlib import Path

    exp = run.Experiment("unsaveable", enable_goodbye_message=False)
    exp.add(run.Script(inline="true", metadata={"where": Path("/data")}), name="a")
    exp.run()
    assert states(exp) == {"a": "SUCCEEDED"}
    with pytest.raises(ConfigError, match=r"task a could not be saved \(ConfigError: .*PosixPath"):
        run.Experiment.from_id(exp.id).reset()
