"""`LocalExecutor`: run tasks as detached processes on this machine."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nemo_run.core.execution.base import Executor, ExecutorMacros
from nemo_run.core.execution.fields import check_at_least
from nemo_run.core.script import Script
from nemo_run.exceptions import ConfigError

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class LocalExecutor(Executor):
    """Processes on this host; `ntasks_per_node` replicas (ranks) per job, `nodes` must be 1."""

    spawns_replicas: ClassVar[bool] = True

    ntasks_per_node: int = field(
        default=1, metadata={"help": "processes (ranks) started on this machine"}
    )
    nodes: int = field(
        default=1, metadata={"help": "must be 1: a local job runs on this one machine"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("ntasks_per_node", "nodes"):
            check_at_least(self, name, 1)
        if self.nodes != 1:
            raise ConfigError(
                f"LocalExecutor.nodes={self.nodes}: a local job runs on this one machine; "
                "use ntasks_per_node for more processes, or a cluster executor for more nodes"
            )

    def nnodes(self) -> int:
        return self.nodes

    def nproc_per_node(self) -> int:
        return self.ntasks_per_node

    def macro_values(self) -> ExecutorMacros:
        return ExecutorMacros(
            head_node_ip_var="MASTER_ADDR",
            nproc_per_node_var="LOCAL_WORLD_SIZE",
            num_nodes_var="NNODES",
            node_rank_var="NODE_RANK",
        )

    def python_executable(self) -> str:
        return sys.executable

    def _launcher_program(self, program: str) -> str:
        """`torchrun` as 0.11.1 writes it, or the one installed beside this interpreter (a
        venv's bin/) when PATH has none, as for a venv's python run without activating it."""
        if os.sep in program or shutil.which(program):
            return program
        beside = os.path.join(os.path.dirname(sys.executable), program)
        return beside if os.access(beside, os.X_OK) else program

    def validate_task(self, task: Any) -> None:
        if isinstance(task, Script) and task.path and not task.m and not os.path.isfile(task.path):
            raise ConfigError(
                f"Script.path={task.path!r} does not exist (looked in {os.getcwd()}); "
                "pass an existing file, or inline='...' for script text"
            )
