"""The sbatch script `batch_request(...).materialize()` renders, line by line, and once on the
real cluster when one answers."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import nemo_run as run
from nemo_run.core.execution.slurm import SlurmBatchRequest, SlurmExecutor, shell_value
from nemo_run.core.packaging.base import Packager
from nemo_run.exceptions import ConfigError
from nemo_run.run.torchx_backend.packaging import package
from nemo_run.run.torchx_backend.schedulers.slurm_batch import batch_request

JOB_DIR = "/remote/exp_1/task"


def secret_fn(api_token: str = "", steps: int = 1) -> None:
    """A task whose keyword argument looks secret."""


def _executor(**kwargs: Any) -> SlurmExecutor:
    kwargs.setdefault("packager", Packager())
    return SlurmExecutor(account="acct", partition="batch", **kwargs)


def _request(task: Any, ex: SlurmExecutor, name: str = "task") -> SlurmBatchRequest:
    return batch_request(package(name, task, ex), ex, JOB_DIR)


def _script(task: Any, ex: SlurmExecutor, name: str = "task") -> str:
    text = _request(task, ex, name).materialize()
    check = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr
    return text


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _srun(text: str) -> list[str]:
    return [line for line in _lines(text) if line.startswith(("srun ", "( export"))]


def test_plain_script() -> None:
    text = _script(run.Script(inline="echo hi"), _executor())
    lines = _lines(text)
    assert lines[0] == "#!/bin/bash"
    for line in (
        "#SBATCH --account=acct",
        "#SBATCH --partition=batch",
        "#SBATCH --job-name=acct-acct.task",
        "#SBATCH --time=00:10:00",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={JOB_DIR}/sbatch_acct-acct.task_%j.out",
    ):
        assert line in lines
    sbatch = [line for line in lines if line.startswith("#SBATCH")]
    assert sbatch == sorted(sbatch)  # as 0.11.1: sorted flags
    assert not any("--requeue" in x or "--dependency" in x or "--error" in x for x in sbatch)
    (srun,) = _srun(text)
    assert srun.startswith(
        f"srun --output {JOB_DIR}/log-acct-acct.task_%j_${{SLURM_RESTART_COUNT:-0}}.out "
        f"--chdir {JOB_DIR} --wait=60 --kill-on-bad-exit=1 "
    )
    assert "--container-image" not in srun
    assert srun.endswith("bash -c 'echo hi' inline")
    assert "exitcode=$?" in lines
    assert f'exit_file="{JOB_DIR}/exitcode_' in text
    assert 'scontrol requeue "$SLURM_JOB_ID"' in text


def test_partial_runs_the_payload_runner() -> None:
    text = _script(run.Partial(secret_fn, steps=3), _executor())
    (srun,) = _srun(text)
    assert "python -m nemo_run.core.runners.partial " in srun


def test_setup_lines_env_and_prefix() -> None:
    ex = _executor(env_vars={"FOO": "a b"}, setup_lines="module load cuda", job_name_prefix="pre-")
    lines = _lines(_script(run.Script(inline="echo hi"), ex))
    assert 'export FOO="a b"' in lines
    assert "module load cuda" in lines
    assert "#SBATCH --job-name=pre-task" in lines


def test_torchrun_two_nodes_meets_at_first_host() -> None:
    ex = _executor(nodes=2, ntasks_per_node=8, gpus_per_node=8, launcher="torchrun")
    text = _script(run.Script("train.py", args=["--lr", "1"]), ex)
    lines = _lines(text)
    assert "#SBATCH --nodes=2" in lines
    assert "#SBATCH --ntasks-per-node=1" in lines  # torchrun starts the 8 processes
    assert "#SBATCH --gpus-per-node=8" in lines
    assert 'head_node_ip=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)' in lines
    (srun,) = _srun(text)
    torchrun = srun[srun.index(" torchrun ") :]
    assert '--rdzv-endpoint "${head_node_ip}":29500' in torchrun
    assert "--nnodes 2 --nproc-per-node 8" in torchrun
    assert '--node-rank "${SLURM_NODEID}"' in torchrun
    assert torchrun.endswith("train.py --lr 1")
    # the shell on a node expands them to the head host and its own rank
    out = subprocess.run(
        ["bash", "-c", f"head_node_ip=node1; SLURM_NODEID=1; printf '%s\\n' {torchrun}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert "node1:29500" in out and out[out.index("--node-rank") + 1] == "1"


def test_fault_tolerance_launcher_files() -> None:
    ex = _executor(nodes=2, launcher="ft")
    text = _script(run.Script("train.py"), ex)
    assert f"export FAULT_TOL_CFG_PATH={JOB_DIR}/acct-acct.task_ft_cfg.yml" in text
    assert "ft_launcher --ignore-missing-fault-tol-cfg" in _srun(text)[0]


def test_container_flags() -> None:
    ex = _executor(
        container_image="nvcr.io/nvidia/pytorch:24.01",
        container_mounts=["/data:/data:ro"],
        container_env=["HF_HOME"],
        srun_args=["--mpi=pmix"],
    )
    (srun,) = _srun(_script(run.Script(inline="echo hi"), ex))
    assert "--container-image nvcr.io/nvidia/pytorch:24.01" in srun
    assert f"--container-mounts /data:/data:ro,{JOB_DIR}:/nemo_run" in srun
    assert "--container-workdir /nemo_run" in srun
    assert "--container-env HF_HOME" in srun
    assert "--chdir" not in srun
    assert "--kill-on-bad-exit=1 --mpi=pmix bash -c" in srun


def test_array_requeue_dependency_and_extra_flags() -> None:
    ex = _executor(
        array="0-3%2",
        retries=2,
        dependencies=["slurm_tunnel://nemo_run/123", "456"],
        dependency_type="afterany",
        exclusive=True,
        mem="16G",
        additional_parameters={"mail_type": "END"},
    )
    lines = _lines(_script(run.Script(inline="echo hi"), ex))
    for line in (
        "#SBATCH --array=0-3%2",
        f"#SBATCH --output={JOB_DIR}/sbatch_acct-acct.task_%A_%a.out",
        "#SBATCH --requeue",
        "#SBATCH --dependency=afterany:123:456",
        "#SBATCH --exclusive",
        "#SBATCH --mem=16G",
        "#SBATCH --mail-type=END",
        "export TORCHX_MAX_RETRIES=2",
    ):
        assert line in lines


def test_heterogeneous_group() -> None:
    one = _executor(container_image="img1", heterogeneous=True, env_vars={"A": "1"})
    two = _executor(container_image="img2", nodes=2, gpus_per_node=4, env_vars={"A": "2"})
    merged = SlurmExecutor.merge([one, two], 2)
    apps = [package("grp", run.Script(inline=f"echo {i}"), merged, f"r{i}") for i in (0, 1)]
    app = apps[0]
    app.roles = [apps[0].roles[0], apps[1].roles[0]]
    text = batch_request(app, merged, JOB_DIR).materialize()
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    lines = _lines(text)
    het = lines.index("#SBATCH hetjob")
    assert "#SBATCH --job-name=acct-acct.r0" in lines[:het]
    assert "#SBATCH --nodes=1" in lines[:het]
    assert "#SBATCH --nodes=2" in lines[het:]
    assert "#SBATCH --gpus-per-node=4" in lines[het:]
    assert "#SBATCH --job-name=acct-acct.r1" in lines[het:]
    sruns = _srun(text)
    assert "srun --het-group=0 " in sruns[0] and "--container-image img1" in sruns[0]
    assert "srun --het-group=1 " in sruns[1] and "--container-image img2" in sruns[1]
    assert sruns[0].startswith('( export A="1"; exec srun')  # each role keeps its own value
    assert sruns[1].startswith('( export A="2"; exec srun')
    assert any(x.startswith("het_group_host_1=$(scontrol show hostnames") for x in lines)
    assert '        wait "$pid"' in lines


def test_group_in_one_allocation() -> None:
    ex = SlurmExecutor.merge([_executor(wait_time_for_group_job=5)], 2)
    apps = [package("grp", run.Script(inline=f"echo {i}"), ex, f"r{i}") for i in (0, 1)]
    app = apps[0]
    app.roles = [apps[0].roles[0], apps[1].roles[0]]
    text = batch_request(app, ex, JOB_DIR).materialize()
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    assert "#SBATCH hetjob" not in text
    sruns = _srun(text)
    assert len(sruns) == 2 and all(s.endswith(" &") and "--overlap" in s for s in sruns)
    assert "sleep 5" in _lines(text)


def test_group_stops_the_rest_when_one_fails(tmp_path: Path) -> None:
    """The rendered wait loop, run with `srun` replaced by a shell function."""
    ex = SlurmExecutor.merge(
        [_executor(wait_time_for_group_job=0, monitor_group_job_wait_time=0)], 2
    )
    apps = [
        package("grp", run.Script(inline=s), ex, f"r{i}")
        for i, s in enumerate(["exit 3", "sleep 30"])
    ]
    app = apps[0]
    app.roles = [apps[0].roles[0], apps[1].roles[0]]
    text = batch_request(app, ex, str(tmp_path)).materialize()
    stub = 'srun() { while [ "${1#-}" != "$1" ]; do case "$1" in --output|--chdir) shift;; esac; shift; done; exec "$@"; }\n'
    body = text.replace("set -o pipefail", "set -o pipefail\n" + stub + "scontrol() { :; }")
    start = time.monotonic()
    done = subprocess.run(["bash", "-c", body], capture_output=True, text=True, timeout=20)
    assert done.returncode == 3 and time.monotonic() - start < 15
    files = list(tmp_path.glob("exitcode_*"))
    assert len(files) == 1 and files[0].read_text().strip() == "3"


def test_secrets_never_in_script() -> None:
    ex = _executor(env_vars={"MY_TOKEN": "env-sekrit", "PLAIN": "ok"}, container_image="img")
    task = run.Script("train.py", args=["--api-key", "arg-sekrit"])
    request = _request(task, ex)
    text = request.materialize()
    assert "env-sekrit" not in text and "arg-sekrit" not in text and "sekrit" not in repr(request)
    assert request.secret_env["MY_TOKEN"] == "env-sekrit"
    assert "arg-sekrit" in request.secret_env.values()
    assert 'export PLAIN="ok"' in text
    assert '[ -n "${MY_TOKEN+x}" ]' in text
    (srun,) = _srun(text)
    assert "--container-env MY_TOKEN,NEMORUN_ARG_" in srun
    assert '--api-key "${NEMORUN_ARG_' in srun


def test_secret_partial_kwarg_is_moved_out() -> None:
    request = _request(run.Partial(secret_fn, api_token="tok-sekrit-value"), _executor())
    text = request.materialize()
    payloads = list(request.secret_env.values())
    assert len(payloads) == 1 and payloads[0] not in text
    assert '"${NEMORUN_ARG_' in _srun(text)[0]


def test_refuses_unsafe_job_dir_and_bad_fields() -> None:
    task = run.Script(inline="echo hi")
    ex = _executor()
    with pytest.raises(ConfigError, match="job folder"):
        batch_request(package("t", task, ex), ex, "/a b/c")
    ex = _executor(time="soon")
    with pytest.raises(ConfigError, match="SlurmExecutor.time"):
        batch_request(package("t", task, ex), ex, JOB_DIR)


def _cluster_up() -> bool:
    if not shutil.which("sbatch") or os.geteuid() != 0:
        return False
    try:
        states = subprocess.run(
            ["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(s.strip().rstrip("*~#") in ("idle", "mix", "alloc") for s in states.split())


@pytest.mark.skipif(not _cluster_up(), reason="no local Slurm cluster answers")
def test_real_sbatch_runs_the_script(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    ex = SlurmExecutor(account="root", packager=Packager(), time="00:02:00")
    request = batch_request(
        package("t", run.Script(inline="echo hello-slurm"), ex), ex, str(job_dir)
    )
    script = job_dir / "sbatch.sh"
    script.write_text(request.materialize())
    done = subprocess.run(
        [*request.launch_cmd, str(script)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip().split(";")[0]
    exit_file = job_dir / f"exitcode_{job_id}"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not exit_file.exists():
            time.sleep(0.5)
        assert exit_file.exists(), f"job {job_id} did not finish in time"
        assert exit_file.read_text().strip() == "0"
        logs = list(job_dir.glob(f"log-*_{job_id}_0.out"))
        assert logs and "hello-slurm" in logs[0].read_text()
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=10)


@pytest.mark.parametrize(
    "value, seen",
    [
        ("$HOME/x", "/home/u/x"),  # expands on the node, as 0.11.1's unquoted exports did
        ("a b", "a b"),  # 0.11.1 exported `B=a b`: B=a, and an export of `b`
        ('q"uote', 'q"uote'),
        ("back`tick`", "back`tick`"),
        ("$(echo ran)", "$(echo ran)"),  # never runs
        ("it's", "it's"),
    ],
)
def test_exported_env_values_expand_variables_but_stay_whole(value, seen):
    out = subprocess.run(
        ["bash", "-c", f'export X={shell_value(value)}; printf %s "$X"'],
        capture_output=True,
        text=True,
        env={"HOME": "/home/u", "PATH": os.environ["PATH"]},
        check=True,
    ).stdout
    assert out == seen
