"""An experiment's plan: its tasks and their dependencies, checked before anything launches."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nemo_run.core.names import RESERVED_TASK_NAMES, check_folder_name
from nemo_run.core.script import Script
from nemo_run.exceptions import ConfigError


@dataclass
class PlannedTask:
    """A task as added: one job (several roles for a task group) on one executor."""

    id: str
    tasks: list[Any]
    executor: Any
    dependencies: list[str] = field(default_factory=list)
    tail_logs: bool = False


def default_task_id(task: Any) -> str:
    """0.11.1's name for a task added without one: a Script's `get_name()` (its file's base
    name, or its inline text's start), a Config/Partial's `<module>.<function>` (the module's
    last part; the script's file name for `__main__`). Characters a folder name cannot hold
    become `_`."""
    if isinstance(task, Script):
        name = task.get_name()
    else:
        fn = getattr(task, "__fn_or_cls__", task)
        module = str(getattr(fn, "__module__", "") or "")
        if module == "__main__":
            main_file = getattr(sys.modules.get("__main__"), "__file__", None) or "<stdin>"
            module = os.path.splitext(os.path.basename(main_file))[0]
        name = f"{module.rpartition('.')[2]}.{getattr(fn, '__name__', type(fn).__name__)}"
    return re.sub(r"[^\w.-]+", "_", name).strip(".") or "task"


def is_external_dependency(dependency: str) -> bool:
    """A dependency on a job of another experiment, named by its app handle
    (`scheduler://session/app_id`); task ids can never contain a slash."""
    return "://" in dependency


def unique_task_id(task_id: str, existing: Iterable[str]) -> str:
    """0.11.1's answer to a repeated name: `<name>_<number of tasks so far>` (counting up
    while that is taken too), so code that adds two tasks named alike keeps working."""
    taken = set(existing)
    if task_id not in taken:
        return task_id
    n = len(taken)
    while f"{task_id}_{n}" in taken:
        n += 1
    return f"{task_id}_{n}"


def _listing(names: Iterable[str]) -> str:
    names = list(names)
    return ", ".join(repr(n) for n in names) if names else "none yet"


def check_new_task_id(task_id: str, existing: Iterable[str]) -> None:
    """Task ids name folders and CLI arguments: non-empty, unique, no path separators."""
    existing = list(existing)
    if check_folder_name(task_id, "task name", reserved=RESERVED_TASK_NAMES) != task_id:
        raise ConfigError(f"task name {task_id!r} has leading or trailing blanks; remove them")
    if task_id in existing:
        raise ConfigError(
            f"the experiment already has a task named {task_id!r}; give name=... a unique value "
            f"(existing tasks: {_listing(existing)})"
        )


def launch_order(tasks: list[PlannedTask]) -> list[str]:
    """Task ids in an order that respects dependencies; raises on unknown ids or cycles."""
    ids = [t.id for t in tasks]
    by_id = {t.id: t for t in tasks}
    for task in tasks:
        for dep in task.dependencies:
            if dep not in by_id and not is_external_dependency(dep):
                raise ConfigError(
                    f"task {task.id!r} depends on {dep!r}, which is not in the experiment "
                    f"(tasks: {_listing(ids)})"
                )
    order: list[str] = []
    state: dict[str, str] = {}  # "visiting" | "done"

    def visit(task_id: str, path: list[str]) -> None:
        if state.get(task_id) == "done":
            return
        if state.get(task_id) == "visiting":
            cycle = path[path.index(task_id) :] + [task_id]
            raise ConfigError(
                f"dependency cycle: {' -> '.join(cycle)}; remove one of these dependencies"
            )
        state[task_id] = "visiting"
        for dep in by_id[task_id].dependencies:
            if not is_external_dependency(dep):
                visit(dep, [*path, task_id])
        state[task_id] = "done"
        order.append(task_id)

    for task_id in ids:
        visit(task_id, [])
    return order


def dependents_of(tasks: list[PlannedTask], failed: str) -> list[str]:
    """Every task that (transitively) depends on `failed`."""
    out: list[str] = []
    frontier = [failed]
    while frontier:
        current = frontier.pop()
        for task in tasks:
            if current in task.dependencies and task.id not in out:
                out.append(task.id)
                frontier.append(task.id)
    return out
