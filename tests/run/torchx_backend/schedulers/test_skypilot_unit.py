"""SkyPilot without a server: real sky.Task objects, their YAML, states and bad input."""

from __future__ import annotations

import logging

import pytest
from torchx.specs import AppState

import nemo_run as run
from nemo_run.exceptions import ConfigError

sky = pytest.importorskip("sky", reason="the skypilot extra is not installed")

from nemo_run.run.torchx_backend.schedulers.skypilot import SKYPILOT_STATES, state_of  # noqa: E402


def test_every_job_status_is_mapped_and_new_ones_read_unknown(caplog):
    assert {s.name for s in sky.JobStatus} == set(SKYPILOT_STATES)
    assert state_of(sky.JobStatus.FAILED_SETUP) == AppState.FAILED
    with caplog.at_level(logging.WARNING):
        assert state_of("PREEMPTED_IN_2030") == AppState.UNKNOWN
    assert "unmapped SkyPilot job state" in caplog.text


def test_a_real_task_round_trips_through_yaml(tmp_path):
    ex = run.SkypilotExecutor(
        infra="slurm/localcluster",
        gpus="H100",
        gpus_per_node=8,
        num_nodes=2,
        cpus="4+",
        setup="echo setup",
        file_mounts={"/data": str(tmp_path)},
        env_vars={"A": "1"},
    )
    task = ex.to_task("train", ["echo", "hi"], {"A": "1"})
    config = task.to_yaml_config()
    again = sky.Task.from_yaml_config(config)
    assert again.num_nodes == 2 and again.envs == {"A": "1"} and again.setup == "echo setup"
    [resources] = list(again.resources)
    assert (
        resources.accelerators == {"H100": 8} and resources.infra.to_str() == "slurm/localcluster"
    )
    assert again.file_mounts == {"/data": str(tmp_path)}
    assert again.run.endswith("\necho hi")


def test_dry_run_text_is_the_task_yaml_without_secrets():
    ex = run.SkypilotExecutor(
        infra="slurm/localcluster", env_vars={"HF_TOKEN": "hf-abc"}, packager=run.Packager()
    )
    result = run.run(run.Script(inline="echo hi"), executor=ex, dryrun=True)
    import yaml

    config = yaml.safe_load(result.dryrun)
    assert config["resources"]["infra"] == "slurm/localcluster"
    assert "echo hi" in config["run"] and "set -o pipefail" in config["run"]
    assert "hf-abc" not in result.dryrun and config["envs"]["HF_TOKEN"] == "***"


def test_older_cloud_region_zone_fields():
    ex = run.SkypilotExecutor(cloud="aws", region="us-east-1", zone="us-east-1a")
    [resources] = list(ex.to_resources())
    assert resources.infra.to_str() == "aws/us-east-1/us-east-1a"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpus": "8x H100"}, "is not an accelerator; write NAME or NAME:COUNT"),
        ({"num_nodes": 0}, "num_nodes must be an integer >= 1"),
        ({"infra": "aws", "cloud": "gcp"}, "either infra='aws' or cloud, not both"),
        ({"file_mounts": {"/remote": "/no/such/local/path"}}, "does not exist locally"),
        ({"gpus": "H100:8", "gpus_per_node": 4}, "has a count and gpus_per_node=4 gives another"),
    ],
)
def test_bad_input_before_any_request(kwargs, message):
    ex = run.SkypilotExecutor(packager=run.Packager(), **kwargs)  # as 0.11.1: checked at launch
    with pytest.raises(ConfigError, match=message):
        run.run(run.Script(inline="true"), executor=ex, dryrun=True)


class FakeSky:
    """The narrow seam of the SDK that reconciling a launch uses: queue, job_status, get."""

    def __init__(self, queue: list[dict], statuses: dict[int, object]) -> None:
        self._queue, self._statuses, self.calls = queue, statuses, []

    def get(self, value):
        return value

    def queue(self, cluster, all_users=False):
        self.calls.append(("queue", cluster))
        return self._queue

    def job_status(self, cluster, job_ids):
        self.calls.append(("job_status", cluster, tuple(job_ids)))
        return {j: self._statuses.get(j) for j in job_ids}


def _intent(app_id: str, launcher_pid: int, age: float = 0.0):
    import time

    from nemo_run.core.store import JobRecord, get_store
    from nemo_run.run.torchx_backend.schedulers.api import LAUNCH, LAUNCH_PENDING, LAUNCHER

    get_store().put(
        JobRecord(
            "skypilot",
            app_id,
            created_at=time.time() - age,
            data={
                "cluster": "c1",
                "nodes": 1,
                "role": "main",
                "run": "echo",
                LAUNCH: LAUNCH_PENDING,
                LAUNCHER: {"pid": launcher_pid, "start_ticks": 1, "boot_id": ""},
            },
        )
    )


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_launch_whose_launcher_died_is_found_on_its_cluster_by_name(monkeypatch):
    from nemo_run.core.clients import skypilot as sky_client
    from nemo_run.run.torchx_backend.schedulers import skypilot

    fake = FakeSky(
        [{"job_name": "sky-a", "job_id": 7, "status": sky.JobStatus.RUNNING}],
        {7: sky.JobStatus.RUNNING},
    )
    monkeypatch.setattr(sky_client, "import_sky", lambda: fake)
    _intent("sky-a", _dead_pid())
    desc = skypilot.create_scheduler("t").describe("sky-a")
    assert desc.state == AppState.RUNNING
    from nemo_run.core.store import get_store

    assert get_store().get("skypilot", "sky-a").data["remote_id"] == 7


def test_a_launch_never_made_reads_failed_after_the_grace_period(monkeypatch):
    from nemo_run.core.clients import skypilot as sky_client
    from nemo_run.run.torchx_backend.schedulers import skypilot

    monkeypatch.setattr(sky_client, "import_sky", lambda: FakeSky([], {}))
    _intent("sky-b", _dead_pid(), age=1.0)
    desc = skypilot.create_scheduler("t").describe("sky-b")  # may still be provisioning
    assert desc.state == AppState.SUBMITTED and "not confirmed yet" in desc.msg
    _intent("sky-c", _dead_pid(), age=skypilot.LAUNCH_GRACE_S + 1)
    desc = skypilot.create_scheduler("t").describe("sky-c")
    assert desc.state == AppState.FAILED and "never created" in desc.msg


def test_a_launch_in_progress_reads_submitted(monkeypatch):
    import os

    from nemo_run.core import processes
    from nemo_run.core.clients import skypilot as sky_client
    from nemo_run.run.torchx_backend.schedulers import skypilot

    fake = FakeSky([], {})
    monkeypatch.setattr(sky_client, "import_sky", lambda: fake)
    _intent("sky-d", os.getpid())
    from nemo_run.core.store import get_store

    record = get_store().get("skypilot", "sky-d")
    record.data["launcher"]["start_ticks"] = processes.proc_stat(os.getpid()).start_ticks
    record.data["launcher"]["boot_id"] = processes.boot_id()
    get_store().put(record)
    assert skypilot.create_scheduler("t").describe("sky-d").state == AppState.SUBMITTED
