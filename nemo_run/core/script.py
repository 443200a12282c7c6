"""`Script`: the task type for a shell or Python script, given as a file or as inline text."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_run.core.atomic import atomic_write
from nemo_run.core.config_mixin import ConfigurableMixin
from nemo_run.core.envvars import check_env_vars
from nemo_run.exceptions import ConfigError

# 0.11.1's folder names for a job inside its container; the same values as
# `nemo_run.core.execution.base.RUNDIR_NAME`, which this module cannot import (the executors
# import it through their launchers).
RUNDIR_NAME = "nemo_run"
SCRIPTS_DIR = "scripts"


class _DefaultEntrypoint(str):
    """The entrypoint when none is given: reads as `bash` (0.11.1's default), but a `.py` path
    or `m=True` gets `python` (0.11.1 would run `bash train.py`, or refuse `m=True`)."""

    __slots__ = ()


_DEFAULT_ENTRYPOINT = _DefaultEntrypoint("bash")


@dataclass
class Script(ConfigurableMixin):
    """A shell or Python script to run, given as a file `path` or as `inline` text.

    >>> run.Script("./train.sh", args=["--lr", "0.1"])
    >>> run.Script(inline="echo hello")

    `entrypoint` defaults to `bash`, or `python` for a `.py` path and `m=True`.
    Inline text is passed as one argument (`bash -c TEXT name ARGS...`), so quotes in it reach
    the shell untouched; `args` become `$1...` (or `sys.argv[1:]` for inline Python).
    """

    path: str = ""
    inline: str = ""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: str = _DEFAULT_ENTRYPOINT
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
        if self.entrypoint is _DEFAULT_ENTRYPOINT:
            self.entrypoint = "python" if (self.m or self.path.endswith(".py")) else "bash"
        if not self.entrypoint:
            raise ConfigError("Script.entrypoint is empty; give a program, e.g. 'bash' or 'python'")
        if self.m and self.inline:
            raise ConfigError(
                "Script.m=True runs a module by name and needs path='pkg.module', not inline"
            )
        if self.m and not self.is_python():
            raise ConfigError(
                f"Script.m=True runs `python -m`, but entrypoint is {self.entrypoint!r}; "
                "set entrypoint='python' or drop m=True"
            )

    @property
    def name(self) -> str:
        """A short name for the task id, from the file or module name."""
        if self.inline:
            return "inline"
        return (
            Path(self.path).stem.replace(".", "-") if not self.m else self.path.rsplit(".", 1)[-1]
        )

    def get_name(self) -> str:
        """0.11.1's name: the file's base name, or the inline text's first 10 characters with
        each run of other characters than letters and digits turned into `_`."""
        if self.inline:
            return re.sub(r"[^0-9a-zA-Z]+", "_", self.inline.strip()[:10])
        return os.path.basename(self.path)

    def is_python(self) -> bool:
        """True when the entrypoint runs Python, so the executor's interpreter can stand in for it."""
        return os.path.basename(self.entrypoint).startswith("python")

    def to_command(
        self,
        with_entrypoint: bool = False,
        filename: str | None = None,
        is_local: bool = False,
        substitute_rundir_path: str | None = None,
    ) -> list[str]:
        """The script as a command line, the way 0.11.1 builds it for its shell-joined commands.

        With `filename`, inline text is first written there as an executable file (with
        `/nemo_run` replaced by `substitute_rundir_path` when given) and the command names that
        file: its own path when `is_local`, else its place in the container's job folder.
        Without, inline text becomes `-c "TEXT"` (double quotes escaped). A file script becomes
        `[path, *args]`, after `-m` when `m=True`; `with_entrypoint` puts the entrypoint first.
        """
        if self.inline and filename:
            cmd = [self._write_inline(filename, substitute_rundir_path, is_local)]
        elif self.inline:
            cmd = ["-c", '"' + self.inline.replace('"', '\\"') + '"']
        else:
            cmd = (["-m"] if self.m else []) + [self.path, *self.args]
        return [self.entrypoint, *cmd] if with_entrypoint else cmd

    def _write_inline(
        self, filename: str, substitute_rundir_path: str | None, is_local: bool
    ) -> str:
        """Write the inline text as an executable bash file; returns the path a command uses."""
        text = self.inline
        if substitute_rundir_path is not None:
            text = text.replace(f"/{RUNDIR_NAME}", substitute_rundir_path)
        folder = os.path.dirname(filename)
        if folder:
            os.makedirs(folder, exist_ok=True)
        atomic_write(filename, "#!/usr/bin/bash\n" + text, mode=0o755, fsync=False)
        if is_local:
            return filename
        return os.path.join(f"/{RUNDIR_NAME}", SCRIPTS_DIR, Path(filename).name)
