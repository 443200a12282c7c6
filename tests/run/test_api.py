"""`run.run` end to end on real local processes."""

from __future__ import annotations

import os
import textwrap

import pytest
from torchx.specs import AppState

import nemo_run as run
from nemo_run.run.torchx_backend.runner import get_runner
from tests.helpers import run_python

LOCAL = run.LocalExecutor()


def logs(result: run.RunResult) -> str:
    return "".join(get_runner().log_lines(result.handle, result.roles[0], 0))


def test_success_returns_a_usable_handle():
    result = run.run(
        run.Script(inline="printf '%s\\n' \"a b\" 'c\"d' $'e\\tf'"), LOCAL, name="quotes"
    )
    assert result.ok and result.state == AppState.SUCCEEDED
    assert result.handle.startswith("local_persistent://nemo_run/quotes-")
    assert logs(result) == 'a b\nc"d\ne\tf\n'
    assert get_runner().status(result.handle).state == AppState.SUCCEEDED


def test_failure_raises_with_state_and_log_location():
    with pytest.raises(run.JobFailedError) as err:
        run.run(run.Script(inline="exit 7"), LOCAL, name="bad")
    assert err.value.state == "FAILED"
    assert "exited with code 7" in str(err.value) and "logs in" in str(err.value)


def test_detach_returns_while_running_and_dryrun_starts_nothing(tmp_path, nemorun_home):
    dry = run.run(run.Script(inline="true"), LOCAL, dryrun=True)
    assert dry.state == AppState.UNSUBMITTED and dry.handle == "" and "bash -c true" in dry.dryrun
    assert list(nemorun_home.iterdir()) == []
    gate = tmp_path / "gate"
    result = run.run(
        run.Script(inline=f'while [ ! -e "{gate}" ]; do sleep 0.02; done'), LOCAL, detach=True
    )
    assert result.state == AppState.RUNNING
    gate.touch()
    assert get_runner().wait_until_done(result.handle, timeout=20).state == AppState.SUCCEEDED


def test_tail_logs_prints_output(capsys):
    run.run(run.Script(inline="echo streamed-line"), LOCAL, tail_logs=True)
    assert "streamed-line" in capsys.readouterr().out


def test_partial_defined_in_a_main_script_runs_in_the_child(tmp_path):
    script = tmp_path / "launch.py"
    script.write_text(
        textwrap.dedent("""
        import nemo_run as run

        def train(lr=0.1):
            print(f"trained lr={lr}")

        if __name__ == "__main__":
            print("launcher main ran")
            result = run.run(run.Partial(train, lr=0.25), run.LocalExecutor())
            print(result.state.name)
    """)
    )
    out = run_python(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')").stdout
    assert out.count("launcher main ran") == 1  # the child did not run the main block again
    assert "SUCCEEDED" in out
    job_logs = [
        os.path.join(d, f)
        for d, _, fs in os.walk(os.environ["NEMORUN_HOME"])
        for f in fs
        if f == "stdout.log"
    ]
    assert any("trained lr=0.25" in open(p).read() for p in job_logs)


def test_direct_runs_in_process():
    calls = []
    result = run.run(run.Partial(calls.append, "x"), direct=True)
    assert calls == ["x"] and result.ok


def test_bad_arguments():
    with pytest.raises(run.ConfigError, match="executor must be a run.Executor"):
        run.run(run.Script(inline="true"), executor="local")
