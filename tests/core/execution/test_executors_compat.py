"""DGX Cloud, Lepton, Docker and SkyPilot executors construct as in nemo-run 0.11.1 (issue 12).

The expected parameters, defaults and process counts below were read from nemo-run 0.11.1
(`inspect.signature`, `dataclasses.fields`, `nproc_per_node()` / `nnodes()` for each input)
and are written out literally. Fields may be set after construction, as 0.11.1 allows: what a
launch needs is checked at dry run, with a ConfigError before anything starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shlex
from typing import Any

import pytest
from torchx.specs import AppState

import nemo_run as run
from nemo_run.core.execution.dgxcloud import DGXCloudState, api_root
from nemo_run.exceptions import ConfigError
from nemo_run.run.torchx_backend.schedulers.dgxcloud import DGX_STATES

REQUIRED = "<required>"

# (name, default) of each init field after the Executor base's, in 0.11.1's order.
PEER_FIELDS: dict[type, list[tuple[str, Any]]] = {
    run.DGXCloudExecutor: [
        ("base_url", REQUIRED),
        ("kube_apiserver_url", REQUIRED),
        ("client_id", REQUIRED),
        ("client_secret", REQUIRED),
        ("project_name", REQUIRED),
        ("container_image", REQUIRED),
        ("pvc_nemo_run_dir", REQUIRED),
        ("launched_from_cluster", False),
        ("nodes", 1),
        ("gpus_per_node", 0),
        ("nprocs_per_node", 1),
        ("pvcs", []),
        ("distributed_framework", "PyTorch"),
        ("custom_spec", {}),
        ("MAX_ARGS_CHARS", 9500),
    ],
    run.LeptonExecutor: [
        ("container_image", REQUIRED),
        ("nemo_run_dir", REQUIRED),
        ("launched_from_cluster", False),
        ("nodes", 1),
        ("gpus_per_node", 0),
        ("nprocs_per_node", 1),
        ("shared_memory_size", 65536),
        ("resource_shape", ""),
        ("node_group", ""),
        ("node_reservation", ""),
        ("secret_vars", {}),
        ("mounts", []),
        ("image_pull_secrets", []),
        ("custom_spec", {}),
        ("pre_launch_commands", []),
        ("head_resource_shape", ""),
        ("ray_version", None),
        ("can_be_preempted", False),
        ("can_preempt", False),
        ("queue_priority", None),
    ],
    run.DockerExecutor: [
        ("container_image", REQUIRED),
        ("ntasks_per_node", 1),
        ("runtime", None),
        ("num_gpus", None),
        ("shm_size", None),
        ("ulimits", []),
        ("ipc_mode", None),
        ("healthcheck", {}),
        ("privileged", False),
        ("network", "nemo_run"),
        ("additional_kwargs", {}),
        ("volumes", []),
    ],
    run.SkypilotExecutor: [
        ("container_image", None),
        ("cloud", None),
        ("region", None),
        ("zone", None),
        ("gpus", None),
        ("gpus_per_node", None),
        ("cpus", None),
        ("memory", None),
        ("instance_type", None),
        ("num_nodes", 1),
        ("use_spot", None),
        ("disk_size", None),
        ("disk_tier", None),
        ("ports", None),
        ("file_mounts", None),
        ("storage_mounts", None),
        ("cluster_name", None),
        ("setup", None),
        ("autodown", False),
        ("idle_minutes_to_autostop", None),
        ("torchrun_nproc_per_node", None),
        ("cluster_config_overrides", None),
        ("infra", None),
        ("network_tier", None),
        ("retry_until_up", False),
    ],
}
# Deliberate differences (docs/compatibility.md): credentials may come from the environment
# or a profile, so they have an empty default; and fields of ours after 0.11.1's.
OURS_DEFAULTS = {
    (run.DGXCloudExecutor, "base_url"): "",
    (run.DGXCloudExecutor, "kube_apiserver_url"): "",
    (run.DGXCloudExecutor, "client_id"): "",
    (run.DGXCloudExecutor, "client_secret"): "",
}
OURS_EXTRA = {
    run.DGXCloudExecutor: ["app_id", "app_secret", "timeout"],
    run.LeptonExecutor: ["timeout"],
    run.DockerExecutor: [],
    run.SkypilotExecutor: [],
}
# Fields 0.11.1 sets itself (init=False), with their defaults.
PEER_DERIVED = {
    run.DGXCloudExecutor: {"pvc_job_dir": ""},
    run.LeptonExecutor: {"lepton_job_dir": ""},
    run.DockerExecutor: {"job_name": "nemo-job", "run_as_group": False, "resource_group": []},
    run.SkypilotExecutor: {},
}
BASE_FIELDS = {"packager", "launcher", "env_vars", "retries", "experiment_id", "job_dir"}
# Public methods as 0.11.1 names their parameters.
PEER_METHODS = {
    run.DGXCloudExecutor: {
        "status": ["job_id"],
        "cancel": ["job_id"],
        "get_auth_token": [],
        "get_project_and_cluster_id": ["token"],
        "package_configs": ["cfgs"],
        "nnodes": [],
        "nproc_per_node": [],
        "macro_values": [],
        "assign": ["exp_id", "exp_dir", "task_id", "task_dir"],
    },
    run.LeptonExecutor: {
        "status": ["job_id"],
        "cancel": ["job_id"],
        "stop_job": ["job_id"],
        "package_configs": ["cfgs"],
        "nnodes": [],
        "nproc_per_node": [],
    },
    run.DockerExecutor: {
        "merge": ["executors", "num_tasks"],
        "package_configs": ["cfgs"],
        "assign": ["exp_id", "exp_dir", "task_id", "task_dir"],
    },
    run.SkypilotExecutor: {
        "to_task": ["name", "cmd", "env_vars"],
        "to_resources": [],
        "package_configs": ["cfgs"],
        "macro_values": [],
    },
}

DGX = {"project_name": "p", "container_image": "img", "pvc_nemo_run_dir": "/pvc/nemo"}
LEPTON = {"container_image": "img", "nemo_run_dir": "/ws/nemo"}


def init_fields(cls: type) -> list[tuple[str, Any]]:
    out = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in BASE_FIELDS:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = REQUIRED
        out.append((f.name, default))
    return out


def dgx(**kwargs: Any) -> run.DGXCloudExecutor:
    return run.DGXCloudExecutor(**{**DGX, **kwargs})


def lepton(**kwargs: Any) -> run.LeptonExecutor:
    return run.LeptonExecutor(**{**LEPTON, **kwargs})


def complete_lepton(**kwargs: Any) -> run.LeptonExecutor:
    ex = lepton(**kwargs)
    ex.resource_shape, ex.node_group = "gpu.8xh100-80gb", "nodes"
    ex.mounts = [{"path": "/shared", "from": "node-nfs", "mount_path": "/ws"}]
    return ex


def dryrun(executor: run.Executor, task: Any = None, name: str = "job") -> str:
    text = run.run(task or run.Script(inline="true"), executor=executor, name=name, dryrun=True)
    return text.dryrun or ""


# -- signatures and defaults ------------------------------------------------------------------
@pytest.mark.parametrize("cls", list(PEER_FIELDS), ids=lambda c: c.__name__)
def test_parameters_names_order_and_defaults_are_0_11_1s(cls):
    ours = init_fields(cls)
    peer = PEER_FIELDS[cls]
    assert [n for n, _ in ours] == [n for n, _ in peer] + OURS_EXTRA[cls]
    for (name, default), (_, mine) in zip(peer, ours, strict=False):
        assert mine == OURS_DEFAULTS.get((cls, name), default), name
    kinds = {p.kind for n, p in inspect.signature(cls).parameters.items()}
    assert kinds == {inspect.Parameter.KEYWORD_ONLY}


@pytest.mark.parametrize("cls", list(PEER_FIELDS), ids=lambda c: c.__name__)
def test_fields_0_11_1_sets_itself(cls):
    derived = {f.name: f for f in dataclasses.fields(cls) if not f.init}
    for name, default in PEER_DERIVED[cls].items():
        f = derived[name]
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert value == default, name


@pytest.mark.parametrize("cls", list(PEER_METHODS), ids=lambda c: c.__name__)
def test_public_methods_take_0_11_1s_parameters(cls):
    for name, params in PEER_METHODS[cls].items():
        signature = inspect.signature(getattr(cls, name))
        names = [p for p in signature.parameters if p not in ("self", "cls")]
        assert names == params, name


def test_required_fields_are_required_as_in_0_11_1():
    with pytest.raises(TypeError, match="project_name"):
        run.DGXCloudExecutor(container_image="i", pvc_nemo_run_dir="/p")
    with pytest.raises(TypeError, match="nemo_run_dir"):
        run.LeptonExecutor(container_image="i")
    with pytest.raises(TypeError, match="container_image"):
        run.DockerExecutor()


# -- built as 0.11.1 documents, completed afterwards ---------------------------------------------
def test_docker_as_0_11_1_documents_it():
    ex = run.DockerExecutor(
        container_image="python:3.12",
        num_gpus=-1,
        runtime="nvidia",
        ipc_mode="host",
        shm_size="30g",
        volumes=["/src/path:/dst/path"],
        env_vars={"PYTHONUNBUFFERED": "1"},
        packager=run.Packager(),
    )
    ex.ulimits = ["nofile:1048576:1048576", "memlock:-1:-1"]  # 0.11.1's NAME:SOFT:HARD
    text = dryrun(ex)
    assert "ulimits: ['nofile:1048576:1048576', 'memlock:-1:-1']" in text
    assert "network: nemo_run" in text and "healthcheck" not in text  # {} means none
    assert "gpus: -1" in text and "ipc_mode: host" in text


def test_skypilot_as_0_11_1_documents_it_checks_file_mounts_at_launch(tmp_path):
    ex = run.SkypilotExecutor(
        gpus="A10G",
        gpus_per_node=2,
        container_image="nvcr.io/nvidia/nemo:dev",
        infra="k8s/my-context",
        network_tier="best",
        cluster_name="nemo_tester",
        file_mounts={"nemo_run.whl": "nemo_run.whl", "/workspace/code": str(tmp_path)},
        storage_mounts={
            "/workspace/outputs": {"name": "outs", "store": "gcs", "mode": "MOUNT"},
        },
        setup="pip install nemo_run.whl",
        packager=run.Packager(),
    )
    with pytest.raises(ConfigError, match=r"file_mounts\['nemo_run.whl'\]='nemo_run.whl' does not"):
        dryrun(ex)
    (tmp_path / "nemo_run.whl").write_text("")
    ex.file_mounts = {"nemo_run.whl": str(tmp_path / "nemo_run.whl")}
    import yaml

    config = yaml.safe_load(dryrun(ex))
    assert config["resources"]["network_tier"] == "best"
    assert config["resources"]["accelerators"] == {"A10G": 2}


def test_lepton_shape_and_node_group_are_checked_at_launch_not_construction():
    ex = lepton(head_resource_shape="cpu.small", ray_version="2.40.0")
    with pytest.raises(ConfigError, match=r"LeptonExecutor.resource_shape, LeptonExecutor.node_"):
        dryrun(ex)
    ex.resource_shape, ex.node_group = "gpu.8xh100-80gb", "nodes"
    with pytest.raises(ConfigError, match=r"nemo_run_dir='/ws/nemo' must be inside one of"):
        dryrun(ex)
    ex.mounts = [{"path": "/shared", "from": "node-nfs", "mount_path": "/ws"}]
    assert '"resource_shape": "gpu.8xh100-80gb"' in dryrun(ex)


def test_dgx_completed_after_construction(nemorun_home):
    ex = dgx(pvcs=[])
    with pytest.raises(ConfigError, match="pvcs needs at least one"):
        dryrun(ex)
    ex.pvcs = [{"claimName": "nemo-pvc", "path": "/pvc"}]
    ex.nodes = 0
    with pytest.raises(ConfigError, match="DGXCloudExecutor.nodes must be an integer >= 1"):
        dryrun(ex)
    ex.nodes = True  # set after construction: the type is checked at launch too
    with pytest.raises(ConfigError, match=r"nodes must be an integer, got True \(bool\)"):
        dryrun(ex)
    ex.nodes = 2
    assert '"numWorkers": 1' in dryrun(ex)
    assert not (nemorun_home / "experiments").exists() or not any(
        (nemorun_home / "experiments").iterdir()
    )  # dry runs write nothing


def test_bad_settings_fail_before_any_side_effect(nemorun_home, monkeypatch):
    """A launch (not a dry run) with a bad setting starts nothing and records nothing."""
    from nemo_run.core.store import get_store

    monkeypatch.setenv("DGX_CLOUD_BASE_URL", "http://127.0.0.1:9")  # nothing answers there
    ex = dgx(pvcs=[{"claimName": "c", "path": "/elsewhere"}])
    with pytest.raises(ConfigError, match="is not under any PVC path"):
        run.run(run.Script(inline="true"), executor=ex, name="bad", detach=True)
    assert get_store().list("dgx_cloud") == []


# -- processes and nodes (item 1) ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "nproc", "nnodes"),
    [
        # 0.11.1's values for the same inputs
        (lambda: dgx(gpus_per_node=8, nodes=2, launcher="torchrun"), 8, 2),
        (lambda: dgx(nprocs_per_node=4), 4, 1),
        (lambda: dgx(), 1, 1),
        (lambda: lepton(gpus_per_node=8, nodes=2), 8, 2),
        (lambda: lepton(nprocs_per_node=2), 2, 1),
        (lambda: lepton(), 1, 1),
        (lambda: run.SkypilotExecutor(), 1, 1),
        (lambda: run.SkypilotExecutor(gpus="H100", gpus_per_node=8, num_nodes=2), 8, 2),
        (lambda: run.SkypilotExecutor(gpus_per_node=8, torchrun_nproc_per_node=4), 4, 1),
        (lambda: run.DockerExecutor(container_image="i"), 1, 1),
        (lambda: run.DockerExecutor(container_image="i", ntasks_per_node=4, num_gpus=8), 4, 1),
        # ours on purpose: an explicit process count wins over the GPUs (0.11.1: 8), and a
        # count in gpus='NAME:COUNT' is the GPUs per node (0.11.1: 1)
        (lambda: dgx(gpus_per_node=8, nprocs_per_node=4), 4, 1),
        (lambda: lepton(gpus_per_node=8, nprocs_per_node=2), 2, 1),
        (lambda: run.SkypilotExecutor(gpus="A100:8"), 8, 1),
    ],
)
def test_nproc_and_nnodes(build, nproc, nnodes):
    ex = build()
    assert (ex.nproc_per_node(), ex.nnodes()) == (nproc, nnodes)


def test_dgx_torchrun_runs_one_process_per_gpu():
    ex = dgx(gpus_per_node=8, nodes=2, launcher="torchrun")
    ex.pvcs = [{"claimName": "c", "path": "/pvc"}]
    script = dryrun(ex, run.Script(inline="python train.py"))
    words = shlex.split(script.rsplit("\n", 2)[-2].split(" 2>&1")[0])
    flag = next(w for w in words if w.startswith("--nproc") and "per" in w)
    value = flag.split("=", 1)[1] if "=" in flag else words[words.index(flag) + 1]
    assert value == "8" and '"gpuDevicesRequest": 8' in script


# -- states -------------------------------------------------------------------------------------
def test_dgx_states_keyed_by_the_runai_phases():
    assert [s.value for s in DGXCloudState] == [
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
    ]
    assert set(DGX_STATES) == set(DGXCloudState)
    assert DGX_STATES[DGXCloudState.UNKNOWN] == AppState.PENDING  # 0.11.1's: never an outcome
    assert DGX_STATES[DGXCloudState.COMPLETED] == AppState.SUCCEEDED
    assert DGX_STATES["Failed"] == AppState.FAILED  # a str enum: the API's strings work too
    assert DGXCloudState("Running") is DGXCloudState.RUNNING


# -- DGX Cloud ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "https://org.run.ai",
        "https://org.run.ai/",
        "https://org.run.ai/api/v1",
        "https://org.run.ai/api",
    ],
)
def test_base_url_as_host_root_or_api_root(url, monkeypatch):
    assert api_root(url) == "https://org.run.ai/api/v1"
    ex = dgx(base_url=url, client_id="id", client_secret="s")
    for name in ("DGX_CLOUD_BASE_URL", "DGX_CLOUD_CLIENT_ID", "DGX_CLOUD_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    assert ex.credentials() == ("https://org.run.ai/api/v1", "id", "s")


def test_dgx_macros_are_the_pods_variables():
    macros = dgx().macro_values()
    assert (macros.head_node_ip_var, macros.num_nodes_var, macros.node_rank_var) == (
        "MASTER_ADDR",
        "WORLD_SIZE",
        "RANK",
    )
    ex = dgx(nodes=2, gpus_per_node=4, pvcs=[{"claimName": "c", "path": "/pvc"}])
    task = run.Script(inline='echo "$1"', args=["--rdzv-endpoint", "$MASTER_ADDR:29500"])
    text = dryrun(ex, task, "m")
    assert '--rdzv-endpoint "${MASTER_ADDR}":29500' in text  # expands in the pod
    assert ': "${NPROC_PER_NODE:=4}"' in text
    from torchx import specs

    from nemo_run.run.torchx_backend.schedulers.dgxcloud import create_scheduler

    app = specs.AppDef("m", [specs.Role("m", image="", entrypoint="true")])
    info = create_scheduler("t").submit_dryrun(app, ex)
    assert ex.pvc_job_dir == info.request.job_dir  # told at dry run, as 0.11.1 sets it
    assert ex.pvc_job_dir.startswith("/pvc/nemo/m-")


def test_dgx_package_configs_are_read_from_nemo_run_configs(tmp_path):
    ex = dgx(job_dir=str(tmp_path))
    assert ex.package_configs(("cfg.yaml", "a: 1")) == ["/nemo_run/configs/cfg.yaml"]
    assert (tmp_path / "configs" / "cfg.yaml").read_text() == "a: 1"


# -- Lepton ------------------------------------------------------------------------------------
def test_lepton_macros_and_launch_script_derive_the_workers():
    ex = complete_lepton(nodes=2, gpus_per_node=8)
    assert ex.macro_values().head_node_ip_var == "MASTER_ADDR"
    text = dryrun(ex, run.Script(inline="true", args=["$NODE_RANK"]), "l")
    assert "${LEPTON_JOB_SERVICE_PREFIX:-${LEPTON_JOB_NAME}}-0.${LEPTON_SUBDOMAIN" in text
    assert 'export NPROC_PER_NODE="${NPROC_PER_NODE:-8}"' in text and '"${NODE_RANK}"' in text
    from torchx import specs

    from nemo_run.run.torchx_backend.schedulers.lepton import create_scheduler

    app = specs.AppDef("l", [specs.Role("l", image="", entrypoint="true")])
    create_scheduler("t").submit_dryrun(app, ex)
    assert ex.lepton_job_dir.startswith("/ws/nemo/l-")


@pytest.mark.parametrize(
    ("settings", "queue"),
    [
        ({}, None),
        (  # 0.11.1's default priority when preemption is asked for
            {"can_preempt": True},
            {"priority_class": "mid-4000", "can_preempt": True, "can_be_preempted": False},
        ),
        (
            {"queue_priority": "high-9000", "can_be_preempted": True},
            {"priority_class": "high-9000", "can_preempt": False, "can_be_preempted": True},
        ),
    ],
)
def test_lepton_queue_config(settings, queue):
    ex = complete_lepton(**settings)
    assert ex.queue_config() == queue
    spec = json.loads(dryrun(ex).split("\n", 1)[1].split("\n# ")[0])["spec"]
    assert spec.get("queue_config") == queue


# -- Docker -------------------------------------------------------------------------------------
def test_docker_merge_groups_one_executor_per_task():
    first = run.DockerExecutor(container_image="img-a", packager=run.Packager())
    second = run.DockerExecutor(container_image="img-b", packager=run.Packager(), num_gpus=1)
    merged = run.DockerExecutor.merge([first, second], 2)
    assert merged is first and merged.run_as_group and merged.resource_group == [first, second]
    copies = run.DockerExecutor.merge([run.DockerExecutor(container_image="c")], 3)
    assert len(copies.resource_group) == 3 and copies.resource_group[1] is not copies
    with pytest.raises(ConfigError, match="2 executors for 3 tasks"):
        run.DockerExecutor.merge([first, second], 3)


def test_docker_grouped_roles_run_with_their_own_executor():
    from torchx import specs

    from nemo_run.run.torchx_backend.schedulers.docker import create_scheduler

    first = run.DockerExecutor(container_image="img-a", packager=run.Packager())
    second = run.DockerExecutor(container_image="img-b", packager=run.Packager(), shm_size="1g")
    merged = run.DockerExecutor.merge([first, second], 2)
    roles = [
        specs.Role(name=n, image="", entrypoint="echo", args=[n, "$MASTER_ADDR"]) for n in "ab"
    ]
    info = create_scheduler("t").submit_dryrun(specs.AppDef(name="grp", roles=roles), merged)
    a, b = info.request.containers
    assert (a.image, b.image) == ("img-a", "img-b")
    assert "shm_size" not in a.kwargs and b.kwargs["shm_size"] == "1g"
    # no shell in a container: node variables are put in place, the first container's name
    assert a.command == ["echo", "a", a.hostname] and b.command == ["echo", "b", a.hostname]
    assert a.kwargs["environment"]["NNODES"] == "1" and a.kwargs["network"] == "nemo_run"


def test_docker_job_name_and_configs(tmp_path):
    ex = run.DockerExecutor(container_image="img", packager=run.Packager())
    ex.assign("exp-1", str(tmp_path), "train", "train")
    assert ex.job_name == "train" and ex.job_dir == os.path.join(tmp_path, "train")
    assert ex.package_configs(("a/b.yaml", "x")) == ["/nemo_run/configs/a/b.yaml"]
    assert (tmp_path / "train" / "configs" / "a" / "b.yaml").read_text() == "x"


# -- SkyPilot -----------------------------------------------------------------------------------
def test_skypilot_lists_are_any_of_and_reach_the_resources():
    pytest.importorskip("sky", reason="the skypilot extra is not installed")
    ex = run.SkypilotExecutor(
        cloud=["aws", "gcp"],
        region=["us-east-1", "none"],
        gpus=["H100", "A100"],
        gpus_per_node=8,
        disk_tier=["high", "best"],
        network_tier="best",
        cluster_config_overrides={"aws": {"remote_identity": "SERVICE_ACCOUNT"}},
        torchrun_nproc_per_node=2,
    )
    config = ex.resources_config()
    assert config["any_of"] == [
        {"cloud": "aws", "region": "us-east-1", "disk_tier": "high"},
        {"cloud": "gcp", "disk_tier": "best"},
    ]
    assert config["accelerators"] == {"H100": 8, "A100": 8} and config["network_tier"] == "best"
    assert config["_cluster_config_overrides"] == {"aws": {"remote_identity": "SERVICE_ACCOUNT"}}
    resources = ex.to_resources()
    assert len(resources) == 4 and {r.cloud.canonical_name() for r in resources} == {"aws", "gcp"}
    assert ex.nproc_per_node() == 2


def test_skypilot_run_script_sets_the_node_variables(tmp_path):
    pytest.importorskip("sky", reason="the skypilot extra is not installed")
    ex = run.SkypilotExecutor(infra="k8s", num_nodes=2, packager=run.Packager())
    ex.job_dir = str(tmp_path)
    ex.package_configs(("c.yaml", "x"))
    task = ex.to_task("t", ["torchrun", "--rdzv-endpoint", "$head_node_ip:29500"], {"A": "1"})
    assert 'export head_node_ip=$(echo "$SKYPILOT_NODE_IPS" | head -n1)' in task.run
    assert '--rdzv-endpoint "${head_node_ip}":29500' in task.run
    assert task.file_mounts == {"/nemo_run/configs": str(tmp_path / "configs")}
    assert ex.macro_values().node_rank_var == "SKYPILOT_NODE_RANK"
