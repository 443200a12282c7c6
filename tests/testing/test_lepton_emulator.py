"""The Lepton API emulator, started as a separate process and driven by the real leptonai SDK.

Most tests share one emulator in subprocess mode (replicas run as host processes); the Docker
test starts its own in docker mode. Validation, fault and auth tests use raw urllib.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip(
    "leptonai", reason="the Lepton emulator needs the leptonai SDK (the 'lepton' extra)"
)

from leptonai.api.v2.api_resource import ClientError, ServerError  # noqa: E402
from leptonai.api.v2.client import APIClient  # noqa: E402
from leptonai.api.v2.types.affinity import LeptonResourceAffinity  # noqa: E402
from leptonai.api.v2.types.common import Metadata  # noqa: E402
from leptonai.api.v2.types.deployment import (  # noqa: E402
    EnvValue,
    EnvVar,
    LeptonContainer,
    Mount,
)
from leptonai.api.v2.types.job import LeptonJob, LeptonJobState, LeptonJobUserSpec  # noqa: E402
from leptonai.api.v2.types.secret import SecretItem  # noqa: E402
from leptonai.api.v2.utils import WorkspaceUnauthorizedError  # noqa: E402

from nemo_run.testing.lepton import EmulatorProcess, launch  # noqa: E402
from tests.helpers import wait_for  # noqa: E402

TOKEN = "test-lepton-token"
SHARED_FS = "node-nfs:lepton-shared-fs"


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("lepton-emu")
    proc = launch(
        "--mode",
        "subprocess",
        "--stop-grace",
        "0.5",
        "--node-group",
        "nemo-nodes",
        "--node-group",
        "big-nodes:3",
        data_dir=data_dir,
        token=TOKEN,
    )
    yield proc
    assert proc.stop() == 0


@pytest.fixture
def client(emu: EmulatorProcess) -> APIClient:
    return APIClient(workspace_id=emu.workspace_id, auth_token=emu.token, url=emu.url)


def call(url: str, method: str, body=None, token: str | None = None, raw: bytes | None = None):
    """(status, decoded JSON or text, headers) of one request."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            payload, status, headers = response.read(), response.status, response.headers
    except urllib.error.HTTPError as e:
        payload, status, headers = e.read(), e.code, e.headers
    try:
        decoded = json.loads(payload) if payload else None
    except ValueError:
        decoded = payload.decode()
    return status, decoded, headers


def state(emu: EmulatorProcess) -> dict:
    return call(emu.origin + "/_emulator/state", "GET")[1]


def make_job(name: str, script: str, *, workers: int = 1, **spec) -> LeptonJob:
    return LeptonJob(
        metadata=Metadata(id=name),
        spec=LeptonJobUserSpec(
            container=LeptonContainer(
                image="localhost/nemorun-python:bookworm-1", command=["bash", "-c", script]
            ),
            completions=workers,
            parallelism=workers,
            **spec,
        ),
    )


def wait_state(client: APIClient, job_id: str, *states: str, timeout: float = 15) -> LeptonJob:
    def reached():
        job = client.job.get(job_id)
        return job if job.status and job.status.state.value in states else None

    return wait_for(reached, timeout=timeout, what=f"job {job_id} in {states}")


# ---------------------------------------------------------------------------------------------
# Jobs through the SDK


def test_two_replicas_complete_with_output_from_both(emu, client):
    groups = client.nodegroup.list_all()
    group = next(g for g in groups if g.metadata.name == "nemo-nodes")
    nodes = client.nodegroup.list_nodes(group)
    script = (
        "echo worker=$LEPTON_JOB_WORKER_INDEX/$LEPTON_JOB_TOTAL_WORKERS "
        "rank=$NODE_RANK world=$WORLD_SIZE master=$MASTER_ADDR:$MASTER_PORT; "
        "echo node=$NEMORUN_STANDIN_NODE_ADDR names=$NEMORUN_STANDIN_HOSTS; "
        "echo job=$LEPTON_JOB_NAME sub=$LEPTON_SUBDOMAIN prefix=$LEPTON_JOB_SERVICE_PREFIX; "
        "echo greeting=$GREETING secret=$TOKEN_FROM_SECRET; "
        "echo from-$LEPTON_JOB_WORKER_INDEX > /mnt/shared/out-$LEPTON_JOB_WORKER_INDEX.txt"
    )
    client.secret.create([SecretItem(name="MY_SECRET", value="s3cr3t")])
    assert [s.name for s in client.secret.list_all()] == ["MY_SECRET"]
    job = make_job(
        "two-workers",
        script,
        workers=2,
        resource_shape="gpu.8xh100-80gb",
        affinity=LeptonResourceAffinity(
            allowed_dedicated_node_groups=[group.metadata.id_],
            allowed_nodes_in_node_group=[n.metadata.id_ for n in nodes],
        ),
        envs=[
            EnvVar(name="GREETING", value="hello"),
            EnvVar(name="TOKEN_FROM_SECRET", value_from=EnvValue(secret_name_ref="MY_SECRET")),
        ],
        mounts=[Mount(path="/runs/a", mount_path="/mnt/shared", **{"from": SHARED_FS})],
    )
    created = client.job.create(job)
    job_id = created.metadata.id_
    assert created.metadata.name == "two-workers" and job_id.startswith("two-workers-")
    assert created.status.state == LeptonJobState.Starting

    done = wait_state(client, job_id, "Completed", "Failed")
    assert done.status.state == LeptonJobState.Completed, state(emu)
    assert (done.status.succeeded, done.status.failed, done.status.active) == (2, 0, 0)
    assert done.status.creation_time and done.status.completion_time >= done.status.creation_time

    replicas = client.job.get_replicas(job_id)
    assert len(replicas) == 2
    assert {r.status.node.id_ for r in replicas} == {n.metadata.id_ for n in nodes}
    logs = {}
    for replica in replicas:
        text = "".join(client.job.get_log(id_or_job=job_id, replica=replica))
        index = text.split("worker=")[1].split("/")[0]
        logs[index] = text
        on_disk = emu.data_dir / "logs" / job_id / f"{replica.metadata.id_}.log"
        assert on_disk.read_text() == text
    assert set(logs) == {"0", "1"}
    nodes = {k: re.search(r"node=(127\.\d+\.\d+\.\d+) names=(\S+)", t) for k, t in logs.items()}
    block = nodes["0"].group(1).rsplit(".", 1)[0]  # a loopback block of the job's own
    assert (nodes["0"].group(1), nodes["1"].group(1)) == (f"{block}.1", f"{block}.2")
    names = dict(item.split("=") for item in nodes["0"].group(2).split(","))
    assert names[f"{job_id}-1.{job_id}-job-svc"] == names["worker-1"] == f"{block}.2"
    for index, text in logs.items():
        # as Lepton: only LEPTON_* variables, no PyTorch ones (lepton_env_to_pytorch.sh's job)
        assert f"worker={index}/2 rank= world= master=:\n" in text
        assert f"job={job_id} sub={job_id}-job-svc prefix={job_id}" in text
        assert "greeting=hello secret=s3cr3t" in text
    storage = emu.data_dir / "storage" / SHARED_FS / "runs" / "a"
    assert sorted(p.read_text() for p in storage.iterdir()) == ["from-0\n", "from-1\n"]

    reasons = [e.reason for e in client.job.get_events(job_id)]
    assert reasons[0] == "JobStarting" and reasons[-1] == "JobCompleted"
    listed = client.job.list_all(status=["Completed"], q="two-workers")
    assert [j.metadata.id_ for j in listed] == [job_id]
    assert client.job.list_all(status=["Failed"], q="two-workers") == []
    assert [j.metadata.id_ for j in client.job.list_matching("")] != []
    paged = call(f"{emu.url}/jobs?page=1&page_size=1", "GET", token=TOKEN)[1]
    assert len(paged["jobs"]) == 1 and paged["total"] >= 1
    series = client.log.get_log(name_or_job=job_id)
    assert len(series["data"]["result"]) == 2


def test_parallelism_below_completions_runs_in_waves(client):
    job = make_job("waves", "echo $LEPTON_JOB_WORKER_INDEX", workers=3)
    job.spec.parallelism = 1
    created = client.job.create(job)
    done = wait_state(client, created.metadata.id_, "Completed", "Failed")
    assert done.status.state == LeptonJobState.Completed
    replicas = client.job.get_replicas(created.metadata.id_)
    outputs = sorted("".join(client.job.get_log(created, r)).strip() for r in replicas)
    assert outputs == ["0", "1", "2"]


def test_log_streams_while_the_replica_runs(client):
    script = "echo first; sleep 0.6; echo second"
    created = client.job.create(make_job("streamed", script))
    wait_state(client, created.metadata.id_, "Running")
    (replica,) = client.job.get_replicas(created)
    started = time.monotonic()
    chunks = list(client.job.get_log(id_or_job=created, replica=replica, timeout=10))
    assert "".join(chunks) == "first\nsecond\n"
    assert time.monotonic() - started >= 0.3  # followed the replica until it exited
    assert wait_state(client, created.metadata.id_, "Completed", "Failed").status.succeeded == 1


def test_failing_job_fails(emu, client):
    created = client.job.create(
        make_job(
            "fails",
            'echo "boom $LEPTON_JOB_WORKER_INDEX"; [ $NODE_RANK = 0 ] || exit 3; sleep 30',
            workers=2,
        )
    )
    done = wait_state(client, created.metadata.id_, "Completed", "Failed")
    assert done.status.state == LeptonJobState.Failed
    assert done.status.failed >= 1 and done.status.active == 0
    job_state = next(j for j in state(emu)["jobs"] if j["id"] == created.metadata.id_)
    assert "exited with code 3" in job_state["message"]
    events = client.job.get_events(created)
    assert events[-1].reason == "JobFailed" and events[-1].type_ == "Warning"


def test_stop_restart_and_delete(emu, client):
    created = client.job.create(make_job("stoppable", "echo started; sleep 60", workers=2))
    job_id = created.metadata.id_
    running = wait_state(client, job_id, "Running")
    assert running.status.active == 2 and running.status.ready == 2

    assert client.job.update(job_id, spec={"spec": {"stopped": True}})
    stopped = wait_state(client, job_id, "Stopped")
    assert stopped.spec.stopped is True and stopped.status.active == 0

    assert client.job.update(job_id, spec={"spec": {"stopped": False}})
    wait_state(client, job_id, "Running")

    assert client.job.delete(job_id)
    assert next(j for j in state(emu)["jobs"] if j["id"] == job_id)["states"][-1][0] == "Deleting"

    def gone():
        try:
            client.job.get(job_id)
        except ClientError as e:
            return e.response.status_code == 404
        return False

    wait_for(gone, timeout=10, what="the deleted job to disappear")
    assert job_id not in [j.metadata.id_ for j in client.job.list_all()]
    # the name is free again once the job is gone
    again = client.job.create(make_job("stoppable", "true"))
    assert again.metadata.id_ != job_id


def test_node_groups(emu, monkeypatch):
    for name, value in emu.env().items():  # LEPTON_WORKSPACE_ID / _TOKEN / _URL
        monkeypatch.setenv(name, value)
    client = APIClient()
    groups = {g.metadata.name: g for g in client.nodegroup.list_all()}
    assert set(groups) == {"nemo-nodes", "big-nodes"}
    big = client.nodegroup.get(groups["big-nodes"].metadata.id_)
    assert big.status.ready_nodes == 3
    assert len(client.nodegroup.list_nodes(big)) == 3
    assert len(client.nodegroup.list_idle_nodes(big)) == 3
    with pytest.raises(ClientError) as e:
        client.nodegroup.get("no-such-group")
    assert e.value.response.status_code == 404


# ---------------------------------------------------------------------------------------------
# Validation, auth and faults over raw HTTP


def job_body(name: str, **spec) -> dict:
    return {"metadata": {"id": name}, "spec": {"container": {"command": ["true"]}, **spec}}


def test_validation(emu, client):
    jobs = emu.url + "/jobs"
    status, body, _ = call(
        jobs, "POST", job_body("ok-name", container={"command": ["true"], "imagee": "x"}), TOKEN
    )
    assert status == 400 and body["errors"][0]["path"] == "$.spec.container.imagee", body
    status, body, _ = call(jobs, "POST", {**job_body("ok-name"), "extra": 1}, TOKEN)
    assert status == 400 and "$.extra" in body["message"]
    status, body, _ = call(
        jobs,
        "POST",
        job_body("ok-name", mounts=[{"from": "x", "mount_path": "/m", "paht": "/"}]),
        TOKEN,
    )
    assert status == 400 and "$.spec.mounts[0].paht" in body["message"]
    status, body, _ = call(jobs, "POST", job_body("ok-name", completions="2"), TOKEN)
    assert status == 400 and "$.spec.completions" in body["message"]
    for bad in ("Upper", "1starts-with-digit", "has_underscore", "x" * 37, ""):
        status, body, _ = call(jobs, "POST", job_body(bad), TOKEN)
        assert status == 400 and "$.metadata.id" in body["message"], (bad, body)
    assert call(jobs, "POST", job_body("x" * 36), TOKEN)[0] == 200
    status, body, _ = call(jobs, "POST", raw=b"{not json", token=TOKEN)
    assert status == 400
    status, _, _ = call(jobs, "POST", raw=b'{"pad": "' + b"x" * 1_600_000 + b'"}', token=TOKEN)
    assert status == 413

    client.job.create(make_job("dup-name", "true"))
    with pytest.raises(ClientError) as e:
        client.job.create(make_job("dup-name", "true"))
    assert e.value.response.status_code == 409
    status, body, _ = call(jobs, "POST", job_body("dup-name"), TOKEN)
    assert status == 409

    job_id = client.job.list_all(q="dup-name")[0].metadata.id_
    status, body, _ = call(f"{jobs}/{job_id}", "PATCH", {"spec": {"stoped": True}}, TOKEN)
    assert status == 400 and "$.spec.stoped" in body["message"]
    assert call(f"{jobs}/{job_id}", "PUT", {}, TOKEN)[0] == 405
    assert call(f"{jobs}?page=0", "GET", token=TOKEN)[0] == 400
    assert call(f"{jobs}?job_query_mode=everything", "GET", token=TOKEN)[0] == 400


def test_auth(emu):
    assert call(emu.url + "/jobs", "GET")[0] == 401
    assert call(emu.url + "/jobs", "GET", token="wrong")[0] == 401
    assert call(emu.url + "/jobs", "GET", token=TOKEN)[0] == 200
    assert (
        call(emu.url.replace(emu.workspace_id, "otherws") + "/jobs", "GET", token=TOKEN)[0] == 404
    )
    bad = APIClient(workspace_id=emu.workspace_id, auth_token="wrong", url=emu.url)
    with pytest.raises(WorkspaceUnauthorizedError):
        bad.info()
    with pytest.raises(ClientError) as e:
        bad.job.list_all()
    assert e.value.response.status_code == 401


def test_faults(emu, client):
    faults = emu.origin + "/_emulator/faults"
    before = state(emu)["requests"].get("GET /api/v2/workspaces/{workspace_id}/jobs", 0)
    status, body, _ = call(
        faults,
        "POST",
        {
            "match": {"method": "GET", "path_prefix": "/jobs"},
            "count": 1,
            "action": {"status": 503, "retry_after": 2},
        },
    )
    assert status == 200 and len(body["faults"]) == 1
    status, _, headers = call(emu.url + "/jobs", "GET", token=TOKEN)
    assert status == 503 and headers["Retry-After"] == "2"
    assert call(emu.url + "/jobs", "GET", token=TOKEN)[0] == 200  # count 1: used up

    rule = {"match": {"method": "GET", "path_prefix": "/api/v2/"}, "action": {"status": 500}}
    call(faults, "POST", rule)
    with pytest.raises(ServerError):
        client.nodegroup.list_all()

    call(
        faults,
        "POST",
        {"match": {"path_prefix": "/dedicated-node-groups"}, "action": {"drop": True}},
    )
    with pytest.raises(Exception):  # noqa: B017 - the connection is cut: any requests error
        client.nodegroup.list_all()

    call(faults, "POST", {"match": {"path_prefix": "/workspace"}, "action": {"delay": 0.3}})
    started = time.monotonic()
    assert client.info().workspace_name == emu.workspace_id
    assert time.monotonic() - started >= 0.3

    # delay_after_commit: the job exists even though the reply comes late
    call(
        faults,
        "POST",
        {
            "match": {"method": "POST", "path_prefix": "/jobs"},
            "action": {"delay_after_commit": 0.2},
        },
    )
    created = client.job.create(make_job("after-commit", "true"))
    assert client.job.get(created.metadata.id_).metadata.name == "after-commit"

    call(
        faults,
        "POST",
        {"match": {"path_prefix": "/nothing"}, "count": -1, "action": {"status": 500}},
    )
    assert len(call(faults, "GET")[1]["faults"]) == 1
    assert call(faults, "DELETE")[1] == {"cleared": 1}
    assert call(faults, "POST", {"match": {}, "action": {"explode": True}})[0] == 400

    snapshot = state(emu)
    assert snapshot["requests"]["GET /api/v2/workspaces/{workspace_id}/jobs"] >= before + 2
    assert snapshot["responses"]["GET /api/v2/workspaces/{workspace_id}/jobs 503"] >= 1
    assert any(j["name"] == "after-commit" and not j["deleted"] for j in snapshot["jobs"])


def test_torch_env_on_request_points_at_worker_0(tmp_path):
    """`--torch-env` adds the PyTorch variables Lepton leaves to lepton_env_to_pytorch.sh:
    MASTER_ADDR is worker 0's own address (each host-process worker has one)."""
    with launch("--mode", "subprocess", "--torch-env", data_dir=tmp_path, token=TOKEN) as own:
        c = APIClient(workspace_id=own.workspace_id, auth_token=own.token, url=own.url)
        script = "echo $NODE_RANK/$WORLD_SIZE $MASTER_ADDR:$MASTER_PORT $NEMORUN_STANDIN_NODE_ADDR"
        job_id = c.job.create(make_job("torch-env", script, workers=2)).metadata.id_
        assert wait_state(c, job_id, "Completed", "Failed").status.state == "Completed"
        lines = sorted("".join(c.job.get_log(job_id, r)) for r in c.job.get_replicas(job_id))
        head = lines[0].split()[2]
        assert lines == [f"0/2 {head}:29400 {head}\n", f"1/2 {head}:29400 {lines[1].split()[2]}\n"]
        assert head.startswith("127.") and lines[1].split()[2] != head


def test_reset(tmp_path):
    with launch("--mode", "subprocess", data_dir=tmp_path, token=TOKEN) as own:
        c = APIClient(workspace_id=own.workspace_id, auth_token=own.token, url=own.url)
        c.job.create(make_job("to-reset", "sleep 30"))
        assert len(state(own)["jobs"]) == 1
        assert call(own.origin + "/_emulator/reset", "POST")[0] == 200
        snapshot = state(own)
        assert snapshot["jobs"] == [] and snapshot["requests"] == {}
        assert c.job.list_all() == []


# ---------------------------------------------------------------------------------------------
# Docker


RENDEZVOUS = """
import os, socket, time
index = int(os.environ["LEPTON_JOB_WORKER_INDEX"])
# worker 0 by the name Lepton gives it, as lepton_env_to_pytorch.sh derives MASTER_ADDR
prefix, subdomain = os.environ["LEPTON_JOB_SERVICE_PREFIX"], os.environ["LEPTON_SUBDOMAIN"]
addr, port = f"{prefix}-0.{subdomain}", 29400
print(f"host={socket.gethostname()} index={index} master={addr}:{port}", flush=True)
if index == 0:
    server = socket.create_server(("0.0.0.0", port))
    conn, _ = server.accept()
    print("got", repr(conn.recv(100).decode()), flush=True)
else:
    deadline = time.time() + 15
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=2)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    conn.sendall(f"hello from {index}".encode())
    print("sent", flush=True)
conn.close()
with open(f"/mnt/shared/w{index}", "w") as f:
    f.write(str(index))
"""


@pytest.mark.docker
def test_docker_mode_two_containers(docker_image, tmp_path):
    with launch("--mode", "docker", "--stop-grace", "0.5", data_dir=tmp_path, token=TOKEN) as own:
        c = APIClient(workspace_id=own.workspace_id, auth_token=own.token, url=own.url)
        job = make_job(
            "in-docker",
            "",
            workers=2,
            mounts=[Mount(path="/d", mount_path="/mnt/shared", **{"from": SHARED_FS})],
        )
        job.spec.container.image = docker_image
        job.spec.container.command = ["python3", "-c", RENDEZVOUS]
        job_id = c.job.create(job).metadata.id_
        done = wait_state(c, job_id, "Completed", "Failed", timeout=20)
        assert done.status.state == LeptonJobState.Completed, state(own)
        texts = sorted("".join(c.job.get_log(job_id, r)) for r in c.job.get_replicas(job_id))
        master = f"{job_id}-0.{job_id}-job-svc:29400"
        assert texts[0].startswith(f"host=worker-0 index=0 master={master}\n"), texts
        assert texts[1].startswith(f"host=worker-1 index=1 master={master}\n"), texts
        assert "got 'hello from 1'" in texts[0] and "sent" in texts[1]
        storage = tmp_path / "storage" / SHARED_FS / "d"
        assert sorted(p.name for p in storage.iterdir()) == ["w0", "w1"]

        # a single environment string over 128 KiB cannot be exec'd: a real kernel limit
        big = make_job("too-big-env", "true", envs=[EnvVar(name="BIG", value="x" * 140_000)])
        big.spec.container.image = docker_image
        big_id = c.job.create(big).metadata.id_
        assert wait_state(c, big_id, "Completed", "Failed").status.state == LeptonJobState.Failed
        (replica,) = c.job.get_replicas(big_id)
        assert "argument list too long" in "".join(c.job.get_log(big_id, replica))

        c.job.delete(job_id)
        c.job.delete(big_id)
        wait_for(lambda: all(j["deleted"] for j in state(own)["jobs"]), what="deletion")
    import docker

    engine = docker.from_env()
    left = engine.containers.list(all=True, filters={"label": "nemo_run.lepton-emulator"})
    assert not left, [x.name for x in left]
