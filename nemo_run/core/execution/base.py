"""The `Executor` base: what every backend's configuration shares, validated on creation."""

from __future__ import annotations

import copy
import importlib.util
import os
import re
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from nemo_run.config import get_nemorun_home
from nemo_run.core.atomic import atomic_write
from nemo_run.core.config_mixin import ConfigurableMixin
from nemo_run.core.envvars import check_env_vars
from nemo_run.core.execution.fields import check_at_least, check_field_types
from nemo_run.core.execution.launcher import (  # LAUNCHER_MAP: 0.11.1's name here too
    C10D,
    LAUNCHER_MAP,
    RENDEZVOUS_STYLES,
    TORCH_DEBUG_ENV,
    Launcher,
    needs_node_macros,
    resolve_launcher,
)
from nemo_run.core.packaging.base import Packager
from nemo_run.core.redact import redact, redact_text
from nemo_run.exceptions import ConfigError

if TYPE_CHECKING:
    from torchx.specs import Role
    from typing_extensions import Self


# `$name`, `${name}`, each optionally after `$$` (which then stays one `$`)
_MACRO = re.compile(r"(\$\$)?\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")

# The job's folder as a container or remote job sees it (`/nemo_run`: configs, code, logs);
# 0.11.1's `nemo_run.config.RUNDIR_NAME`, re-exported by the executor modules that use it.
RUNDIR_NAME = "nemo_run"
# a volume source starting with this names the job's own folder (0.11.1's config name too)
RUNDIR_SPECIAL_NAME = "/$nemo_run"


@dataclass(kw_only=True)
class ExecutorMacros(ConfigurableMixin):
    """Names of the variables a backend sets on each node (head node address, node rank, ...).

    Commands name them as macros, e.g. `$${head_node_ip_var}`; `apply` puts in the executor's
    names, so the shell on each node expands `$MASTER_ADDR` (or the platform's equivalent)."""

    HEAD_NODE_IP_VAR = "${head_node_ip_var}"
    NPROC_PER_NODE_VAR = "${nproc_per_node_var}"
    NUM_NODES_VAR = "${num_nodes_var}"
    NODE_RANK_VAR = "${node_rank_var}"
    FT_LAUNCHER_CFG_PATH_VAR = "${ft_launcher_cfg_path_var}"

    head_node_ip_var: str
    nproc_per_node_var: str
    num_nodes_var: str
    node_rank_var: str
    het_group_host_var: str = ""
    ft_launcher_cfg_path_var: str = "FAULT_TOL_CFG_PATH"

    @classmethod
    def named_by(cls, executor: Any) -> ExecutorMacros:
        """The macros of an executor that names its platform's variables in class attributes
        (`HEAD_NODE_IP_VAR`, `NPROC_PER_NODE_VAR`, `NUM_NODES_VAR`, `NODE_RANK_VAR`,
        `HET_GROUP_HOST_VAR`), as 0.11.1's Slurm and SkyPilot executors do."""
        return cls(
            head_node_ip_var=executor.HEAD_NODE_IP_VAR,
            nproc_per_node_var=executor.NPROC_PER_NODE_VAR,
            num_nodes_var=executor.NUM_NODES_VAR,
            node_rank_var=executor.NODE_RANK_VAR,
            het_group_host_var=executor.HET_GROUP_HOST_VAR,
        )

    def variable_names(self) -> list[str]:
        """The four node variables (head address, processes per node, nodes, node rank), for
        launch scripts that must leave them for each node's shell to expand."""
        return [
            self.head_node_ip_var,
            self.nproc_per_node_var,
            self.num_nodes_var,
            self.node_rank_var,
        ]

    @staticmethod
    def group_host(index: int) -> str:
        """A reference to the head host of heterogeneous group `index` (`$<het var>_<index>`)."""
        return f"$$${{het_group_host_var}}_{index}"

    def apply(self, role: Role) -> Role:
        """A copy of `role` with the macros in its args and env values replaced."""
        role = copy.deepcopy(role)
        role.args = [self.substitute(arg) for arg in role.args]
        role.env = {key: self.substitute(value) for key, value in role.env.items()}
        return role

    def substitute(self, arg: str) -> str:
        """Replace `${name}` / `$name` of this class's fields; `$$` before one leaves a `$`.
        Anything else (`$HOME`, `$$`, `${OTHER}`) is left as written, for the shell."""
        values = {f.name: str(getattr(self, f.name)) for f in fields(self)}

        def replace(match: re.Match[str]) -> str:
            name = match.group(2) or match.group(3)
            if name not in values:
                return match.group(0)
            return ("$" if match.group(1) else "") + values[name]

        return _MACRO.sub(replace, arg)


@runtime_checkable
class LogSupportedExecutor(Protocol):
    """An executor class that can fetch a job's logs itself."""

    @classmethod
    def logs(cls, app_id: str, fallback_path: str | None) -> Any: ...


@dataclass(kw_only=True)
class Executor(ConfigurableMixin):
    """Where and how a task runs. Subclasses add backend fields and validate in `__post_init__`."""

    # True where nemo_run starts every process itself (local, Docker): a job then has
    # nnodes x nproc_per_node replicas and gets RANK/WORLD_SIZE; elsewhere the platform sets them.
    spawns_replicas: ClassVar[bool] = False
    # How torchrun's nodes meet on this platform (see `launcher.RENDEZVOUS_STYLES`): "c10d" (a
    # store on the head node named by `macro_values()`), "static" (--master-addr/--node-rank
    # from `macro_values()`) or "platform" (its operator sets the PET_* variables torchrun reads).
    torchrun_rendezvous: ClassVar[str] = C10D

    packager: Packager = field(
        default_factory=Packager,
        metadata={"help": "how code reaches the job: a Packager object (the default ships none)"},
    )
    launcher: Launcher | str | None = field(
        default=None,
        metadata={
            "help": "wraps the command: 'torchrun', 'ft', a Launcher object, or None to run it as written"
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
    _launcher_setup: bool = field(init=False, default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Types first (every field of every subclass, from its annotation), so the checks
        # below and in subclasses only test ranges and meaning.
        check_field_types(self)
        check_env_vars(self.env_vars, f"{type(self).__name__}.env_vars")
        check_at_least(self, "retries", 0)
        resolve_launcher(self.launcher)  # raises on an unknown launcher name
        if self.torchrun_rendezvous not in RENDEZVOUS_STYLES:
            raise ConfigError(
                f"{type(self).__name__}.torchrun_rendezvous={self.torchrun_rendezvous!r}; "
                f"use one of {RENDEZVOUS_STYLES}"
            )

    # -- identity and placement -------------------------------------------------------------
    def info(self) -> str:
        return type(self).__qualname__

    def clone(self) -> Self:
        return copy.deepcopy(self)

    def assign(self, exp_id: str, exp_dir: str, task_id: str, task_dir: str) -> None:
        """Place this task's files under the experiment folder (called by run.Experiment)."""
        self.experiment_id = exp_id
        self.experiment_dir = exp_dir
        self.job_dir = os.path.join(exp_dir, task_dir)

    def create_job_dir(self) -> None:
        os.makedirs(self._require_job_dir("create_job_dir"), exist_ok=True)

    def package_configs(self, *cfgs: tuple[str, str]) -> list[str]:
        """Write each (file name, text) under `<job_dir>/configs`; returns the paths the job
        reads them from (here: where they were written)."""
        base = os.path.join(self._require_job_dir("package_configs"), "configs")
        paths = []
        for name, text in cfgs:
            path = os.path.normpath(os.path.join(base, name))
            if os.path.isabs(name) or not path.startswith(base + os.sep):
                raise ConfigError(
                    f"package_configs: config name {name!r} must be a relative path inside "
                    f"{base}, e.g. 'task_config.yaml'"
                )
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write(path, text)
            paths.append(path)
        return paths

    def _require_job_dir(self, what: str) -> str:
        if not self.job_dir:
            raise ConfigError(
                f"{type(self).__name__}.{what}: job_dir is not set; run the task in a "
                "run.Experiment (which assigns it) or set job_dir to a folder"
            )
        return self.job_dir

    # -- shape of the job -------------------------------------------------------------------
    def nnodes(self) -> int:
        """Nodes of the job (torchrun's --nnodes)."""
        return 1

    def nproc_per_node(self) -> int:
        """Processes per node (torchrun's --nproc-per-node)."""
        return 1

    def macro_values(self) -> ExecutorMacros | None:
        """The platform's variable names for the macros in commands (head node address, node
        rank, ...); None where a job never spans nodes."""
        return None

    # -- the launcher -----------------------------------------------------------------------
    def get_launcher(self) -> Launcher:
        """The launcher object; a name (or None) is turned into one and kept, so changes to
        the returned object (e.g. `nsys_profile = True`) stay with this executor. Each new
        launcher goes through `_setup_launcher` once."""
        state = vars(self)  # which launcher was set up: not a field, so not compared or shown
        current = self.launcher
        set_up = self._launcher_setup and id(state.get("_set_up_launcher")) == id(current)
        if set_up and isinstance(current, Launcher):
            return current
        self._setup_launcher()
        launcher = self.launcher if isinstance(self.launcher, Launcher) else Launcher()
        self.launcher = launcher
        self._launcher_setup = True
        state["_set_up_launcher"] = launcher
        return launcher

    def _setup_launcher(self) -> None:
        """Turn a launcher name into its object; backends extend this (e.g. to point a
        FaultTolerance launcher at files in their job folder)."""
        if isinstance(self.launcher, str) and self.launcher in LAUNCHER_MAP:
            self.launcher = LAUNCHER_MAP[self.launcher]()
        elif self.launcher is not None and not isinstance(self.launcher, Launcher):
            self.launcher = resolve_launcher(self.launcher)  # other spellings, or a clear error

    def get_launcher_prefix(self) -> list[str] | None:
        """`nsys profile ...` arguments when the launcher profiles, writing into the job folder."""
        launcher = self.get_launcher()
        if not launcher.nsys_profile:
            return None
        if self.job_dir:
            os.makedirs(os.path.join(self.job_dir, launcher.nsys_folder), exist_ok=True)
        return launcher.get_nsys_prefix(profile_dir=self.job_dir)

    def get_nsys_entrypoint(self) -> tuple[str, str]:
        """(program, last argument) around a profiled command; an empty last one is dropped."""
        return ("nsys", "")

    def _launcher_program(self, program: str) -> str:
        """The path that starts a launcher program (`torchrun`) on the target: its name."""
        return program

    def supports_launcher_transform(self) -> bool:
        """True where `Launcher.transform` may replace the command with a script."""
        return False

    # -- the target -------------------------------------------------------------------------
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


@dataclass
class LaunchCommand:
    """A role's command as the executor's launcher starts it."""

    entrypoint: str
    args: list[str]
    env: dict[str, str]
    port_map: dict[str, int] = field(default_factory=dict)


def launch_command(
    executor: Executor, entrypoint: str, args: list[str], env: dict[str, str], *, is_python: bool
) -> LaunchCommand:
    """Wrap a command in the executor's launcher, as 0.11.1 renders it: torchrun/ft_launcher
    with the executor's node and process counts and its platform's rendezvous (plus the
    LOGLEVEL and debug variables torchrun jobs get), then `nsys profile` when asked.

    Macros (`$${head_node_ip_var}`, ...) stay in the result for `ExecutorMacros.apply`; a job
    whose nodes must find each other on an executor without macros is refused here."""
    launcher = executor.get_launcher()
    launcher.check()  # fields may have been set after construction
    command = LaunchCommand(entrypoint, list(args), dict(env))
    if launcher.fans_out:
        nnodes, nproc = executor.nnodes(), executor.nproc_per_node()
        rendezvous = executor.torchrun_rendezvous
        if executor.macro_values() is None and needs_node_macros(nnodes, rendezvous):
            raise ConfigError(
                f"{type(executor).__name__} runs {nnodes} node(s) under {type(launcher).__name__} "
                "but its macro_values() names no head-node address or node-rank variable; "
                "define macro_values() for this executor, or run on one node"
            )
        command.entrypoint, command.args = launcher.wrap(
            entrypoint,
            command.args,
            is_python=is_python,
            nnodes=nnodes,
            nproc_per_node=nproc,
            rendezvous=rendezvous,
        )
        command.entrypoint = executor._launcher_program(command.entrypoint)
        command.env.setdefault("LOGLEVEL", os.environ.get("LOGLEVEL", "INFO"))
        if executor.packager.debug:
            command.env.update(TORCH_DEBUG_ENV)
        command.port_map = {"c10d": getattr(launcher, "rdzv_port", 29500)}
    prefix = executor.get_launcher_prefix() if launcher.nsys_profile else None
    if prefix:
        program, postfix = executor.get_nsys_entrypoint()
        tail = [postfix] if postfix else []  # 0.11.1 passes an empty one on as an argument
        command.args = [*prefix, command.entrypoint, *command.args, *tail]
        command.entrypoint = program
    return command


def import_executor(
    name: str, file_path: str | None = None, call: bool = True, **kwargs: Any
) -> Executor:
    """The executor named `name` in a Python file of executor definitions (by default
    `$NEMORUN_HOME/executors.py`), so one file serves every project, as ~/.ssh/config does.

    The name may be an executor object or a function returning one; with `call=True` (the
    default) a function is called with `kwargs`, with `call=False` it is returned as is.

        executor = run.import_executor("gpu", file_path="~/executors.py", nodes=2)
    """
    path = (
        os.path.expanduser(file_path)
        if file_path
        else os.path.join(get_nemorun_home(), "executors.py")
    )
    if not os.path.isfile(path):
        raise ConfigError(
            f"import_executor({name!r}): {path} does not exist; write your executors there "
            "or pass file_path= to a Python file that defines them"
        )
    spec = importlib.util.spec_from_file_location("executors", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"import_executor({name!r}): {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, name):
        found = sorted(n for n in vars(module) if not n.startswith("_"))
        raise ConfigError(
            f"import_executor: {path} defines no {name!r}; it defines {', '.join(found) or 'nothing'}"
        )
    value = getattr(module, name)
    if callable(value) and not isinstance(value, Executor):
        if not call:
            return value
        value = value(**kwargs)
    if not isinstance(value, Executor):
        raise ConfigError(
            f"import_executor({name!r}) from {path} gave {type(value).__name__}, not an Executor; "
            "define it as an executor or a function returning one"
        )
    return value
