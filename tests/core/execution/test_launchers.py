"""Launchers (torchrun, ft_launcher, nsys), ExecutorMacros and the Executor base, against
nemo-run 0.11.1: every expected value below was read from 0.11.1 for the same input."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import pytest

import nemo_run as run
from nemo_run.core.execution import base as base_module
from nemo_run.core.execution import launcher as launcher_module
from nemo_run.core.execution.base import Executor, ExecutorMacros, LogSupportedExecutor
from nemo_run.core.execution.launcher import FaultTolerance, Launcher, Torchrun
from tests.helpers import run_python

NSYS_EXTRA = [
    "--force-overwrite=true",
    "--capture-range=cudaProfilerApi",
    "--capture-range-end=stop",
    "--cuda-graph-trace=node",
    "--cuda-event-trace=false",
]
SKY_MACROS = ExecutorMacros(
    head_node_ip_var="head_node_ip",
    nproc_per_node_var="SKYPILOT_NUM_GPUS_PER_NODE",
    num_nodes_var="num_nodes",
    node_rank_var="SKYPILOT_NODE_RANK",
    het_group_host_var="het",
)


def defaults(cls: type) -> dict[str, object]:
    """Field name -> default (a factory's value) of a dataclass, in field order."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = "REQUIRED"
    return out


# -- the launcher classes, as 0.11.1 declares them -----------------------------------------------
LAUNCHER_DEFAULTS = {
    "nsys_profile": False,
    "nsys_folder": "nsys_profile",
    "nsys_filename": "profile_%p",
    "nsys_trace": ["nvtx", "cuda"],
    "nsys_extra_args": NSYS_EXTRA,
    "nsys_gpu_metrics": False,
}


def test_launcher_fields_and_defaults_are_0_11_1s():
    assert defaults(Launcher) == LAUNCHER_DEFAULTS
    assert defaults(Torchrun) == {
        **LAUNCHER_DEFAULTS,
        "rdzv_backend": "c10d",
        "rdzv_port": 29500,
        "rdzv_id": None,
    }
    assert list(defaults(FaultTolerance).items()) == [
        *LAUNCHER_DEFAULTS.items(),
        ("cfg_path", ""),
        ("finished_flag_file", ""),
        ("job_results_file", ""),
        ("rdzv_backend", "c10d"),
        ("rdzv_port", 29500),
        ("rdzv_id", None),
        ("workload_check_interval", None),
        ("initial_rank_heartbeat_timeout", None),
        ("rank_heartbeat_timeout", None),
        ("rank_termination_signal", None),
        ("log_level", None),
        ("max_restarts", None),
    ]
    # as in 0.11.1, FaultTolerance is no Torchrun (code testing isinstance sees the same)
    assert FaultTolerance.__bases__ == (Launcher,) and Torchrun.__bases__ == (Launcher,)
    assert launcher_module.LAUNCHER_MAP == {"torchrun": Torchrun, "ft": FaultTolerance}


def test_fields_are_keyword_only_and_mutable_defaults_are_not_shared():
    with pytest.raises(TypeError):
        Torchrun("c10d")  # type: ignore[misc]
    a, b = Launcher(), Launcher()
    a.nsys_trace.append("osrt")
    assert b.nsys_trace == ["nvtx", "cuda"]


def test_nsys_prefix():
    assert Launcher().get_nsys_prefix("/job") is None  # profiling off
    assert Torchrun(nsys_profile=True).get_nsys_prefix("/job") == [
        "profile",
        "-s",
        "none",
        "-t",
        "nvtx,cuda",
        "-o",
        "/job/nsys_profile/profile_%p",
        *NSYS_EXTRA,
    ]
    custom = Launcher(
        nsys_profile=True,
        nsys_folder="prof",
        nsys_filename="p",
        nsys_trace=["nvtx"],
        nsys_extra_args=[],
        nsys_gpu_metrics=True,  # 0.11.1 uses it on Slurm only
    )
    assert custom.get_nsys_prefix("/nemo_run") == [
        "profile",
        "-s",
        "none",
        "-t",
        "nvtx",
        "-o",
        "/nemo_run/prof/p",
    ]
    assert custom.get_nsys_prefix("") == ["profile", "-s", "none", "-t", "nvtx", "-o", "prof/p"]


def test_transform_of_the_base_launchers_keeps_the_command():
    for launcher in (Launcher(), Torchrun(), FaultTolerance()):
        assert launcher.transform(["python", "train.py"]) is None


# -- rendering (the wrap step; package() tests are in tests/run/torchx_backend) ------------------
def wrap(launcher: Launcher, entrypoint: str, args: list[str], **kw: object) -> list[str]:
    options: dict[str, object] = {"is_python": True, "nnodes": 1}
    options["nproc_per_node"] = 2
    options.update(kw)
    program, out = launcher.wrap(entrypoint, args, **options)  # type: ignore[arg-type]
    return [program, *out]


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


def test_single_node_meets_on_localhost_port_0_whatever_rdzv_port_says():
    cmd = wrap(Torchrun(rdzv_id=7, rdzv_port=1234), "python", ["train.py", "--lr", "0.1"])
    assert cmd == ["torchrun", *SINGLE_NODE, "train.py", "--lr", "0.1"]
    cmd = wrap(Torchrun(rdzv_id=7), "python", ["-m", "pkg.train"])
    assert cmd == ["torchrun", *SINGLE_NODE, "-m", "pkg.train"]


def test_multi_node_names_the_head_node_and_rank_as_macros():
    cmd = wrap(Torchrun(rdzv_id=7, rdzv_port=1234), "python", ["train.py"], nnodes=2)
    assert cmd[cmd.index("--rdzv-endpoint") + 1] == "$$${head_node_ip_var}:1234"
    assert cmd[cmd.index("--node-rank") + 1] == "$$${node_rank_var}"
    assert [SKY_MACROS.substitute(a) for a in cmd] == [
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
        "2",
        "--node-rank",
        "$SKYPILOT_NODE_RANK",
        "--tee",
        "3",
        "train.py",
    ]


def test_static_and_platform_rendezvous():
    lepton = ExecutorMacros(
        head_node_ip_var="MASTER_ADDR",
        nproc_per_node_var="NPROC_PER_NODE",
        num_nodes_var="WORLD_SIZE",
        node_rank_var="NODE_RANK",
    )
    cmd = wrap(
        Torchrun(), "python", ["-m", "pkg.train"], nnodes=2, nproc_per_node=4, rendezvous="static"
    )
    assert [lepton.substitute(a) for a in cmd] == [
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
    cmd = wrap(
        Torchrun(), "python", ["train.py"], nnodes=2, nproc_per_node=8, rendezvous="platform"
    )
    assert cmd == ["torchrun", "--nnodes", "2", "--nproc-per-node", "8", "train.py"]
    with pytest.raises(run.ConfigError, match="rendezvous 'etcd' is not known"):
        wrap(Torchrun(), "python", ["train.py"], rendezvous="etcd")


def test_random_rdzv_id_when_none_is_given():
    cmd = wrap(Torchrun(), "python", ["train.py"])
    assert 1 <= int(cmd[cmd.index("--rdzv-id") + 1]) <= 10000


def test_what_runs_under_torchrun():
    """Python files and modules run in torchrun's interpreter; anything else after
    --no-python with its interpreter (0.11.1 drops the interpreter: see compatibility.md)."""
    cmd = wrap(Torchrun(rdzv_id=7), "bash", ["run.sh", "a b"], is_python=False)
    assert cmd == ["torchrun", *SINGLE_NODE, "--no-python", "bash", "run.sh", "a b"]
    cmd = wrap(Torchrun(rdzv_id=7), "/usr/bin/python3", ["-c", "print(1)", "x"])
    assert cmd == [
        "torchrun",
        *SINGLE_NODE,
        "--no-python",
        "/usr/bin/python3",
        "-c",
        "print(1)",
        "x",
    ]


def test_fault_tolerance_flags():
    ft = FaultTolerance(rdzv_id=7)
    assert wrap(ft, "python", ["train.py"]) == [
        "ft_launcher",
        "--ignore-missing-fault-tol-cfg",
        *SINGLE_NODE,
        "train.py",
    ]
    full = FaultTolerance(
        rdzv_id=7,
        workload_check_interval=5.0,
        initial_rank_heartbeat_timeout=600,
        rank_heartbeat_timeout=300.5,
        rank_termination_signal="SIGKILL",
        log_level="DEBUG",
        max_restarts=3,
    )
    assert wrap(full, "python", ["train.py", "--lr", "0.1"]) == [
        "ft_launcher",
        "--ft-workload_check_interval",
        "5.0",
        "--ft-initial_rank_heartbeat_timeout",
        "600",
        "--ft-rank_heartbeat_timeout",
        "300.5",
        "--ft-rank_termination_signal",
        "SIGKILL",
        "--ft-log_level",
        "DEBUG",
        "--max-restarts",
        "3",
        *SINGLE_NODE,
        "train.py",
        "--lr",
        "0.1",
    ]
    # a given but falsy setting: neither the flag nor --ignore-missing-fault-tol-cfg (0.11.1)
    assert wrap(FaultTolerance(rdzv_id=7, max_restarts=0), "python", ["t.py"]) == [
        "ft_launcher",
        *SINGLE_NODE,
        "t.py",
    ]


def test_fault_tolerance_on_a_platform_rendezvous_ignores_max_restarts(caplog):
    ft = FaultTolerance(max_restarts=3, log_level="INFO")
    cmd = wrap(ft, "python", ["train.py"], nnodes=2, nproc_per_node=8, rendezvous="platform")
    assert cmd == [
        "ft_launcher",
        "--ft-log_level",
        "INFO",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "8",
        "train.py",
    ]
    assert "max_restarts is ignored" in caplog.text


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Torchrun(rdzv_port=0), r"Torchrun\.rdzv_port must be a port number 1-65535"),
        (lambda: Torchrun(rdzv_port="29500"), r"Torchrun\.rdzv_port must be"),
        (lambda: Launcher(nsys_trace="nvtx"), r"Launcher\.nsys_trace must be"),
        (lambda: FaultTolerance(max_restarts=-1), r"FaultTolerance\.max_restarts must be"),
        (
            lambda: FaultTolerance(rank_heartbeat_timeout=0),
            r"FaultTolerance\.rank_heartbeat_timeout must be a number of seconds > 0",
        ),
    ],
)
def test_bad_launcher_fields_are_config_errors(make, message):
    with pytest.raises(run.ConfigError, match=message):
        make()


def test_a_bad_field_set_after_construction_fails_when_rendering():
    ft = FaultTolerance()
    ft.rdzv_port = 70000
    with pytest.raises(run.ConfigError, match=r"FaultTolerance\.rdzv_port"):
        wrap(ft, "python", ["train.py"])


# -- ExecutorMacros ------------------------------------------------------------------------------
def test_executor_macros_shape():
    assert [f.name for f in dataclasses.fields(ExecutorMacros)] == [
        "head_node_ip_var",
        "nproc_per_node_var",
        "num_nodes_var",
        "node_rank_var",
        "het_group_host_var",
        "ft_launcher_cfg_path_var",
    ]
    macros = ExecutorMacros(
        head_node_ip_var="H", nproc_per_node_var="P", num_nodes_var="N", node_rank_var="R"
    )
    assert macros.ft_launcher_cfg_path_var == "FAULT_TOL_CFG_PATH"
    assert (ExecutorMacros.HEAD_NODE_IP_VAR, ExecutorMacros.NODE_RANK_VAR) == (
        "${head_node_ip_var}",
        "${node_rank_var}",
    )
    assert ExecutorMacros.FT_LAUNCHER_CFG_PATH_VAR == "${ft_launcher_cfg_path_var}"
    assert ExecutorMacros.group_host(1) == "$$${het_group_host_var}_1"
    assert SKY_MACROS.substitute(ExecutorMacros.group_host(1)) == "$het_1"


def test_substitute_replaces_only_macros():
    sub = SKY_MACROS.substitute
    assert sub("${node_rank_var} $node_rank_var $$${node_rank_var}") == (
        "SKYPILOT_NODE_RANK SKYPILOT_NODE_RANK $SKYPILOT_NODE_RANK"
    )
    assert sub("$${ft_launcher_cfg_path_var}x") == "$FAULT_TOL_CFG_PATHx"
    # the shell's own text stays (0.11.1 turns `$$` into `$`: see compatibility.md)
    assert sub("echo $$ $HOME ${OTHER} $node_rank_variable") == (
        "echo $$ $HOME ${OTHER} $node_rank_variable"
    )


def test_apply_returns_a_substituted_copy():
    from torchx import specs

    role = specs.Role(
        name="r",
        image="",
        entrypoint="torchrun",
        args=["--node-rank", "$$${node_rank_var}"],
        env={"HEAD": "$${head_node_ip_var}", "KEEP": "$$"},
    )
    applied = SKY_MACROS.apply(role)
    assert applied.args == ["--node-rank", "$SKYPILOT_NODE_RANK"]
    assert applied.env == {"HEAD": "$head_node_ip", "KEEP": "$$"}
    assert role.args == ["--node-rank", "$$${node_rank_var}"]  # the original is untouched


# -- the Executor base ---------------------------------------------------------------------------
def test_executor_fields_and_defaults_are_0_11_1s():
    fields = {f.name: f for f in dataclasses.fields(Executor)}
    assert list(fields) == [
        "packager",
        "launcher",
        "env_vars",
        "retries",
        "experiment_id",
        "job_dir",
        "experiment_dir",
        "_launcher_setup",
    ]
    assert not fields["experiment_dir"].init and not fields["_launcher_setup"].init
    ex = Executor()
    assert (ex.packager, ex.launcher, ex.env_vars, ex.retries) == (run.Packager(), None, {}, 0)
    assert (ex.experiment_id, ex.job_dir, ex.experiment_dir) == (None, "", "")
    assert (ex.nnodes(), ex.nproc_per_node(), ex.macro_values()) == (1, 1, None)
    assert ex.info() == "Executor" and run.LocalExecutor().info() == "LocalExecutor"
    assert ex.get_nsys_entrypoint() == ("nsys", "")
    assert ex.supports_launcher_transform() is False
    assert ex.cleanup("local_persistent://s/app") is None


def test_get_launcher_turns_a_name_into_an_object_and_keeps_it():
    ex = run.LocalExecutor(launcher="torchrun")
    launcher = ex.get_launcher()
    assert isinstance(launcher, Torchrun) and ex.launcher is launcher
    launcher.nsys_profile = True  # kept with the executor, as in 0.11.1
    assert ex.get_launcher().nsys_profile is True
    plain = run.LocalExecutor()
    assert type(plain.get_launcher()) is Launcher and plain.get_launcher() is plain.launcher
    assert isinstance(run.LocalExecutor(launcher="ft").get_launcher(), FaultTolerance)
    ex.launcher = "mpirun"  # set after construction: refused when used
    with pytest.raises(run.ConfigError, match="launcher='mpirun' is not known"):
        ex.get_launcher()


def test_setup_launcher_hook_runs_for_each_new_launcher(tmp_path):
    @dataclass(kw_only=True)
    class FtPaths(Executor):
        def _setup_launcher(self) -> None:
            super()._setup_launcher()
            if isinstance(self.launcher, FaultTolerance):
                self.launcher.cfg_path = os.path.join(self.job_dir, "ft_cfg.yml")

    ex = FtPaths(launcher="ft", job_dir=str(tmp_path))
    assert ex.get_launcher().cfg_path == str(tmp_path / "ft_cfg.yml")  # type: ignore[attr-defined]
    ex.launcher = FaultTolerance()
    assert ex.get_launcher().cfg_path == str(tmp_path / "ft_cfg.yml")  # type: ignore[attr-defined]


def test_launcher_prefix_profiles_into_the_job_dir(tmp_path):
    ex = run.LocalExecutor(launcher=Torchrun(nsys_profile=True), job_dir=str(tmp_path / "job"))
    prefix = ex.get_launcher_prefix()
    assert prefix is not None and f"{tmp_path}/job/nsys_profile/profile_%p" in prefix
    assert (tmp_path / "job" / "nsys_profile").is_dir()  # nsys writes there
    assert run.LocalExecutor(launcher="torchrun").get_launcher_prefix() is None


def test_clone_is_independent():
    ex = run.LocalExecutor(launcher=Torchrun(), env_vars={"A": "1"})
    copy = ex.clone()
    assert copy == ex and copy is not ex and type(copy) is run.LocalExecutor
    copy.env_vars["A"] = "2"
    copy.get_launcher().nsys_profile = True
    assert ex.env_vars == {"A": "1"} and ex.get_launcher().nsys_profile is False


def test_assign_and_job_dir(tmp_path):
    ex = run.LocalExecutor()
    with pytest.raises(run.ConfigError, match="job_dir is not set"):
        ex.create_job_dir()
    ex.assign("exp_1", str(tmp_path / "exp"), "task-0", "task_dir")
    assert (ex.experiment_id, ex.experiment_dir) == ("exp_1", str(tmp_path / "exp"))
    assert ex.job_dir == str(tmp_path / "exp" / "task_dir")
    ex.create_job_dir()
    assert os.path.isdir(ex.job_dir)


def test_package_configs_writes_under_configs(tmp_path):
    ex = run.LocalExecutor(job_dir=str(tmp_path))
    paths = ex.package_configs(("a.yaml", "x: 1\n"), ("sub/b.json", "{}"))
    assert paths == [str(tmp_path / "configs" / "a.yaml"), str(tmp_path / "configs/sub/b.json")]
    assert (tmp_path / "configs" / "a.yaml").read_text() == "x: 1\n"
    for bad in ("../escape.yaml", "/etc/x.yaml"):
        with pytest.raises(run.ConfigError, match="must be a relative path inside"):
            ex.package_configs((bad, "x"))
    assert not (tmp_path / "escape.yaml").exists()
    with pytest.raises(run.ConfigError, match=r"package_configs: job_dir is not set"):
        run.LocalExecutor().package_configs(("a.yaml", ""))


def test_to_config_builds_back_an_equal_executor_without_secrets():
    import fiddle as fdl

    ex = run.LocalExecutor(
        launcher=FaultTolerance(max_restarts=2), env_vars={"A": "1"}, ntasks_per_node=2
    )
    cfg = ex.to_config()
    assert isinstance(cfg, run.Config)
    assert isinstance(cfg.launcher, run.Config) and cfg.launcher.max_restarts == 2
    assert fdl.build(cfg) == ex
    assert fdl.build(Torchrun(rdzv_port=1).to_config()) == Torchrun(rdzv_port=1)

    @dataclass(kw_only=True)
    class WithSecret(Executor):
        token: str = field(default="", repr=False)

    cfg = WithSecret(token="s3cr3t").to_config()
    assert "s3cr3t" not in repr(cfg) and fdl.build(cfg).token == ""


def test_log_supported_executor_protocol():
    class WithLogs:
        @classmethod
        def logs(cls, app_id: str, fallback_path: str | None) -> None: ...

    assert isinstance(WithLogs(), LogSupportedExecutor)
    assert not isinstance(run.LocalExecutor(), LogSupportedExecutor)


# -- import_executor -----------------------------------------------------------------------------
EXECUTORS_PY = """
import nemo_run as run

local = run.LocalExecutor(ntasks_per_node=3)

def gpu(nodes=1, launcher="torchrun"):
    return run.LocalExecutor(ntasks_per_node=nodes, launcher=launcher)

not_an_executor = 42
"""


def test_import_executor_from_a_file(tmp_path):
    path = tmp_path / "executors.py"
    path.write_text(EXECUTORS_PY)
    assert run.import_executor("local", file_path=str(path)) == run.LocalExecutor(ntasks_per_node=3)
    made = run.import_executor("gpu", file_path=str(path), nodes=2)
    assert made == run.LocalExecutor(ntasks_per_node=2, launcher="torchrun")
    factory = run.import_executor("gpu", file_path=str(path), call=False)
    assert callable(factory) and factory(nodes=4).ntasks_per_node == 4


def test_import_executor_default_file_is_in_the_home(nemorun_home):
    (nemorun_home / "executors.py").write_text(EXECUTORS_PY)
    assert run.import_executor("local").ntasks_per_node == 3


@pytest.mark.parametrize(
    ("name", "file_name", "message"),
    [
        ("local", "missing.py", r"missing\.py does not exist"),
        ("nope", "executors.py", r"defines no 'nope'; it defines gpu, local, not_an_executor, run"),
        ("not_an_executor", "executors.py", "gave int, not an Executor"),
    ],
)
def test_import_executor_errors_name_the_fix(tmp_path, name, file_name, message):
    (tmp_path / "executors.py").write_text(EXECUTORS_PY)
    with pytest.raises(run.ConfigError, match=message):
        run.import_executor(name, file_path=str(tmp_path / file_name))


# -- top-level names -----------------------------------------------------------------------------
def test_top_level_names_are_the_modules_objects():
    assert run.Torchrun is Torchrun and run.FaultTolerance is FaultTolerance
    assert run.import_executor is base_module.import_executor
    assert run.ExecutorMacros is ExecutorMacros and run.Executor is Executor
    for name in ("Torchrun", "FaultTolerance", "import_executor"):
        assert name in dir(run)


def test_launcher_names_load_neither_torchx_nor_fiddle():
    out = run_python(
        "import sys, nemo_run as run; run.Torchrun(); run.FaultTolerance(); run.import_executor; "
        "run.LocalExecutor(launcher='torchrun').get_launcher(); "
        "print([m for m in ('torchx', 'fiddle') if m in sys.modules])"
    ).stdout
    assert out.strip() == "[]"
