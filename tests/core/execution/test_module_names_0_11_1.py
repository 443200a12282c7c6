"""Module-level names code written for nemo-run 0.11.1 imports from the executor and scheduler
modules (constants, loggers, re-exports), and the executors' job calls by app id (SkyPilot's
`parse_app`/`cancel`/`logs`, Lepton's `logs`) as thin calls into the clients."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nemo_run as run
from nemo_run.config import set_nemorun_home
from nemo_run.core.clients.skypilot import ClusterGoneError
from nemo_run.core.execution import lepton as lepton_executor
from nemo_run.core.execution import skypilot as sky_executor
from nemo_run.core.store import get_store, store_path
from nemo_run.core.store.records import REMOTE_ID, JobRecord
from nemo_run.exceptions import UnknownJobError

EXEC = "nemo_run.core.execution"
SCHED = "nemo_run.run.torchx_backend.schedulers"

# name -> the modules 0.11.1 offers it from (`from module import name` must work here too)
IMPORTABLE = {
    "logger": [f"{EXEC}.{m}" for m in ("docker", "dgxcloud", "lepton", "skypilot", "local")],
    "RUNDIR_NAME": [f"{EXEC}.docker", f"{EXEC}.dgxcloud", f"{EXEC}.skypilot", f"{SCHED}.docker"],
    "get_nemorun_home": [
        f"{EXEC}.docker",
        f"{EXEC}.dgxcloud",
        f"{EXEC}.lepton",
        f"{SCHED}.dgxcloud",
        f"{SCHED}.lepton",
        f"{SCHED}.skypilot",
    ],
    "Packager": [f"{EXEC}.dgxcloud", f"{EXEC}.lepton"],
    "GitArchivePackager": [f"{EXEC}.dgxcloud", f"{EXEC}.lepton"],
    "Launcher": [f"{EXEC}.dgxcloud"],
    "Torchrun": [f"{EXEC}.dgxcloud"],
    "FaultTolerance": [f"{EXEC}.dgxcloud"],
    "Executor": [f"{SCHED}.{m}" for m in ("docker", "dgxcloud", "lepton", "skypilot")],
    "SchedulerMixin": [f"{SCHED}.{m}" for m in ("dgxcloud", "lepton", "skypilot")],
    "FCNTL_AVAILABLE": [f"{EXEC}.docker", f"{SCHED}.skypilot"],
    "DGXCloudExecutor": [f"{SCHED}.dgxcloud"],
    "LeptonExecutor": [f"{SCHED}.lepton"],
}
# names a module serves through its `__getattr__`: listed by its `dir()` too
LAZY = {
    f"{EXEC}.docker": ["DOCKER_JOB_DIRS"],
    f"{SCHED}.dgxcloud": ["DGX_JOB_DIRS"],
    f"{SCHED}.lepton": ["LEPTON_JOB_DIRS", "LEPTON_STATES"],
    f"{SCHED}.skypilot": ["SKYPILOT_JOB_DIRS"],
}


def test_0_11_1s_module_names_import_and_mean_the_same():
    for name, modules in IMPORTABLE.items():
        for module in modules:  # what `from module import name` looks up
            assert hasattr(importlib.import_module(module), name), f"{module}.{name}"
    docker = importlib.import_module(f"{EXEC}.docker")
    assert docker.RUNDIR_NAME == "nemo_run"  # the job's folder in a container: /nemo_run
    assert docker.CONTAINER_JOB_DIR == f"/{docker.RUNDIR_NAME}"
    assert importlib.import_module(f"{EXEC}.dgxcloud").Torchrun is run.Torchrun
    assert importlib.import_module(f"{SCHED}.lepton").LeptonExecutor is run.LeptonExecutor
    for module in IMPORTABLE["logger"]:
        logger = importlib.import_module(module).logger
        assert isinstance(logger, logging.Logger) and logger.name == module


def test_docker_label_id_is_the_label_the_containers_carry():
    docker = importlib.import_module(f"{EXEC}.docker")
    result = run.run(
        run.Script(inline="true"),
        executor=run.DockerExecutor(container_image="python:3.11", packager=run.Packager()),
        name="labels",
        dryrun=True,
    )
    app_id = (result.dryrun or "").split()[1]  # "app_id: <id>" opens the dry-run text
    assert f"'{docker.LABEL_ID}': '{app_id}'" in (result.dryrun or "")


def test_job_dirs_name_the_job_store_of_the_current_home(tmp_path: Path):
    for module_name, names in LAZY.items():
        module = importlib.import_module(module_name)
        assert set(names) <= set(dir(module)), module_name
        for name in (n for n in names if n.endswith("_JOB_DIRS")):
            assert getattr(module, name) == store_path()
            set_nemorun_home(tmp_path / "elsewhere")
            try:
                assert getattr(module, name) == str(tmp_path / "elsewhere" / "jobs.db")
            finally:
                set_nemorun_home(None)


# -- SkyPilot: parse_app, cancel and logs by app id ------------------------------------------------
class FakeSkyClient:
    """Stands in for SkyPilotClient: records calls; a cluster named 'gone' does not exist."""

    calls: list[tuple[str, str, int]] = []
    chunks = ["step 1\n", "step 2\n"]

    def cancel(self, cluster: str, job_id: int) -> None:
        self.calls.append(("cancel", cluster, job_id))
        if cluster == "gone":
            raise ClusterGoneError(f"cluster {cluster} does not exist")

    def tail_logs(self, cluster: str, job_id: int, follow: bool) -> Iterator[str]:
        self.calls.append(("logs" if follow else "logs-now", cluster, job_id))
        if cluster == "gone":
            raise ClusterGoneError(f"cluster {cluster} does not exist")
        yield from self.chunks


@pytest.fixture
def sky_client(monkeypatch: pytest.MonkeyPatch) -> type[FakeSkyClient]:
    FakeSkyClient.calls = []
    monkeypatch.setattr(sky_executor, "SkyPilotClient", FakeSkyClient)
    return FakeSkyClient


def put_record(backend: str, app_id: str, **data: Any) -> None:
    get_store().put(JobRecord(backend, app_id, state="RUNNING", data=data))


def test_skypilot_parse_app_reads_the_job_store_or_0_11_1s_app_id():
    put_record("skypilot", "train-abc123", cluster="c1", **{REMOTE_ID: 7})
    assert run.SkypilotExecutor.parse_app("train-abc123") == ("c1", "train-abc123", 7)
    assert run.SkypilotExecutor.parse_app("nemo_run___c2___train___3") == ("c2", "train", 3)
    put_record("skypilot", "starting-x", cluster="c1")  # launched, no SkyPilot job id yet
    with pytest.raises(UnknownJobError, match="no job id on its cluster yet"):
        run.SkypilotExecutor.parse_app("starting-x")
    with pytest.raises(UnknownJobError, match="skypilot://<session>/<app id>"):
        run.SkypilotExecutor.parse_app("nobody")


def test_skypilot_cancel_calls_the_client_and_a_gone_cluster_is_nothing_to_do(sky_client):
    put_record("skypilot", "a", cluster="c1", **{REMOTE_ID: 4})
    put_record("skypilot", "b", cluster="gone", **{REMOTE_ID: 5})
    run.SkypilotExecutor.cancel("a")
    run.SkypilotExecutor.cancel("b")
    assert sky_client.calls == [("cancel", "c1", 4), ("cancel", "gone", 5)]


def test_skypilot_logs_follow_the_job_then_fall_back_to_0_11_1s_run_log(
    sky_client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    put_record("skypilot", "a", cluster="c1", **{REMOTE_ID: 4})
    run.SkypilotExecutor.logs("a", fallback_path=None)
    assert capsys.readouterr().out == "step 1\nstep 2\n"
    assert sky_client.calls == [("logs", "c1", 4)]

    (tmp_path / "run.log").write_text("saved line\n")
    run.SkypilotExecutor.logs("x___gone___train___9", fallback_path=str(tmp_path))
    assert capsys.readouterr().out == "saved line\n"
    with pytest.raises(ClusterGoneError):
        run.SkypilotExecutor.logs("x___gone___train___9", fallback_path=str(tmp_path / "none"))


# -- Lepton: logs by app id --------------------------------------------------------------------
class FakeLeptonClient:
    """Stands in for LeptonClient: job 'job-1' has two replicas, 'empty-1' none yet."""

    def __init__(self, **credentials: Any) -> None:
        self.credentials = credentials

    def get_job(self, job_id: str) -> object | None:
        return object() if job_id in ("job-1", "empty-1") else None

    def replica_ids(self, job_id: str) -> list[str]:
        return ["job-1-1-bbb", "job-1-0-aaa"] if job_id == "job-1" else []

    def log(self, job_id: str, replica_id: str, timeout: int | None = None) -> str:
        return f"log of {replica_id}\n"


def test_lepton_logs_print_the_first_replica(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setattr(lepton_executor, "LeptonClient", FakeLeptonClient)
    put_record("lepton", "train-abc", **{REMOTE_ID: "job-1"})
    run.LeptonExecutor.logs("train-abc", fallback_path=None)
    assert capsys.readouterr().out == "log of job-1-0-aaa\n"
    run.LeptonExecutor.logs("nemo_run___main___job-1", fallback_path=None)  # 0.11.1's app id
    assert capsys.readouterr().out == "log of job-1-0-aaa\n"
    run.LeptonExecutor.logs("empty-1", fallback_path=None)
    assert "no replica of job empty-1" in capsys.readouterr().out
    put_record("lepton", "creating")  # launched, not created on Lepton yet
    with pytest.raises(UnknownJobError, match="has not been created yet"):
        run.LeptonExecutor.logs("creating", fallback_path=None)
