"""nemo_run: launch ML jobs on many backends through TorchX and keep a durable record of each.

Names load lazily (module `__getattr__`): `import nemo_run` imports neither torchx, fiddle,
docker nor any cloud SDK; each comes in when the name that needs it is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Script": "nemo_run.core.script",
    "get_nemorun_home": "nemo_run.config",
    "set_nemorun_home": "nemo_run.config",
    "Config": "nemo_run.core.configurable",
    "Partial": "nemo_run.core.configurable",
    "ConfigurableMixin": "nemo_run.core.config_mixin",
    "autoconvert": "nemo_run.api",
    "dryrun_fn": "nemo_run.api",
    "help": "nemo_run.help",
    "Executor": "nemo_run.core.execution.base",
    "ExecutorMacros": "nemo_run.core.execution.base",
    "import_executor": "nemo_run.core.execution.base",
    "Torchrun": "nemo_run.core.execution.launcher",
    "FaultTolerance": "nemo_run.core.execution.launcher",
    "LocalExecutor": "nemo_run.core.execution.local",
    "Packager": "nemo_run.core.packaging.base",
    "GitArchivePackager": "nemo_run.core.packaging.git",
    "PatternPackager": "nemo_run.core.packaging.pattern",
    "HybridPackager": "nemo_run.core.packaging.hybrid",
    "DockerExecutor": "nemo_run.core.execution.docker",
    "DGXCloudExecutor": "nemo_run.core.execution.dgxcloud",
    "LeptonExecutor": "nemo_run.core.execution.lepton",
    "SkypilotExecutor": "nemo_run.core.execution.skypilot",
    "SlurmExecutor": "nemo_run.core.execution.slurm",
    "RunResult": "nemo_run.run.api",
    "Plugin": "nemo_run.run.plugin",
    "Experiment": "nemo_run.run.experiment",
    "NemoRunError": "nemo_run.exceptions",
    "ConfigError": "nemo_run.exceptions",
    "JobFailedError": "nemo_run.exceptions",
    "LocalTunnel": "nemo_run.core.tunnel.client",
    "SSHTunnel": "nemo_run.core.tunnel.client",
}


def __getattr__(name: str) -> Any:
    if name == "run":  # the subpackage is callable: `run.run(task, executor=...)`
        return importlib.import_module("nemo_run.run")
    if name == "cli":  # 0.11.1's `run.cli.main(fn)`, `@run.cli.entrypoint`, ...
        return importlib.import_module("nemo_run.cli")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nemo_run' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, "run", "cli"])
