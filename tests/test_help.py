"""`run.help(fn)` as in 0.11.1: the arguments, then the registered factories per argument."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from dataclasses import dataclass

from rich.console import Console

import nemo_run as run


@dataclass
class HelpModel:
    hidden: int = 1


def train_for_help(model: HelpModel, steps: int = 10) -> None:
    """Train the model."""


def render(*args, **kwargs) -> str:
    buffer = io.StringIO()
    run.help(*args, console=Console(file=buffer, width=200), **kwargs)
    return buffer.getvalue()


def test_help_lists_arguments_and_the_factories_for_each():
    @run.cli.factory
    def tiny_help_model() -> HelpModel:
        """A tiny model."""
        return HelpModel(hidden=2)

    text = render(train_for_help)
    assert "Train the model." in text and "steps" in text and "10" in text
    assert f"Factory for model: {__name__}.HelpModel" in text
    assert "tiny_help_model" in text and "A tiny model." in text and "line " in text
    assert "Factory for steps" not in text  # no factory registered for int


def test_help_of_a_namespace_lists_its_factories():
    @run.cli.factory(namespace="help_test_space")
    def in_space() -> int:
        return 1

    assert "in_space" in render(train_for_help, namespace="help_test_space")


def test_run_help_stays_callable_after_importing_its_module():
    code = textwrap.dedent(
        """
        import nemo_run.help
        import nemo_run as run
        def f(x: int = 3):
            pass
        run.help(f)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "x" in out.stdout and "3" in out.stdout
