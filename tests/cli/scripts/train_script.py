"""An entrypoint script as NeMo recipes write them, driven by tests/cli/test_run_cli.py."""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import nemo_run as run


@dataclass
class Model:
    hidden: int = 128
    layers: int = 2
    seq_length: int = 2048


@dataclass
class Trainer:
    max_steps: int = 100
    lr: float = 0.1
    devices: list[int] = field(default_factory=lambda: [0])


class Precision(enum.Enum):
    FP32 = "32"
    BF16 = "bf16"


@run.cli.factory
@run.autoconvert
def llama3_8b(seq_length: int = 8192) -> Model:
    return Model(hidden=4096, layers=32, seq_length=seq_length)


@run.cli.factory
@run.autoconvert
def tiny() -> Model:
    return Model(hidden=8, layers=1, seq_length=16)


@run.cli.factory
def plain_trainer(steps: int = 7) -> Trainer:
    """A factory that returns the object itself (0.11.1 refuses these)."""
    return Trainer(max_steps=steps)


@run.cli.factory(target=run.Executor)
def quiet_local() -> run.Config[run.LocalExecutor]:
    return run.Config(run.LocalExecutor, env_vars={"QUIET": "1"})


@run.cli.entrypoint
def train(
    model: Model,
    trainer: Trainer = Trainer(),  # noqa: B008 - as users write it
    name: str = "x",
    tags: list = None,  # noqa: RUF013 - as users write it
    opts: dict = None,  # noqa: RUF013
    maybe: Optional[int] = None,  # noqa: UP045 - the spelling users reported
    either: Union[list, str] = "plain",  # noqa: UP007
    mode: Literal["fast", "slow"] = "fast",
    precision: Precision = Precision.FP32,
    out: Path = Path("/tmp/out"),
    run_name: str = "r",
    executor_count: int = 1,
    plugins_enabled: bool = False,
    ratio: float = 0.5,
):
    """Train a model (a test entrypoint)."""
    result = {
        "model": [model.hidden, model.layers, model.seq_length],
        "trainer": [trainer.max_steps, trainer.lr, trainer.devices],
        "name": name,
        "tags": tags,
        "opts": opts,
        "maybe": maybe,
        "either": either,
        "mode": mode,
        "precision": precision.name,
        "out": str(out),
        "run_name": run_name,
        "executor_count": executor_count,
        "plugins_enabled": plugins_enabled,
        "ratio": ratio,
    }
    print("RESULT " + json.dumps(result), flush=True)
    target = os.environ.get("CLI_TEST_OUT")
    if target:
        Path(target).write_text(json.dumps(result))


@run.cli.factory(target=train)
def quick() -> run.Partial[train]:
    return run.Partial(train, model=tiny(), trainer=run.Config(Trainer, max_steps=3), name="quick")


if __name__ == "__main__":
    run.cli.main(train)
