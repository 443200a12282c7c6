"""`Script`: the task type for a shell or Python script, given as a file or as inline text."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_run.core.envvars import check_env_vars
from nemo_run.exceptions import ConfigError


@dataclass(kw_only=True)
class Script:
    """A shell or Python script to run, given as a file `path` or as `inline` text.

    `entrypoint` defaults to `python` for `.py` files and `m=True`, and to `bash` otherwise.
    Inline text is passed as one argument (`bash -c TEXT name ARGS...`), so quotes in it reach
    the shell untouched; `args` become `$1...` (or `sys.argv[1:]` for inline Python).
    """

    path: str = ""
    inline: str = ""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: str = ""
    m: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if bool(self.path) == bool(self.inline):
            raise ConfigError(
                "Script needs exactly one of path= (a script file) or inline= (script text); "
                f"got {'both' if self.path else 'neither'}"
            )
        if isinstance(self.args, str):
            raise ConfigError("Script.args must be a list of strings, e.g. args=['--lr', '0.1']")
        self.args = [str(a) for a in self.args]
        check_env_vars(self.env, "Script.env")
        if not self.entrypoint:
            self.entrypoint = "python" if (self.m or self.path.endswith(".py")) else "bash"
        if self.m and self.inline:
            raise ConfigError(
                "Script.m=True runs a module by name and needs path='pkg.module', not inline"
            )

    @property
    def name(self) -> str:
        """A short name for the task, from the file or module name."""
        if self.inline:
            return "inline"
        return (
            Path(self.path).stem.replace(".", "-") if not self.m else self.path.rsplit(".", 1)[-1]
        )

    def is_python(self) -> bool:
        """True when the entrypoint runs Python, so the executor's interpreter can stand in for it."""
        return os.path.basename(self.entrypoint).startswith("python")
