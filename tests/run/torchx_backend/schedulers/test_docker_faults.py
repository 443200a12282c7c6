"""Docker faults: several processes finishing one job at once, and a launcher that died before
its containers started."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import nemo_run as run
from nemo_run.core.store import JobRecord, get_store
from nemo_run.run.torchx_backend.schedulers.api import (
    LAUNCH,
    LAUNCH_PENDING,
    LAUNCHER,
    NEVER_STARTED,
)
from nemo_run.run.torchx_backend.schedulers.docker import create_scheduler
from tests.helpers import REPO, wait_for
from tests.run.torchx_backend.schedulers.test_docker import app_id_of, containers_of, executor

pytestmark = pytest.mark.docker

FINISHER = """
import sys
from nemo_run.run.torchx_backend.schedulers.docker import create_scheduler
from torchx.specs import is_terminal
s = create_scheduler("finisher")
sys.stdin.readline()  # start together
while True:
    d = s.describe(sys.argv[1])
    if is_terminal(d.state):
        print(d.state.name)
        break
"""


def test_processes_finishing_one_job_together_never_crash_each_other(docker_image):
    result = run.run(
        run.Script(inline="sleep 2; for i in $(seq 1 2000); do echo line $i; done; echo err >&2"),
        executor=executor(docker_image, ntasks_per_node=2),
        name="race",
        detach=True,
    )
    app_id = app_id_of(result)
    wait_for(
        lambda: (
            all(c.attrs["State"]["Status"] == "exited" for c in containers_of(app_id))
            and containers_of(app_id)
        ),
        what="containers exited",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(FINISHER), app_id],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outcomes = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outcomes, strict=True):
        assert proc.returncode == 0 and "Traceback" not in err, err
        assert out.strip() == "SUCCEEDED"
    assert containers_of(app_id) == []
    record = get_store().get("docker_persistent", app_id)
    assert record.state == "SUCCEEDED"
    folder = record.log_dir
    for k in (0, 1):
        lines = open(f"{folder}/race/{k}/stdout.log").read().splitlines()
        assert lines[0] == "line 1" and lines[-1] == "line 2000"
    leftovers = subprocess.run(
        ["find", folder, "-name", "*.tmp*"], capture_output=True, text=True
    ).stdout
    assert leftovers == ""


def test_intent_of_a_launcher_that_died_before_starting_reads_failed(docker_image):
    dead = subprocess.Popen(["true"])
    dead.wait()
    get_store().put(
        JobRecord(
            "docker_persistent",
            "never-1",
            state="SUBMITTED",
            data={
                "containers": [
                    {
                        "name": "never-1-x-0",
                        "role": "x",
                        "replica_id": 0,
                        "image": docker_image,
                        "command": ["true"],
                    }
                ],
                LAUNCH: LAUNCH_PENDING,
                LAUNCHER: {"pid": dead.pid, "start_ticks": 1, "boot_id": ""},
            },
        )
    )
    desc = create_scheduler("t").describe("never-1")
    assert desc.state.name == "FAILED" and desc.msg == NEVER_STARTED
