"""The home folder, and the task types users configure: `Script` here, `Config`/`Partial` lazily.

`Config` and `Partial` subclass fiddle's, and fiddle costs ~300 ms to import, so they load
on first access through the module `__getattr__` rather than at `import nemo_run`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_run.core.redact import is_secret_name
from nemo_run.exceptions import ConfigError

NEMORUN_HOME_ENV = "NEMORUN_HOME"
_home_override: str | None = None


def get_nemorun_home() -> str:
    """The home folder, resolved on every call: `set_nemorun_home()` > `$NEMORUN_HOME` > ~/.nemo_run."""
    if _home_override is not None:
        return _home_override
    return os.environ.get(NEMORUN_HOME_ENV) or os.path.join(os.path.expanduser("~"), ".nemo_run")


def set_nemorun_home(path: str | os.PathLike[str] | None) -> None:
    """Point this process at another home folder; `None` returns to `$NEMORUN_HOME` / the default."""
    global _home_override
    _home_override = None if path is None else os.path.abspath(os.fspath(path))


def check_env_vars(env: dict[str, str], field_name: str) -> None:
    """Reject what a process environment cannot carry before anything launches: a NUL in a
    value would otherwise crash the job's supervisor, and a name that is not a shell identifier
    cannot be set or read by the launch scripts. Values are never echoed (they may be secrets)."""
    if not isinstance(env, dict):
        raise ConfigError(
            f"{field_name} must be a dict of str to str, got {type(env).__name__}; "
            "write e.g. {'NAME': 'value'}"
        )
    for key, value in env.items():
        if not is_env_name(key):
            raise ConfigError(
                f"{field_name}: environment variable name {key!r} is invalid: not a shell identifier "
                "(letters, digits and '_', not starting with a digit); rename it"
            )
        if not isinstance(value, str):
            raise ConfigError(
                f"{field_name}[{key!r}] must be a string, got {type(value).__name__}; "
                f"{_string_fix(field_name, key, value)}"
            )
        if "\0" in value:
            raise ConfigError(
                f"{field_name}[{key!r}] holds a NUL character, which no process environment can "
                "carry; remove it"
            )


def _string_fix(field_name: str, key: str, value: object) -> str:
    """How to write a number as text; the value is shown only when the name does not look secret."""
    if isinstance(value, (int, float)) and not is_secret_name(key):
        return f"write {field_name}[{key!r}]={str(value)!r}"
    return f"pass {field_name}[{key!r}] as a string"


def is_env_name(name: object) -> bool:
    """`^[A-Za-z_][A-Za-z0-9_]*$`: an ASCII identifier is exactly a portable shell variable name."""
    return isinstance(name, str) and name.isascii() and name.isidentifier()


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


def __getattr__(name: str) -> Any:
    if name in ("Config", "Partial"):
        from nemo_run.core import configurable

        return getattr(configurable, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
