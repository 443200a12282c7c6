"""The `nemorun` CLI driven as a subprocess, asserting on its JSON output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

NEMORUN = os.path.join(os.path.dirname(sys.executable), "nemorun")


def nemorun(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [NEMORUN, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == expect, f"exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_run_wait_then_inspect_everything():
    out = json.loads(
        nemorun(
            "run",
            "--wait",
            "--json",
            "--name",
            "hello",
            "--env",
            "WHO=cli",
            "--",
            "bash",
            "-c",
            'echo "hi $WHO"; echo other',
        ).stdout
    )
    assert out["state"] == "SUCCEEDED" and out["exit_code"] == 0
    exp_id, handle = out["experiment_id"], out["handle"]

    listed = json.loads(nemorun("experiment", "list", "--json").stdout)
    assert [e["id"] for e in listed] == [exp_id]
    status = json.loads(nemorun("experiment", "status", exp_id, "--json").stdout)
    assert status["tasks"]["hello"]["state"] == "SUCCEEDED"
    assert nemorun("experiment", "logs", exp_id, "hello").stdout == "hi cli\nother\n"
    assert nemorun("experiment", "status", "hello").returncode == 0  # a title means its latest

    jobs = json.loads(
        nemorun("job", "list", "--backend", "local", "--state", "succeeded", "--json").stdout
    )
    assert [j["handle"] for j in jobs] == [handle]
    assert json.loads(nemorun("job", "status", handle, "--json").stdout)["state"] == "SUCCEEDED"
    assert nemorun("job", "logs", handle, "--regex", "^hi").stdout == "hi cli\n"


def test_failed_job_gives_exit_status_1():
    out = json.loads(
        nemorun("run", "--wait", "--json", "--", "bash", "-c", "exit 9", expect=1).stdout
    )
    assert out["state"] == "FAILED" and out["exit_code"] == 9
    nemorun("job", "status", out["handle"], expect=1)
    nemorun("experiment", "status", out["experiment_id"], expect=1)


def test_detached_run_then_cancel_all():
    out = json.loads(nemorun("run", "--json", "--", "sleep", "300").stdout)
    assert out["state"] in ("RUNNING", "SUBMITTED")
    assert "sleep" in nemorun("experiment", "cancel", out["experiment_id"], "--all").stdout
    assert (
        json.loads(nemorun("job", "status", out["handle"], "--json", expect=1).stdout)["state"]
        == "CANCELLED"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("job", "status", "local_persistent://nemo_run/missing-1"),
        ("job", "logs", "local_persistent://nemo_run/missing-1"),
        ("job", "cancel", "local_persistent://nemo_run/missing-1"),
        ("job", "status", "not-a-handle"),
        ("experiment", "status", "missing-exp"),
        ("experiment", "cancel", "missing-exp", "--all"),
    ],
)
def test_unknown_things_exit_2_with_a_message(args):
    proc = nemorun(*args, expect=2)
    [line] = proc.stderr.splitlines()  # one line, never a traceback
    assert line.startswith("nemorun: ") and ("missing" in line or "not an app handle" in line)


def test_bad_executor_option_is_a_clear_error():
    proc = nemorun("run", "-o", "ntasks_per_node=0", "--", "true", expect=2)
    assert "ntasks_per_node must be an integer >= 1" in proc.stderr
    proc = nemorun("run", "-o", "colour=blue", "--", "true", expect=2)
    assert "--option for LocalExecutor" in proc.stderr and "colour" in proc.stderr


def test_help_shows_examples():
    assert "nemorun run -- python train.py" in nemorun("--help").stdout
    assert "Example: nemorun job logs HANDLE -f" in nemorun("job", "--help").stdout
    assert "Exit status" in nemorun("--help").stdout
