"""`run.Plugin` (0.11.1's `ExperimentPlugin`): a hook that edits each task and its executor
before the task is packaged, e.g. to add environment variables, a launcher or arguments.

Plugins are kept with the experiment as plain data (`describe_plugin`), secrets masked, so a
reopened experiment lists which plugins shaped its tasks.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from nemo_run.core.config_mixin import ConfigurableMixin
from nemo_run.core.execution.base import Executor
from nemo_run.core.redact import redact, redact_text
from nemo_run.core.script import Script as Script
from nemo_run.exceptions import ConfigError


@dataclass(kw_only=True)
class ExperimentPlugin(ConfigurableMixin):
    """Subclass it and override `setup(task, executor)`; both are the experiment's own copies,
    so editing them in place never changes what the caller passed in."""

    experiment_id: str = field(init=False, default="")

    def assign(self, experiment_id: str) -> None:
        """Tell the plugin which experiment it is applied in (before `setup`)."""
        self.experiment_id = experiment_id

    def setup(self, task: Any, executor: Executor) -> None:
        """Edit `task` (a Script, Partial or Config) and `executor` in place; no-op by default."""


Plugin = ExperimentPlugin


def plugin_list(plugins: Any) -> list[ExperimentPlugin]:
    """None, one plugin or a list of them, as a list; anything else is refused up front, because
    a wrong object would otherwise fail only when its `setup` is called."""
    if plugins is None:
        return []
    items = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    for index, item in enumerate(items):
        if not isinstance(item, ExperimentPlugin):
            raise ConfigError(
                f"plugins[{index}] must be a run.Plugin (subclass run.Plugin and override "
                f"setup(task, executor)), got {type(item).__name__}"
            )
    return items


def apply_plugins(
    plugins: list[ExperimentPlugin], experiment_id: str, task: Any, executor: Executor
) -> None:
    """Run every plugin's `setup` on one task, in the order given."""
    for plugin in plugins:
        plugin.assign(experiment_id)
        plugin.setup(task, executor)


def describe_plugin(plugin: ExperimentPlugin) -> dict[str, Any]:
    """The plugin as plain data for the experiment record: its type and public fields, secrets
    masked (a field with `repr=False` is left out, as for executors)."""
    cls = type(plugin)
    out: dict[str, Any] = {"type": f"{cls.__module__}.{cls.__qualname__}"}
    if not is_dataclass(plugin):
        return out
    for f in fields(plugin):
        if not f.repr or f.name.startswith("_"):
            continue
        value = getattr(plugin, f.name)
        plain = isinstance(value, (str, int, float, bool, type(None), list, dict))
        out[f.name] = redact({f.name: value})[f.name] if plain else redact_text(repr(value))
    return out


# 0.11.1's re-exports of run.Config / run.Partial here, loaded on first use (they import fiddle)
_LAZY_CONFIGS = ("Config", "Partial")


def __getattr__(name: str) -> Any:
    if name in _LAZY_CONFIGS:
        return getattr(importlib.import_module("nemo_run.core.configurable"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_CONFIGS])
