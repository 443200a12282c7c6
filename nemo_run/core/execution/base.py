"""The `Executor` base: what every backend's configuration shares, validated on creation."""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field, fields
from string import Template
from typing import Any, ClassVar

from nemo_run.core.envvars import check_env_vars
from nemo_run.core.execution.fields import check_at_least, check_field_types
from nemo_run.core.execution.launcher import Launcher, resolve_launcher
from nemo_run.core.packaging.base import Packager
from nemo_run.core.redact import redact, redact_text


@dataclass(kw_only=True)
class ExecutorMacros:
    """Names of the variables a backend sets per node, substituted into `${...}` in args and env."""

    HEAD_NODE_IP_VAR = "${head_node_ip_var}"
    NPROC_PER_NODE_VAR = "${nproc_per_node_var}"
    NUM_NODES_VAR = "${num_nodes_var}"
    NODE_RANK_VAR = "${node_rank_var}"

    head_node_ip_var: str
    nproc_per_node_var: str
    num_nodes_var: str
    node_rank_var: str
    het_group_host_var: str = ""

    def substitute(self, text: str) -> str:
        """Replace `${name}` macros; anything else (shell `$VARS`) is left untouched."""
        return Template(text).safe_substitute(**asdict(self))

    def apply(self, args: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        return [self.substitute(a) for a in args], {k: self.substitute(v) for k, v in env.items()}


@dataclass(kw_only=True)
class Executor:
    """Where and how a task runs. Subclasses add backend fields and validate in `__post_init__`."""

    # True where nemo_run starts every process itself (local, Docker): a job then has
    # nnodes x nproc_per_node replicas and gets RANK/WORLD_SIZE; elsewhere the platform sets them.
    spawns_replicas: ClassVar[bool] = False

    packager: Packager = field(
        default_factory=Packager,
        metadata={"help": "how code reaches the job: a Packager object (the default ships none)"},
    )
    launcher: Launcher | str | None = field(
        default=None,
        metadata={
            "help": "wraps the command: 'torchrun', a Launcher object, or None to run it as written"
        },
    )
    env_vars: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "environment variables for every process of the job"},
    )
    retries: int = field(
        default=0, metadata={"help": "restarts of a failed replica before the job fails"}
    )
    experiment_id: str | None = field(
        default=None,
        metadata={"help": "the experiment the task belongs to (set by the experiment)"},
    )
    job_dir: str = field(
        default="",
        metadata={
            "help": "local folder for the job's files and logs (empty: under $NEMORUN_HOME/jobs)"
        },
    )
    experiment_dir: str = field(
        init=False, default="", metadata={"help": "the experiment's folder (set by the experiment)"}
    )

    def __post_init__(self) -> None:
        # Types first (every field of every subclass, from its annotation), so the checks
        # below and in subclasses only test ranges and meaning.
        check_field_types(self)
        check_env_vars(self.env_vars, f"{type(self).__name__}.env_vars")
        check_at_least(self, "retries", 0)
        resolve_launcher(self.launcher)  # raises on an unknown launcher name

    # -- identity and placement -------------------------------------------------------------
    def info(self) -> str:
        return type(self).__name__

    def clone(self) -> Executor:
        return copy.deepcopy(self)

    def assign(self, exp_id: str, exp_dir: str, task_id: str, task_dir: str) -> None:
        """Place this task's files under the experiment folder."""
        self.experiment_id = exp_id
        self.experiment_dir = exp_dir
        self.job_dir = os.path.join(exp_dir, task_dir)

    # -- shape of the job -------------------------------------------------------------------
    def nnodes(self) -> int:
        return 1

    def nproc_per_node(self) -> int:
        return 1

    def macro_values(self) -> ExecutorMacros | None:
        return None

    def get_launcher(self) -> Launcher:
        return resolve_launcher(self.launcher)

    def python_executable(self) -> str:
        """The interpreter that runs Python tasks on the target (the caller's own for local)."""
        return "python"

    def validate_task(self, task: Any) -> None:
        """Backend-specific checks of a task before anything starts (e.g. local paths exist)."""

    def describe_fields(self) -> dict[str, Any]:
        """Public settings as plain data for records and dry-run text: secret fields are
        `repr=False` and left out; secrets anywhere inside the rest (env-like dicts and lists,
        command lines, nested specs such as `additional_kwargs` or `custom_spec`) are masked."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if not f.repr or f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            plain = isinstance(value, (str, int, float, bool, type(None), list, dict))
            out[f.name] = redact(value) if plain else redact_text(repr(value))
        return out

    def cleanup(self, handle: str) -> None:
        """Release anything held for a finished job (nothing by default)."""
