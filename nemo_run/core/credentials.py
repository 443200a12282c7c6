"""Secrets are read when a call needs them: from the executor (memory only), the environment,
or a profile file `$NEMORUN_HOME/profiles/<name>.json` that must be private (0600).
Nothing here ever writes a secret anywhere."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from nemo_run.config import get_nemorun_home
from nemo_run.core.atomic import atomic_write
from nemo_run.exceptions import ConfigError


def profile_path(name: str) -> str:
    return os.path.join(get_nemorun_home(), "profiles", f"{name}.json")


def load_profile(name: str) -> dict[str, Any]:
    """The profile's keys, or {} when there is none; refuses a profile others can read."""
    path = profile_path(name)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return {}
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"profile {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except ValueError as e:
        raise ConfigError(f"profile {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"profile {path} must hold a JSON object of settings")
    return data


def save_profile(name: str, settings: dict[str, Any]) -> str:
    """Merge `settings` into the profile, written 0600 in a 0700 folder; returns its path.
    This is the one place a credential is written to disk, at the user's request."""
    path = profile_path(name)
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    merged = {**load_profile(name), **{k: v for k, v in settings.items() if v}}
    atomic_write(path, json.dumps(merged, indent=1, sort_keys=True) + "\n", mode=0o600)
    os.chmod(path, 0o600)
    return path


def resolve(key: str, explicit: str | None, env_names: tuple[str, ...], profile: str) -> str | None:
    """First of: the explicit value, the environment, the profile."""
    if explicit:
        return explicit
    for env in env_names:
        if os.environ.get(env):
            return os.environ[env]
    value = load_profile(profile).get(key)
    return str(value) if value else None


# Secrets given to an executor in this process (e.g. DGXCloudExecutor(client_secret=...)),
# kept in memory only, so this process can still ask about the jobs it launched. Never written.
_given: dict[tuple[str, ...], str] = {}


def remember(key: tuple[str, ...], secret: str | None) -> None:
    """Keep a secret the user gave in code for the rest of this process (memory only)."""
    if secret:
        _given[key] = secret


def recall(key: tuple[str, ...]) -> str | None:
    """A secret `remember`ed in this process, or None."""
    return _given.get(key)
