"""Checks on environment variables a job will carry, made before anything launches."""

from __future__ import annotations

from nemo_run.core.redact import is_secret_name
from nemo_run.exceptions import ConfigError


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
