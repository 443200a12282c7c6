"""Slurm jobs on the real local cluster of scripts/slurm-up.sh, through a LocalTunnel (this
host is the login node) and an SSHTunnel (the stack's loopback sshd)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from torchx.specs import AppState

import nemo_run as run
from nemo_run.core.store import get_store
from nemo_run.core.store.records import REMOTE_ID
from nemo_run.exceptions import ConfigError
from nemo_run.run.torchx_backend.runner import get_runner
from nemo_run.run.torchx_backend.schedulers import slurm
from tests.helpers import wait_for
from tests.run.torchx_backend.schedulers.test_multinode import assert_met, job_env, ship_standin
from tests.slurm_stack import SlurmStack, slurm_stack

TIMEOUT_S = 120.0


@pytest.fixture
def stack(monkeypatch) -> SlurmStack:
    monkeypatch.setenv("NEMORUN_REMOTE_POLL", "0.2,1.5,1")
    return slurm_stack()


@pytest.fixture(params=["local", "ssh"])
def tunnel_kind(request) -> str:
    return request.param


def job_root(stack: SlurmStack) -> str:
    """A fresh folder the cluster's user (and this host) can write: the ssh user's home."""
    home = stack.base / "skyuser-home"
    root = home / "nemo_run_tests" / uuid.uuid4().hex[:8]
    root.mkdir(parents=True)
    os.chmod(root, 0o777)
    os.chmod(root.parent, 0o777)
    return str(root)


def executor(stack: SlurmStack, kind: str, **kwargs) -> run.SlurmExecutor:
    root = job_root(stack)
    if kind == "local":
        tunnel = run.LocalTunnel(job_dir=root)
    else:
        tunnel = run.SSHTunnel(
            host=stack.ssh_host,
            user=stack.ssh_user,
            port=stack.ssh_port,
            identity=str(stack.ssh_key),
            job_dir=root,
        )
    kwargs.setdefault("packager", run.Packager())
    return run.SlurmExecutor(
        account=stack.account, partition=stack.partition, tunnel=tunnel, time="00:05:00", **kwargs
    )


def record_of(handle: str):
    return get_store().get(slurm.BACKEND, handle.rsplit("/", 1)[-1])


def wait_state(handle: str, wanted: set[AppState], timeout: float = TIMEOUT_S) -> AppState:
    deadline = time.monotonic() + timeout
    runner = get_runner()
    while True:
        state = runner.status(handle).state
        if state in wanted or time.monotonic() > deadline:
            return state
        time.sleep(0.2)  # polling the cluster's answer, with a deadline


def sacct_times(job_id: str) -> tuple[datetime, datetime]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "Start,End"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    start, end = out.split("|")
    return datetime.fromisoformat(start), datetime.fromisoformat(end)


def test_a_script_succeeds_and_its_output_reads_back(stack, tunnel_kind):
    ex = executor(stack, tunnel_kind)
    with run.Experiment("slurm-ok") as exp:
        exp.add(run.Script(inline="echo hello-from-slurm; hostname"), executor=ex, name="hi")
        exp.run()
        status = exp.status(return_dict=True)["hi"]
    assert status["status"] == AppState.SUCCEEDED, status
    handle = status["handle"]
    record = record_of(handle)
    assert record.data[REMOTE_ID].isdigit() and record.data["tunnel"]["kind"] == tunnel_kind
    lines = list(get_runner().log_lines(handle, "hi", 0))
    assert any("hello-from-slurm" in line for line in lines), lines
    # the script stays in the job folder, with no secret in the record
    assert os.path.exists(record.data["script"])
    # 0.11.1's status keys: where the job runs, and its folder on the cluster
    assert status["executor"] == f"SlurmExecutor on {ex.tunnel.user}@{ex.tunnel.host}"
    assert status["remote_dir"].startswith(ex.tunnel.job_dir)


def test_a_failure_reads_failed_with_its_exit_code(stack):
    ex = executor(stack, "ssh")
    with run.Experiment("slurm-fail") as exp:
        exp.add(run.Script(inline="echo about-to-fail; exit 3"), executor=ex, name="bad")
        exp.run()
        status = exp.status(return_dict=True)["bad"]
    assert status["status"] == AppState.FAILED
    resp = get_runner().status(status["handle"])
    assert "exit code 3" in resp.msg, resp.msg


def test_no_secret_reaches_the_script_or_the_record(stack):
    ex = executor(stack, "ssh", env_vars={"HF_TOKEN": "hf-very-secret-123"})
    script = 'echo "token-length-${#HF_TOKEN}"'  # names the value nowhere
    with run.Experiment("slurm-secret") as exp:
        exp.add(run.Script(inline=script), executor=ex, name="sec")
        exp.run()
        status = exp.status(return_dict=True)["sec"]
    assert status["status"] == AppState.SUCCEEDED
    record = record_of(status["handle"])
    lines = list(get_runner().log_lines(status["handle"], "sec", 0))
    assert any("token-length-18" in line for line in lines), lines
    assert "hf-very-secret-123" not in Path(record.data["script"]).read_text()
    assert "hf-very-secret-123" not in repr(record.data)


SECOND_PROCESS = textwrap.dedent(
    """
    import sys, time
    from nemo_run.run.torchx_backend.runner import get_runner
    handle, action = sys.argv[1], sys.argv[2]
    runner = get_runner()
    if action == "describe":
        print("STATE", runner.status(handle).state.name)
    elif action == "tail":
        for line in runner.log_lines(handle, "loop", 0, should_tail=True):
            print("LINE", line.rstrip(), flush=True)
    elif action == "cancel":
        runner.cancel(handle)
        print("STATE", runner.status(handle).state.name)
    """
)


def in_another_process(handle: str, action: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, handle, action],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=os.environ.copy(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_describe_tail_and_cancel_from_other_processes(stack):
    ex = executor(stack, "ssh")
    loop = "for i in $(seq 1 300); do echo tick-$i; sleep 0.2; done"
    with run.Experiment("slurm-later") as exp:
        exp.add(run.Script(inline=loop), executor=ex, name="loop")
        exp.run(detach=True)
        handle = exp.status(return_dict=True)["loop"]["handle"]
    assert wait_state(handle, {AppState.RUNNING}) == AppState.RUNNING
    assert "STATE RUNNING" in in_another_process(handle, "describe")
    tail = subprocess.Popen(
        [sys.executable, "-c", SECOND_PROCESS, handle, "tail"],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert tail.stdout is not None
    first = tail.stdout.readline()
    assert first.startswith("LINE tick-"), first
    assert "STATE CANCELLED" in in_another_process(handle, "cancel")
    out, _ = tail.communicate(timeout=60)  # the follower ends with the job
    assert tail.returncode == 0
    assert "tick-" in out
    assert in_another_process(handle, "cancel").strip() == "STATE CANCELLED"  # again: fine


def test_a_dependency_chain_runs_in_order_without_a_driver(stack):
    ex = executor(stack, "ssh")
    with run.Experiment("slurm-chain") as exp:
        first = exp.add(run.Script(inline="sleep 2; echo one"), executor=ex, name="one")
        second = exp.add(
            run.Script(inline="echo two"), executor=ex, name="two", dependencies=[first]
        )
        exp.add(run.Script(inline="echo three"), executor=ex, name="three", dependencies=[second])
        exp.run(detach=True)
        statuses = exp.status(return_dict=True)
    handles = [statuses[t]["handle"] for t in ("one", "two", "three")]
    assert all(handles), statuses  # all submitted at once: Slurm holds the dependents
    record = exp._current_record()
    assert not record.driver or record.driver.get("pid") == os.getpid()
    for handle in handles:
        assert wait_state(handle, {AppState.SUCCEEDED, AppState.FAILED}) == AppState.SUCCEEDED
    ids = [record_of(h).data[REMOTE_ID] for h in handles]
    times = [sacct_times(i) for i in ids]
    assert times[0][1] <= times[1][0] and times[1][1] <= times[2][0], times


def test_a_dependent_of_a_failed_job_does_not_run(stack):
    ex = executor(stack, "ssh")
    with run.Experiment("slurm-chain-fail") as exp:
        first = exp.add(run.Script(inline="exit 1"), executor=ex, name="one")
        exp.add(run.Script(inline="echo never"), executor=ex, name="two", dependencies=[first])
        exp.run()  # attached: must not wait forever on the dependent
        statuses = exp.status(return_dict=True)
    assert statuses["one"]["status"] == AppState.FAILED
    assert statuses["two"]["status"] in (AppState.CANCELLED, AppState.UNKNOWN), statuses


def test_an_array_job(stack):
    ex = executor(stack, "ssh", array="0-2")
    with run.Experiment("slurm-array") as exp:
        exp.add(run.Script(inline='echo "task-$SLURM_ARRAY_TASK_ID"'), executor=ex, name="arr")
        exp.run()
        status = exp.status(return_dict=True)["arr"]
    assert status["status"] == AppState.SUCCEEDED, status
    lines = list(get_runner().log_lines(status["handle"], "arr", 2))
    assert any("task-2" in line for line in lines), lines


def test_a_failed_attempt_is_retried_by_a_requeue(stack):
    ex = executor(stack, "ssh", retries=1)
    marker = f"{ex.tunnel.job_dir}/attempted"
    script = f"if [ -e {marker} ]; then echo second-try; else touch {marker}; exit 5; fi"
    exp = run.Experiment("slurm-retry", enable_goodbye_message=False)
    exp.add(run.Script(inline=script), executor=ex, name="retry")
    exp.run(detach=True)

    def ended() -> dict | None:
        # Slurm holds a requeued batch job for 120 s (its BeginTime); as an admin would,
        # release it at once so the test does not wait out the hold
        held = subprocess.run(
            ["squeue", "-h", "-t", "PENDING", "-o", "%i %r"], capture_output=True, text=True
        ).stdout.split("\n")
        for line in held:
            if line.endswith(" BeginTime"):
                job = line.split()[0]
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=False)
        row = exp.status(return_dict=True)["retry"]
        return row if row["status"] in (AppState.SUCCEEDED, AppState.FAILED) else None

    status = wait_for(ended, timeout=90, what="the requeued job to end")
    assert status["status"] == AppState.SUCCEEDED, status
    assert os.path.exists(marker)


def test_a_missing_partition_fails_the_dry_run(stack):
    ex = executor(stack, "ssh")
    ex.partition = "no-such-partition"
    with pytest.raises(ConfigError) as info:
        run.run(run.Script(inline="echo x"), executor=ex, dryrun=True)
    assert "no-such-partition" in str(info.value)


def test_the_code_is_shipped_once_and_the_job_runs_in_it(stack, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "marker.txt").write_text("shipped-code-marker\n")
    for argv in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *argv], cwd=repo, check=True
        )
    monkeypatch.chdir(repo)
    ex = executor(stack, "ssh", packager=run.GitArchivePackager())
    with run.Experiment("slurm-code") as exp:
        exp.add(run.Script(inline="cat marker.txt"), executor=ex, name="a")
        exp.add(run.Script(inline="cat marker.txt"), executor=ex, name="b")
        exp.run()
        statuses = exp.status(return_dict=True)
    for task in ("a", "b"):
        assert statuses[task]["status"] == AppState.SUCCEEDED, statuses
        lines = list(get_runner().log_lines(statuses[task]["handle"], task, 0))
        assert any("shipped-code-marker" in line for line in lines), lines
    archives = list(Path(ex.tunnel.job_dir).rglob("code_*.tar.gz"))
    assert len(archives) == 1, archives  # once per experiment


def test_two_nodes_meet_at_the_head_node(stack):
    """A 2-node torchrun job (2 processes per node): every rank meets at the endpoint the
    launcher rendered (`$head_node_ip`, the allocation's first host). The stack's two slurmd
    share this machine, so a node is told apart by its slurmd name."""
    if stack.nodes < 2:
        pytest.skip(f"the local Slurm cluster has {stack.nodes} node(s); a 2-node job needs 2")
    standin = ship_standin(Path(job_root(stack)))
    ex = executor(
        stack,
        "local",
        nodes=2,
        ntasks_per_node=2,
        launcher="torchrun",
        env_vars=job_env(standin),
    )
    task = run.Script(path=f"{standin}/rendezvous_check.py", entrypoint="python")
    result = run.run(task, executor=ex, name="meet")
    lines = list(get_runner().log_lines(result.handle, "meet", 0))
    assert result.ok, lines
    assert sorted(assert_met(lines)) == ["node1", "node2"]


LAUNCH_AND_HANG = textwrap.dedent(
    """
    import sys
    import nemo_run as run
    root, account, partition = sys.argv[1:4]
    ex = run.SlurmExecutor(
        account=account, partition=partition, time="00:05:00",
        tunnel=run.LocalTunnel(job_dir=root), packager=run.Packager(),
    )
    run.run(run.Script(inline="sleep 2; echo survived"), executor=ex, name="killed", detach=True)
    """
)


def test_a_launcher_killed_once_sbatch_answered_leaves_a_true_record(stack):
    """kill -9 of the launching process the moment Slurm has the job (its id file exists):
    the job is in the store, and describe from this process follows it to its real end."""
    root = job_root(stack)
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCH_AND_HANG, root, stack.account, stack.partition],
        env=os.environ.copy(),
    )
    id_file = wait_for(
        lambda: next(Path(root).rglob(slurm.JOB_ID_FILE), None), timeout=60, what="sbatch"
    )
    os.kill(launcher.pid, 9)
    launcher.wait()
    job_id = wait_for(lambda: id_file.read_text().strip(), timeout=10, what="the job id")
    records = [r for r in get_store().list(backend=slurm.BACKEND) if "killed" in r.app_id]
    assert len(records) == 1, records  # no job runs without a record
    handle = records[0].handle
    assert wait_state(handle, {AppState.SUCCEEDED, AppState.FAILED}) == AppState.SUCCEEDED
    assert str(record_of(handle).data[REMOTE_ID]) == job_id
