"""2-node torchrun jobs whose nodes really meet, on every backend that can run two nodes.

Each job runs the torchrun stand-in (`nemo_run.testing.torchrun_standin`: torchrun's
arguments, its PET_* defaults and a TCP rendezvous) first on PATH, 2 nodes x 2 processes of
its rendezvous check: rank 0 listens at the MASTER_ADDR:MASTER_PORT torchrun gives the
workers, every other rank connects, and each prints the world it saw. The nodes meet only
through the address the launcher rendered from the platform's variables: pods of the
emulators that run as host processes each have a loopback address of their own, so an
endpoint that is every node's own `localhost` never brings them together (the negative test).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from torchx import specs
from torchx.components import dist
from torchx.specs import AppState, is_terminal, parse_app_handle

import nemo_run as run
from nemo_run.testing.torchrun_standin import STANDIN_PATH
from tests.helpers import REPO, wait_for

CLIENT, SECRET, TOKEN = "emulator-client", "emulator-secret-77d1c0", "lepton-token-3b9e"
LINE = re.compile(r"rank (\d+)/(\d+) local (\d+) node (\d+) saw world: (\S+)$")  # any prefix


# ---------------------------------------------------------------------------------------------
# What every backend must show


def assert_met(lines: list[str], context: object = "") -> list[str]:
    """Every one of the 4 ranks printed the same world, ranks 0-1 on one node address and
    2-3 on another (node 0 hosts ranks 0-1); returns the two node addresses."""
    found = [m for m in (LINE.search(line.strip()) for line in lines) if m]
    assert sorted(int(m.group(1)) for m in found) == [0, 1, 2, 3], (lines, context)
    worlds = {m.group(5) for m in found}
    assert len(worlds) == 1, (worlds, context)
    for m in found:
        rank = int(m.group(1))
        assert (m.group(2), int(m.group(3)), int(m.group(4))) == ("4", rank % 2, rank // 2), m
    members = [entry.split("@", 1) for entry in worlds.pop().split(",")]
    assert [int(rank) for rank, _ in members] == [0, 1, 2, 3], members
    nodes = [addr for _, addr in members]
    assert nodes[0] == nodes[1] and nodes[2] == nodes[3] and nodes[0] != nodes[2], nodes
    return [nodes[0], nodes[2]]


def ship_standin(folder: Path) -> Path:
    """A copy of the stand-in where the job's nodes see it (storage mounted at the same path
    in pods, containers and here)."""
    target = folder / "standin"
    shutil.copytree(STANDIN_PATH, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def job_env(standin: Path, timeout: float = 30) -> dict[str, str]:
    """The stand-in's torchrun first on PATH (then this host's PATH and an image's usual one),
    and how long nodes wait for each other."""
    path = f"{standin}/bin:{os.environ['PATH']}:/usr/local/bin:/usr/bin:/bin"
    return {"PATH": path, "NEMORUN_STANDIN_TIMEOUT": str(timeout)}


def app_id_of(result: run.RunResult) -> str:
    return parse_app_handle(result.handle).app_id


def image() -> str:
    return os.environ.get("NEMORUN_TEST_IMAGE") or "unused-in-subprocess-mode"


def modes() -> list[object]:
    """Pods as host processes always; as containers where the suite set up an engine."""
    return ["subprocess", pytest.param("docker", marks=pytest.mark.docker)]


def need_engine(mode: str, request: pytest.FixtureRequest) -> None:
    if mode == "docker":
        request.getfixturevalue("docker_image")  # skips (or fails with CI=true) without one


# ---------------------------------------------------------------------------------------------
# DGX Cloud (Run:ai): a master pod and one worker, c10d at $MASTER_ADDR


@pytest.fixture(scope="module", params=modes())
def runai(request, tmp_path_factory):
    from nemo_run.testing.dgxcloud import launch

    need_engine(request.param, request)
    data_dir = tmp_path_factory.mktemp("runai")
    handle = launch(
        *("--mode", request.param, "--client-id", CLIENT, "--project", "nemo-project"),
        data_dir=data_dir,
        client_secret=SECRET,
    )
    yield handle.url, data_dir, request.param
    handle.stop()


@pytest.fixture
def dgx(runai, monkeypatch):
    """An executor whose PVC is mounted here at its path in the pods, and the stand-in on it."""
    url, data_dir, mode = runai
    monkeypatch.setenv("DGX_CLOUD_BASE_URL", f"{url}/api/v1")
    monkeypatch.setenv("DGX_CLOUD_CLIENT_ID", CLIENT)
    monkeypatch.setenv("DGX_CLOUD_CLIENT_SECRET", SECRET)
    pvc = data_dir / "pvcs" / "mn-pvc"
    pvc.mkdir(parents=True, exist_ok=True)
    standin = pvc / "standin" if (pvc / "standin").is_dir() else ship_standin(pvc)

    def executor(**kwargs) -> run.DGXCloudExecutor:
        return run.DGXCloudExecutor(
            project_name="nemo-project",
            container_image=image(),
            pvcs=[{"claimName": "mn-pvc", "path": str(pvc)}],
            pvc_nemo_run_dir=f"{pvc}/jobs",
            launched_from_cluster=True,
            nodes=2,
            **kwargs,
        )

    return executor, standin, mode


def pod_lines(app_id: str, role: str, scheduler_module) -> list[str]:
    sched = scheduler_module.create_scheduler("t")
    return [line for k in range(2) for line in sched.log_iter(app_id, role, k)]


def test_dgx_two_pods_meet_at_the_master_pod(dgx, runai):
    from nemo_run.run.torchx_backend.schedulers import dgxcloud

    executor, standin, mode = dgx
    runai_url = runai[0]
    ex = executor(nprocs_per_node=2, launcher="torchrun", env_vars=job_env(standin))
    result = run.run(run.Script(path=f"{standin}/rendezvous_check.py"), executor=ex, name="meet")
    lines = pod_lines(app_id_of(result), "meet", dgxcloud)
    assert result.ok, lines
    master, worker = assert_met(lines, mode)
    # nodes=2 is exactly two pods: the master and one worker
    with urllib.request.urlopen(f"{runai_url}/_emulator/state", timeout=10) as response:
        workloads = json.loads(response.read())["workloads"]
    (workload,) = [w for w in workloads if w["name"] == app_id_of(result)]
    assert len(workload["replicas"]) == 2
    if mode == "subprocess":  # the pods' own loopback addresses, master first
        assert re.fullmatch(r"127\.\d+\.\d+\.1", master) and worker == master[:-1] + "2"
    else:  # the pods' hostnames, named as the PyTorch operator names them
        assert master.endswith("-master-0") and worker.endswith("-worker-0")


@pytest.mark.parametrize("runai", ["subprocess"], indirect=True)  # one mode proves it
def test_dgx_nodes_told_to_meet_at_localhost_never_meet(dgx):
    """The bug this proves absent: an endpoint every pod reads as its own address. Each pod
    is a machine of its own, so nobody hosts the rendezvous and the job fails, saying so."""
    from nemo_run.run.torchx_backend.schedulers import dgxcloud

    executor, standin, _ = dgx
    env = job_env(standin, timeout=2)
    rendered = (
        "torchrun --rdzv-backend c10d --rdzv-endpoint localhost:29500 --rdzv-id 1 "
        f"--nnodes 2 --nproc-per-node 2 --node-rank $RANK {standin}/rendezvous_check.py"
    )
    result = run.run(
        run.Script(inline=rendered), executor=executor(env_vars=env), name="apart", detach=True
    )
    app_id = app_id_of(result)
    sched = dgxcloud.create_scheduler("t")
    final = wait_for(
        lambda: (d := sched.describe(app_id)) and is_terminal(d.state) and d, 60, "the job"
    )
    assert final.state == AppState.FAILED
    text = "".join(pod_lines(app_id, "apart", dgxcloud))
    assert not LINE.search(text), text
    assert re.search(r"could not meet the other 1 node\(s\) at localhost:29500", text), text


# ---------------------------------------------------------------------------------------------
# Lepton: two workers, static rendezvous at worker 0 (`<service prefix>-0.<subdomain>`)


@pytest.fixture(scope="module", params=modes())
def lepton(request, tmp_path_factory):
    pytest.importorskip("leptonai.api.v2.client", reason="the lepton extra is not installed")
    from nemo_run.testing.lepton import launch

    need_engine(request.param, request)
    handle = launch(
        "--mode",
        request.param,
        "--node-group",
        "nemo-nodes:2",
        data_dir=tmp_path_factory.mktemp("lepton"),
        token=TOKEN,
    )
    yield handle, request.param
    handle.stop()


def test_lepton_two_workers_meet_at_worker_0(lepton, monkeypatch):
    from nemo_run.run.torchx_backend.schedulers import lepton as backend

    handle, mode = lepton
    for key, value in handle.env().items():
        monkeypatch.setenv(key, value)
    host = handle.data_dir / "storage" / "node-nfs" / "shared"
    host.mkdir(parents=True, exist_ok=True)
    standin = ship_standin(host)
    ex = run.LeptonExecutor(
        container_image=image(),
        nemo_run_dir=f"{host}/nemo",
        resource_shape="cpu.small",
        node_group="nemo-nodes",
        launched_from_cluster=True,
        mounts=[{"path": "/shared", "from": "node-nfs", "mount_path": str(host)}],
        nodes=2,
        nprocs_per_node=2,
        launcher="torchrun",
        env_vars=job_env(standin),
    )
    result = run.run(run.Script(path=f"{standin}/rendezvous_check.py"), executor=ex, name="meet")
    lines = pod_lines(app_id_of(result), "meet", backend)
    assert result.ok, lines
    first, second = assert_met(lines, mode)
    if mode == "subprocess":
        assert re.fullmatch(r"127\.\d+\.\d+\.1", first) and second == first[:-1] + "2"
    else:
        assert (first, second) == ("worker-0", "worker-1")


# ---------------------------------------------------------------------------------------------
# Docker: two containers on the job's network, meeting at the first one


def docker_torchrun_app() -> specs.AppDef:
    """A 2-node torchrun role as nemo_run renders it for Docker: its launcher's flags with the
    executor's macros (`--rdzv-endpoint $MASTER_ADDR:29500 --node-rank $NODE_RANK`)."""
    ex = run.DockerExecutor(container_image="unused")
    entrypoint, args = run.Torchrun().wrap(
        "python3",
        ["/standin/rendezvous_check.py"],
        is_python=True,
        nnodes=2,
        nproc_per_node=2,
        rendezvous=ex.torchrun_rendezvous,
    )
    role = specs.Role("meet", image="", entrypoint=entrypoint, args=args, num_replicas=2)
    return specs.AppDef("meet", [ex.macro_values().apply(role)])


def torchx_ddp_app() -> specs.AppDef:
    """torchx's own 2x2 DDP component (`--rdzv_endpoint ${TORCHX_RANK0_HOST}:29500`)."""
    app = dist.ddp(script="/standin/rendezvous_check.py", j="2x2", image="unused", name="meet")
    app.roles[0].name = "meet"
    return app


def test_docker_torchrun_replicas_are_nodes_ranked_by_replica(tmp_path):
    """Without an engine: each container of a torchrun role gets its own node rank and the
    node count in place of the references (no shell runs the command), all meeting at the
    first container; a role of plain replicas stays one node."""
    from nemo_run.run.torchx_backend.schedulers.docker import create_scheduler

    ex = run.DockerExecutor(container_image="img", packager=run.Packager(), job_dir=str(tmp_path))
    plain = specs.Role("plain", image="", entrypoint="python3", args=["$NODE_RANK"], num_replicas=2)
    app = docker_torchrun_app()
    app.roles.append(ex.macro_values().apply(plain))
    containers = create_scheduler("t").submit_dryrun(app, ex).request.containers
    head = containers[0].hostname
    for k, container in enumerate(containers[:2]):
        cmd = " ".join(container.command)
        assert f"--rdzv-endpoint {head}:29500 " in cmd and f" --node-rank {k} " in cmd, cmd
        assert container.kwargs["environment"]["NNODES"] == "2"
    assert [c.command[-1] for c in containers[2:]] == ["0", "0"]
    assert {c.kwargs["environment"]["NNODES"] for c in containers[2:]} == {"1"}


@pytest.mark.docker
@pytest.mark.parametrize("make_app", [docker_torchrun_app, torchx_ddp_app])
def test_docker_two_containers_meet_at_the_first(docker_image, make_app):
    from nemo_run.run.torchx_backend.schedulers.docker import create_scheduler

    ex = run.DockerExecutor(
        container_image=docker_image,
        packager=run.Packager(),
        ntasks_per_node=2,
        volumes=[f"{STANDIN_PATH}:/standin:ro"],
    )
    app = make_app()
    app.roles[0].env.update(job_env(Path("/standin")))
    sched = create_scheduler("t")
    info = sched.submit_dryrun(app, ex)
    names = [c.hostname for c in info.request.containers]
    app_id = sched.schedule(info)
    final = wait_for(
        lambda: (d := sched.describe(app_id)) and is_terminal(d.state) and d, 90, "the job"
    )
    lines = [line for k in range(2) for line in sched.log_iter(app_id, "meet", k)]
    assert final.state == AppState.SUCCEEDED, lines
    assert assert_met(lines) == names  # container hostnames; the first hosts


# ---------------------------------------------------------------------------------------------
# SkyPilot: as many nodes as the local Slurm cluster has


def slurm_nodes() -> list[str]:
    """The nodes of the local Slurm cluster behind the SkyPilot stack (none when its
    controller does not answer here)."""
    if not shutil.which("sinfo"):
        return []
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True)
    return sorted(set(out.stdout.split())) if out.returncode == 0 else []


@pytest.mark.skypilot
def test_skypilot_two_nodes_meet_at_the_head_node(monkeypatch):
    home = os.environ.get("NEMORUN_TEST_SKY_HOME")
    if not home:
        pytest.skip("no SkyPilot stack was set up: run the tests through scripts/test.sh")
    nodes = slurm_nodes()
    if len(nodes) < 2:
        pytest.skip(
            f"the local Slurm cluster of scripts/skypilot-up.sh has {len(nodes)} node(s) "
            f"({', '.join(nodes) or 'none answering'}): one NodeName in partition debug, "
            "one slurmd per host, so SkyPilot cannot place num_nodes=2"
        )
    sky = pytest.importorskip("sky", reason="the skypilot extra is not installed")
    from nemo_run.run.torchx_backend.schedulers.skypilot import create_scheduler

    name = f"nemo-mn-{secrets.token_hex(3)}"
    prepare = os.path.join(REPO, "scripts", "skypilot-prepare-cluster.sh")
    subprocess.run(["bash", prepare, name], check=True, capture_output=True, text=True)
    monkeypatch.setenv("HOME", home)  # the SDK's settings point at the local API server
    remote = "/tmp/nemorun-standin"
    ex = run.SkypilotExecutor(
        infra="slurm/localcluster",
        cpus=1,
        memory=1,
        cluster_name=name,
        num_nodes=2,
        torchrun_nproc_per_node=2,
        launcher="torchrun",
        packager=run.Packager(),
        file_mounts={remote: STANDIN_PATH},
        env_vars=job_env(Path(remote), timeout=120),
    )
    try:
        task = run.Script(path=f"{remote}/rendezvous_check.py")
        result = run.run(task, executor=ex, name="meet")
        lines = list(create_scheduler("t").log_iter(app_id_of(result), "meet"))
        assert result.ok, lines
        assert_met(lines)
    finally:
        sky.get(sky.down(name))
