"""Every CLI error is one line on stderr with a documented exit status; odd records never break it."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import nemo_run as run
from nemo_run.core.store import JobRecord, get_store
from nemo_run.exceptions import StoreError
from tests.helpers import REPO


def cli(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    """`nemorun ARGS` in a fresh interpreter (NEMORUN_HOME comes from the test's environment)."""
    proc = subprocess.run(
        [sys.executable, "-m", "nemo_run.cli.nemorun", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == expect, f"exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single `nemorun: ...` line the command wrote to stderr."""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nemorun: "), proc.stderr
    return lines[0]


def write_experiment(home, folder_title: str, exp_id: str, content) -> str:
    folder = home / "experiments" / folder_title / exp_id
    folder.mkdir(parents=True)
    path = folder / "experiment.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def record(home, exp_id: str, title: str, tasks: list, **extra) -> dict:
    return {
        "id": exp_id,
        "title": title,
        "dir": str(home / "experiments" / title / exp_id),
        "created_at": 1.0,
        "tasks": tasks,
        "driver": {},
        "launch_done": True,
        **extra,
    }


# -- 1. records written by another version ---------------------------------------------------
def test_list_and_lookup_survive_other_versions_files(nemorun_home):
    write_experiment(
        nemorun_home, "t", "t_1", record(nemorun_home, "t_1", "t", None, driver=None, colour="red")
    )
    broken = [
        write_experiment(nemorun_home, "t", "t_2", "{oops"),
        write_experiment(nemorun_home, "t", "t_3", "[]"),
        write_experiment(nemorun_home, "u", "u_1", {"title": "u"}),
    ]
    proc = cli("experiment", "list", "--json")
    assert [e["id"] for e in json.loads(proc.stdout)] == ["t_1"]
    warnings = proc.stderr.splitlines()
    assert all(line.startswith("nemorun: warning: ") for line in warnings)
    for path in broken:
        assert sum(path in line for line in warnings) == 1
    assert any("colour" in line for line in warnings)
    status = json.loads(cli("experiment", "status", "t_1", "--json").stdout)
    assert status["tasks"] == {}
    assert cli("experiment", "status", "t").returncode == 0
    assert "t_2" in one_line(cli("experiment", "status", "t_2", expect=2))


def test_a_job_row_with_unreadable_data(nemorun_home):
    store = get_store()
    for app_id in ("good-1", "bad-1"):
        store.put(
            JobRecord(
                backend="local_persistent", app_id=app_id, state="SUCCEEDED", data={"exit_code": 0}
            )
        )
    with sqlite3.connect(store.location) as conn:
        conn.execute("UPDATE jobs SET data = '{torn' WHERE app_id = 'bad-1'")
    status = cli("job", "status", "local_persistent://nemo_run/bad-1", "--json")
    assert json.loads(status.stdout)["state"] == "SUCCEEDED"
    warning = one_line(status)
    assert "local_persistent" in warning and "bad-1" in warning
    assert {r.app_id: r.data for r in store.list()} == {"good-1": {"exit_code": 0}, "bad-1": {}}
    assert len(json.loads(cli("job", "list", "--json").stdout)) == 2


def test_a_task_without_a_job_record_reads_unknown(nemorun_home):
    exp = run.Experiment("two")
    exp.add(run.Script(inline="true"), name="kept")
    exp.add(run.Script(inline="true"), name="lost")
    exp.run()
    lost = exp.status(return_dict=True)["lost"]["handle"]
    assert get_store().delete("local_persistent", lost.rsplit("/", 1)[1])
    tasks = json.loads(cli("experiment", "status", exp.id, "--json").stdout)["tasks"]
    assert tasks["kept"]["state"] == "SUCCEEDED"
    assert tasks["lost"]["state"] == "UNKNOWN"
    assert tasks["lost"]["reason"] == f"no record of {lost} in the job store {get_store().location}"


# -- 2. empty or unknown ids ------------------------------------------------------------------
def test_an_empty_id_never_picks_an_experiment(nemorun_home):
    exp = run.Experiment("victim")
    exp.add(run.Script(inline="sleep 300"), name="long")
    exp.run(detach=True)
    try:
        for args in (
            ["experiment", "cancel", "", "--all"],
            ["experiment", "cancel", "  ", "long"],
            ["experiment", "status", ""],
            ["experiment", "logs", " ", "long"],
            ["experiment", "list", ""],
        ):
            assert "empty" in one_line(cli(*args, expect=2))
        assert "no experiment" in one_line(cli("experiment", "cancel", "vict", "--all", expect=2))
        assert exp.status(return_dict=True)["long"]["state"] == "RUNNING"
    finally:
        exp.cancel()


# -- 4. markup in names is shown as written -------------------------------------------------
def test_markup_in_names_is_printed_literally(nemorun_home):
    title = "[link=http://x]t[/link]"  # another version may have allowed '/' in a title
    write_experiment(nemorun_home, "odd", "odd_1", record(nemorun_home, "odd_1", title, []))
    assert title in cli("experiment", "list").stdout
    tasks = [
        {"id": "[bold red]x", "backend": "local_persistent", "roles": ["x"], "skipped": "[red]why"}
    ]
    write_experiment(nemorun_home, "[b]t", "odd_2", record(nemorun_home, "odd_2", "[b]t", tasks))
    status = cli("experiment", "status", "odd_2", expect=1).stdout
    assert "[bold red]x" in status and "[red]why" in status
    get_store().put(
        JobRecord(backend="local_persistent", app_id="[b]j", experiment_id="[i]e", state="FAILED")
    )
    listed = cli("job", "list").stdout
    assert "local_persistent://nemo_run/[b]j" in listed and "[i]e" in listed


def test_states_keep_their_colour():
    from nemo_run.run.render import state_text

    assert state_text("FAILED").style == "red" and state_text("[x]").plain == "[x]"


# -- 5. one line, documented exit status ------------------------------------------------------
@pytest.mark.parametrize(
    "option, words",
    [
        ("env_vars=5", ["env_vars", "5"]),
        ("colour=blue", ["colour", "LocalExecutor"]),
        ("ntasks_per_nod=2", ["ntasks_per_nod", "did you mean 'ntasks_per_node'"]),
        ('ntasks_per_node="two"', ["ntasks_per_node"]),
    ],
)
def test_bad_executor_options(option, words):
    line = one_line(cli("run", "-o", option, "--", "true", expect=2))
    assert all(w in line for w in words), line


@pytest.mark.parametrize("command", ["status", "logs", "cancel"])
def test_unknown_backend_in_a_handle(command):
    line = one_line(cli("job", command, "nosuch://s/x", expect=2))
    assert "nosuch" in line and "local_persistent://" in line


def test_unknown_state_suggests_the_close_one():
    line = one_line(cli("job", "list", "--state", "RUNNNING", expect=2))
    assert "did you mean RUNNING?" in line and "SUCCEEDED" in line
    assert "unknown backend ''" in one_line(cli("job", "list", "--backend", "", expect=2))


def test_a_bad_regex_is_refused_before_reading(nemorun_home):
    out = json.loads(
        cli(
            "run",
            "--wait",
            "--json",
            "--name",
            "two",
            "-o",
            "ntasks_per_node=2",
            "--",
            "echo",
            "hi",
        ).stdout
    )
    assert "regex" in one_line(cli("job", "logs", "--regex", "(", out["handle"], expect=2))
    assert "regex" in one_line(
        cli("experiment", "logs", "--regex", "(", out["experiment_id"], "two", expect=2)
    )
    assert sorted(cli("job", "logs", out["handle"]).stdout.splitlines()) == [
        "[two:0] hi",
        "[two:1] hi",
    ]


def test_a_reader_thread_error_reaches_the_consumer(monkeypatch):
    from nemo_run.run import job
    from nemo_run.run.torchx_backend.runner import get_runner

    exp = run.Experiment("threads")
    exp.add(run.Script(inline="echo hi"), name="two", executor=run.LocalExecutor(ntasks_per_node=2))
    exp.run()
    handle = exp.status(return_dict=True)["two"]["handle"]
    runner = get_runner()
    real = runner.log_lines

    def failing(handle: str, role: str, k: int = 0, **kwargs):
        if k == 1:
            raise RuntimeError("replica 1 unreadable")
        return real(handle, role, k, **kwargs)

    monkeypatch.setattr(runner, "log_lines", failing)
    with pytest.raises(RuntimeError, match="replica 1 unreadable"):
        list(job.job_log_lines(handle))


def invoke(args: list[str], env: dict[str, str] | None = None):
    from nemo_run.cli.nemorun import app

    return CliRunner().invoke(app, args, env=env)


def test_an_unexpected_error_is_one_line_unless_debugging(monkeypatch):
    def boom(handle: str) -> dict:
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr("nemo_run.run.job.job_status", boom)
    result = invoke(["job", "status", "local_persistent://nemo_run/x"])
    assert result.exit_code == 2
    assert result.stderr == "nemorun: error: RuntimeError: kaboom second line\n"
    result = invoke(["job", "status", "local_persistent://nemo_run/x"], env={"NEMORUN_DEBUG": "1"})
    assert isinstance(result.exception, RuntimeError)


def test_a_store_that_does_not_answer_exits_3(monkeypatch):
    def locked(handle: str) -> dict:
        raise StoreError("job store /x/jobs.db stayed locked for 30 s")

    monkeypatch.setattr("nemo_run.run.job.job_status", locked)
    result = invoke(["job", "status", "local_persistent://nemo_run/x"])
    assert (result.exit_code, result.stderr) == (
        3,
        "nemorun: job store /x/jobs.db stayed locked for 30 s\n",
    )


def test_help_documents_the_exit_codes():
    text = cli("--help").stdout
    assert "Exit status" in text and "3" in text and "backend or the store did not answer" in text


# -- 6. a backend that does not answer --------------------------------------------------------
def test_job_status_reports_an_unanswered_describe(monkeypatch):
    from torchx.schedulers.api import DescribeAppResponse
    from torchx.specs import AppState

    from nemo_run.run.job import job_status
    from nemo_run.run.torchx_backend.schedulers.api import unanswered
    from nemo_run.run.torchx_backend.schedulers.local import PersistentLocalScheduler

    get_store().put(JobRecord(backend="local_persistent", app_id="quiet-1", state="SUBMITTED"))

    def describe(self, app_id: str) -> DescribeAppResponse:
        return unanswered(
            DescribeAppResponse(app_id=app_id, state=AppState.SUBMITTED), "timed out after 30 s"
        )

    monkeypatch.setattr(PersistentLocalScheduler, "describe", describe)
    status = job_status("local_persistent://nemo_run/quiet-1")
    assert status["unanswered"] == "timed out after 30 s" and status["state"] == "SUBMITTED"


def test_cli_says_the_backend_is_not_answering(monkeypatch):
    status = {
        "handle": "dgx_cloud://nemo_run/j",
        "backend": "dgx_cloud",
        "app_id": "j",
        "state": "SUBMITTED",
        "msg": "backend not answering: timed out",
        "num_restarts": 0,
        "job_dir": None,
        "experiment_id": None,
        "started_at": None,
        "ended_at": None,
        "exit_code": None,
        "unanswered": "timed out",
    }
    monkeypatch.setattr("nemo_run.run.job.job_status", lambda handle: status)
    result = invoke(["job", "status", "dgx_cloud://nemo_run/j"])
    assert result.exit_code == 3
    assert result.stderr == (
        "nemorun: dgx_cloud backend not answering: timed out; last recorded state SUBMITTED\n"
    )
    result = invoke(["job", "status", "dgx_cloud://nemo_run/j", "--json"])
    assert result.exit_code == 3 and json.loads(result.stdout)["unanswered"] == "timed out"


# -- 7. logs whose folder vanished ------------------------------------------------------------
def test_logs_of_a_deleted_job_folder(nemorun_home):
    out = json.loads(cli("run", "--wait", "--json", "--name", "gone", "--", "echo", "hi").stdout)
    job_dir = json.loads(cli("job", "status", out["handle"], "--json").stdout)["job_dir"]
    shutil.rmtree(job_dir)
    expected = (
        f"nemorun: the logs of {out['handle']} are gone: its folder {job_dir} no longer exists"
    )
    assert one_line(cli("job", "logs", out["handle"], expect=1)) == expected
    assert one_line(cli("experiment", "logs", out["experiment_id"], "gone", expect=1)) == expected
