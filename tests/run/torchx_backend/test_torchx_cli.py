"""torchx's own CLI drives our schedulers: run, status, log, list, cancel and runopts, each a
separate `torchx` process (as a user would type them) sharing one NEMORUN_HOME."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import wait_for

TORCHX = os.path.join(os.path.dirname(sys.executable), "torchx")
HANDLE = re.compile(r"^(\w+://[\w.-]+/[\w.-]+)$", re.MULTILINE)


@pytest.fixture
def cli(tmp_path: Path, nemorun_home: Path):
    """`cli(*args)`: run torchx in an empty folder (no .torchxconfig) with our NEMORUN_HOME."""
    env = {**os.environ, "NEMORUN_HOME": str(nemorun_home), "PYTHONUNBUFFERED": "1"}
    workdir = tmp_path / "cwd"
    workdir.mkdir()

    def run(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [TORCHX, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"torchx {args} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    run.env, run.cwd = env, workdir  # type: ignore[attr-defined]
    return run


def handle_in(text: str) -> str:
    match = HANDLE.search(text)
    assert match, f"no app handle in:\n{text}"
    return match.group(1)


def wait_state(cli, handle: str, state: str, timeout: float = 60) -> str:
    """Poll `torchx status` until it shows `state`; the last output."""

    def shown() -> str | None:
        out = cli("status", handle).stdout
        return out if re.search(rf"State: {state}\b", out) else None

    return wait_for(shown, timeout=timeout, what=f"{handle} to be {state}")


def start_detached_run(cli, *args: str) -> tuple[subprocess.Popen, str]:
    """`torchx run ...` in the background (the local scheduler makes it wait for the job);
    its process and the handle it printed."""
    out = Path(cli.cwd) / "run.out"
    with open(out, "w") as fh:
        proc = subprocess.Popen(
            [TORCHX, "run", *args],
            stdout=fh,
            stderr=subprocess.DEVNULL,
            env=cli.env,
            cwd=cli.cwd,
        )
    try:
        handle = wait_for(lambda: HANDLE.search(out.read_text()), what="the run's handle")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, handle.group(1)


def stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    """Wait for a process this test started; kill it (by its own pid) if it lingers."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(
            f"torchx run (pid {proc.pid}) still running after {timeout}s"
        ) from None


# -- local --------------------------------------------------------------------------------------
def test_local_run_status_log_list(cli):
    run = cli("run", "-s", "local_persistent", "utils.echo", "--msg", "hi")
    handle = handle_in(run.stdout)
    assert handle.startswith("local_persistent://torchx/echo-")
    assert "hi" in run.stderr  # torchx streams a local job's log while it waits

    wait_state(cli, handle, "SUCCEEDED")
    assert cli("log", handle).stdout.strip().endswith("hi")
    listed = cli("list", "-s", "local_persistent").stdout
    assert re.search(rf"{re.escape(handle)}\s+SUCCEEDED", listed)


def test_local_cancel(cli):
    proc, handle = start_detached_run(cli, "-s", "local_persistent", "utils.sh", "sleep", "60")
    try:
        wait_state(cli, handle, "RUNNING")
        cli("cancel", handle)
        wait_state(cli, handle, "CANCELLED", timeout=30)
    finally:
        code = stop(proc)
    assert code != 0  # torchx run exits non-zero for a job that did not succeed
    assert "CANCELLED" in cli("list", "-s", "local_persistent").stdout


def test_local_bad_option_value_names_the_field(cli):
    proc = cli(
        "run", "-s", "local_persistent", "-cfg", "ntasks_per_node=two", "utils.echo", check=False
    )
    assert proc.returncode != 0
    assert "LocalExecutor.ntasks_per_node must be an integer, got 'two'" in proc.stderr
    assert cli("list", "-s", "local_persistent").stdout.count("local_persistent://") == 0


def test_local_options_reach_the_executor_and_the_component(cli, tmp_path):
    job_dir = tmp_path / "jobs"
    cfg = f"job_dir={job_dir},env_vars=GREETING:hello"
    run = cli(
        "run", "-s", "local_persistent", "-cfg", cfg,
        "utils.sh", "--num_replicas", "2", "printenv", "GREETING",
    )  # fmt: skip
    handle = handle_in(run.stdout)
    assert (job_dir / "torchx" / handle.rsplit("/", 1)[1]).is_dir()  # <job_dir>/<session>/<id>
    assert cli("log", handle).stdout.count("hello") == 2  # both replicas got the variable


def test_local_replica_count_belongs_to_the_component(cli):
    proc = cli(
        "run", "-s", "local_persistent", "-cfg", "ntasks_per_node=2", "utils.echo", check=False
    )
    assert proc.returncode != 0
    assert "leave ntasks_per_node at 1 and pass the count to the component" in proc.stderr


def test_runopts_local_shows_the_derived_options_with_help(cli):
    out = cli("runopts", "local_persistent").stdout
    assert "ntasks_per_node=NTASKS_PER_NODE (int, 1)" in out
    assert "processes (ranks) started on this machine" in out
    assert "env_vars=ENV_VARS (typing.Dict[str, str], {})" in out
    assert "launcher=LAUNCHER (str, None)" in out
    assert "packager" not in out and "experiment_id" not in out


# -- remote backends: options only, no service needed --------------------------------------------
@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        (
            "dgx_cloud",
            [
                "required arguments:",
                "project_name=PROJECT_NAME (str)\n",
                "Run:ai project the workload runs in",
                "pvcs=PVCS (str, None)",
                "[JSON]",
                "timeout=TIMEOUT (float, 30.0)",
                "client_secret=CLIENT_SECRET (str, None)",
            ],
        ),
        (
            "lepton",
            [
                "required arguments:",
                "container_image=CONTAINER_IMAGE (str)\n",
                "nemo_run_dir=NEMO_RUN_DIR (str)\n",
                "shared_memory_size=SHARED_MEMORY_SIZE (int, 65536)",
                "shared memory per replica, in MiB",
            ],
        ),
        (
            "skypilot",
            [
                "num_nodes=NUM_NODES (int, 1)",
                "cpus=CPUS (str, None)",
                "ports=PORTS (typing.List[str], None)",
                "use_spot=USE_SPOT (bool, None)",
                "accelerator: NAME or NAME:COUNT",
            ],
        ),
    ],
)
def test_runopts_remote_backends(cli, backend, expected):
    out = cli("runopts", backend).stdout
    assert out.startswith(backend) or f"{backend}" in out.splitlines()[0]
    for text in expected:
        assert text in out, f"{text!r} not in:\n{out}"


def test_runopts_of_a_secret_shows_no_required_and_no_default(cli):
    out = cli("runopts", "dgx_cloud").stdout
    required = out.split("required arguments:")[1].split("optional arguments:")[0]
    assert "client_secret" not in required
    secret = re.search(r"client_secret=CLIENT_SECRET \((.*)\)\n\s+(.*)", out)
    assert secret and secret.group(1) == "str, None" and "secret" in secret.group(2)


# -- Docker -------------------------------------------------------------------------------------
@pytest.mark.docker
def test_docker_run_status_log_list(cli, docker_image):
    run = cli(
        "run", "-s", "docker_persistent", "-cfg", f"container_image={docker_image}",
        "utils.echo", "--msg", "hi",
    )  # fmt: skip
    handle = handle_in(run.stdout)
    assert handle.startswith("docker_persistent://torchx/echo-")
    wait_state(cli, handle, "SUCCEEDED")
    assert cli("log", handle).stdout.strip().endswith("hi")
    listed = cli("list", "-s", "docker_persistent").stdout
    assert re.search(rf"{re.escape(handle)}\s+SUCCEEDED", listed)


@pytest.mark.docker
def test_docker_cancel(cli, docker_image):
    run = cli(
        "run", "-s", "docker_persistent", "-cfg", f"container_image={docker_image}",
        "utils.sh", "sleep", "60",
    )  # fmt: skip
    handle = handle_in(run.stdout)
    wait_state(cli, handle, "RUNNING")
    started = time.monotonic()
    cli("cancel", handle)
    wait_state(cli, handle, "CANCELLED", timeout=30)
    assert time.monotonic() - started < 30


@pytest.mark.docker
def test_docker_without_image_is_refused_naming_the_option(cli, docker_image):
    proc = cli("run", "-s", "docker_persistent", "utils.echo", check=False)
    assert proc.returncode != 0
    assert "container_image" in proc.stderr


@pytest.mark.docker
def test_runopts_docker(cli, docker_image):
    out = cli("runopts", "docker_persistent").stdout
    assert "required arguments:" in out
    assert "container_image=CONTAINER_IMAGE (str)\n" in out
    assert "GPUs per container; -1 for all" in out
    assert "image_repo" not in out  # torchx's workspace options do not apply
