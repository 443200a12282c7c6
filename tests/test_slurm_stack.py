"""The local Slurm stack of scripts/slurm-up.sh does what the Slurm backend's tests need:
jobs submitted through the ssh login node end up in accounting, one `sacct` call reports
several of them with their exit codes, and (with 2 nodes) a 2-node job runs a task per node.
Skips without the stack (see tests/slurm_stack.py)."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import wait_for
from tests.slurm_stack import SlurmStack, slurm_stack

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}


@pytest.fixture(scope="module")
def stack() -> SlurmStack:
    return slurm_stack()


def login(stack: SlurmStack, command: str, timeout: float = 30) -> str:
    """Run `command` (a shell line) on the login node as its user; its stdout."""
    proc = subprocess.run(stack.ssh_argv(command), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{command!r} failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


def submit(stack: SlurmStack, options: str, script: str) -> str:
    """sbatch through the login node; the job id."""
    out = login(stack, f"sbatch --parsable -p {stack.partition} {options} --wrap '{script}'")
    return out.strip().split(";")[0]


def sacct_rows(stack: SlurmStack, job_ids: list[str], fields: str) -> dict[str, list[str]]:
    """One sacct call for all `job_ids` (allocations and steps): JobID -> the other fields."""
    out = login(stack, f"sacct -n -P -j {','.join(job_ids)} -o JobID,{fields}")
    return {row[0]: row[1:] for row in (line.split("|") for line in out.splitlines() if line)}


def wait_finished(stack: SlurmStack, job_ids: list[str], fields: str) -> dict[str, list[str]]:
    """Poll sacct until every job's allocation is in a terminal state (the first field
    requested must be State)."""

    def done() -> dict[str, list[str]]:
        rows = sacct_rows(stack, job_ids, fields)
        states = [rows.get(j, ["?"])[0].split()[0] for j in job_ids]
        return rows if all(s in TERMINAL for s in states) else {}

    return wait_for(done, 90, f"jobs {job_ids} to finish in sacct")


def test_one_sacct_call_reports_each_jobs_state_and_exit_code(stack):
    failed = submit(stack, "-o /dev/null", "exit 3")
    ok = submit(stack, "-o /dev/null", "true")
    rows = wait_finished(stack, [failed, ok], "State,ExitCode,User")
    assert rows[failed] == ["FAILED", "3:0", stack.ssh_user]
    assert rows[ok] == ["COMPLETED", "0:0", stack.ssh_user]
    # still there when asked again, alone (accounting keeps finished jobs)
    assert sacct_rows(stack, [failed], "State,ExitCode")[failed] == ["FAILED", "3:0"]


def test_sacct_knows_the_cluster_partition_and_nodes(stack):
    nodes = login(stack, f"sinfo -h -N -p {stack.partition} -o %N").split()
    assert len(set(nodes)) == stack.nodes
    clusters = login(stack, "sacctmgr -n -P list cluster format=cluster").split()
    assert stack.cluster in clusters


def test_two_node_job_runs_one_task_per_node(stack):
    if stack.nodes < 2:
        pytest.skip(f"the stack has {stack.nodes} node(s)")
    script = 'srun -l bash -c "echo \\$SLURMD_NODENAME \\$(hostname)"'
    job = submit(stack, "-N 2 --ntasks-per-node=1 -o nemorun-stack-%j.out", script)
    rows = wait_finished(stack, [job], "State,ExitCode,NNodes")
    try:
        out = login(stack, f"cat nemorun-stack-{job}.out")
    finally:
        login(stack, f"rm -f nemorun-stack-{job}.out")
    assert rows[job] == ["COMPLETED", "0:0", "2"], rows
    tasks = [line.split(": ", 1)[1].split() for line in out.splitlines() if ": " in line]
    assert len({node for node, _ in tasks}) == 2, out
    if stack.own_hostnames:
        assert all(node == host for node, host in tasks), out
    assert rows[f"{job}.0"][:2] == ["COMPLETED", "0:0"], rows
