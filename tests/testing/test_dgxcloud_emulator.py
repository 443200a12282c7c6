"""The Run:ai API emulator, started as a separate process and driven over HTTP with urllib.

Most tests share one emulator in subprocess mode (workloads run as host processes); the
Docker test starts its own in docker mode. Responses are also checked against the vendored
OpenAPI schemas (strictly: no field the spec does not name).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import socket
import time
import urllib.error
import urllib.request

import pytest

from nemo_run.testing.dgxcloud import EmulatorProcess, launch
from nemo_run.testing.dgxcloud.validate import ApiSpec
from tests.helpers import wait_for

SECRET = "test-secret"
CLIENT = "emulator-client"
PROJECTS = ("nemo-project", "other-project", "third-project")
SPEC = ApiSpec.load()


# ---------------------------------------------------------------------------------------------
# A tiny urllib client


class Reply:
    def __init__(self, status: int, body, headers):
        self.status = status
        self.body = body
        self.headers = headers

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body!r})"


def call(
    url: str,
    method: str,
    path: str,
    body=None,
    token: str | None = None,
    raw: bytes | None = None,
    timeout: float = 10,
) -> Reply:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
            status, headers = response.status, response.headers
    except urllib.error.HTTPError as e:
        payload, status, headers = e.read(), e.code, e.headers
    return Reply(status, json.loads(payload) if payload else None, headers)


def grant(url: str, client_id: str = CLIENT, secret: str = SECRET) -> str:
    reply = call(
        url,
        "POST",
        "/api/v1/token",
        {"grantType": "client_credentials", "clientID": client_id, "clientSecret": secret},
    )
    assert reply.status == 200, reply
    return reply.body["accessToken"]


def assert_schema(value, name: str) -> None:
    issues = SPEC.validator.validate_named(value, name)
    assert not issues, f"{name}: " + "; ".join(map(str, issues))


class Api:
    """The shared emulator with a token, plus helpers for workloads."""

    def __init__(self, emu: EmulatorProcess, secret: str = SECRET):
        self.emu = emu
        self.url = emu.url
        self.secret = secret
        self.token = grant(self.url, secret=secret)
        self.projects = {
            p["name"]: p
            for p in self.get("/api/v1/org-unit/projects").body["projects"]  # one page: 3 < 50
        }

    def call(self, method: str, path: str, body=None, **kw) -> Reply:
        reply = call(self.url, method, path, body, token=self.token, **kw)
        if reply.status == 401 and "expired" in (reply.body or {}).get("message", ""):
            self.token = grant(self.url, secret=self.secret)  # expire-tokens revoked it
            reply = call(self.url, method, path, body, token=self.token, **kw)
        return reply

    def get(self, path: str, **kw) -> Reply:
        return self.call("GET", path, **kw)

    def post(self, path: str, body=None, **kw) -> Reply:
        return self.call("POST", path, body, **kw)

    def delete(self, path: str, **kw) -> Reply:
        return self.call("DELETE", path, **kw)

    def state(self) -> dict:
        return call(self.url, "GET", "/_emulator/state").body

    def faults(self, *rules) -> None:
        reply = call(self.url, "POST", "/_emulator/faults", list(rules))
        assert reply.status == 200, reply

    def body(self, name: str, script: str | None = None, project: str = "nemo-project", **spec):
        p = self.projects[project]
        spec.setdefault("image", "localhost/nemorun-python:bookworm-1")
        if script is not None:
            spec.update(command="sh -c", args=shlex.quote(script))
        return {"name": name, "projectId": p["id"], "clusterId": p["clusterId"], "spec": spec}

    def submit(self, kind: str, body: dict) -> dict:
        reply = self.post(f"/api/v1/workloads/{kind}", body)
        assert reply.status == 202, reply
        return reply.body

    def wait_phase(self, kind: str, wid: str, *phases: str, timeout: float = 15) -> dict:
        def done():
            reply = self.get(f"/api/v1/workloads/{kind}/{wid}")
            assert reply.status == 200, reply
            return reply.body if reply.body["actualPhase"] in phases else None

        return wait_for(done, timeout, f"workload {wid} to reach {phases}")

    def workload_state(self, wid: str) -> dict:
        return next(w for w in self.state()["workloads"] if w["id"] == wid)

    def log(self, wid: str, rank: int = 0) -> str:
        path = self.emu.data_dir / "logs" / wid / f"{rank}.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> EmulatorProcess:
    data_dir = tmp_path_factory.mktemp("runai-emulator")
    args = ["--mode", "subprocess", "--stop-grace", "0.5"]
    for name in PROJECTS:
        args += ["--project", name]
    emu = launch(*args, data_dir=data_dir, client_secret=SECRET)
    yield emu
    assert emu.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(emu.pid, 0)


@pytest.fixture(scope="module")
def api(emulator) -> Api:
    return Api(emulator)


# ---------------------------------------------------------------------------------------------
# Tokens and projects


def test_token_grants_and_401s(api):
    url = api.url
    token = grant(url)
    assert token.count(".") == 2  # JWT-shaped
    reply = call(
        url,
        "POST",
        "/api/v1/token",
        {"grantType": "app_token", "appID": CLIENT, "appSecret": SECRET},
    )
    assert reply.status == 200 and reply.body["expiresIn"] == 3600
    assert_schema(reply.body, "TokenResponse")

    bad = call(
        url,
        "POST",
        "/api/v1/token",
        {"grantType": "client_credentials", "clientID": CLIENT, "clientSecret": "nope"},
    )
    assert bad.status == 401
    assert_schema(bad.body, "Error")
    assert call(url, "POST", "/api/v1/token", {"grantType": "refresh_token"}).status == 400
    extra = call(url, "POST", "/api/v1/token", {"grantType": "client_credentials", "scope": "x"})
    assert extra.status == 400 and "$.scope" in extra.body["message"]

    for token in (None, "not-a-token"):
        reply = call(url, "GET", "/api/v1/workloads", token=token)
        assert reply.status == 401, reply
        assert_schema(reply.body, "Error")
    wrong_id = {"grantType": "app_token", "appID": "someone-else", "appSecret": SECRET}
    assert call(url, "POST", "/api/v1/token", wrong_id).status == 401
    assert api.get("/api/v1/workloads").status == 200


def test_expire_tokens(emulator):
    url = emulator.url
    token = grant(url)
    assert call(url, "GET", "/api/v1/org-unit/projects", token=token).status == 200
    assert call(url, "POST", "/_emulator/expire-tokens").status == 200
    reply = call(url, "GET", "/api/v1/org-unit/projects", token=token)
    assert reply.status == 401 and "expired" in reply.body["message"]
    fresh = grant(url)
    assert call(url, "GET", "/api/v1/org-unit/projects", token=fresh).status == 200


def test_token_ttl(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNAI_EMULATOR_CLIENT_SECRET", raising=False)
    with launch("--mode", "subprocess", "--token-ttl", "1", data_dir=tmp_path) as emu:
        token = grant(emu.url, secret="emulator-secret")  # the default secret
        assert call(emu.url, "GET", "/api/v1/workloads", token=token).status == 200
        time.sleep(1.2)
        assert call(emu.url, "GET", "/api/v1/workloads", token=token).status == 401


def test_token_keys_follow_the_spec_unless_told_to_be_lenient(emulator, tmp_path):
    """`clientId` (nemo-run 0.11.1's spelling) is refused by default, as the spec names
    `clientID`; `--lenient-token-keys` takes it, for running the peer in bench/."""
    peer_style = {"grantType": "client_credentials", "clientId": CLIENT, "clientSecret": SECRET}
    refused = call(emulator.url, "POST", "/api/v1/token", peer_style)
    assert refused.status == 400 and "did you mean 'clientID'" in refused.body["message"]
    with launch(
        "--mode", "subprocess", "--lenient-token-keys", data_dir=tmp_path, client_secret=SECRET
    ) as emu:
        reply = call(emu.url, "POST", "/api/v1/token", peer_style)
        assert reply.status == 200 and reply.body["accessToken"]


def test_auto_mode_without_a_local_image_runs_processes(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNAI_EMULATOR_CLIENT_SECRET", raising=False)
    with launch("--mode", "auto", "--project", "p", data_dir=tmp_path) as emu:
        api = Api(emu, secret="emulator-secret")
        body = api.body("auto-mode", "echo on the host", project="p", image="no-such/image:0")
        wid = api.submit("trainings", body)["workloadId"]
        assert api.wait_phase("trainings", wid, "Completed", "Failed")["actualPhase"] == "Completed"
        assert api.workload_state(wid)["mode"] == "subprocess"
        assert "on the host" in api.log(wid)


def test_projects_filter_and_pagination(api):
    everything = api.get("/api/v1/org-unit/projects").body
    assert [p["name"] for p in everything["projects"]] == list(PROJECTS)
    assert "next" not in everything
    ids = {p["id"] for p in everything["projects"]}
    clusters = {p["clusterId"] for p in everything["projects"]}
    assert len(ids) == 3 and len(clusters) == 1
    for project in everything["projects"]:
        assert_schema(project, "Project")

    one = api.get("/api/v1/org-unit/projects?filterBy=name==other-project").body
    assert [p["name"] for p in one["projects"]] == ["other-project"]
    cluster = clusters.pop()
    repeated = api.get(
        f"/api/v1/org-unit/projects?filterBy=name=@project&filterBy=clusterId=={cluster}"
        "&filterBy=name!=third-project"
    ).body
    assert [p["name"] for p in repeated["projects"]] == ["nemo-project", "other-project"]
    comma = api.get("/api/v1/org-unit/projects?filterBy=name=^third,clusterId==" + cluster).body
    assert [p["name"] for p in comma["projects"]] == ["third-project"]

    first = api.get("/api/v1/org-unit/projects?limit=2").body
    assert [p["name"] for p in first["projects"]] == list(PROJECTS[:2]) and first["next"] == 2
    rest = api.get(f"/api/v1/org-unit/projects?limit=2&offset={first['next']}").body
    assert [p["name"] for p in rest["projects"]] == ["third-project"] and "next" not in rest

    bad_field = api.get("/api/v1/org-unit/projects?filterBy=projectId==1")
    assert bad_field.status == 400 and "filterBy" in bad_field.body["message"]
    assert api.get("/api/v1/org-unit/projects?limit=0").status == 400
    assert api.get("/api/v1/org-unit/projects?bogus=1").status == 400


# ---------------------------------------------------------------------------------------------
# Workloads running for real


def test_training_runs_to_completion(api):
    script = 'echo "hello $GREETING from $(pwd)"; echo done > /ckpt/out.txt; cat /ckpt/out.txt'
    body = api.body(
        "train-ok",
        script,
        environmentVariables=[{"name": "GREETING", "value": "emulator"}],
        storage={"pvc": [{"claimName": "ckpt-claim", "path": "/ckpt", "existingPvc": True}]},
    )
    created = api.submit("trainings", body)
    assert_schema(created, "Training1")
    assert created["actualPhase"] == "Creating" and created["desiredPhase"] == "Running"
    assert created["name"] == created["requestedName"] == "train-ok"
    assert created["createdBy"] == CLIENT and created["spec"] == body["spec"]
    wid = created["workloadId"]

    final = api.wait_phase("trainings", wid, "Completed", "Failed")
    assert final["actualPhase"] == "Completed", api.log(wid)
    log = api.log(wid)
    assert "hello emulator from" in log and "done" in log
    host_file = api.emu.data_dir / "pvcs" / "ckpt-claim" / "out.txt"
    assert host_file.read_text() == "done\n"

    phases = [p for p, _ in api.workload_state(wid)["phases"]]
    assert phases == ["Creating", "Pending", "Initializing", "Running", "Completed"]

    workload = api.get(f"/api/v1/workloads/{wid}").body
    assert_schema(workload, "WorkloadDetailed")
    assert workload["type"] == "Training" and workload["phase"] == "Completed"
    assert workload["projectId"] == body["projectId"] and workload["completedAt"]
    listed = api.get("/api/v1/workloads?filterBy=name==train-ok").body["workloads"]
    assert [w["id"] for w in listed] == [wid]
    for item in listed:
        assert_schema(item, "Workload")


def test_failing_command_fails(api):
    created = api.submit("trainings", api.body("train-bad", "echo about to fail; exit 3"))
    final = api.wait_phase("trainings", created["workloadId"], "Completed", "Failed")
    assert final["actualPhase"] == "Failed"
    workload = api.get(f"/api/v1/workloads/{created['workloadId']}").body
    assert "code 3" in workload["phaseMessage"]
    assert "about to fail" in api.log(created["workloadId"])


def test_distributed_two_workers(api):
    """Without a master pod the PyTorch operator sets only PET_NNODES: no MASTER_ADDR, RANK or
    WORLD_SIZE (nothing to meet at); each pod is still a machine of its own."""
    script = (
        'echo "rank=$RANK world=$WORLD_SIZE master=$MASTER_ADDR nnodes=$PET_NNODES '
        'node=$NEMORUN_STANDIN_NODE_ADDR"'
    )
    body = api.body("dist-two", script, numWorkers=2, distributedFramework="PyTorch")
    created = api.submit("distributed", body)
    assert_schema(created, "DistributedWorkload")
    wid = created["workloadId"]
    assert api.wait_phase("distributed", wid, "Completed", "Failed")["actualPhase"] == "Completed"
    nodes = set()
    for rank in (0, 1):
        log = api.log(wid, rank)
        found = re.search(r"rank= world= master= nnodes=2 node=(127\.\d+\.\d+\.\d+)$", log, re.M)
        assert found, log
        nodes.add(found.group(1))
    assert len(nodes) == 2
    assert len(api.workload_state(wid)["replicas"]) == 2
    listed = api.get(f"/api/v1/workloads?filterBy=type==Distributed,name=={body['name']}").body
    assert [w["id"] for w in listed["workloads"]] == [wid]
    assert listed["workloads"][0]["requestedPods"] == {"number": 2}
    # the typed GET is per kind: a distributed id is not a training
    assert api.get(f"/api/v1/workloads/trainings/{wid}").status == 404


def test_distributed_with_a_master_gets_the_pytorch_operators_environment(api):
    """A master pod plus numWorkers workers: every pod gets the master's address and port, the
    pod count and its rank (master 0), as Kubeflow's PyTorch operator gives them; the master's
    address is its own loopback address, the workers' differ."""
    script = (
        'echo "rank=$RANK/$WORLD_SIZE pet=$PET_NODE_RANK/$PET_NNODES/$PET_NPROC_PER_NODE '
        'master=$MASTER_ADDR:$MASTER_PORT node=$NEMORUN_STANDIN_NODE_ADDR hosts=$NEMORUN_STANDIN_HOSTS"'
    )
    body = api.body(
        "dist-master",
        script,
        numWorkers=2,
        distributedFramework="PyTorch",
    )
    body["masterSpecSameAsWorker"] = True
    wid = api.submit("distributed", body)["workloadId"]
    assert api.wait_phase("distributed", wid, "Completed", "Failed")["actualPhase"] == "Completed"
    seen = {}
    for rank in (0, 1, 2):
        log = api.log(wid, rank)
        found = re.search(
            rf"rank={rank}/3 pet={rank}/3/auto master=(\S+):23456 node=(\S+) hosts=(\S+)", log
        )
        assert found, log
        seen[rank] = found.groups()
    master = seen[0][0]
    assert all(m == master for m, _, _ in seen.values()) and seen[0][1] == master
    assert len({node for _, node, _ in seen.values()}) == 3
    hosts = dict(item.split("=") for item in seen[1][2].split(","))
    name = api.get(f"/api/v1/workloads/{wid}").body["name"]
    assert hosts == {
        f"{name}-master-0": seen[0][1],
        f"{name}-worker-0": seen[1][1],
        f"{name}-worker-1": seen[2][1],
    }


def test_suspend_resume_and_delete(api):
    created = api.submit("workspaces", api.body("ws-sleep", "echo started; sleep 60"))
    wid = created["workloadId"]
    api.wait_phase("workspaces", wid, "Running")
    pid = wait_for(lambda: api.workload_state(wid)["replicas"][0]["pid"], 5, "a pid")
    os.kill(pid, 0)  # alive

    assert api.post(f"/api/v1/workloads/workspaces/{wid}/suspend").status == 202
    assert api.wait_phase("workspaces", wid, "Stopped")["desiredPhase"] == "Stopped"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "Stopping" in [p for p, _ in api.workload_state(wid)["phases"]]

    assert api.post(f"/api/v1/workloads/workspaces/{wid}/resume").status == 202
    api.wait_phase("workspaces", wid, "Running")
    new_pid = wait_for(lambda: api.workload_state(wid)["replicas"][0]["pid"], 5, "a new pid")
    assert new_pid != pid

    assert api.delete(f"/api/v1/workloads/workspaces/{wid}").status == 202
    wait_for(lambda: api.get(f"/api/v1/workloads/workspaces/{wid}").status == 404, 10, "404")
    assert api.get(f"/api/v1/workloads/{wid}").status == 404
    with pytest.raises(ProcessLookupError):
        os.kill(new_pid, 0)
    active = api.get("/api/v1/workloads?filterBy=name==ws-sleep").body["workloads"]
    deleted = api.get("/api/v1/workloads?filterBy=name==ws-sleep&deleted=true").body["workloads"]
    assert active == [] and [w["id"] for w in deleted] == [wid] and deleted[0]["deletedAt"]
    assert api.delete(f"/api/v1/workloads/workspaces/{wid}").status == 404
    # the name is free again once the workload is gone
    again = api.submit("workspaces", api.body("ws-sleep", "true"))
    api.wait_phase("workspaces", again["workloadId"], "Completed")


def test_list_paging_and_project_filter(api):
    other = api.projects["other-project"]
    ids = [
        api.submit("trainings", api.body(f"page-{i}", "true", project="other-project"))[
            "workloadId"
        ]
        for i in range(3)
    ]
    query = f"/api/v1/workloads?filterBy=projectId=={other['id']}&limit=2"
    first = api.get(query).body
    assert [w["id"] for w in first["workloads"]] == ids[:2] and first["next"] == 2
    rest = api.get(f"{query}&offset=2").body
    assert [w["id"] for w in rest["workloads"]] == ids[2:] and "next" not in rest
    newest = api.get(f"{query}&sortBy=createdAt&sortOrder=desc").body["workloads"]
    assert newest[0]["id"] == ids[-1]
    assert api.get("/api/v1/workloads?filterBy=bogus==1").status == 400
    assert api.get("/api/v1/workloads?deleted=maybe").status == 400


# ---------------------------------------------------------------------------------------------
# Validation


def _validation_cases():
    long_args = "x" * 10_001
    return [
        ("unknown top field", {"priority": 5}, None, "$.priority"),
        ("unknown spec field", {}, {"imagePulPolicy": "Always"}, "$.spec.imagePulPolicy"),
        (
            "unknown nested field",
            {},
            {"environmentVariables": [{"name": "A", "value": "b", "secretName": "s"}]},
            "$.spec.environmentVariables[0].secretName",
        ),
        ("wrong type", {"name": 5}, None, "$.name"),
        ("distributed-only field", {}, {"numWorkers": 2}, "$.spec.numWorkers"),
        ("wrong type in field", {}, {"backoffLimit": "3"}, "$.spec.backoffLimit"),
        ("bad enum", {}, {"restartPolicy": "Sometimes"}, "$.spec.restartPolicy"),
        (
            "bad pattern",
            {},
            {"compute": {"cpuMemoryRequest": "lots"}},
            "$.spec.compute.cpuMemoryRequest",
        ),
        (
            "below minimum",
            {},
            {"compute": {"gpuDevicesRequest": -1}},
            "$.spec.compute.gpuDevicesRequest",
        ),
        ("bad name", {"name": "Bad_Name"}, None, "$.name"),
        ("name starts with a digit", {"name": "1job"}, None, "$.name"),
        ("name too long", {"name": "a" * 64}, None, "$.name"),
        ("args too long", {}, {"args": long_args}, "$.spec.args"),
        ("unknown project", {"projectId": "999999"}, None, "$.projectId"),
        (
            "wrong cluster",
            {"clusterId": "71f69d83-ba66-4822-adf5-55ce55efd210"},
            None,
            "$.clusterId",
        ),
        ("cluster not a uuid", {"clusterId": "cluster-1"}, None, "$.clusterId"),
        ("missing image", {}, {"image": None}, "$.spec.image"),
        ("null name", {"name": None}, None, "$.name"),
    ]


@pytest.mark.parametrize(
    "case,top,spec,path", _validation_cases(), ids=[c[0] for c in _validation_cases()]
)
def test_training_validation(api, case, top, spec, path):
    body = api.body("valid-name", "true")
    body.update(top)
    if spec:
        body["spec"].update(spec)
    before = len(api.state()["workloads"])
    reply = api.post("/api/v1/workloads/trainings", body)
    assert reply.status == 400, reply
    assert_schema(reply.body, "SubmissionErrorV2")
    assert reply.body["code"] == 400 and path in reply.body["message"], reply.body
    assert path.removeprefix("$.") in [i["field"] for i in reply.body["complianceIssues"]]
    assert len(api.state()["workloads"]) == before


def test_missing_required_fields(api):
    reply = api.post("/api/v1/workloads/trainings", {"name": "x", "spec": {"image": "img"}})
    assert reply.status == 400
    fields = {i["field"] for i in reply.body["complianceIssues"]}
    assert fields == {"projectId", "clusterId"}
    assert api.post("/api/v1/workloads/trainings", raw=b"{not json").status == 400
    assert api.post("/api/v1/workloads/trainings").status == 400  # no body at all


def test_unknown_field_hint_names_the_close_match(api):
    body = api.body("hinted", "true", enviromentVariables=[])
    reply = api.post("/api/v1/workloads/trainings", body)
    assert reply.status == 400 and "did you mean 'environmentVariables'" in reply.body["message"]


def test_duplicate_name_conflicts(api):
    api.submit("trainings", api.body("dup-name", "true"))
    reply = api.post("/api/v1/workloads/trainings", api.body("dup-name", "true"))
    assert reply.status == 409 and reply.body["code"] == 409
    # another type in the same project clashes too; another project does not
    assert api.post("/api/v1/workloads/workspaces", api.body("dup-name", "true")).status == 409
    api.submit("trainings", api.body("dup-name", "true", project="other-project"))
    prefixed = api.submit(
        "trainings", {**api.body("dup-name", "true"), "useGivenNameAsPrefix": True}
    )
    assert prefixed["requestedName"] == "dup-name" and prefixed["name"].startswith("dup-name-")
    names = [w["name"] for w in api.state()["workloads"] if w["name"] == "dup-name"]
    assert len(names) == 2


def test_methods_paths_and_sizes(api):
    wid = api.submit("trainings", api.body("method-check", "true"))["workloadId"]
    reply = api.delete(f"/api/v1/workloads/{wid}")  # only the typed path deletes
    assert reply.status == 405 and reply.headers["Allow"] == "GET"
    assert_schema(reply.body, "Error")
    reply = api.get("/api/v1/workloads/trainings")
    assert reply.status == 405 and reply.headers["Allow"] == "POST"
    assert call(api.url, "GET", "/api/v1/token").status == 405
    assert api.post("/api/v1/org-unit/projects", {"name": "x"}).status == 501  # real, not emulated
    assert api.get("/api/v1/no-such-thing").status == 404
    assert api.get("/api/v2/workloads").status == 404
    assert api.get("/api/v1/workloads/not-a-uuid").status == 400
    assert api.get("/api/v1/workloads/71f69d83-ba66-4822-adf5-55ce55efd210").status == 404

    body = api.body("too-big", "true")
    body["spec"]["labels"] = [{"name": "pad", "value": "x" * (1_600_000)}]
    reply = api.post("/api/v1/workloads/trainings", body)
    assert reply.status == 413, reply
    assert api.get("/api/v1/workloads").status == 200  # the connection state survived


# ---------------------------------------------------------------------------------------------
# Fault injection


def _counter(api: Api, key: str) -> int:
    return api.state()["requests"].get(key, 0)


def test_fault_status_codes(api):
    key = "POST /api/v1/workloads/trainings"
    api.faults(
        {"match": {"method": "POST", "path_prefix": "/api/v1/workloads"}, "action": {"status": 503}}
    )
    before = _counter(api, key)
    body = api.body("fault-503", "true")
    reply = api.post("/api/v1/workloads/trainings", body)
    assert reply.status == 503 and reply.body["code"] == 503
    assert not [w for w in api.state()["workloads"] if w["name"] == "fault-503"]
    assert api.post("/api/v1/workloads/trainings", body).status == 202  # count=1: used up
    assert _counter(api, key) == before + 2
    assert len([w for w in api.state()["workloads"] if w["name"] == "fault-503"]) == 1

    api.faults(
        {"match": {"method": "GET"}, "count": 2, "action": {"status": 429, "retry_after": 1}},
        {"match": {"path_prefix": "/api/v1/org-unit"}, "action": {"status": 500}},
    )
    for _ in range(2):
        reply = api.get("/api/v1/workloads")
        assert reply.status == 429 and reply.headers["Retry-After"] == "1"
    assert api.get("/api/v1/workloads").status == 200
    assert api.get("/api/v1/org-unit/projects").status == 500
    assert api.get("/api/v1/org-unit/projects").status == 200
    assert call(api.url, "GET", "/_emulator/faults").body["faults"] == []


def test_fault_delay_drop_and_clear(api):
    api.faults({"match": {"path_prefix": "/api/v1/org-unit"}, "action": {"delay": 0.4}})
    start = time.monotonic()
    assert api.get("/api/v1/org-unit/projects").status == 200
    assert time.monotonic() - start >= 0.4

    api.faults(
        {"match": {"method": "GET", "path_prefix": "/api/v1/workloads"}, "action": {"drop": True}}
    )
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        api.get("/api/v1/workloads")
    assert api.get("/api/v1/workloads").status == 200

    api.faults({"match": {"method": "GET"}, "count": -1, "action": {"status": 500}})
    assert api.get("/api/v1/workloads").status == 500
    assert api.get("/api/v1/workloads").status == 500
    assert call(api.url, "DELETE", "/_emulator/faults").body == {"cleared": 1}
    assert api.get("/api/v1/workloads").status == 200
    bad = call(api.url, "POST", "/_emulator/faults", {"action": {"explode": True}})
    assert bad.status == 400


def test_fault_delay_after_commit(api):
    key = "POST /api/v1/workloads/trainings"
    api.faults(
        {
            "match": {"method": "POST", "path_prefix": "/api/v1/workloads/trainings"},
            "action": {"delay_after_commit": 1.2},
        }
    )
    before = _counter(api, key)
    with pytest.raises((urllib.error.URLError, socket.timeout, TimeoutError)):
        api.post("/api/v1/workloads/trainings", api.body("slow-commit", "true"), timeout=0.4)
    # the request timed out on the client, yet the workload exists, exactly once
    found = [w for w in api.state()["workloads"] if w["name"] == "slow-commit"]
    assert len(found) == 1
    assert _counter(api, key) == before + 1
    retry = api.post("/api/v1/workloads/trainings", api.body("slow-commit", "true"))
    assert retry.status == 409  # a blind retry is caught as a duplicate


# ---------------------------------------------------------------------------------------------
# Reset (kills what runs); kept last in this module


def test_reset_kills_everything(api):
    wid = api.submit("trainings", api.body("reset-me", "sleep 60"))["workloadId"]
    api.wait_phase("trainings", wid, "Running")
    pid = wait_for(lambda: api.workload_state(wid)["replicas"][0]["pid"], 5, "a pid")
    assert call(api.url, "POST", "/_emulator/reset").status == 200
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    state = api.state()
    assert state["workloads"] == [] and state["requests"] == {}
    assert api.get(f"/api/v1/workloads/trainings/{wid}").status == 404


# ---------------------------------------------------------------------------------------------
# Docker mode


@pytest.mark.docker
def test_docker_distributed(tmp_path, docker_image):
    import docker

    script = (
        "import os, socket, time\n"
        "rank = os.environ['RANK']\n"
        "addr = socket.gethostbyname(os.environ['MASTER_ADDR'])\n"
        "print('rank', rank, 'world', os.environ['WORLD_SIZE'], 'port', os.environ['MASTER_PORT'],"
        " 'master', os.environ['MASTER_ADDR'], addr, flush=True)\n"
        "open('/ckpt/rank' + rank, 'w').write(os.environ['GREETING'])\n"
        "time.sleep(1.0 if rank == '0' else 0)\n"
    )
    with launch("--mode", "docker", data_dir=tmp_path, client_secret=SECRET) as emu:
        api = Api(emu)
        body = api.body(
            "docker-dist",
            image=docker_image,
            command="python3 -c",
            args=shlex.quote(script),
            numWorkers=2,
            distributedFramework="PyTorch",
            environmentVariables=[{"name": "GREETING", "value": "hi"}],
            storage={"pvc": [{"claimName": "shared", "path": "/ckpt"}]},
        )
        body["masterSpecSameAsWorker"] = True  # a master pod plus 2 workers
        wid = api.submit("distributed", body)["workloadId"]
        final = api.wait_phase("distributed", wid, "Completed", "Failed", timeout=60)
        assert final["actualPhase"] == "Completed", (api.log(wid, 0), api.log(wid, 1))
        name = body["name"]
        for rank in (0, 1, 2):
            # the master pod by its name, resolvable on the workload's network
            text = f"rank {rank} world 3 port 23456 master {name}-master-0 "
            assert text in api.log(wid, rank), api.log(wid, rank)
            assert (tmp_path / "pvcs" / "shared" / f"rank{rank}").read_text() == "hi"
        addresses = {api.log(wid, rank).split()[-1] for rank in (0, 1, 2)}
        assert len(addresses) == 1  # every pod resolved the same master
        assert api.workload_state(wid)["mode"] == "docker"
        client = docker.from_env()
        try:
            label = {"label": f"nemo_run.emulator={wid}"}
            assert len(client.api.containers(all=True, filters=label)) == 3  # kept for logs
            assert api.delete(f"/api/v1/workloads/distributed/{wid}").status == 202
            wait_for(
                lambda: not client.api.containers(all=True, filters=label), 20, "containers gone"
            )
        finally:
            client.close()
