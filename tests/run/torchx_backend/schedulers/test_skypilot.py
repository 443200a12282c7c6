"""SkyPilot on the real stack: an API server driving a local Slurm cluster over loopback SSH.

One cluster per test run: the first job launches it, later ones reuse it with `sky.exec`.
`scripts/test.sh` sets the stack up (scripts/skypilot-up.sh) and exports its HOME.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading

import pytest
from torchx.specs import AppState, is_terminal, parse_app_handle

import nemo_run as run
from nemo_run.core.store import get_store
from tests.helpers import REPO, run_python, wait_for

pytestmark = pytest.mark.skypilot
INFRA = "slurm/localcluster"


@pytest.fixture(scope="module")
def cluster():
    """The cluster name, with HOME pointing the SDK at the local API server's settings."""
    home = os.environ.get("NEMORUN_TEST_SKY_HOME")
    reason = os.environ.get("NEMORUN_TEST_SKY_SKIP") or (
        None if home else "no SkyPilot stack was set up: run the tests through scripts/test.sh"
    )
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires the SkyPilot tests to run: {reason}")
        pytest.skip(f"SkyPilot tests skipped: {reason}")
    pytest.importorskip("sky", reason="the skypilot extra is not installed")
    name = f"nemo-test-{secrets.token_hex(3)}"
    subprocess.run(
        ["bash", os.path.join(REPO, "scripts", "skypilot-prepare-cluster.sh"), name],
        check=True,
        capture_output=True,
        text=True,
    )
    saved = os.environ.get("HOME")
    os.environ["HOME"] = home
    yield name
    import sky

    try:
        sky.get(sky.down(name))
    except Exception:  # noqa: BLE001 - already down (the last test takes it down itself)
        pass
    finally:
        if saved is not None:
            os.environ["HOME"] = saved


def executor(cluster: str, **kwargs) -> run.SkypilotExecutor:
    return run.SkypilotExecutor(
        infra=INFRA,
        cpus=1,
        memory=1,
        cluster_name=cluster,
        **{"packager": run.Packager(), **kwargs},
    )


def app_id_of(result: run.RunResult) -> str:
    return parse_app_handle(result.handle).app_id


def scheduler():
    from nemo_run.run.torchx_backend.schedulers.skypilot import create_scheduler

    return create_scheduler("t")


def test_success_with_output_and_logs_from_a_new_process(cluster):
    result = run.run(
        run.Script(inline='echo "hello from $SKYPILOT_NODE_RANK"'),
        executor=executor(cluster),
        name="hello",
    )
    assert result.ok
    app_id = app_id_of(result)
    assert get_store().get("skypilot", app_id).data["cluster"] == cluster
    out = run_python(
        f"""
        from nemo_run.run.torchx_backend.schedulers.skypilot import create_scheduler
        print("".join(create_scheduler("reader").log_iter("{app_id}", "hello")))
    """,
        env={**os.environ},
    ).stdout
    assert "hello from 0" in out


def test_failed_exit_code(cluster):
    with pytest.raises(run.JobFailedError, match="FAILED"):
        run.run(run.Script(inline="echo failing; exit 3"), executor=executor(cluster), name="bad")


def test_two_jobs_on_one_cluster(cluster):
    first = run.run(
        run.Script(inline="echo one"), executor=executor(cluster), name="one", detach=True
    )
    second = run.run(
        run.Script(inline="echo two"), executor=executor(cluster), name="two", detach=True
    )
    sched = scheduler()
    for result in (first, second):
        wait_for(
            lambda r=result: is_terminal(sched.describe(app_id_of(r)).state),
            timeout=180,
            what="a job",
        )
        assert sched.describe(app_id_of(result)).state == AppState.SUCCEEDED
    records = [get_store().get("skypilot", app_id_of(r)) for r in (first, second)]
    assert records[0].data["cluster"] == records[1].data["cluster"] == cluster
    assert records[0].data["remote_id"] != records[1].data["remote_id"]


def test_cancel_from_a_new_process(cluster):
    result = run.run(
        run.Script(inline="echo started; sleep 300"),
        executor=executor(cluster),
        name="long",
        detach=True,
    )
    app_id = app_id_of(result)
    sched = scheduler()
    wait_for(lambda: sched.describe(app_id).state == AppState.RUNNING, timeout=180, what="running")
    lines: list[str] = []
    done = threading.Event()

    def follow() -> None:
        lines.extend(scheduler().log_iter(app_id, "long", should_tail=True))
        done.set()

    threading.Thread(target=follow, daemon=True).start()
    wait_for(
        lambda: any("started" in line for line in lines),
        timeout=120,
        what="the first line, followed",
    )
    run_python(
        f"""
        from nemo_run.run.torchx_backend.schedulers.skypilot import create_scheduler
        create_scheduler("canceller").cancel("{app_id}")
    """,
        env={**os.environ},
    )
    assert sched.describe(app_id).state == AppState.CANCELLED
    assert done.wait(120), "following the logs did not end after the job was cancelled"
    assert [r.state for r in sched.list() if r.app_id == app_id] == [AppState.CANCELLED]


def test_describe_after_the_cluster_is_gone(cluster):
    """A finished job keeps its outcome; one recorded mid-run whose cluster the API server
    confirms gone ends CANCELLED with the reason (it cannot be running any more)."""
    import sky

    result = run.run(run.Script(inline="echo last"), executor=executor(cluster), name="last")
    app_id = app_id_of(result)
    sky.get(sky.down(cluster))
    assert scheduler().describe(app_id).state == AppState.SUCCEEDED
    get_store().update("skypilot", app_id, state="RUNNING")  # as if the last look had been mid-run
    desc = scheduler().describe(app_id)
    assert desc.state == AppState.CANCELLED and "no longer has the job" in desc.msg
