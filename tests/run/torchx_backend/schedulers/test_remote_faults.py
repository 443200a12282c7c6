"""The remote backends (DGX Cloud, Lepton) under injected faults, against their emulators
running as separate processes. Every test runs on both backends through one harness."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from torchx.specs import AppState, is_terminal, parse_app_handle

import nemo_run as run
from nemo_run.core.store import get_store
from nemo_run.exceptions import BackendError
from tests.helpers import REPO, wait_for

SECRET = "emulator-secret-5f2c9e"
CLIENT = "emulator-client"
TOKEN = "lepton-token-7e1d44"


def image() -> str:
    return os.environ.get("NEMORUN_TEST_IMAGE") or "unused-in-subprocess-mode"


def mode() -> str:
    return "docker" if os.environ.get("NEMORUN_TEST_IMAGE") else "subprocess"


@dataclass
class Harness:
    """One backend behind one emulator: executors, fault paths and the emulator's view."""

    backend: str  # store backend name
    origin: str  # where /_emulator lives
    data_dir: str
    env: dict[str, str]
    get_path: str  # GET of one job
    list_path: str  # GET of the listing (also a prefix of get_path)
    stop: tuple[str, str]  # method, path prefix of a stop
    create: tuple[str, str]
    helper_delete: tuple[str, str]
    empty_list: Any  # a listing body without any job

    def control(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.origin}/_emulator/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def fault(self, *rules: dict) -> None:
        self.control("POST", "faults", list(rules))

    def rule(self, method: str, prefix: str, action: dict, count: int = -1) -> dict:
        return {
            "match": {"method": method, "path_prefix": prefix},
            "count": count,
            "action": action,
        }

    def only_list(self, action: dict, count: int = 1) -> list[dict]:
        """Rules that hit the listing but not GETs of one job (a no-op rule shields those)."""
        return [
            self.rule("GET", self.get_path, {"delay": 0}),
            self.rule("GET", self.list_path, action, count),
        ]

    def state(self) -> dict:
        return self.control("GET", "state")

    def jobs(self, name: str) -> list[dict]:
        key = "workloads" if self.backend == "dgx_cloud" else "jobs"
        return [j for j in self.state()[key] if j["name"] == name and not j.get("deleted")]

    def phase(self, name: str) -> str:
        [job] = self.jobs(name)
        return job.get("phase") or job.get("state")

    def requests(self) -> int:
        return sum(self.state()["requests"].values())

    def scheduler(self) -> Any:
        if self.backend == "dgx_cloud":
            from nemo_run.run.torchx_backend.schedulers.dgxcloud import create_scheduler
        else:
            from nemo_run.run.torchx_backend.schedulers.lepton import create_scheduler
        return create_scheduler("t")

    def executor(self, *, shared_here: bool = True, timeout: float = 5.0, **kwargs: Any) -> Any:
        """The shared storage sits at the same path here and in the job; `shared_here=False`
        ships code through helper jobs instead (launched_from_cluster=False)."""
        if self.backend == "dgx_cloud":
            pvc = os.path.join(self.data_dir, "pvcs", "shared-pvc")
            return run.DGXCloudExecutor(
                project_name="nemo-project",
                container_image=image(),
                pvcs=[{"claimName": "shared-pvc", "path": pvc}],
                pvc_nemo_run_dir=f"{pvc}/jobs",
                launched_from_cluster=shared_here,
                timeout=timeout,
                **kwargs,
            )
        host = os.path.join(self.data_dir, "storage", "node-nfs", "shared")
        ex = run.LeptonExecutor(
            container_image=image(),
            nemo_run_dir=f"{host}/nemo",
            resource_shape="cpu.small",
            node_group="nemo-nodes",
            launched_from_cluster=shared_here,
            mounts=[{"path": "/shared", "from": "node-nfs", "mount_path": host}],
            **kwargs,
        )
        ex.timeout = timeout
        return ex

    def record(self, app_id: str) -> Any:
        return get_store().get(self.backend, app_id)

    def delete_on_server(self, app_id: str) -> None:
        record = self.record(app_id)
        if self.backend == "dgx_cloud":
            from nemo_run.core.clients.runai import RunAIClient

            RunAIClient(self.env["DGX_CLOUD_BASE_URL"], CLIENT, SECRET).delete(
                "trainings", record.data["remote_id"]
            )
        else:
            from nemo_run.core.clients.lepton import LeptonClient

            LeptonClient().delete_job(record.data["remote_id"])


@pytest.fixture(scope="module")
def dgx_emulator(tmp_path_factory) -> Iterator[Harness]:
    data_dir = str(tmp_path_factory.mktemp("runai"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nemo_run.testing.dgxcloud",
            "--port",
            "0",
            "--data-dir",
            data_dir,
            "--mode",
            mode(),
            "--client-id",
            CLIENT,
            "--project",
            "nemo-project",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, "RUNAI_EMULATOR_CLIENT_SECRET": SECRET},
    )
    line = proc.stdout.readline().strip()
    assert line.startswith("RUNAI_EMULATOR_URL="), f"emulator did not start: {line!r}"
    url = line.split("=", 1)[1]
    yield Harness(
        "dgx_cloud",
        url,
        data_dir,
        {
            "DGX_CLOUD_BASE_URL": f"{url}/api/v1",
            "DGX_CLOUD_CLIENT_ID": CLIENT,
            "DGX_CLOUD_CLIENT_SECRET": SECRET,
        },
        get_path="/api/v1/workloads/",
        list_path="/api/v1/workloads",
        stop=("POST", "/api/v1/workloads/trainings/"),
        create=("POST", "/api/v1/workloads/trainings"),
        helper_delete=("DELETE", "/api/v1/workloads/workspaces/"),
        empty_list={"workloads": []},
    )
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def lepton_emulator(tmp_path_factory) -> Iterator[Harness]:
    pytest.importorskip(
        "leptonai.api.v2.client", reason="the lepton extra (leptonai) is not installed"
    )
    from nemo_run.testing.lepton import launch

    data_dir = tmp_path_factory.mktemp("lepton")
    handle = launch(
        "--mode", mode(), "--node-group", "nemo-nodes:2", data_dir=data_dir, token=TOKEN
    )
    yield Harness(
        "lepton",
        handle.origin,
        str(data_dir),
        handle.env(),
        get_path="/jobs/",
        list_path="/jobs",
        stop=("PATCH", "/jobs/"),
        create=("POST", "/jobs"),
        helper_delete=("DELETE", "/jobs/"),
        empty_list={"jobs": [], "total": 0, "page": 1, "page_size": 500},
    )
    handle.stop()


@pytest.fixture(params=["dgx_cloud", "lepton"])
def emu(request, monkeypatch) -> Iterator[Harness]:
    harness = request.getfixturevalue(
        "dgx_emulator" if request.param == "dgx_cloud" else "lepton_emulator"
    )
    for key, value in harness.env.items():
        monkeypatch.setenv(key, value)
    yield harness
    harness.control("DELETE", "faults")


def app_id_of(result: run.RunResult) -> str:
    return parse_app_handle(result.handle).app_id


def start(emu: Harness, script: str = "echo started; sleep 300", **kwargs: Any) -> str:
    result = run.run(
        run.Script(inline=script), executor=emu.executor(**kwargs), name="job", detach=True
    )
    return app_id_of(result)


def running(emu: Harness, app_id: str) -> Any:
    sched = emu.scheduler()
    wait_for(lambda: sched.describe(app_id).state == AppState.RUNNING, timeout=60, what="running")
    return sched


def wait_terminal(sched: Any, app_id: str) -> AppState:
    return wait_for(
        lambda: (d := sched.describe(app_id)) and is_terminal(d.state) and d,
        timeout=60,
        what=app_id,
    ).state


# -- 1. cancel records CANCELLED only once the stop was accepted ---------------------------------
@pytest.mark.parametrize("status", [503, 404])
def test_a_failed_stop_raises_keeps_the_state_and_a_later_cancel_succeeds(emu, status):
    app_id = start(emu, timeout=1.0)
    sched = running(emu, app_id)
    emu.fault(emu.rule(*emu.stop, {"status": status}))
    with pytest.raises(BackendError):
        sched.cancel(app_id)
    assert emu.phase(app_id) == "Running"
    assert sched.describe(app_id).state == AppState.RUNNING
    assert emu.record(app_id).state == "RUNNING" and not emu.record(app_id).data.get(
        "cancel_requested_at"
    )
    emu.control("DELETE", "faults")
    sched.cancel(app_id)
    assert sched.describe(app_id).state == AppState.CANCELLED
    wait_for(lambda: emu.phase(app_id) == "Stopped", timeout=30, what="the job to stop")


# -- 2. a transient error never becomes a terminal state ----------------------------------------
def test_one_404_on_get_is_not_terminal(emu):
    app_id = start(emu, script="sleep 2; echo done", timeout=2.0)
    sched = running(emu, app_id)
    emu.fault(emu.rule("GET", emu.get_path, {"status": 404}, count=1))
    assert sched.describe(app_id).state == AppState.RUNNING
    assert emu.record(app_id).state == "RUNNING"
    assert wait_terminal(sched, app_id) == AppState.SUCCEEDED


def test_a_404_with_an_unanswered_lookup_keeps_the_state(emu):
    app_id = start(emu, timeout=1.0)
    sched = running(emu, app_id)
    emu.fault(
        emu.rule("GET", emu.get_path, {"status": 404}, count=1),
        emu.rule("GET", emu.list_path, {"status": 503}),
    )
    desc = sched.describe(app_id)
    assert desc.state == AppState.RUNNING and desc.unanswered and "not answering" in desc.msg
    assert emu.record(app_id).state == "RUNNING"


def test_a_job_missing_from_a_list_is_kept_unless_its_get_says_gone(emu):
    app_id = start(emu, timeout=2.0)
    sched = running(emu, app_id)
    emu.fault(*emu.only_list({"body": emu.empty_list}))
    assert [r.state for r in sched.list() if r.app_id == app_id] == [AppState.RUNNING]
    assert emu.record(app_id).state == "RUNNING"
    emu.control("DELETE", "faults")
    emu.delete_on_server(app_id)
    wait_for(lambda: not emu.jobs(app_id), timeout=30, what="the job to go")
    assert [r.state for r in sched.list() if r.app_id == app_id] == [AppState.CANCELLED]
    assert "deleted" in sched.describe(app_id).msg


def test_an_unanswered_list_keeps_the_states(emu):
    app_id = start(emu, timeout=1.0)
    sched = running(emu, app_id)
    emu.fault(*emu.only_list({"status": 503}, count=-1))
    assert [r.state for r in sched.list() if r.app_id == app_id] == [AppState.RUNNING]


def test_lepton_job_archived_after_it_finished_lists_as_succeeded(lepton_emulator, monkeypatch):
    emu = lepton_emulator  # archiving (left out of alive-only listings) is Lepton's
    for key, value in emu.env.items():
        monkeypatch.setenv(key, value)
    app_id = start(emu, script="echo quick", custom_spec={"ttl_seconds_after_finished": 0})
    wait_for(
        lambda: [j for j in emu.state()["jobs"] if j["name"] == app_id and j["archived"]],
        timeout=60,
        what="the job to be archived",
    )
    assert [r.state for r in emu.scheduler().list() if r.app_id == app_id] == [AppState.SUCCEEDED]


def test_describe_is_one_http_call(emu):
    app_id = start(emu)
    sched = running(emu, app_id)
    before = emu.requests()
    sched.describe(app_id)
    assert emu.requests() - before == 1


# -- 3. a create that may have committed keeps a record that describe reconciles -----------------
def test_create_dropped_after_commit_with_failing_lookups_is_reconciled(emu, caplog):
    lookups = emu.list_path  # Run:ai: GET /workloads?filterBy=...; Lepton: GET /jobs?q=...
    emu.fault(
        emu.rule(*emu.create, {"drop_after_commit": True}, count=1),
        emu.rule("GET", lookups, {"status": 503}),
    )
    with caplog.at_level(logging.WARNING):
        result = run.run(
            run.Script(inline="sleep 1; echo once"),
            executor=emu.executor(timeout=0.5),
            name="drop",
            detach=True,
        )
    app_id = app_id_of(result)
    record = emu.record(app_id)
    assert record.state == "UNKNOWN" and record.data["launch"] == "unconfirmed"
    assert "could not be confirmed" in caplog.text
    emu.control("DELETE", "faults")
    sched = emu.scheduler()
    assert wait_terminal(sched, app_id) == AppState.SUCCEEDED
    assert emu.record(app_id).data["launch"] == "done"
    assert len(emu.jobs(app_id)) == 1


def test_a_job_never_created_reads_failed_after_the_grace_period(emu, monkeypatch):
    emu.fault(emu.rule(*emu.create, {"status": 503}))
    result = run.run(
        run.Script(inline="true"), executor=emu.executor(timeout=0.5), name="never", detach=True
    )
    app_id = app_id_of(result)
    sched = emu.scheduler()
    desc = sched.describe(app_id)
    assert desc.state == AppState.UNKNOWN and "not confirmed yet" in desc.msg
    monkeypatch.setattr("nemo_run.run.torchx_backend.schedulers.remote.NEVER_CREATED_GRACE_S", 0.0)
    desc = sched.describe(app_id)
    assert desc.state == AppState.FAILED and desc.msg.startswith("never created: ")
    assert not emu.jobs(app_id)


def test_a_refused_create_leaves_no_record(emu):
    emu.fault(emu.rule(*emu.create, {"status": 400}, count=1))
    with pytest.raises(BackendError):
        run.run(run.Script(inline="true"), executor=emu.executor(), name="refused", detach=True)
    assert [r for r in get_store().list(emu.backend) if r.app_id.startswith("refused")] == []


# -- 4. every call honours the timeout and a total deadline ---------------------------------------
def test_a_stalled_get_is_answered_within_twice_the_timeout(emu):
    app_id = start(emu, timeout=1.0)
    running(emu, app_id)
    emu.fault(emu.rule("GET", emu.get_path, {"delay": 5}))
    sched = emu.scheduler()  # a new scheduler: the timeout comes from the record
    started = time.monotonic()
    desc = sched.describe(app_id)
    elapsed = time.monotonic() - started
    assert elapsed < 2.6, f"describe took {elapsed:.1f} s with timeout 1 s"
    assert desc.state == AppState.RUNNING and desc.unanswered and "not answering" in desc.msg


# -- 5. helpers whose delete fails are kept in the record and deleted later ----------------------
def test_helpers_that_cannot_be_deleted_are_kept_and_deleted_later(emu, caplog):
    emu.fault(emu.rule(*emu.helper_delete, {"status": 503}))
    with caplog.at_level(logging.WARNING):
        result = run.run(
            run.Script(inline="echo shipped"),
            executor=emu.executor(shared_here=False, timeout=0.5),
            name="mover",
        )
    assert result.ok
    app_id = app_id_of(result)
    [helper] = emu.record(app_id).data["leftover_helpers"]
    assert emu.jobs(helper["name"]) and "could not delete helper" in caplog.text
    emu.control("DELETE", "faults")
    emu.scheduler().describe(app_id)
    assert not emu.record(app_id).data.get("leftover_helpers")
    wait_for(lambda: not emu.jobs(helper["name"]), timeout=30, what="the helper to be deleted")


# -- 6. credentials: caches keyed by the secret, refused ones not kept -------------------------
def test_a_changed_secret_is_never_served_from_a_cache(emu, monkeypatch):
    app_id = start(emu)
    sched = running(emu, app_id)
    name = "DGX_CLOUD_CLIENT_SECRET" if emu.backend == "dgx_cloud" else "LEPTON_WORKSPACE_TOKEN"
    good = os.environ[name]
    monkeypatch.setenv(name, "wrong-" + good)
    with pytest.raises(BackendError) as refused:
        sched.describe(app_id)
    assert refused.value.status == 401
    monkeypatch.setenv(name, good)
    assert sched.describe(app_id).state == AppState.RUNNING
    for key in sched._clients:
        assert good not in map(str, key) and "wrong-" + good not in map(str, key)
    if emu.backend == "lepton":
        assert not any(c.refused for c in sched._clients.values())


def test_runai_tokens_are_keyed_by_the_secret(dgx_emulator):
    from nemo_run.core.clients.runai import RunAIClient

    api = dgx_emulator.env["DGX_CLOUD_BASE_URL"]
    for first, then in ((SECRET, "bad"), ("bad", SECRET)):
        try:
            RunAIClient(api, CLIENT, first)._token()
        except BackendError:
            pass
        if then == SECRET:
            assert RunAIClient(api, CLIENT, then)._token()
        else:
            with pytest.raises(BackendError, match="refused"):
                RunAIClient(api, CLIENT, then)._token()


# -- 7. secret arguments stay out of the shared folder and the record -----------------------------
def test_secret_arguments_reach_the_job_but_not_its_files_or_record(emu, nemorun_home):
    ex = emu.executor()
    task = run.Script(
        inline='echo "got $2 $3"', args=["--api-key", "sk-live-123", "--token=tok-456"]
    )
    dry = run.run(task, executor=ex, name="sec", dryrun=True).dryrun
    assert "sk-live-123" not in dry and "tok-456" not in dry and "NEMORUN_ARG_" in dry
    result = run.run(task, executor=ex, name="sec")
    assert result.ok
    app_id = app_id_of(result)
    record = emu.record(app_id)
    job_dir = record.data.get("remote_dir")
    script = open(os.path.join(job_dir, "launch.sh")).read()
    assert "sk-live-123" not in script and "tok-456" not in script and '"${NEMORUN_ARG_' in script
    assert (
        open(os.path.join(job_dir, "logs", "rank0.log")).read()
        == "got sk-live-123 --token=tok-456\n"
    )
    assert "sk-live-123" not in json.dumps(record.data) and "tok-456" not in json.dumps(record.data)
    assert record.data["cmd"][-3:] == ["--api-key", "***", "--token=***"]
    for folder, _, files in os.walk(nemorun_home):
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                assert b"sk-live-123" not in fh.read(), f"secret found in {name}"


def test_split_secret_args_moves_flags_assignments_and_partial_payloads():
    pytest.importorskip("fiddle")
    import fiddle as fdl

    from nemo_run.core.redact import mask_references, shell_join_references, split_secret_args
    from nemo_run.core.runners.partial import decode, encode

    payload = encode(fdl.Partial(dict, api_key="pk-1", lr=0.1))
    plain = encode(fdl.Partial(dict, lr=0.1))
    args = [
        "python",
        "-m",
        "nemo_run.core.runners.partial",
        payload,
        "--password",
        "pw",
        "HF_TOKEN=hf",
        "--max-tokens",
        "5",
        "--lr=0.1",
    ]
    refs, env = split_secret_args(args)
    assert refs == [
        "python",
        "-m",
        "nemo_run.core.runners.partial",
        "${NEMORUN_ARG_3}",
        "--password",
        "${NEMORUN_ARG_5}",
        "HF_TOKEN=${NEMORUN_ARG_6}",
        "--max-tokens",
        "5",
        "--lr=0.1",
    ]
    assert env == {"NEMORUN_ARG_3": payload, "NEMORUN_ARG_5": "pw", "NEMORUN_ARG_6": "hf"}
    line = shell_join_references(refs, env)
    assert (
        "pk-1" not in line
        and '"${NEMORUN_ARG_3}"' in line
        and 'HF_TOKEN="${NEMORUN_ARG_6}"' in line
    )
    masked = mask_references(refs, env)
    assert masked[4:7] == ["--password", "***", "HF_TOKEN=***"]
    assert decode(masked[3]).api_key == "***"  # still a payload, its secret masked
    assert "pk-1" not in json.dumps(masked)
    assert split_secret_args(["python", "-m", "nemo_run.core.runners.partial", plain]) == (
        ["python", "-m", "nemo_run.core.runners.partial", plain],
        {},
    )
