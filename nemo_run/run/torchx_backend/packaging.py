"""Task -> TorchX AppDef: the one place that turns a Script or a Partial into a command line."""

from __future__ import annotations

import os
import sys
from typing import Any

from torchx import specs

from nemo_run.core.execution.base import Executor, launch_command
from nemo_run.core.execution.local import LocalExecutor
from nemo_run.core.runners.partial import encode
from nemo_run.core.script import Script
from nemo_run.exceptions import ConfigError

PARTIAL_MODULE = "nemo_run.core.runners.partial"


def _is_buildable(task: Any) -> bool:
    fdl = sys.modules.get("fiddle")  # a buildable exists only if fiddle was imported
    return fdl is not None and isinstance(task, fdl.Buildable)


def task_name(task: Any) -> str:
    """A default job name for the task."""
    if isinstance(task, Script):
        return task.name
    if _is_buildable(task):
        # imports fiddle (~0.3 s), which only a Partial/Config needs
        from nemo_run.core.configurable import task_name as buildable_name  # noqa: PLC0415

        return buildable_name(task)
    raise ConfigError(
        f"a task must be a run.Script, run.Partial or run.Config, got {type(task).__name__}"
    )


def _script_command(script: Script, python: str) -> tuple[str, list[str]]:
    entrypoint = python if script.entrypoint == "python" else script.entrypoint
    if script.inline:
        if script.is_python():
            return entrypoint, ["-c", script.inline, *script.args]
        return entrypoint, ["-c", script.inline, script.name, *script.args]  # $0, then $1...
    if script.m:
        return entrypoint, ["-m", script.path, *script.args]
    return entrypoint, [script.path, *script.args]


def command_for(task: Any, executor: Executor) -> tuple[str, list[str], dict[str, str], bool]:
    """(entrypoint, args, task env, runs Python) for a task on this executor."""
    python = executor.python_executable()
    if isinstance(task, Script):
        entrypoint, args = _script_command(task, python)
        return entrypoint, args, dict(task.env), task.is_python()
    if _is_buildable(task):
        return python, ["-m", PARTIAL_MODULE, encode(task)], {}, True
    raise ConfigError(
        f"a task must be a run.Script, run.Partial or run.Config, got {type(task).__name__}"
    )


def package(name: str, task: Any, executor: Executor, role_name: str | None = None) -> specs.AppDef:
    """The AppDef for `task` on `executor`, checked before anything runs: the task's command,
    wrapped by the executor's launcher (torchrun, ft_launcher, nsys) as 0.11.1 renders it, with
    the executor's macros applied (so several nodes meet at the platform's head node)."""
    if not name or not isinstance(name, str):
        raise ConfigError("name must be a non-empty string")
    executor.validate_task(task)
    if not isinstance(executor, LocalExecutor):  # local jobs run in place: nothing is shipped
        executor.packager.check(os.getcwd())  # what packaging would refuse, refused now
    entrypoint, args, task_env, is_python = command_for(task, executor)
    launcher = executor.get_launcher()
    if executor.supports_launcher_transform():
        script = launcher.transform([entrypoint, *args])
        if script is not None:
            entrypoint, args, task_env, is_python = command_for(script, executor)
    env = {**executor.env_vars, **task_env}
    command = launch_command(executor, entrypoint, args, env, is_python=is_python)
    spawned = executor.spawns_replicas and not launcher.fans_out  # one process per rank, by us
    replicas = executor.nnodes() * executor.nproc_per_node() if spawned else executor.nnodes()
    if replicas > 1 and spawned:
        command.env.setdefault("RANK", specs.macros.replica_id)
        command.env.setdefault("LOCAL_RANK", specs.macros.replica_id)
        command.env.setdefault("WORLD_SIZE", str(replicas))
    role = specs.Role(
        name=role_name or name,
        image="",
        entrypoint=command.entrypoint,
        args=command.args,
        env=command.env,
        num_replicas=replicas,
        max_retries=executor.retries,
        port_map=command.port_map,
    )
    macros = executor.macro_values()
    if macros is not None:
        role = macros.apply(role)
    return specs.AppDef(name=_app_name(name), roles=[role])


def _app_name(name: str) -> str:
    """App names become ids and folder names: keep letters, digits, '-' and '_'."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-")
    return cleaned[:48] or "job"
