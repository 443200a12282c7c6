"""A script that launches at its top level is re-imported inside its own job (to find the
function of a Partial); the job must fail at once with the fix, never start a second job."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from nemo_run.core.store import get_store

UNGUARDED = """
import nemo_run as run

def train(lr: float = 0.1) -> None:
    print("training with", lr)

result = run.run(run.Partial(train, lr=0.5), executor=run.LocalExecutor())
print(result.handle, result.state)
"""

GUARDED = """
import nemo_run as run

def train(lr: float = 0.1) -> None:
    print("training with", lr)

if __name__ == "__main__":
    result = run.run(run.Partial(train, lr=0.5), executor=run.LocalExecutor())
    print(result.handle, result.state)
"""


def _run_script(tmp_path, text: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "launch.py"
    script.write_text(textwrap.dedent(text))
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )


def test_unguarded_launch_fails_inside_the_job_and_starts_no_second_job(tmp_path, nemorun_home):
    proc = _run_script(tmp_path, UNGUARDED)
    assert proc.returncode != 0
    records = get_store().list()
    assert len(records) == 1, [r.handle for r in records]
    assert records[0].state == "FAILED"
    stderr = next(
        nemorun_home.glob("experiments/train/*/train/nemo_run/*/train/0/stderr.log")
    ).read_text()
    assert 'if __name__ == "__main__":' in stderr
    assert "training with" not in stderr


def test_guarded_launch_runs_once(tmp_path):
    proc = _run_script(tmp_path, GUARDED)
    assert proc.returncode == 0, proc.stderr
    assert "SUCCEEDED" in proc.stdout
    assert [r.state for r in get_store().list()] == ["SUCCEEDED"]
