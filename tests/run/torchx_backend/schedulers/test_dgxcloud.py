"""DGX Cloud against the Run:ai emulator, running as a separate server process."""

from __future__ import annotations

import json
import os
import random
import re
import string
import subprocess
import sys
import urllib.request

import pytest
from torchx.specs import AppState, is_terminal, parse_app_handle

import nemo_run as run
from nemo_run.core.store import get_store
from nemo_run.exceptions import ConfigError
from nemo_run.run.torchx_backend.schedulers.dgxcloud import (
    DGX_STATES,
    create_scheduler,
    workload_name,
)
from tests.helpers import REPO, run_python, wait_for

SECRET = "emulator-secret-5f2c9e"
CLIENT = "emulator-client"


class Emulator:
    def __init__(self, url: str, data_dir: str, proc: subprocess.Popen[str], mode: str) -> None:
        self.url, self.data_dir, self.proc, self.mode = url, data_dir, proc, mode

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    def control(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/_emulator/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def workloads(self) -> list[dict]:
        return self.control("GET", "state")["workloads"]

    def pvc(self, claim: str) -> str:
        return os.path.join(self.data_dir, "pvcs", claim)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """The emulator in docker mode where an engine is set up, otherwise with subprocesses."""
    data_dir = str(tmp_path_factory.mktemp("runai"))
    mode = "docker" if os.environ.get("NEMORUN_TEST_IMAGE") else "subprocess"
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
            mode,
            "--client-id",
            CLIENT,
            "--project",
            "nemo-project",
            "--project",
            "other-project",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, "RUNAI_EMULATOR_CLIENT_SECRET": SECRET},
    )
    line = proc.stdout.readline().strip()
    assert line.startswith("RUNAI_EMULATOR_URL="), f"emulator did not start: {line!r}"
    yield Emulator(line.split("=", 1)[1], data_dir, proc, mode)
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(autouse=True)
def credentials(monkeypatch, emulator):
    monkeypatch.setenv("DGX_CLOUD_BASE_URL", emulator.api)
    monkeypatch.setenv("DGX_CLOUD_CLIENT_ID", CLIENT)
    monkeypatch.setenv("DGX_CLOUD_CLIENT_SECRET", SECRET)
    yield
    emulator.control("DELETE", "faults")


def image() -> str:
    return os.environ.get("NEMORUN_TEST_IMAGE") or "unused-in-subprocess-mode"


def local_pvc_executor(emulator: Emulator, **kwargs) -> run.DGXCloudExecutor:
    """The PVC is mounted here at the same path as in the cluster (launched_from_cluster)."""
    pvc = emulator.pvc("local-pvc")
    return run.DGXCloudExecutor(
        project_name="nemo-project",
        container_image=image(),
        pvcs=[{"claimName": "local-pvc", "path": pvc}],
        pvc_nemo_run_dir=f"{pvc}/jobs",
        launched_from_cluster=True,
        **kwargs,
    )


def app_id_of(result: run.RunResult) -> str:
    return parse_app_handle(result.handle).app_id


def wait_terminal(app_id: str) -> AppState:
    sched = create_scheduler("t")
    return wait_for(
        lambda: (d := sched.describe(app_id)) and is_terminal(d.state) and d,
        timeout=60,
        what=app_id,
    ).state


def test_states_cover_every_runai_phase():
    phases = {
        "Creating",
        "Initializing",
        "Resuming",
        "Pending",
        "Deleting",
        "Running",
        "Updating",
        "Stopped",
        "Stopping",
        "Degraded",
        "Failed",
        "Completed",
        "Terminating",
        "Unknown",
    }
    assert set(DGX_STATES) == phases
    # 0.11.1's: a phase Run:ai cannot tell for a moment reads PENDING, never an outcome
    assert (
        DGX_STATES["Unknown"] == AppState.PENDING and DGX_STATES["Completed"] == AppState.SUCCEEDED
    )


def test_workload_names_follow_runai_rules():
    for raw in ("My_Train.Job", "123-start", "x" * 80, "--"):
        name = workload_name(raw)
        assert (
            len(name) <= 40
            and name[0].isalpha()
            and set(name) <= set(string.ascii_lowercase + string.digits + "-")
        )
    assert workload_name("a") != workload_name("a")


def test_success_with_output_and_logs(emulator):
    result = run.run(
        run.Script(inline='echo "hello from rank $RANK"; echo done'),
        executor=local_pvc_executor(emulator),
        name="hello",
        tail_logs=True,
    )
    assert result.ok
    lines = list(create_scheduler("t").log_iter(app_id_of(result), "hello"))
    assert lines[-1] == "done\n" and lines[0].startswith("hello from rank")


def test_credentials_given_in_code_serve_the_whole_run(emulator, monkeypatch, nemorun_home):
    """As nemo-run users write it: the secret in the executor and nowhere else. The launching
    process keeps it in memory to wait on the job; it is written nowhere."""
    for name in ("DGX_CLOUD_BASE_URL", "DGX_CLOUD_CLIENT_ID", "DGX_CLOUD_CLIENT_SECRET"):
        monkeypatch.delenv(name)
    ex = local_pvc_executor(emulator, base_url=emulator.api, client_id=CLIENT, client_secret=SECRET)
    result = run.run(run.Script(inline="sleep 1; echo done"), executor=ex, name="incode")
    assert result.ok
    for path in nemorun_home.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_failure_is_failed_thanks_to_pipefail(emulator):
    with pytest.raises(run.JobFailedError, match="FAILED"):
        run.run(
            run.Script(inline="echo about to fail; exit 3"),
            executor=local_pvc_executor(emulator),
            name="bad",
        )


def test_cancel_then_describe_list_from_a_new_process_without_secret_on_disk(
    emulator, nemorun_home
):
    result = run.run(
        run.Script(inline="echo started; sleep 300"),
        executor=local_pvc_executor(emulator),
        name="long",
        detach=True,
    )
    app_id = app_id_of(result)
    sched = create_scheduler("t")
    wait_for(lambda: sched.describe(app_id).state == AppState.RUNNING, timeout=60, what="running")
    out = run_python(f"""
        from nemo_run.run.torchx_backend.schedulers.dgxcloud import create_scheduler
        s = create_scheduler("other")
        s.cancel("{app_id}")
        print(s.describe("{app_id}").state.name)
        print([r.state.name for r in s.list() if r.app_id == "{app_id}"])
    """).stdout.split("\n")
    assert out[:2] == ["CANCELLED", "['CANCELLED']"]
    [workload] = [w for w in emulator.workloads() if w["name"] == app_id]
    wait_for(
        lambda: [w for w in emulator.workloads() if w["name"] == app_id][0]["phase"] == "Stopped",
        timeout=30,
        what="the workload to stop",
    )
    assert workload["type"].lower().startswith("training")
    for folder, _, files in os.walk(nemorun_home):
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                assert SECRET.encode() not in fh.read(), f"secret found in {name}"


def test_token_expiry_mid_run_is_transparent(emulator):
    result = run.run(
        run.Script(inline="sleep 1; echo ok"),
        executor=local_pvc_executor(emulator),
        name="tok",
        detach=True,
    )
    emulator.control("POST", "expire-tokens")
    assert wait_terminal(app_id_of(result)) == AppState.SUCCEEDED


def test_error_storm_creates_exactly_one_workload(emulator):
    emulator.control(
        "POST",
        "faults",
        [
            {
                "match": {"method": "POST", "path_prefix": "/api/v1/workloads/trainings"},
                "count": 2,
                "action": {"status": 503},
            },
            {
                "match": {"method": "POST", "path_prefix": "/api/v1/workloads/trainings"},
                "count": 1,
                "action": {"status": 429, "retry_after": 0.2},
            },
            {
                "match": {"method": "POST", "path_prefix": "/api/v1/workloads/trainings"},
                "count": 1,
                "action": {"delay_after_commit": 2},
            },
            {
                "match": {"method": "GET", "path_prefix": "/api/v1/workloads"},
                "count": 2,
                "action": {"status": 500},
            },
        ],
    )
    ex = local_pvc_executor(emulator, timeout=1.0)
    result = run.run(run.Script(inline="echo once"), executor=ex, name="storm")
    assert result.ok
    assert [w["name"] for w in emulator.workloads()].count(app_id_of(result)) == 1


def test_workload_deleted_on_the_server_reads_terminal(emulator):
    result = run.run(
        run.Script(inline="sleep 300"),
        executor=local_pvc_executor(emulator),
        name="gone",
        detach=True,
    )
    app_id = app_id_of(result)
    record = get_store().get("dgx_cloud", app_id)
    from nemo_run.core.clients.runai import RunAIClient

    RunAIClient(emulator.api, CLIENT, SECRET).delete("trainings", record.data["remote_id"])
    assert wait_terminal(app_id) == AppState.CANCELLED
    assert "deleted on the server" in create_scheduler("t").describe(app_id).msg


def test_bad_input_fails_before_any_workload(emulator, monkeypatch):
    before = len(emulator.workloads())
    with pytest.raises(
        ConfigError,
        match="project_name='nope' does not exist; available projects: nemo-project, other-project",
    ):
        run.run(
            run.Script(inline="true"),
            executor=run.DGXCloudExecutor(
                project_name="nope",
                container_image=image(),
                pvcs=[{"claimName": "c", "path": "/nemo_run"}],
                pvc_nemo_run_dir="/nemo_run/jobs",
            ),
            name="x",
        )
    monkeypatch.delenv("DGX_CLOUD_CLIENT_SECRET")
    with pytest.raises(
        ConfigError, match="credentials missing: client_secret; set DGX_CLOUD_BASE_URL"
    ):
        run.run(run.Script(inline="true"), executor=local_pvc_executor(emulator), name="x")
    assert len(emulator.workloads()) == before


@pytest.mark.docker
def test_two_mb_repository_through_the_data_mover(emulator, tmp_path, monkeypatch, docker_image):
    if emulator.mode != "docker":
        pytest.skip("the data mover writes inside containers: needs the emulator in docker mode")
    code = tmp_path / "repo"
    rng = random.Random(7)
    for i in range(40):  # ~2 MB of source-like text
        path = code / f"pkg{i % 5}" / f"module_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        words = [
            "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9)))
            for _ in range(9000)
        ]  # random identifiers: compresses about as badly as real code
        path.write_text(" ".join(words) + "\n")
    (code / "main.sh").write_text(
        'echo "files: $(find . -name "*.py" | wc -l) bytes: $(cat pkg*/*.py | wc -c)"\n'
    )
    total = sum(p.stat().st_size for p in code.rglob("*.py"))
    assert total > 2_000_000
    monkeypatch.chdir(code)
    ex = run.DGXCloudExecutor(
        project_name="nemo-project",
        container_image=docker_image,
        pvcs=[{"claimName": "remote-pvc", "path": "/nemo_run"}],
        pvc_nemo_run_dir="/nemo_run/jobs",
        packager=run.PatternPackager(include_pattern=["**/*.py", "main.sh"], relative_path=""),
    )
    result = run.run(run.Script(inline="bash main.sh"), executor=ex, name="bigrepo")
    assert result.ok
    record = get_store().get("dgx_cloud", app_id_of(result))
    assert 1 <= record.data["data_mover_workloads"] <= 3
    log = os.path.join(emulator.pvc("remote-pvc"), "jobs", app_id_of(result), "logs", "rank0.log")
    assert open(log).read().strip() == f"files: 40 bytes: {total}"
    movers = [w for w in emulator.workloads() if w["type"].lower().startswith("workspace")]
    assert movers and all(w.get("deleted") for w in movers)


def test_distributed_runs_every_rank(emulator):
    ex = local_pvc_executor(emulator, nodes=2)
    result = run.run(
        run.Script(inline='echo "rank $RANK of $WORLD_SIZE"'), executor=ex, name="dist"
    )
    assert result.ok
    sched = create_scheduler("t")
    seen = sorted(line for k in range(2) for line in sched.log_iter(app_id_of(result), "dist", k))
    assert seen == ["rank 0 of 2\n", "rank 1 of 2\n"]


def test_node_variables_in_arguments_expand_on_each_pod(emulator):
    """References to the executor's macro variables (what torchrun's rendezvous flags become)
    expand in the pod; a single-pod training gets the launch script's defaults."""
    task = run.Script(
        inline='echo "node $1 of $2 at $3 x$4"',
        args=["$RANK", "${WORLD_SIZE}", "$MASTER_ADDR", "$NPROC_PER_NODE"],
    )
    ex = local_pvc_executor(emulator, nodes=2, nprocs_per_node=3)
    result = run.run(task, executor=ex, name="macros")
    sched = create_scheduler("t")
    lines = sorted(
        line for k in range(2) for line in sched.log_iter(app_id_of(result), "macros", k)
    )
    heads = {line.split(" at ")[1].split()[0] for line in lines}
    assert [line.split(" at ")[0] for line in lines] == ["node 0 of 2", "node 1 of 2"]
    assert (
        len(heads) == 1 and "$" not in heads.pop() and all(line.endswith("x3\n") for line in lines)
    )
    single = run.run(task, executor=local_pvc_executor(emulator, gpus_per_node=0), name="one")
    assert list(sched.log_iter(app_id_of(single), "one")) == ["node 0 of 1 at localhost x1\n"]


def test_distributed_pytorch_is_a_master_and_workers(emulator):
    """nodes=N is N pods: the master plus N-1 workers, as Run:ai's PyTorch operator runs them."""
    ex = local_pvc_executor(emulator, nodes=3, gpus_per_node=0)
    text = run.run(run.Script(inline="true"), executor=ex, name="shape", dryrun=True).dryrun
    body = json.loads(text[text.index("{") : text.index("\n}\n") + 2])
    assert body["masterSpecSameAsWorker"] is True and body["spec"]["numWorkers"] == 2
    assert body["spec"]["compute"] == {"largeShmRequest": True}
    assert "minReplicas" not in body["spec"]


def test_logs_through_the_kubernetes_api_where_the_pvc_is_not_mounted(emulator):
    ex = local_pvc_executor(emulator, nodes=2, kube_apiserver_url=emulator.url)
    result = run.run(run.Script(inline='echo "pod $RANK"'), executor=ex, name="kube")
    app_id = app_id_of(result)
    get_store().update("dgx_cloud", app_id, data={"launched_from_cluster": False})
    sched = create_scheduler("t")
    assert [list(sched.log_iter(app_id, "kube", k)) for k in range(2)] == [
        ["pod 0\n"],
        ["pod 1\n"],
    ]
    requests = emulator.control("GET", "state")["requests"]
    assert requests["GET /api/v1/namespaces/{namespace}/pods/{pod}/log"] == 2
    assert requests["GET /api/v1/workloads/{workloadId}/pods"] >= 2


def test_executor_calls_as_0_11_1_offers_them(emulator):
    from nemo_run.core.execution.dgxcloud import DGXCloudState
    from nemo_run.core.store.records import REMOTE_ID

    ex = local_pvc_executor(emulator)
    token = ex.get_auth_token()
    project_id, cluster_id = ex.get_project_and_cluster_id(token)
    assert token and project_id and cluster_id
    result = run.run(run.Script(inline="sleep 300"), executor=ex, name="calls", detach=True)
    workload_id = get_store().get("dgx_cloud", app_id_of(result)).data[REMOTE_ID]
    wait_for(lambda: ex.status(workload_id) == DGXCloudState.RUNNING, timeout=60, what="run")
    ex.cancel(workload_id)
    wait_for(lambda: ex.status(workload_id) == DGXCloudState.STOPPED, timeout=60, what="stop")
    assert ex.status("no-such-workload") is None  # refused (not a UUID): not an outcome
    assert ex.status("0b6a9c1e-0000-4000-8000-000000000000") is None  # 404


def test_transient_errors_are_not_failures(emulator):
    result = run.run(
        run.Script(inline="sleep 300"),
        executor=local_pvc_executor(emulator),
        name="flaky",
        detach=True,
    )
    app_id = app_id_of(result)
    sched = create_scheduler("t")
    wait_for(lambda: sched.describe(app_id).state == AppState.RUNNING, timeout=60, what="running")
    emulator.control(
        "POST",
        "faults",
        {
            "match": {"method": "GET", "path_prefix": "/api/v1/workloads"},
            "count": -1,
            "action": {"status": 503},
        },
    )
    from nemo_run.core.clients.http import RetryPolicy

    sched._client_for(get_store().get("dgx_cloud", app_id)).http.retry = RetryPolicy(
        attempts=2, base_delay=0.01
    )
    desc = sched.describe(app_id)
    assert desc.state == AppState.RUNNING and "not answering" in desc.msg and desc.unanswered
    emulator.control("DELETE", "faults")
    sched.cancel(app_id)
    assert sched.describe(app_id).state == AppState.CANCELLED


def test_logs_without_the_pvc_mounted_here_say_where_they_are(emulator):
    ex = run.DGXCloudExecutor(
        project_name="nemo-project",
        container_image=image(),
        pvcs=[{"claimName": "remote-pvc", "path": emulator.pvc("remote-pvc")}],
        pvc_nemo_run_dir=emulator.pvc("remote-pvc") + "/jobs",
        launched_from_cluster=True,
    )
    result = run.run(run.Script(inline="echo hi"), executor=ex, name="where")
    from nemo_run.core.store import get_store as store

    store().update("dgx_cloud", app_id_of(result), data={"launched_from_cluster": False})
    [line] = list(create_scheduler("t").log_iter(app_id_of(result), "where"))
    assert "are on the PVC at" in line and "/logs/rank0.log" in line


def test_profile_must_be_private(nemorun_home, monkeypatch):
    for name in ("DGX_CLOUD_BASE_URL", "DGX_CLOUD_CLIENT_ID", "DGX_CLOUD_CLIENT_SECRET"):
        monkeypatch.delenv(name)
    profile = nemorun_home / "profiles" / "dgxcloud.json"
    profile.parent.mkdir()
    profile.write_text(
        json.dumps({"base_url": "http://h/api/v1", "client_id": "id", "client_secret": "s3"})
    )
    ex = run.DGXCloudExecutor(
        project_name="p",
        container_image="i",
        pvcs=[{"claimName": "c", "path": "/n"}],
        pvc_nemo_run_dir="/n/j",
    )
    profile.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users .*chmod 600"):
        ex.credentials()
    profile.chmod(0o600)
    assert ex.credentials() == ("http://h/api/v1", "id", "s3")
    assert "s3" not in repr(ex)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": 0}, "nodes must be an integer >= 1"),
        ({"pvc_nemo_run_dir": "/elsewhere/jobs"}, "is not under any PVC path"),
        ({"pvcs": []}, "pvcs needs at least one"),
        ({"pvcs": [{"claimName": "c"}]}, r"pvcs\[0\] needs 'claimName' and an absolute 'path'"),
        ({"base_url": "x.run.ai/api/v1"}, "is not an http.s. URL"),
        ({"distributed_framework": "Horovod"}, "use one of 'PyTorch'"),
        ({"container_image": ""}, "container_image is required"),
        ({"project_name": ""}, "project_name is required"),
        ({"kube_apiserver_url": "k8s:6443"}, "kube_apiserver_url='k8s:6443' is not an http"),
    ],
)
def test_executor_rejects_bad_input(kwargs, message):
    base = {
        "project_name": "p",
        "container_image": "i",
        "pvcs": [{"claimName": "c", "path": "/n"}],
        "pvc_nemo_run_dir": "/n/jobs",
    }
    ex = run.DGXCloudExecutor(**{**base, **kwargs})  # as 0.11.1: checked at launch
    with pytest.raises(ConfigError, match=message):
        ex.validate()
    with pytest.raises(ConfigError, match=message):
        run.run(run.Script(inline="true"), executor=ex, name="x", dryrun=True)


def test_fault_tolerance_exports_its_files_and_a_finished_training_ends_at_once(emulator):
    """launcher="ft": ft_launcher's config and flag files are on the PVC (exported as 0.11.1
    does), and a workload whose training already finished exits 0 without training again."""
    ex = local_pvc_executor(emulator, launcher="ft", gpus_per_node=0)
    text = run.run(run.Script(path="train.py"), executor=ex, name="ft", dryrun=True).dryrun
    assert re.search(r"export FAULT_TOL_CFG_PATH=\S+/jobs/ft-\S+_ft_cfg\.yml\n", text), text
    assert "export FAULT_TOL_FINISHED_FLAG_FILE=" in text
    assert "\nft_launcher --ignore-missing-fault-tol-cfg " in text
    flags = os.path.join(emulator.pvc("local-pvc"), "ft-flags")
    os.makedirs(flags, exist_ok=True)
    open(os.path.join(flags, "done"), "w").close()
    launcher = run.FaultTolerance(
        finished_flag_file=f"{flags}/done", job_results_file=f"{flags}/results"
    )
    ex = local_pvc_executor(emulator, launcher=launcher, gpus_per_node=0)
    result = run.run(run.Script(path="train.py"), executor=ex, name="ftdone")
    assert result.ok  # ft_launcher is not installed here: only the early exit can succeed
    lines = list(create_scheduler("t").log_iter(app_id_of(result), "ftdone"))
    assert lines == ["Training is finished\n"]
