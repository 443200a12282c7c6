"""Launchers wrap a task's command: `torchrun` or `ft_launcher` fan one process out per GPU,
and any launcher can run the whole command under `nsys profile`.

The rendered command lines are nemo-run 0.11.1's, flag for flag. Addresses of other nodes are
never written here as values: a multi-node command names the executor's macros (e.g.
`$${head_node_ip_var}`), which `ExecutorMacros.apply` turns into the platform's shell variables
(`$MASTER_ADDR`, `$SKYPILOT_NODE_RANK`, ...), expanded on each node where the job runs.
"""

from __future__ import annotations

import logging
import posixpath
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from nemo_run.core.config_mixin import ConfigurableMixin
from nemo_run.core.execution.fields import check_at_least, check_field_types
from nemo_run.core.script import Script
from nemo_run.exceptions import ConfigError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

# How the nodes of a torchrun job meet; an executor names its platform's style
# (`Executor.torchrun_rendezvous`).
C10D = "c10d"  # a c10d store on the head node: `--rdzv-endpoint $HEAD:PORT --node-rank $RANK`
STATIC = "static"  # `--node-rank $RANK --master-addr $HEAD --master-port $MASTER_PORT` (Lepton)
PLATFORM = "platform"  # only the counts: the platform's operator sets torchrun's PET_* variables
RENDEZVOUS_STYLES = (C10D, STATIC, PLATFORM)

# Shell references to the executor's variables, as macros: `$$` stays one `$` once the macros
# are applied, so `$${node_rank_var}` becomes e.g. `$SKYPILOT_NODE_RANK`.
HEAD_NODE_IP = "$$${head_node_ip_var}"
NODE_RANK = "$$${node_rank_var}"
MASTER_PORT = "$MASTER_PORT"  # set next to MASTER_ADDR by platforms with a static rendezvous

# Environment 0.11.1 adds to a torchrun job whose packager has debug=True.
TORCH_DEBUG_ENV: dict[str, str] = {
    "CUDA_LAUNCH_BLOCKING": "1",
    "NCCL_DESYNC_DEBUG": "1",
    "TORCH_DISTRIBUTED_DEBUG": "DETAIL",
    "TORCH_SHOW_CPP_STACKTRACES": "1",
}


def _default_nsys_trace() -> list[str]:
    return ["nvtx", "cuda"]


def _default_nsys_extra_args() -> list[str]:
    return [
        "--force-overwrite=true",
        "--capture-range=cudaProfilerApi",
        "--capture-range-end=stop",
        "--cuda-graph-trace=node",
        "--cuda-event-trace=false",
    ]


@dataclass(kw_only=True)
class Launcher(ConfigurableMixin):
    """No wrapping: the command runs as written (optionally under `nsys profile`)."""

    # True for launchers that start the per-GPU processes themselves (one replica per node).
    fans_out: ClassVar[bool] = False

    nsys_profile: bool = False
    nsys_folder: str = "nsys_profile"
    nsys_filename: str = "profile_%p"
    nsys_trace: list[str] = field(default_factory=_default_nsys_trace)
    nsys_extra_args: list[str] = field(default_factory=_default_nsys_extra_args)
    nsys_gpu_metrics: bool = False

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ConfigError for a bad field; run again at launch, since fields may be set
        after construction."""
        check_field_types(self)

    def get_nsys_prefix(self, profile_dir: str) -> list[str] | None:
        """`nsys profile ...` arguments writing into `profile_dir/nsys_folder`, or None when
        profiling is off."""
        if not self.nsys_profile:
            return None
        output = f"{posixpath.join(profile_dir, self.nsys_folder)}/{self.nsys_filename}"
        trace = ",".join(self.nsys_trace)
        return ["profile", "-s", "none", "-t", trace, "-o", output, *self.nsys_extra_args]

    def transform(self, cmd: list[str]) -> Script | None:
        """A script replacing the command `cmd` (for executors that support it), or None."""
        return None

    def wrap(
        self,
        entrypoint: str,
        args: list[str],
        *,
        is_python: bool,
        nnodes: int,
        nproc_per_node: int,
        rendezvous: str = C10D,
    ) -> tuple[str, list[str]]:
        """(entrypoint, args) that start the command; the base launcher leaves it as is."""
        return entrypoint, args


@dataclass(kw_only=True)
class Torchrun(Launcher):
    """Run under `torchrun`: `nproc_per_node` processes on each of `nnodes` nodes."""

    fans_out: ClassVar[bool] = True

    rdzv_backend: str = "c10d"
    rdzv_port: int = 29500
    rdzv_id: int | None = None

    def check(self) -> None:
        super().check()
        _check_rendezvous(self)

    def wrap(
        self,
        entrypoint: str,
        args: list[str],
        *,
        is_python: bool,
        nnodes: int,
        nproc_per_node: int,
        rendezvous: str = C10D,
    ) -> tuple[str, list[str]]:
        return _torchrun_command(
            self, "torchrun", [], entrypoint, args, is_python, nnodes, nproc_per_node, rendezvous
        )


@dataclass(kw_only=True)
class FaultTolerance(Launcher):
    """Run under `ft_launcher` (nvidia-resiliency-ext): torchrun's arguments after its own
    heartbeat and restart settings. `cfg_path`, `finished_flag_file` and `job_results_file`
    are set by executors whose launch script exports them (`FAULT_TOL_CFG_PATH`, ...)."""

    fans_out: ClassVar[bool] = True

    cfg_path: str = ""
    finished_flag_file: str = ""
    job_results_file: str = ""
    rdzv_backend: str = "c10d"
    rdzv_port: int = 29500
    rdzv_id: int | None = None
    workload_check_interval: float | None = None
    initial_rank_heartbeat_timeout: float | None = None
    rank_heartbeat_timeout: float | None = None
    rank_termination_signal: str | None = None
    log_level: str | None = None
    max_restarts: int | None = None

    def check(self) -> None:
        super().check()
        _check_rendezvous(self)
        for name in (
            "workload_check_interval",
            "initial_rank_heartbeat_timeout",
            "rank_heartbeat_timeout",
        ):
            _check_seconds(self, name)
        check_at_least(self, "max_restarts", 0)

    def wrap(
        self,
        entrypoint: str,
        args: list[str],
        *,
        is_python: bool,
        nnodes: int,
        nproc_per_node: int,
        rendezvous: str = C10D,
    ) -> tuple[str, list[str]]:
        own = self.ft_args(rendezvous)
        return _torchrun_command(
            self,
            "ft_launcher",
            own,
            entrypoint,
            args,
            is_python,
            nnodes,
            nproc_per_node,
            rendezvous,
        )

    def ft_args(self, rendezvous: str = C10D) -> list[str]:
        """ft_launcher's own flags: the settings given, or `--ignore-missing-fault-tol-cfg` when
        none is (as 0.11.1, a falsy value such as `max_restarts=0` is left out)."""
        settings = (
            self.workload_check_interval,
            self.initial_rank_heartbeat_timeout,
            self.rank_heartbeat_timeout,
            self.rank_termination_signal,
            self.log_level,
            self.max_restarts,
        )
        if all(value is None for value in settings):
            return ["--ignore-missing-fault-tol-cfg"]
        flags = [
            ("--ft-workload_check_interval", self.workload_check_interval),
            ("--ft-initial_rank_heartbeat_timeout", self.initial_rank_heartbeat_timeout),
            ("--ft-rank_heartbeat_timeout", self.rank_heartbeat_timeout),
            ("--ft-rank_termination_signal", self.rank_termination_signal),
            ("--ft-log_level", self.log_level),
        ]
        out = [item for flag, value in flags if value for item in (flag, str(value))]
        if self.max_restarts:
            if rendezvous == PLATFORM:  # the platform restarts the workload itself
                log.warning("FaultTolerance.max_restarts is ignored on this platform")
            else:
                out += ["--max-restarts", str(self.max_restarts)]
        return out


def _torchrun_command(
    launcher: Torchrun | FaultTolerance,
    program: str,
    own_flags: list[str],
    entrypoint: str,
    args: list[str],
    is_python: bool,
    nnodes: int,
    nproc_per_node: int,
    rendezvous: str,
) -> tuple[str, list[str]]:
    """`program` (torchrun, or ft_launcher with its own flags first) with torchrun's
    placement and the target, once the launcher's fields are checked."""
    launcher.check()
    placement = torchrun_placement(launcher, nnodes, nproc_per_node, rendezvous)
    return program, [*own_flags, *placement, *torchrun_target(entrypoint, args, is_python)]


def _check_rendezvous(launcher: Torchrun | FaultTolerance) -> None:
    if not launcher.rdzv_backend:
        raise ConfigError(
            f"{type(launcher).__name__}.rdzv_backend is empty; use 'c10d' (the default)"
        )
    if not 0 < launcher.rdzv_port < 65536:
        raise ConfigError(
            f"{type(launcher).__name__}.rdzv_port must be a port number 1-65535, "
            f"got {launcher.rdzv_port}"
        )


def _check_seconds(launcher: Launcher, name: str) -> None:
    value = getattr(launcher, name)
    if value is not None and not value > 0:
        raise ConfigError(
            f"{type(launcher).__name__}.{name} must be a number of seconds > 0 or None, got {value!r}"
        )


def torchrun_placement(
    launcher: Torchrun | FaultTolerance, nnodes: int, nproc_per_node: int, rendezvous: str = C10D
) -> list[str]:
    """torchrun's flags placing the processes: how many, and where the nodes meet.

    One node meets on `localhost:0` (torchrun picks a free port; `rdzv_port` is unused), as
    0.11.1 does; several name the head node and node rank through the executor's macros."""
    if rendezvous not in RENDEZVOUS_STYLES:
        raise ConfigError(
            f"torchrun rendezvous {rendezvous!r} is not known; use one of {RENDEZVOUS_STYLES}"
        )
    counts = ["--nnodes", str(nnodes), "--nproc-per-node", str(nproc_per_node)]
    if rendezvous == PLATFORM:
        return counts
    if rendezvous == STATIC:
        return [
            *counts,
            *("--node-rank", NODE_RANK, "--master-addr", HEAD_NODE_IP),
            *("--master-port", MASTER_PORT),
        ]
    single = nnodes == 1
    endpoint = "localhost:0" if single else f"{HEAD_NODE_IP}:{launcher.rdzv_port}"
    rdzv_id = launcher.rdzv_id if launcher.rdzv_id is not None else random.randint(1, 10000)
    return [
        "--rdzv-backend",
        launcher.rdzv_backend,
        "--rdzv-endpoint",
        endpoint,
        "--rdzv-id",
        str(rdzv_id),
        *counts,
        "--node-rank",
        "0" if single else NODE_RANK,
        "--tee",
        "3",
    ]


def needs_node_macros(nnodes: int, rendezvous: str) -> bool:
    """True when the placement flags name the head node and node rank (macros to apply)."""
    return rendezvous == STATIC or (rendezvous == C10D and nnodes > 1)


def torchrun_target(entrypoint: str, args: list[str], is_python: bool) -> list[str]:
    """What torchrun starts on each rank: a Python file or `-m module` runs in torchrun's own
    interpreter, as 0.11.1 does; anything else (inline Python, shell scripts, programs) goes
    after `--no-python` with its interpreter, so a script needs no executable bit."""
    if is_python and args and args[0] != "-c":
        return args
    return ["--no-python", entrypoint, *args]


LAUNCHER_MAP: dict[str, type[Launcher]] = {"torchrun": Torchrun, "ft": FaultTolerance}
LAUNCHERS = LAUNCHER_MAP  # the older name


def resolve_launcher(launcher: Launcher | str | None) -> Launcher:
    """Turn the `launcher` field (None, a name, or an object) into a Launcher, or raise."""
    if launcher is None:
        return Launcher()
    if isinstance(launcher, Launcher):
        return launcher
    if isinstance(launcher, str) and launcher.lower() in LAUNCHER_MAP:
        return LAUNCHER_MAP[launcher.lower()]()
    raise ConfigError(
        f"launcher={launcher!r} is not known; use None, one of {sorted(LAUNCHER_MAP)}, "
        "or a Launcher object such as run.Torchrun(...)"
    )
