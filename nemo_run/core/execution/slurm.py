"""`SlurmExecutor`: run a task as one Slurm batch job (`sbatch`), on this host or over SSH.

The fields, their order and defaults are nemo-run 0.11.1's. Construction checks only the types
given (0.11.1 lets users set fields afterwards); `validate()` checks every value at dry run,
before anything is submitted, with errors naming the field and the fix. Checks that need the
cluster (does the partition exist, is the host reachable) are in `validate_remote(tunnel)`,
which the scheduler calls at dry run.

`SlurmBatchRequest.materialize()` renders the whole sbatch script: `#SBATCH` lines, the
environment, one `srun` per role (Pyxis `--container-image ...` flags when an image is set),
the exit status written next to the logs, and a requeue on failure while retries remain. A
secret-looking environment value is never written into it: the script names the variable, and
the value travels in the environment `sbatch` is started with (`SlurmBatchRequest.secret_env`).
This module does no I/O.
"""

from __future__ import annotations

import copy
import importlib
import logging
import posixpath
import re
import shlex
import shutil
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nemo_run.core.envvars import check_env_vars, is_env_name
from nemo_run.core.execution.base import RUNDIR_NAME as RUNDIR_NAME
from nemo_run.core.execution.base import RUNDIR_SPECIAL_NAME as RUNDIR_SPECIAL_NAME
from nemo_run.core.execution.base import Executor, ExecutorMacros
from nemo_run.core.execution.fields import (
    check_at_least,
    check_choice,
    check_field_types,
    check_required,
    shell_join,
)
from nemo_run.core.execution.launcher import FaultTolerance as FaultTolerance
from nemo_run.core.execution.launcher import Launcher as Launcher
from nemo_run.core.execution.launcher import Torchrun as Torchrun
from nemo_run.core.packaging.base import Packager as Packager
from nemo_run.core.packaging.git import GitArchivePackager as GitArchivePackager
from nemo_run.core.redact import is_secret_arg_env, is_secret_name
from nemo_run.core.tunnel.client import Callback as Callback
from nemo_run.core.tunnel.client import LocalTunnel as LocalTunnel
from nemo_run.core.tunnel.client import PackagingJob as PackagingJob
from nemo_run.core.tunnel.client import SSHTunnel as SSHTunnel
from nemo_run.core.tunnel.client import Tunnel as Tunnel
from nemo_run.exceptions import ConfigError

logger = logging.getLogger(__name__)

# Slurm's dependency types that take job ids (`--dependency=<type>:<id>[:<id>...]`).
DEPENDENCY_TYPES = ("after", "afterany", "afterburstbuffer", "aftercorr", "afternotok", "afterok")
OPEN_MODES = ("append", "truncate")
EXCLUSIVE_MODES = ("user", "mcs", "topo")
# `[D-]HH[:MM[:SS]]` with a day, else `MM`, `MM:SS` or `HH:MM:SS`; or no limit at all.
_TIME = re.compile(r"^(?:\d+-\d+(?::\d+(?::\d+)?)?|\d+(?::\d+(?::\d+)?)?|UNLIMITED|INFINITE)$")
_MEM = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)
_ARRAY_ITEM = r"\d+(?:-\d+(?::\d+)?)?"
_ARRAY = re.compile(rf"^{_ARRAY_ITEM}(?:,{_ARRAY_ITEM})*(?:%\d+)?$")
_SIGNAL = re.compile(r"^(?:[RB]{1,2}:)?(?:SIG)?[A-Z0-9]+(?:@\d+)?$")
_EXIT_CODE_NAME = "exitcode"
# the srun log of the current attempt: Slurm fills %j, the shell the restart count
RESTART_COUNT = "${SLURM_RESTART_COUNT:-0}"


@dataclass(kw_only=True)
class SlurmJobDetails:
    """Where a Slurm job's logs are, as 0.11.1 names them: `sbatch_<job>_%j.out` for the batch
    script and `log-<job>_%j_<restart>.out` for each srun (`.err` when stderr is apart)."""

    job_name: str | None = None
    folder: str | None = None
    ray_log_prefix: str = "ray-"

    @property
    def stdout(self) -> str:
        return posixpath.join(self.folder or "", f"sbatch_{self.job_name}_%j.out")

    @property
    def stderr(self) -> str:
        return posixpath.join(self.folder or "", f"sbatch_{self.job_name}_%j.err")

    @property
    def srun_stdout(self) -> str:
        return posixpath.join(self.folder or "", f"log-{self.job_name}_%j_{RESTART_COUNT}.out")

    @property
    def srun_stderr(self) -> str:
        return posixpath.join(self.folder or "", f"log-{self.job_name}_%j_{RESTART_COUNT}.err")

    @property
    def ls_term(self) -> str:
        """A glob matching the job's srun logs."""
        return posixpath.join(self.folder or "", "log*")

    def __repr__(self) -> str:
        return f"SlurmJobDetails({self.folder})"


def _default_tunnel() -> LocalTunnel:
    return LocalTunnel(job_dir="")


@dataclass(kw_only=True)
class SlurmExecutor(Executor):
    """A Slurm batch job: `nodes` x `ntasks_per_node` tasks, in a container through Pyxis when
    `container_image` is set. `tunnel` says where `sbatch` runs (this host, or over SSH)."""

    @dataclass(kw_only=True)
    class ResourceRequest:
        """One role's resources in a task group (several sruns or a heterogeneous job)."""

        packager: Packager
        nodes: int
        ntasks_per_node: int
        container_image: str | None = None
        gpus_per_node: int | None = None
        gpus_per_task: int | None = None
        container_mounts: list[str] = field(default_factory=list)
        container_env: list[str] | None = None
        env_vars: dict[str, str] = field(default_factory=dict)
        srun_args: list[str] | None = None
        job_details: SlurmJobDetails = field(default_factory=SlurmJobDetails)
        het_group_index: int | None = None

    HEAD_NODE_IP_VAR: ClassVar[str] = "head_node_ip"
    NPROC_PER_NODE_VAR: ClassVar[str] = "SLURM_NTASKS_PER_NODE"
    NUM_NODES_VAR: ClassVar[str] = "SLURM_NNODES"
    NODE_RANK_VAR: ClassVar[str] = "SLURM_NODEID"
    HET_GROUP_HOST_VAR: ClassVar[str] = "het_group_host"
    # 0.11.1's lists of the options sbatch takes, and of those srun / salloc are given
    SBATCH_FLAGS: ClassVar[list[str]] = (
        "account acctg_freq array batch clusters constraint container container_id core_spec "
        "cpus_per_gpu cpus_per_task comment debug delay_boot dependency distribution error "
        "exclude exclusive export get_user_env gid gpu_bind gpu_freq gpus gpus_per_node "
        "gpus_per_socket gpus_per_task gres gres_flags help hold ignore_pbs input job_name "
        "kill_on_invalid_dep licenses mail_type mail_user mcs_label mem mem_bind mem_per_cpu "
        "mem_per_gpu mincpus network nice no_kill no_requeue nodefile nodelist nodes ntasks "
        "ntasks_per_core ntasks_per_gpu ntasks_per_node ntasks_per_socket open_mode output "
        "overcommit oversubscribe parsable partition power prefer priority profile propagate "
        "qos quiet reboot requeue reservation signal sockets_per_node spread_job switches "
        "test_only thread_spec threads_per_core time time_min tmp tres_bind tres_per_task uid "
        "usage verbose version wait wait_all_nodes wckey wrap segment"
    ).split()
    SRUN_ARGS: ClassVar[list[str]] = (
        "account partition job-name time nodes ntasks ntasks-per-node cpus-per-task "
        "gpus-per-node gpus-per-task qos mem mem-per-gpu mem-per-cpu comment constraint exclude "
        "gres exclusive array additional-parameters container-image container-mounts "
        "container-workdir"
    ).split()
    ALLOC_ARGS: ClassVar[list[str]] = (
        "account partition job-name time nodes ntasks-per-node qos mem mem-per-gpu mem-per-cpu"
    ).split()

    packager: Packager = field(
        default_factory=GitArchivePackager,
        metadata={"help": "how code reaches the job (default: a git archive of HEAD)"},
    )
    account: str = field(metadata={"help": "Slurm account the job is charged to (--account)"})
    partition: str | None = field(default=None, metadata={"help": "Slurm partition (--partition)"})
    job_name_prefix: str | None = field(
        default=None,
        metadata={"help": "prefix of the Slurm job name (default '<account>-<account>.')"},
    )
    time: str = field(
        default="00:10:00",
        metadata={"help": "time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"},
    )
    nodes: int = field(default=1, metadata={"help": "nodes (--nodes)"})
    ntasks_per_node: int = field(default=1, metadata={"help": "tasks per node (--ntasks-per-node)"})
    cpus_per_task: int | None = field(default=None, metadata={"help": "--cpus-per-task"})
    cpus_per_gpu: int | None = field(default=None, metadata={"help": "--cpus-per-gpu"})
    gpus_per_node: int | None = field(default=None, metadata={"help": "--gpus-per-node"})
    gpus_per_task: int | None = field(default=None, metadata={"help": "--gpus-per-task"})
    qos: str | None = field(default=None, metadata={"help": "quality of service (--qos)"})
    mem: str | None = field(default=None, metadata={"help": "memory per node, e.g. 16G (--mem)"})
    mem_per_gpu: str | None = field(default=None, metadata={"help": "--mem-per-gpu, e.g. 8G"})
    mem_per_cpu: str | None = field(default=None, metadata={"help": "--mem-per-cpu, e.g. 2G"})
    comment: str | None = field(default=None, metadata={"help": "--comment"})
    constraint: str | None = field(default=None, metadata={"help": "node features (--constraint)"})
    exclude: str | None = field(default=None, metadata={"help": "nodes to avoid (--exclude)"})
    gres: str | None = field(default=None, metadata={"help": "generic resources, e.g. gpu:8"})
    signal: str | None = field(default=None, metadata={"help": "--signal, e.g. USR1@90"})
    exclusive: bool | str | None = field(
        default=None, metadata={"help": "--exclusive: True, or 'user', 'mcs' or 'topo'"}
    )
    array: str | None = field(default=None, metadata={"help": "job array, e.g. 0-15%4"})
    open_mode: str = field(
        default="append", metadata={"help": "log files: 'append' or 'truncate' (--open-mode)"}
    )
    container_image: str | None = field(
        default=None, metadata={"help": "Pyxis/enroot image each srun runs in (--container-image)"}
    )
    container_mounts: list[str] = field(
        default_factory=list, metadata={"help": "SRC:DST[:FLAGS] mounts into the container"}
    )
    container_env: list[str] | None = field(
        default=None, metadata={"help": "variables passed into the container (--container-env)"}
    )
    additional_parameters: dict[str, Any] | None = field(
        default=None, metadata={"help": "more #SBATCH flags, e.g. {'mail_type': 'END'}"}
    )
    srun_args: list[str] | None = field(
        default=None, metadata={"help": "extra arguments of every srun"}
    )
    heterogeneous: bool = field(
        default=False, metadata={"help": "a task group becomes a heterogeneous job (hetjob)"}
    )
    memory_measure: bool = field(
        default=False, metadata={"help": "0.11.1's memory-measure flag (a separate srun)"}
    )
    job_details: SlurmJobDetails = field(
        default_factory=SlurmJobDetails, metadata={"help": "log file naming"}
    )
    tunnel: SSHTunnel | LocalTunnel = field(
        default_factory=_default_tunnel,
        metadata={"help": "where sbatch runs: LocalTunnel (this host) or SSHTunnel"},
    )
    dependencies: list[str] = field(
        default_factory=list, metadata={"help": "Slurm job ids or app handles to wait for"}
    )
    dependency_type: str = field(
        default="afterok", metadata={"help": "Slurm dependency type, e.g. afterok or afterany"}
    )
    torchrun_nproc_per_node: int | None = field(
        default=None, metadata={"help": "processes per node under torchrun"}
    )
    wait_time_for_group_job: int = field(
        default=30, metadata={"help": "seconds between the sruns of a task group"}
    )
    monitor_group_job: bool = field(
        default=True, metadata={"help": "stop a task group's sruns when one fails"}
    )
    monitor_group_job_wait_time: int = field(
        default=60, metadata={"help": "seconds before the rest of a failed group is stopped"}
    )
    setup_lines: str | None = field(
        default=None, metadata={"help": "shell lines run before the sruns"}
    )
    het_group_indices: list[int] | None = field(
        default=None, metadata={"help": "the hetjob group of each role (default: one each)"}
    )
    segment: int | None = field(default=None, metadata={"help": "--segment"})
    network: str | None = field(default=None, metadata={"help": "--network"})
    ray_template: str = field(default="ray.sub.j2", metadata={"help": "template of Ray jobs"})
    poll_estimated_start_time: bool = field(
        default=True, metadata={"help": "show the estimated start of a pending job"}
    )
    job_name: str = field(
        init=False, default="nemo-job", metadata={"help": "the task's name (set by assign)"}
    )
    stderr_to_stdout: bool = field(
        init=False, default=True, metadata={"help": "one log file per srun for both streams"}
    )
    resource_group: list[ResourceRequest] = field(
        init=False,
        default_factory=list,
        metadata={"help": "one resource request per role of a task group (set by merge)"},
    )
    run_as_group: bool = field(
        init=False, default=False, metadata={"help": "roles run with resource_group (merge)"}
    )

    # -- placement --------------------------------------------------------------------------
    def info(self) -> str:
        user = getattr(self.tunnel, "user", "") or ""
        host = getattr(self.tunnel, "host", "localhost") or "localhost"
        return f"{type(self).__name__} on {user}@{host}"

    def assign(self, exp_id: str, exp_dir: str, task_id: str, task_dir: str) -> None:
        """As the base, plus the job's name (the task id) and its log folder."""
        super().assign(exp_id, exp_dir, task_id, task_dir)
        self.job_name = task_id
        self.job_details.job_name = self.job_details.job_name or task_id
        self.job_details.folder = self.job_dir
        self._place_tunnel(exp_id)

    def _place_tunnel(self, exp_id: str) -> None:
        """Move the tunnel's `job_dir` into the experiment's folder (0.11.1's
        `tunnel._set_job_dir`), from the folder the user gave: assigning again (a re-run, a
        clone) never nests experiment folders."""
        state = vars(self)  # not a field: not compared, shown or recorded
        tunnel = self.tunnel
        placed = state.get("_tunnel_placed")
        if placed and placed[0] == id(tunnel) and placed[2] == tunnel.job_dir:
            tunnel.job_dir = placed[1]
        base = tunnel.job_dir
        tunnel._set_job_dir(exp_id)
        state["_tunnel_placed"] = (id(tunnel), base, tunnel.job_dir)

    # -- shape of the job -------------------------------------------------------------------
    @property
    def local(self) -> LocalTunnel:
        """A tunnel on this machine, with the same job folder (0.11.1's `local`)."""
        return LocalTunnel(job_dir=self.tunnel.job_dir)

    @property
    def local_is_slurm(self) -> bool:
        """This machine can submit itself (`srun` is on PATH): a login node."""
        return shutil.which("srun") is not None

    @property
    def slurm(self) -> Tunnel:
        """Where Slurm commands run: this machine when it is a login node, else the tunnel
        (connected)."""
        if self.local_is_slurm:
            return self.local
        self.tunnel.connect()
        return self.tunnel

    def nnodes(self) -> int:
        return self.nodes

    def nproc_per_node(self) -> int:
        """Processes per node, as 0.11.1 counts them: `torchrun_nproc_per_node`, else one per
        GPU of the node (`gpus_per_node`, then `gpus_per_task`), else `ntasks_per_node`."""
        for value in (self.torchrun_nproc_per_node, self.gpus_per_node, self.gpus_per_task):
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return self.ntasks_per_node

    def macro_values(self) -> ExecutorMacros:
        """The variables the sbatch script and Slurm set on every node: the head node (first
        host of `$SLURM_JOB_NODELIST`, set by the script), node rank `$SLURM_NODEID`, ..."""
        return ExecutorMacros.named_by(self)

    def _setup_launcher(self) -> None:
        """torchrun / ft_launcher start the per-node processes themselves: Slurm then starts
        one task per node and `ntasks_per_node` moves to `torchrun_nproc_per_node`."""
        super()._setup_launcher()
        launcher = self.launcher
        if isinstance(launcher, (Torchrun, FaultTolerance)):
            if self.torchrun_nproc_per_node is None:
                self.torchrun_nproc_per_node = self.ntasks_per_node
            self.ntasks_per_node = 1
            logger.info(
                "%s launcher: ntasks_per_node=1, torchrun_nproc_per_node=%s",
                type(launcher).__name__,
                self.torchrun_nproc_per_node,
            )
        if isinstance(launcher, FaultTolerance):
            name = self.job_name
            launcher.cfg_path = posixpath.join(self.job_dir, f"{name}_ft_cfg.yml")
            launcher.finished_flag_file = posixpath.join(f"/{RUNDIR_NAME}", f"{name}_finished_flag")
            launcher.job_results_file = posixpath.join(self.job_dir, f"{name}_job_results")

    # -- task groups ------------------------------------------------------------------------
    @classmethod
    def merge(cls, executors: list[SlurmExecutor], num_tasks: int) -> SlurmExecutor:
        """One executor for a group of `num_tasks` tasks in one allocation: with one executor
        they share its resources (a heterogeneous one gets a group per task); with one per
        task each role gets its own resource request (a hetjob group when the first is
        `heterogeneous`)."""
        if not executors or len(executors) not in (1, num_tasks):
            raise ConfigError(
                f"SlurmExecutor.merge: {len(executors)} executors for {num_tasks} tasks; give "
                "one executor, or one per task"
            )
        main = copy.deepcopy(executors[0])
        main.run_as_group = True
        if len(executors) == 1:
            main.resource_group = (
                [main._resource_request(i) for i in range(num_tasks)] if main.heterogeneous else []
            )
            return main
        main.resource_group = [ex._resource_request(i) for i, ex in enumerate(executors)]
        return main

    def _resource_request(self, index: int) -> SlurmExecutor.ResourceRequest:
        indices = self.het_group_indices
        return self.ResourceRequest(
            packager=copy.deepcopy(self.packager),
            nodes=self.nodes,
            ntasks_per_node=self.ntasks_per_node,
            container_image=self.container_image,
            gpus_per_node=self.gpus_per_node,
            gpus_per_task=self.gpus_per_task,
            container_mounts=list(self.container_mounts),
            container_env=list(self.container_env) if self.container_env else None,
            env_vars=dict(self.env_vars),
            srun_args=list(self.srun_args) if self.srun_args else None,
            job_details=copy.deepcopy(self.job_details),
            het_group_index=indices[index] if indices and index < len(indices) else None,
        )

    # -- dependencies -----------------------------------------------------------------------
    def parse_deps(self) -> list[str]:
        """Slurm job ids of `dependencies`: an app handle (`slurm_tunnel://nemo_run/123`)
        gives its last part, a bare id stays as it is."""
        ids = []
        for dep in self.dependencies:
            job_id = dep.rstrip("/").rpartition("/")[2]
            if not re.fullmatch(r"\d+(?:_\d+)?", job_id):
                raise ConfigError(
                    f"SlurmExecutor.dependencies: {dep!r} names no Slurm job id; give job ids "
                    "('12345') or handles of Slurm jobs ('slurm_tunnel://nemo_run/12345')"
                )
            ids.append(job_id)
        return ids

    def dependency_flag(self) -> str | None:
        """`--dependency=<type>:<id>:<id>`, or None without dependencies."""
        ids = self.parse_deps()
        return f"--dependency={self.dependency_type}:{':'.join(ids)}" if ids else None

    # -- checks at dry run ------------------------------------------------------------------
    def validate_task(self, task: Any) -> None:
        """Before a task is packaged (at dry run): the executor's own settings first."""
        self.validate()
        super().validate_task(task)

    def validate(self) -> None:
        """Every value a submission needs, checked before anything is submitted (fields may
        have been set after construction, so the types are checked again too)."""
        check_field_types(self)
        check_env_vars(self.env_vars, "SlurmExecutor.env_vars")
        check_required(self, "account")
        for name in ("nodes", "ntasks_per_node", "cpus_per_task", "cpus_per_gpu", "segment"):
            check_at_least(self, name, 1)
        for name in ("gpus_per_node", "gpus_per_task", "retries", "wait_time_for_group_job"):
            check_at_least(self, name, 0)
        check_at_least(self, "monitor_group_job_wait_time", 0)
        check_at_least(self, "torchrun_nproc_per_node", 1)
        self._check_time()
        for name in ("mem", "mem_per_gpu", "mem_per_cpu"):
            _check_pattern(self, name, _MEM, "a size with an optional K/M/G/T unit, e.g. '16G'")
        _check_pattern(self, "array", _ARRAY, "indexes like '0-15', '1,3,5' or '0-15:2%4'")
        _check_pattern(self, "signal", _SIGNAL, "[B:]<signal>[@seconds], e.g. 'USR1@90'")
        check_choice(self, "dependency_type", DEPENDENCY_TYPES)
        check_choice(self, "open_mode", OPEN_MODES)
        if isinstance(self.exclusive, str) and self.exclusive not in EXCLUSIVE_MODES:
            raise ConfigError(
                f"SlurmExecutor.exclusive={self.exclusive!r} is not a Slurm mode; use True, "
                f"or one of {', '.join(repr(m) for m in EXCLUSIVE_MODES)}"
            )
        self._check_single_lines()
        self._check_container()
        self._check_additional_parameters()
        self.parse_deps()
        if self.mem and (self.mem_per_cpu or self.mem_per_gpu):
            raise ConfigError(
                "SlurmExecutor.mem, mem_per_cpu and mem_per_gpu exclude each other in Slurm; "
                "set only one of them"
            )

    def _check_time(self) -> None:
        if not _TIME.match(self.time or ""):
            raise ConfigError(
                f"SlurmExecutor.time={self.time!r} is not a Slurm time limit; write MM, MM:SS, "
                "HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, e.g. time='01:30:00'"
            )

    def _check_single_lines(self) -> None:
        """Values written into `#SBATCH` lines or srun flags: a line break or a blank would
        end the flag and start another (or another script line)."""
        names = (
            "account",
            "partition",
            "job_name_prefix",
            "qos",
            "comment",
            "constraint",
            "exclude",
            "gres",
            "network",
            "container_image",
        )
        for name in names:
            value = getattr(self, name)
            blanks = ("\n", "\r") if name == "comment" else ("\n", "\r", " ", "\t")
            if isinstance(value, str) and any(b in value for b in blanks):
                raise ConfigError(
                    f"SlurmExecutor.{name}={value!r} holds a line break or blank, which would "
                    "break the sbatch script; remove it"
                )

    def _check_container(self) -> None:
        for i, mount in enumerate(self.container_mounts):
            parts = mount.split(":")
            if "," in mount or any(c.isspace() for c in mount) or not 2 <= len(parts) <= 3:
                raise ConfigError(
                    f"SlurmExecutor.container_mounts[{i}]={mount!r} is not a Pyxis mount; write "
                    "'SRC:DST' or 'SRC:DST:FLAGS' (no commas or blanks), e.g. '/data:/data:ro'"
                )
        for name in self.container_env or []:
            if not is_env_name(name):
                raise ConfigError(
                    f"SlurmExecutor.container_env: {name!r} is not a variable name; list the "
                    "names of variables to pass into the container, e.g. ['HF_HOME']"
                )

    def _check_additional_parameters(self) -> None:
        for key, value in (self.additional_parameters or {}).items():
            if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
                raise ConfigError(
                    f"SlurmExecutor.additional_parameters: {key!r} is not a flag name; write "
                    "sbatch's long option without dashes, e.g. {'mail_type': 'END'}"
                )
            if not isinstance(value, (str, int, float, bool)) or "\n" in str(value):
                raise ConfigError(
                    f"SlurmExecutor.additional_parameters[{key!r}] must be one line of text, a "
                    "number or a bool"
                )

    def validate_remote(self, tunnel: Any) -> None:
        """Checks that need the cluster, run by the scheduler at dry run: the host answers
        through `tunnel` and the partition exists. ConfigError naming the fix otherwise."""
        where = getattr(tunnel, "host", "localhost") or "localhost"
        result = _run_quietly(tunnel, "sinfo --noheader --format=%P")
        if result is None:
            raise ConfigError(
                f"SlurmExecutor.tunnel: cannot run sinfo on {where}; check the host, user and "
                "SSH key of the tunnel (or that Slurm's commands are installed there)"
            )
        if not self.partition:
            return
        partitions = {p.strip().rstrip("*") for p in result.split() if p.strip()}
        if self.partition not in partitions:
            raise ConfigError(
                f"SlurmExecutor.partition={self.partition!r} does not exist on {where}; use one "
                f"of {', '.join(sorted(partitions)) or '(none listed)'}"
            )

    def supports_launcher_transform(self) -> bool:
        return False


def _run_quietly(tunnel: Any, command: str) -> str | None:
    """stdout of `command` run through the tunnel, or None when it could not run or failed."""
    try:
        result = tunnel.run(command, hide=True, warn=True)
    except Exception as e:  # any transport error: the host cannot be reached
        logger.debug("tunnel command %r failed: %s", command, e)
        return None
    code = getattr(result, "return_code", getattr(result, "exited", 0))
    if code not in (0, None):
        return None
    return str(getattr(result, "stdout", "") or "")


def _check_pattern(obj: Any, name: str, pattern: re.Pattern[str], expected: str) -> None:
    value = getattr(obj, name)
    if value is not None and not pattern.match(str(value)):
        raise ConfigError(
            f"{type(obj).__name__}.{name}={value!r} is not valid for Slurm; write {expected}"
        )


def as_sbatch_flag(key: str, value: Any) -> str | None:
    """`#SBATCH --key=value` for a field or an additional parameter (`_` becomes `-`); a bare
    `--key` for True; None for None or False."""
    flag = key.replace("_", "-")
    if value is None or value is False:
        return None
    if value is True:
        return f"#SBATCH --{flag}"
    return f"#SBATCH --{flag}={value}"


# -- the sbatch script -------------------------------------------------------------------------
@dataclass(kw_only=True)
class SrunGroup:
    """One srun of the job: a role's command (argv) and what it runs with."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # secrets already moved out
    nodes: int = 1
    ntasks_per_node: int = 1
    container_image: str | None = None
    container_mounts: list[str] = field(default_factory=list)
    container_env: list[str] = field(default_factory=list)
    srun_args: list[str] = field(default_factory=list)
    gpus_per_node: int | None = None
    gpus_per_task: int | None = None
    het_group: int | None = None  # the hetjob group the srun runs in


@dataclass(kw_only=True)
class SlurmBatchRequest:
    """Everything `sbatch` is given for one job, as plain data; `materialize()` is the script.

    `command_groups[i]` is srun i's argv (secret values replaced by `${NAME}` references),
    `groups[i]` its resources and environment. `secret_env` holds the secret values: they are
    never written into the script or a record; the scheduler starts `sbatch` with them in its
    environment (Slurm's default `--export=ALL` hands them to the job)."""

    launch_cmd: list[str]
    jobs: list[str]
    command_groups: list[list[str]]
    executor: SlurmExecutor = field(repr=False)  # its env_vars may hold secrets
    max_retries: int
    setup: list[str] | None = None
    extra_env: dict[str, str]
    launcher: Launcher | None = None
    # -- ours, beyond 0.11.1 ------------------------------------------------------------------
    job_name: str = ""
    job_dir: str = ""
    groups: list[SrunGroup] = field(default_factory=list)
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)
    expand_vars: list[str] = field(default_factory=list)  # shell variables the argv may name
    code_dir: str | None = None  # where the code was put; None: the job dir

    def materialize(self) -> str:
        """The whole sbatch script."""
        lines = ["#!/bin/bash", "#", "# Generated by nemo_run", f"# Submit with: {self.submit}"]
        lines += ["#", "", "# Parameters", *self.sbatch_lines(), ""]
        lines += self._preamble()
        lines += self._commands()
        lines += self._epilogue()
        return "\n".join(lines) + "\n"

    @property
    def submit(self) -> str:
        return " ".join(self.launch_cmd) + " <script>"

    # -- #SBATCH ------------------------------------------------------------------------------
    def sbatch_lines(self) -> list[str]:
        """The `#SBATCH` parameters: one block per hetjob group, separated by `hetjob`."""
        ex = self.executor
        het = self._het_groups()
        if not het:
            return self._block(self.job_name, ex.nodes, ex.ntasks_per_node, None, None, True)
        lines: list[str] = []
        for i, group in enumerate(het):
            if i:
                lines.append("#SBATCH hetjob")
            lines += self._block(
                group.name,
                group.nodes,
                group.ntasks_per_node,
                group.gpus_per_node,
                group.gpus_per_task,
                i == 0,
            )
        return lines

    def _het_groups(self) -> list[SrunGroup]:
        """The first srun of each hetjob group, in group order ([] for a plain job)."""
        seen: dict[int, SrunGroup] = {}
        for group in self.groups:
            if group.het_group is not None and group.het_group not in seen:
                seen[group.het_group] = group
        return [seen[k] for k in sorted(seen)]

    def _block(
        self,
        name: str,
        nodes: int,
        ntasks: int,
        gpus_node: int | None,
        gpus_task: int | None,
        first: bool,
    ) -> list[str]:
        ex = self.executor
        het = bool(self._het_groups())
        logs = SlurmJobDetails(job_name=name, folder=self.job_dir)
        stdout = logs.stdout.replace("%j", "%A_%a") if ex.array else logs.stdout
        values: dict[str, Any] = {
            "account": ex.account,
            "partition": ex.partition,
            "job_name": name,
            "time": ex.time,
            "nodes": nodes,
            "ntasks_per_node": ntasks,
            "cpus_per_task": ex.cpus_per_task,
            "cpus_per_gpu": ex.cpus_per_gpu,
            "gpus_per_node": gpus_node if het else ex.gpus_per_node,
            "gpus_per_task": gpus_task if het else ex.gpus_per_task,
            "qos": ex.qos,
            "mem": ex.mem,
            "mem_per_gpu": ex.mem_per_gpu,
            "mem_per_cpu": ex.mem_per_cpu,
            "comment": ex.comment,
            "constraint": ex.constraint,
            "exclude": ex.exclude,
            "gres": ex.gres,
            "signal": ex.signal,
            "exclusive": ex.exclusive,
            "open_mode": ex.open_mode,
            "segment": ex.segment,
            "network": ex.network,
            "output": stdout,
        }
        if not ex.stderr_to_stdout:
            values["error"] = stdout.replace(".out", ".err")
        if first:  # job-wide settings: once, in the first block
            values["array"] = ex.array
            deps = ex.parse_deps()
            values["dependency"] = f"{ex.dependency_type}:{':'.join(deps)}" if deps else None
            values["requeue"] = True if self.max_retries > 0 else None
            for key, value in (ex.additional_parameters or {}).items():
                values[key] = value
        flags = (as_sbatch_flag(key, value) for key, value in sorted(values.items()))
        return [f for f in flags if f]

    # -- the script's body ----------------------------------------------------------------------
    def _preamble(self) -> list[str]:
        ex = self.executor
        lines = [
            "set -o pipefail",
            "",
            "export PYTHONUNBUFFERED=1",
            "export SLURM_UNBUFFEREDIO=1",
            f"export TORCHX_MAX_RETRIES={self.max_retries}",
            "",
            "# the nodes meet at the first host of the allocation",
            f'{ex.HEAD_NODE_IP_VAR}=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)',
            f"export {ex.HEAD_NODE_IP_VAR}",
        ]
        for index in range(len(self._het_groups())):
            var = f"SLURM_JOB_NODELIST_HET_GROUP_{index}"
            lines.append(
                f'{ex.HET_GROUP_HOST_VAR}_{index}=$(scontrol show hostnames "${var}" | head -n1)'
            )
        if self.extra_env:
            exports = sorted(self.extra_env.items())
            lines += ["", *(f"export {k}={shell_value(v)}" for k, v in exports)]
        if self.secret_env:
            lines += ["", "# secret values come from the environment sbatch was started with"]
            for name in sorted(self.secret_env):
                lines.append(
                    f'[ -n "${{{name}+x}}" ] || {{ echo "nemo_run: {name} is not set in the '
                    f'job environment" >&2; exit 1; }}'
                )
        if isinstance(self.launcher, FaultTolerance):
            lines += self._ft_lines()
        if self.setup:
            lines += ["", "# setup", *self.setup]
        return [*lines, ""]

    def _ft_lines(self) -> list[str]:
        name = self.jobs[0] if self.jobs else self.job_name
        base = self.job_dir
        return [
            "",
            "# fault tolerance (ft_launcher): its config, finished flag and results files",
            f"export FAULT_TOL_CFG_PATH={shlex.quote(posixpath.join(base, f'{name}_ft_cfg.yml'))}",
            "export FAULT_TOL_FINISHED_FLAG_FILE="
            + shlex.quote(posixpath.join(base, f"{name}_finished_flag")),
            f"JOB_RESULTS_FILE={shlex.quote(posixpath.join(base, f'{name}_job_results'))}",
            'if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] && [ -f "$FAULT_TOL_FINISHED_FLAG_FILE" ]; then',
            '    echo "nemo_run: training already finished"; exit 0',
            "fi",
        ]

    def _commands(self) -> list[str]:
        lines: list[str] = []
        several = len(self.groups) > 1
        if several:
            lines.append("pids=()")
        for i, group in enumerate(self.groups):
            lines.append(f"# Command {i + 1}: {group.name}")
            srun = self._srun(i, group)
            if group.env:
                exports = "; ".join(
                    f"export {k}={shell_value(v)}" for k, v in sorted(group.env.items())
                )
                srun = f"( {exports}; exec {srun} )"  # the pid is srun's: kill stops it
            if several:
                lines.append(f"{srun} &")
                lines.append("pids+=($!)")
                wait = self.executor.wait_time_for_group_job
                if wait and i < len(self.groups) - 1:
                    lines.append(f"sleep {wait}")
            else:
                lines.append(srun)
                lines.append("exitcode=$?")
            lines.append("")
        if several:
            lines += self._wait_for_group()
        return lines

    def _srun(self, index: int, group: SrunGroup) -> str:
        ex = self.executor
        logs = SlurmJobDetails(job_name=group.name, folder=self.job_dir)
        words = ["srun"]
        if group.het_group is not None:
            words.append(f"--het-group={group.het_group}")
        elif len(self.groups) > 1:  # several sruns share one allocation: each its own nodes
            words += [f"--nodes={group.nodes}", f"--ntasks-per-node={group.ntasks_per_node}"]
            words.append("--overlap")
        words += ["--output", _with_restart_count(logs.srun_stdout)]
        if not ex.stderr_to_stdout:
            words += ["--error", _with_restart_count(logs.srun_stderr)]
        workdir = self.code_dir or self.job_dir
        if group.container_image:
            mounts = [*group.container_mounts, f"{self.job_dir}:/{RUNDIR_NAME}"]
            words += ["--container-image", shlex.quote(group.container_image)]
            words += ["--container-mounts", shlex.quote(",".join(mounts))]
            inside = f"/{RUNDIR_NAME}" + (workdir[len(self.job_dir) :] if workdir else "")
            words += ["--container-workdir", shlex.quote(inside)]
            env_names = [*group.container_env, *sorted(self.secret_env)]
            if env_names:
                words += ["--container-env", shlex.quote(",".join(dict.fromkeys(env_names)))]
        else:
            words += ["--chdir", shlex.quote(workdir)]
        words += ["--wait=60", "--kill-on-bad-exit=1"]
        words += [shlex.quote(a) for a in group.srun_args]
        words.append(self._argv_text(group.argv))
        return " ".join(words)

    def _argv_text(self, argv: list[str]) -> str:
        """The command, quoted word by word, except the node variables it names (head node,
        node rank, ...) and secret references, which the shell on the node expands."""
        return shell_join(argv, expand=[*self.expand_vars, *self.secret_env])

    def _wait_for_group(self) -> list[str]:
        """Wait for every srun (polling each second; `wait <pid>` also reports one that ended
        before it was asked); with `monitor_group_job`, the first failure stops the rest after
        `monitor_group_job_wait_time` seconds (time for a clean stack trace)."""
        ex = self.executor
        lines = [
            "exitcode=0",
            'remaining=("${pids[@]}")',
            'while [ "${#remaining[@]}" -gt 0 ]; do',
            "    still=()",
            '    for pid in "${remaining[@]}"; do',
            '        if kill -0 "$pid" 2>/dev/null; then still+=("$pid"); continue; fi',
            '        wait "$pid"',
            "        rc=$?",
            '        if [ "$rc" -ne 0 ] && [ "$exitcode" -eq 0 ]; then exitcode=$rc; fi',
            "    done",
            '    remaining=("${still[@]}")',
        ]
        if ex.monitor_group_job:
            wait = ex.monitor_group_job_wait_time
            lines += [
                '    if [ "$exitcode" -ne 0 ] && [ "${#remaining[@]}" -gt 0 ]; then',
                f'        echo "nemo_run: a srun exited with $exitcode; stopping the rest in {wait}s"',
                f"        sleep {wait}",
                '        kill "${remaining[@]}" 2>/dev/null',
                '        for pid in "${remaining[@]}"; do wait "$pid"; done',
                "        break",
                "    fi",
            ]
        lines += ['    if [ "${#remaining[@]}" -gt 0 ]; then sleep 1; fi', "done", ""]
        return lines

    def _epilogue(self) -> list[str]:
        path = exit_code_path(self.job_dir, "${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}")
        suffix = "${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}"
        lines = [
            'echo "nemo_run: job exited with code $exitcode"',
            "# the exit status, for the scheduler to read (written whole, then renamed)",
            f'exit_file="{path}{suffix}"',
            'echo "$exitcode" > "$exit_file.tmp" && mv -f "$exit_file.tmp" "$exit_file"',
        ]
        if isinstance(self.launcher, FaultTolerance):
            lines += [
                'echo "$SLURM_JOB_ID ${SLURM_RESTART_COUNT:-0} $exitcode" >> "$JOB_RESULTS_FILE"',
                'if [ "$exitcode" -ne 0 ] && [ -f "$FAULT_TOL_FINISHED_FLAG_FILE" ]; then',
                "    exit 0",
                "fi",
            ]
        lines += [
            'if [ "$exitcode" -ne 0 ]; then',
            '    if [ "$TORCHX_MAX_RETRIES" -gt "${SLURM_RESTART_COUNT:-0}" ]; then',
            '        scontrol requeue "$SLURM_JOB_ID"',
            "    fi",
            '    exit "$exitcode"',
            "fi",
        ]
        return lines


def exit_code_path(job_dir: str, job_id: str) -> str:
    """Where the script writes its exit status for job `job_id` (an array task adds
    `_<task id>`): `<job_dir>/exitcode_<job id>`."""
    return posixpath.join(job_dir, f"{_EXIT_CODE_NAME}_{job_id}")


def _with_restart_count(path: str) -> str:
    """A quoted path whose `${SLURM_RESTART_COUNT:-0}` the shell expands."""
    head, _, tail = path.partition(RESTART_COUNT)
    return shlex.quote(head) + RESTART_COUNT + (shlex.quote(tail) if tail else "")


def is_secret_env_name(name: str) -> bool:
    """A variable whose value is never written into a script: a secret-looking name, or a
    secret argument moved out of the command line."""
    return is_secret_name(name) or is_secret_arg_env(name)


def shell_value(value: str) -> str:
    """`value` double-quoted for an `export` line: `$VAR` and `${VAR}` still expand on the
    node, as in 0.11.1's unquoted exports (`$HOME/x`, `$SLURM_JOB_ID`), but spaces and
    quotes stay in the value, and backquotes and `$(...)` do not run."""
    escaped = re.sub(r'(["\\`])', r"\\\1", value).replace("$(", "\\$(")
    return f'"{escaped}"'


def get_packaging_job_key(experiment_id: str, job_name: str) -> str:
    """The key of a job's code upload in `Tunnel.packaging_jobs` (0.11.1's)."""
    return f"{experiment_id}:{job_name}"


def __getattr__(name: str) -> Any:
    if name == "CONSOLE":  # 0.11.1's console; rich is loaded only when asked for
        return importlib.import_module("nemo_run.core.frontend.console.api").CONSOLE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "CONSOLE"])
