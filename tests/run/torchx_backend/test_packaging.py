"""Task -> AppDef conversion."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

import pytest

import nemo_run as run
from nemo_run.core.execution.base import Executor, ExecutorMacros
from nemo_run.core.execution.launcher import Launcher
from nemo_run.core.runners import partial as partial_runner
from nemo_run.run.torchx_backend.packaging import package


def scale(x: int = 1, factor: int = 2) -> int:
    return x * factor


def test_inline_bash_is_one_argument_with_args_as_positional():
    app = package("t", run.Script(inline="echo \"$1\" 'q'", args=["a b"]), run.LocalExecutor())
    role = app.roles[0]
    assert role.entrypoint == "bash"
    assert role.args == ["-c", "echo \"$1\" 'q'", "inline", "a b"]


def test_python_script_uses_the_executors_interpreter(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("print(1)")
    role = package(
        "t", run.Script(path=str(script), args=["--lr", "1"]), run.LocalExecutor()
    ).roles[0]
    assert role.entrypoint == sys.executable
    assert role.args == [str(script), "--lr", "1"]


def test_module_script():
    role = package("t", run.Script(path="json.tool", m=True), run.LocalExecutor()).roles[0]
    assert role.args[:2] == ["-m", "json.tool"]


def test_partial_runs_through_a_module_entry_point_and_round_trips():
    role = package("t", run.Partial(scale, x=21), run.LocalExecutor()).roles[0]
    assert role.args[:2] == ["-m", "nemo_run.core.runners.partial"]
    assert partial_runner.run(role.args[2]) == 42
    assert partial_runner.run(partial_runner.encode(run.Config(scale, x=5, factor=3))) == 15


def test_env_retries_and_replicas_reach_the_role():
    ex = run.LocalExecutor(env_vars={"A": "1", "B": "2"}, retries=2, ntasks_per_node=2)
    role = package("t", run.Script(inline="true", env={"B": "3"}), ex).roles[0]
    assert role.env["A"] == "1" and role.env["B"] == "3"
    assert role.max_retries == 2 and role.num_replicas == 2
    assert role.env["WORLD_SIZE"] == "2"


def test_torchrun_launcher_wraps_python(in_tmp):
    ex = run.LocalExecutor(launcher="torchrun", ntasks_per_node=4)
    role = package("t", run.Script(path="pkg.train", m=True), ex).roles[0]
    assert role.entrypoint == "torchrun"
    assert role.args[role.args.index("--nproc-per-node") + 1] == "4"
    assert role.args[-2:] == ["-m", "pkg.train"]
    assert role.num_replicas == 1 and role.env == {"LOGLEVEL": "INFO"}


def test_not_a_task():
    with pytest.raises(
        run.ConfigError, match="must be a run.Script, run.Partial or run.Config, got int"
    ):
        package("t", 3, run.LocalExecutor())


# -- launchers: what 0.11.1 renders for the same input (values read from nemo-run 0.11.1) ----------
SINGLE_NODE = [
    "--rdzv-backend",
    "c10d",
    "--rdzv-endpoint",
    "localhost:0",
    "--rdzv-id",
    "7",
    "--nnodes",
    "1",
    "--nproc-per-node",
    "2",
    "--node-rank",
    "0",
    "--tee",
    "3",
]
TRAIN = run.Script(path="train.py", args=["--lr", "0.1"], entrypoint="python")


def fake_programs(folder, *names: str) -> str:
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    return str(folder)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """cwd with a train.py (the local executor checks scripts exist), torchrun and ft_launcher
    on PATH (so the local executor keeps their names), no LOGLEVEL set."""
    (tmp_path / "train.py").write_text("print(1)\n")
    (tmp_path / "run.sh").write_text("echo $1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOGLEVEL", raising=False)
    monkeypatch.setenv("PATH", fake_programs(tmp_path / "bin", "torchrun", "ft_launcher"))
    return tmp_path


def test_local_torchrun_found_beside_the_interpreter_when_not_on_path(in_tmp, monkeypatch):
    venv_bin = fake_programs(in_tmp / "venv", "python", "torchrun")
    monkeypatch.setattr(sys, "executable", f"{venv_bin}/python")
    monkeypatch.setenv("PATH", str(in_tmp / "empty"))
    ex = run.LocalExecutor(launcher="torchrun")
    assert role_of(TRAIN, ex).entrypoint == f"{venv_bin}/torchrun"
    ex = run.LocalExecutor(launcher="ft")  # none there either: the name, for the PATH check
    assert role_of(TRAIN, ex).entrypoint == "ft_launcher"


def role_of(task, executor):
    return package("nm", task, executor).roles[0]


def test_torchrun_on_one_node(in_tmp):
    role = role_of(TRAIN, run.LocalExecutor(ntasks_per_node=2, launcher=run.Torchrun(rdzv_id=7)))
    assert [role.entrypoint, *role.args] == ["torchrun", *SINGLE_NODE, "train.py", "--lr", "0.1"]
    assert (role.num_replicas, role.env, role.port_map) == (
        1,
        {"LOGLEVEL": "INFO"},
        {"c10d": 29500},
    )
    module = run.Script(path="pkg.train", m=True, entrypoint="python")
    role = role_of(
        module,
        run.DockerExecutor(
            container_image="i",
            ntasks_per_node=2,
            launcher=run.Torchrun(rdzv_id=7),
            packager=run.Packager(),
        ),
    )
    assert [role.entrypoint, *role.args] == ["torchrun", *SINGLE_NODE, "-m", "pkg.train"]


def test_fault_tolerance_launcher(in_tmp):
    ex = run.LocalExecutor(ntasks_per_node=2, launcher=run.FaultTolerance(rdzv_id=7))
    role = role_of(TRAIN, ex)
    assert [role.entrypoint, *role.args] == [
        "ft_launcher",
        "--ignore-missing-fault-tol-cfg",
        *SINGLE_NODE,
        "train.py",
        "--lr",
        "0.1",
    ]
    ex.launcher = run.FaultTolerance(rdzv_id=7, rank_heartbeat_timeout=300.5, max_restarts=3)
    role = role_of(TRAIN, ex)
    assert role.args[:4] == ["--ft-rank_heartbeat_timeout", "300.5", "--max-restarts", "3"]
    assert role.args[4:] == [*SINGLE_NODE, "train.py", "--lr", "0.1"]
    assert role.env == {"LOGLEVEL": "INFO"}


def test_ft_by_name_and_env_defaults(in_tmp, monkeypatch):
    monkeypatch.setenv("LOGLEVEL", "WARNING")  # 0.11.1 passes the caller's LOGLEVEL on
    ex = run.LocalExecutor(
        ntasks_per_node=2,
        launcher="ft",
        env_vars={"A": "1"},
        retries=2,
        packager=run.Packager(debug=True),
    )
    role = role_of(TRAIN, ex)
    assert role.entrypoint == "ft_launcher" and role.max_retries == 2
    assert role.env == {
        "A": "1",
        "LOGLEVEL": "WARNING",
        "CUDA_LAUNCH_BLOCKING": "1",
        "NCCL_DESYNC_DEBUG": "1",
        "TORCH_DISTRIBUTED_DEBUG": "DETAIL",
        "TORCH_SHOW_CPP_STACKTRACES": "1",
    }
    ex = run.LocalExecutor(launcher="torchrun", env_vars={"LOGLEVEL": "ERROR"})
    assert role_of(TRAIN, ex).env["LOGLEVEL"] == "ERROR"  # the user's value wins


def test_nsys_profile_wraps_the_launched_command(in_tmp):
    job_dir = in_tmp / "job"
    ex = run.LocalExecutor(
        ntasks_per_node=2,
        launcher=run.Torchrun(rdzv_id=7, nsys_profile=True),
        job_dir=str(job_dir),
    )
    role = role_of(TRAIN, ex)
    # 0.11.1 adds a last empty argument (the entrypoint's postfix): left out here
    assert [role.entrypoint, *role.args] == [
        "nsys",
        "profile",
        "-s",
        "none",
        "-t",
        "nvtx,cuda",
        "-o",
        f"{job_dir}/nsys_profile/profile_%p",
        "--force-overwrite=true",
        "--capture-range=cudaProfilerApi",
        "--capture-range-end=stop",
        "--cuda-graph-trace=node",
        "--cuda-event-trace=false",
        "torchrun",
        *SINGLE_NODE,
        "train.py",
        "--lr",
        "0.1",
    ]
    assert (job_dir / "nsys_profile").is_dir()


def test_nsys_without_torchrun(in_tmp):
    ex = run.LocalExecutor(job_dir=str(in_tmp / "job"))
    ex.get_launcher().nsys_profile = True  # set on the executor's own launcher object
    launcher = ex.get_launcher()
    launcher.nsys_trace, launcher.nsys_extra_args = ["nvtx"], []
    role = role_of(run.Script(path="run.sh", args=["x"]), ex)
    assert [role.entrypoint, *role.args] == [
        "nsys",
        "profile",
        "-s",
        "none",
        "-t",
        "nvtx",
        "-o",
        f"{in_tmp}/job/nsys_profile/profile_%p",
        "bash",
        "run.sh",
        "x",
    ]


@dataclass(kw_only=True)
class Cluster(Executor):
    """A multi-node executor of the test: the platform names its variables in macro_values."""

    nodes: int = 2
    gpus: int = 4
    macros: ExecutorMacros | None = None

    def nnodes(self) -> int:
        return self.nodes

    def nproc_per_node(self) -> int:
        return self.gpus

    def macro_values(self) -> ExecutorMacros | None:
        return self.macros


SKY = ExecutorMacros(
    head_node_ip_var="head_node_ip",
    nproc_per_node_var="SKYPILOT_NUM_GPUS_PER_NODE",
    num_nodes_var="num_nodes",
    node_rank_var="SKYPILOT_NODE_RANK",
)


def test_several_nodes_meet_at_the_platforms_head_node():
    ex = Cluster(macros=SKY, launcher=run.Torchrun(rdzv_id=7, rdzv_port=1234))
    role = role_of(TRAIN, ex)
    assert [role.entrypoint, *role.args] == [
        "torchrun",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "$head_node_ip:1234",
        "--rdzv-id",
        "7",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "4",
        "--node-rank",
        "$SKYPILOT_NODE_RANK",
        "--tee",
        "3",
        "train.py",
        "--lr",
        "0.1",
    ]
    assert role.num_replicas == 2 and role.port_map == {"c10d": 1234}
    ex.launcher = run.FaultTolerance(rdzv_id=7)
    role = role_of(TRAIN, ex)
    assert role.entrypoint == "ft_launcher" and role.args[0] == "--ignore-missing-fault-tol-cfg"
    assert role.args[role.args.index("--rdzv-endpoint") + 1] == "$head_node_ip:29500"


def test_macros_in_the_task_are_applied_too():
    task = run.Script(path="serve.sh", args=["--peer", "$${head_node_ip_var}", "$$"])
    role = role_of(task, Cluster(macros=SKY, launcher="torchrun"))
    assert role.args[-3:] == ["--peer", "$head_node_ip", "$$"]


def test_several_nodes_without_macros_is_refused_before_anything(tmp_path):
    ex = Cluster(launcher="torchrun", job_dir=str(tmp_path / "job"))
    with pytest.raises(
        run.ConfigError, match=r"Cluster runs 2 node\(s\) under Torchrun but its macro_values\(\)"
    ):
        role_of(TRAIN, ex)
    assert not (tmp_path / "job").exists()
    assert role_of(TRAIN, Cluster(nodes=1, launcher="torchrun")).args[3] == "localhost:0"


@dataclass(kw_only=True)
class StaticCluster(Cluster):
    torchrun_rendezvous: ClassVar[str] = "static"


@dataclass(kw_only=True)
class PlatformCluster(Cluster):
    torchrun_rendezvous: ClassVar[str] = "platform"


LEPTON = ExecutorMacros(
    head_node_ip_var="MASTER_ADDR",
    nproc_per_node_var="NPROC_PER_NODE",
    num_nodes_var="WORLD_SIZE",
    node_rank_var="NODE_RANK",
)


def test_static_rendezvous_as_0_11_1_renders_it_on_lepton():
    role = role_of(
        run.Script(path="pkg.train", m=True, entrypoint="python"),
        StaticCluster(macros=LEPTON, launcher="torchrun"),
    )
    assert [role.entrypoint, *role.args] == [
        "torchrun",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "4",
        "--node-rank",
        "$NODE_RANK",
        "--master-addr",
        "$MASTER_ADDR",
        "--master-port",
        "$MASTER_PORT",
        "-m",
        "pkg.train",
    ]


def test_platform_rendezvous_as_0_11_1_renders_it_on_dgx_cloud():
    ex = PlatformCluster(gpus=8, launcher=run.FaultTolerance(max_restarts=3, log_level="INFO"))
    role = role_of(TRAIN, ex)
    assert [role.entrypoint, *role.args] == [
        "ft_launcher",
        "--ft-log_level",
        "INFO",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "8",
        "train.py",
        "--lr",
        "0.1",
    ]
    ex.launcher = run.Torchrun()
    role = role_of(TRAIN, ex)
    assert role.args == ["--nnodes", "2", "--nproc-per-node", "8", "train.py", "--lr", "0.1"]


@dataclass(kw_only=True)
class Templating(Launcher):
    def transform(self, cmd: list[str]) -> run.Script | None:
        return run.Script(inline="echo start; " + " ".join(cmd))


@dataclass(kw_only=True)
class TransformingExecutor(Executor):
    def supports_launcher_transform(self) -> bool:
        return True


def test_launcher_transform_replaces_the_command_where_supported():
    task = run.Script(path="run.sh", args=["a"])
    role = role_of(task, TransformingExecutor(launcher=Templating()))
    assert [role.entrypoint, *role.args] == ["bash", "-c", "echo start; bash run.sh a", "inline"]
    role = role_of(task, Cluster(nodes=1, launcher=Templating()))  # no support: unchanged
    assert [role.entrypoint, *role.args] == ["bash", "run.sh", "a"]


def test_a_launcher_field_set_after_construction_is_checked_at_packaging(in_tmp):
    ex = run.LocalExecutor(launcher=run.Torchrun())
    ex.get_launcher().rdzv_port = 0  # type: ignore[attr-defined]
    with pytest.raises(run.ConfigError, match=r"Torchrun\.rdzv_port must be a port number"):
        role_of(TRAIN, ex)
