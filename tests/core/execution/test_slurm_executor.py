"""SlurmExecutor: 0.11.1's fields and defaults, its shape methods, merge, and validation."""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import pytest

pytest.importorskip("nemo_run.core.tunnel.client")

from nemo_run.core.execution.launcher import FaultTolerance, Torchrun  # noqa: E402
from nemo_run.core.execution.slurm import SlurmExecutor, SlurmJobDetails  # noqa: E402
from nemo_run.core.packaging.base import Packager  # noqa: E402
from nemo_run.core.packaging.git import GitArchivePackager  # noqa: E402
from nemo_run.core.tunnel.client import LocalTunnel  # noqa: E402
from nemo_run.exceptions import ConfigError  # noqa: E402

# 0.11.1's SlurmExecutor fields after the Executor base's, in order, with their defaults
# ("factory" for a default_factory, "required" for none).
FIELDS_0_11_1: list[tuple[str, Any]] = [
    ("account", "required"),
    ("partition", None),
    ("job_name_prefix", None),
    ("time", "00:10:00"),
    ("nodes", 1),
    ("ntasks_per_node", 1),
    ("cpus_per_task", None),
    ("cpus_per_gpu", None),
    ("gpus_per_node", None),
    ("gpus_per_task", None),
    ("qos", None),
    ("mem", None),
    ("mem_per_gpu", None),
    ("mem_per_cpu", None),
    ("comment", None),
    ("constraint", None),
    ("exclude", None),
    ("gres", None),
    ("signal", None),
    ("exclusive", None),
    ("array", None),
    ("open_mode", "append"),
    ("container_image", None),
    ("container_mounts", "factory"),
    ("container_env", None),
    ("additional_parameters", None),
    ("srun_args", None),
    ("heterogeneous", False),
    ("memory_measure", False),
    ("job_details", "factory"),
    ("tunnel", "factory"),
    ("dependencies", "factory"),
    ("dependency_type", "afterok"),
    ("torchrun_nproc_per_node", None),
    ("wait_time_for_group_job", 30),
    ("monitor_group_job", True),
    ("monitor_group_job_wait_time", 60),
    ("setup_lines", None),
    ("het_group_indices", None),
    ("segment", None),
    ("network", None),
    ("ray_template", "ray.sub.j2"),
    ("poll_estimated_start_time", True),
    ("job_name", "nemo-job"),
    ("stderr_to_stdout", True),
    ("resource_group", "factory"),
    ("run_as_group", False),
]
NOT_INIT = {"job_name", "stderr_to_stdout", "resource_group", "run_as_group"}


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return "factory"
    return "required"


def test_fields_order_and_defaults_are_0_11_1s() -> None:
    own = [f for f in dataclasses.fields(SlurmExecutor) if f.name in dict(FIELDS_0_11_1)]
    assert [(f.name, _default(f)) for f in own] == FIELDS_0_11_1
    assert {f.name for f in own if not f.init} == NOT_INIT
    names = [f.name for f in dataclasses.fields(SlurmExecutor)]
    assert names[: names.index("account")][:4] == ["packager", "launcher", "env_vars", "retries"]


def test_factory_defaults() -> None:
    ex = SlurmExecutor(account="a")
    assert isinstance(ex.packager, GitArchivePackager)
    assert isinstance(ex.tunnel, LocalTunnel) and ex.tunnel.job_dir == ""
    assert ex.container_mounts == [] and ex.dependencies == [] and ex.resource_group == []
    assert isinstance(ex.job_details, SlurmJobDetails)


def test_job_details_names_logs_as_0_11_1() -> None:
    jd = SlurmJobDetails(job_name="jn", folder="/f")
    assert jd.stdout == "/f/sbatch_jn_%j.out"
    assert jd.stderr == "/f/sbatch_jn_%j.err"
    assert jd.srun_stdout == "/f/log-jn_%j_${SLURM_RESTART_COUNT:-0}.out"
    assert jd.srun_stderr == "/f/log-jn_%j_${SLURM_RESTART_COUNT:-0}.err"
    assert jd.ls_term == "/f/log*"
    assert repr(jd) == "SlurmJobDetails(/f)"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, 1),
        ({"ntasks_per_node": 4}, 4),
        ({"gpus_per_node": 8}, 8),
        ({"gpus_per_task": 2, "ntasks_per_node": 4}, 2),
        ({"torchrun_nproc_per_node": 3, "gpus_per_node": 8}, 3),
    ],
)
def test_nproc_per_node(kwargs: dict[str, Any], expected: int) -> None:
    assert SlurmExecutor(account="a", **kwargs).nproc_per_node() == expected


def test_macros_name_slurm_variables() -> None:
    ex = SlurmExecutor(account="a", nodes=3)
    macros = ex.macro_values()
    assert ex.nnodes() == 3
    assert (macros.head_node_ip_var, macros.node_rank_var) == ("head_node_ip", "SLURM_NODEID")
    assert (macros.num_nodes_var, macros.nproc_per_node_var) == (
        "SLURM_NNODES",
        "SLURM_NTASKS_PER_NODE",
    )
    assert macros.het_group_host_var == "het_group_host"


def test_torchrun_moves_tasks_per_node_to_nproc() -> None:
    ex = SlurmExecutor(account="a", nodes=2, ntasks_per_node=8, launcher="torchrun")
    assert isinstance(ex.get_launcher(), Torchrun)
    assert (ex.ntasks_per_node, ex.torchrun_nproc_per_node, ex.nproc_per_node()) == (1, 8, 8)


def test_fault_tolerance_files_in_job_dir() -> None:
    ex = SlurmExecutor(account="a", launcher="ft", packager=Packager())
    ex.assign("exp_1", "/tmp/exp", "train", "train")
    launcher = ex.get_launcher()
    assert isinstance(launcher, FaultTolerance)
    assert launcher.cfg_path == "/tmp/exp/train/train_ft_cfg.yml"
    assert launcher.job_results_file == "/tmp/exp/train/train_job_results"


def test_assign_sets_job_name_and_log_folder() -> None:
    ex = SlurmExecutor(account="a", tunnel=LocalTunnel(job_dir="/remote"))
    ex.assign("title_1", "/home/exp/title_1", "task", "task")
    assert (ex.job_name, ex.job_dir, ex.job_details.folder) == (
        "task",
        "/home/exp/title_1/task",
        "/home/exp/title_1/task",
    )
    assert ex.tunnel.job_dir == "/remote/title_1"
    ex.assign("title_1", "/home/exp/title_1", "task", "task")  # again: not nested
    assert ex.tunnel.job_dir == "/remote/title_1"


def test_merge_one_executor_shares_resources() -> None:
    merged = SlurmExecutor.merge([SlurmExecutor(account="a")], 3)
    assert merged.run_as_group and merged.resource_group == [] and not merged.heterogeneous


def test_merge_heterogeneous_gets_one_request_per_task() -> None:
    one = SlurmExecutor(account="a", heterogeneous=True, container_image="i1", env_vars={"A": "1"})
    two = SlurmExecutor(account="a", nodes=2, container_image="i2", gpus_per_node=4)
    merged = SlurmExecutor.merge([one, two], 2)
    assert merged.heterogeneous and merged.run_as_group
    assert [(r.nodes, r.container_image, r.gpus_per_node) for r in merged.resource_group] == [
        (1, "i1", None),
        (2, "i2", 4),
    ]
    assert merged.resource_group[0].env_vars == {"A": "1"}
    assert one.resource_group == []  # the caller's executor is left alone


def test_merge_refuses_a_count_mismatch() -> None:
    with pytest.raises(ConfigError, match="2 executors for 3 tasks"):
        SlurmExecutor.merge([SlurmExecutor(account="a"), SlurmExecutor(account="a")], 3)


def test_parse_deps_takes_ids_from_handles() -> None:
    ex = SlurmExecutor(account="a", dependencies=["slurm_tunnel://nemo_run/123", "456"])
    assert ex.parse_deps() == ["123", "456"]
    ex.dependencies = ["local_persistent://nemo_run/job-abc"]
    with pytest.raises(ConfigError, match="dependencies.*names no Slurm job id"):
        ex.parse_deps()


@pytest.mark.parametrize(
    ("kwargs", "field_name", "fix"),
    [
        ({"nodes": 0}, "nodes", "integer >= 1"),
        ({"ntasks_per_node": 0}, "ntasks_per_node", "integer >= 1"),
        ({"cpus_per_task": 0}, "cpus_per_task", "integer >= 1"),
        ({"gpus_per_node": -1}, "gpus_per_node", "integer >= 0"),
        ({"gpus_per_task": -2}, "gpus_per_task", "integer >= 0"),
        ({"time": "1h"}, "time", "HH:MM:SS"),
        ({"time": "10:00:00:00"}, "time", "D-HH:MM:SS"),
        ({"mem": "lots"}, "mem", "'16G'"),
        ({"mem_per_gpu": "8 GB"}, "mem_per_gpu", "'16G'"),
        ({"mem_per_cpu": "-1"}, "mem_per_cpu", "'16G'"),
        ({"array": "0-3%"}, "array", "'0-15'"),
        ({"array": "a-b"}, "array", "'0-15'"),
        ({"dependency_type": "after_ok"}, "dependency_type", "'afterok'"),
        ({"open_mode": "overwrite"}, "open_mode", "'truncate'"),
        ({"exclusive": "yes"}, "exclusive", "'user'"),
        ({"signal": "USR1 at 90"}, "signal", "USR1@90"),
        ({"partition": "a b"}, "partition", "remove it"),
        ({"account": "a\nb"}, "account", "remove it"),
        ({"container_mounts": ["/a"]}, "container_mounts[0]", "SRC:DST"),
        ({"container_mounts": ["/a:/b,/c:/d"]}, "container_mounts[0]", "no commas"),
        ({"container_env": ["BAD-NAME"]}, "container_env", "names of variables"),
        ({"additional_parameters": {"--mail": "x"}}, "additional_parameters", "mail_type"),
        ({"additional_parameters": {"x": "a\nb"}}, "additional_parameters['x']", "one line"),
        ({"mem": "4G", "mem_per_cpu": "1G"}, "mem", "only one"),
        ({"torchrun_nproc_per_node": 0}, "torchrun_nproc_per_node", "integer >= 1"),
        ({"dependencies": ["foo://x/y"]}, "dependencies", "job ids"),
    ],
)
def test_validation_names_field_and_fix(kwargs: dict[str, Any], field_name: str, fix: str) -> None:
    ex = SlurmExecutor(**{"account": "a", **kwargs})  # construction checks types only
    with pytest.raises(ConfigError) as err:
        ex.validate()
    assert f"SlurmExecutor.{field_name}" in str(err.value)
    assert fix in str(err.value)


def test_account_is_required_at_dry_run() -> None:
    ex = SlurmExecutor(account="")
    with pytest.raises(ConfigError, match="SlurmExecutor.account is required"):
        ex.validate()


def test_wrong_type_fails_on_construction() -> None:
    with pytest.raises(ConfigError, match="SlurmExecutor.nodes"):
        SlurmExecutor(account="a", nodes="2")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "time", ["30", "30:00", "01:30:00", "2-00", "2-12:00", "2-12:00:00", "UNLIMITED"]
)
def test_slurm_time_formats_pass(time: str) -> None:
    SlurmExecutor(account="a", time=time, array="0-15:2%4", mem="16G", exclusive=True).validate()


class _Tunnel:
    """A tunnel whose `sinfo` answers with `partitions`, or raises when `down`."""

    host = "login.example"

    def __init__(self, partitions: str = "", down: bool = False, code: int = 0) -> None:
        self.partitions, self.down, self.code = partitions, down, code
        self.commands: list[str] = []

    def run(self, command: str, hide: bool = True, warn: bool = False) -> Any:
        self.commands.append(command)
        if self.down:
            raise OSError("ssh: connect to host login.example port 22: Connection refused")
        return types.SimpleNamespace(stdout=self.partitions, return_code=self.code)


def test_validate_remote_unreachable_host() -> None:
    with pytest.raises(ConfigError, match="SlurmExecutor.tunnel: cannot run sinfo on login"):
        SlurmExecutor(account="a").validate_remote(_Tunnel(down=True))
    with pytest.raises(ConfigError, match="cannot run sinfo"):
        SlurmExecutor(account="a").validate_remote(_Tunnel(code=127))


def test_validate_remote_unknown_partition_lists_known_ones() -> None:
    tunnel = _Tunnel("batch*\ngpu\n")
    SlurmExecutor(account="a", partition="gpu").validate_remote(tunnel)
    SlurmExecutor(account="a", partition="batch").validate_remote(tunnel)
    with pytest.raises(ConfigError, match="partition='cpu' does not exist.*batch, gpu"):
        SlurmExecutor(account="a", partition="cpu").validate_remote(tunnel)
    assert tunnel.commands and "sinfo" in tunnel.commands[0]
