"""The home folder: where nemo_run keeps the job store, experiments, profiles and job folders.

It sits below every other module (it imports nothing of the package), so anything may ask it
where to write. For code written against nemo-run 0.11.1 it also answers the names that
lived here (`Script`, `Config`, `Partial`, `from_dict`, `set_value`, ...) and the environment
checks, resolved on first access from their own modules: `Config`/`Partial` subclass
fiddle's (~300 ms to import), and no module of the package reaches them through here.
"""

from __future__ import annotations

import importlib
import os
import typing
from typing import Any

NEMORUN_HOME_ENV = "NEMORUN_HOME"
JOBS_DIR = "jobs"
# 0.11.1's constants: the annotations walked into when parsing types, the folder of a job's
# scripts, and the launcher key that marks a task for a Ray cluster
RECURSIVE_TYPES = (typing.Union, typing.Optional)
SCRIPTS_DIR = "scripts"
USE_WITH_RAY_CLUSTER_KEY = "use_with_ray_cluster"
_home_override: str | None = None

# 0.11.1 names kept importable from here: name -> the module that defines it
_MOVED: dict[str, str] = {
    "Script": "nemo_run.core.script",
    "check_env_vars": "nemo_run.core.envvars",
    "is_env_name": "nemo_run.core.envvars",
    "Config": "nemo_run.core.configurable",
    "Partial": "nemo_run.core.configurable",
    "OptionalDefaultConfig": "nemo_run.core.configurable",
    "OptionalDefaultPartial": "nemo_run.core.configurable",
    "from_dict": "nemo_run.core.configurable",
    "set_value": "nemo_run.core.configurable",
    "get_underlying_types": "nemo_run.core.configurable",
    "SetValueError": "nemo_run.exceptions",
    "ConfigurableMixin": "nemo_run.core.config_mixin",
    "RUNDIR_NAME": "nemo_run.core.execution.base",
    "RUNDIR_SPECIAL_NAME": "nemo_run.core.execution.base",
}


def get_nemorun_home() -> str:
    """The home folder, resolved on every call: `set_nemorun_home()` > `$NEMORUN_HOME` > ~/.nemo_run."""
    if _home_override is not None:
        return _home_override
    return os.environ.get(NEMORUN_HOME_ENV) or os.path.join(os.path.expanduser("~"), ".nemo_run")


def set_nemorun_home(path: str | os.PathLike[str] | None) -> None:
    """Point this process at another home folder; `None` returns to `$NEMORUN_HOME` / the default."""
    global _home_override
    _home_override = None if path is None else os.path.abspath(os.fspath(path))


def default_job_dir() -> str:
    """Where jobs without an experiment keep their logs, on every backend: `$NEMORUN_HOME/jobs`."""
    return os.path.join(get_nemorun_home(), JOBS_DIR)


def get_type_namespace(typ: type | Any) -> str:
    """`module.QualifiedName` of a type (or function), as 0.11.1 names CLI factories."""
    return f"{typ.__module__}.{getattr(typ, '__qualname__', getattr(typ, '__name__', typ))}"


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_MOVED])
