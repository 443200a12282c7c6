"""Where the local Slurm test stack of scripts/slurm-up.sh is, for the tests that use it.

scripts/test.sh exports NEMORUN_TEST_SLURM_BASE (the stack's base dir, described by its
slurm/stack.env) or NEMORUN_TEST_SLURM_SKIP (why there is none). `slurm_stack()` returns the
description or skips the test (fails it with CI=true, where the stack must be up).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class SlurmStack:
    """The cluster and its ssh login node (slurm-up.sh's last line and slurm/stack.env)."""

    base: Path
    ssh_host: str
    ssh_port: int
    ssh_user: str
    ssh_key: Path
    partition: str
    nodes: int
    cluster: str
    account: str
    own_hostnames: bool  # each node's jobs see hostname node<i>; else all see this host's

    @property
    def ssh_target(self) -> str:
        """`user@host`, as ssh and the tunnels take it."""
        return f"{self.ssh_user}@{self.ssh_host}"

    def ssh_argv(self, *command: str) -> list[str]:
        """An ssh command line that runs `command` on the login node without prompts."""
        return [
            "ssh",
            *("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"),
            *("-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"),
            *("-i", str(self.ssh_key), "-p", str(self.ssh_port), self.ssh_target),
            *command,
        ]


def read_stack_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of slurm/stack.env (no shell quoting is used there)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def load_stack(base: Path) -> SlurmStack:
    """The stack under `base`; ValueError when slurm-up.sh has not described it there."""
    env_file = base / "slurm" / "stack.env"
    if not env_file.is_file():
        raise ValueError(f"{env_file} is missing: run scripts/slurm-up.sh")
    env = read_stack_env(env_file)
    try:
        return SlurmStack(
            base=base,
            ssh_host=env["SSH_HOST"],
            ssh_port=int(env["SSH_PORT"]),
            ssh_user=env["SSH_USER"],
            ssh_key=Path(env["SSH_KEY"]),
            partition=env["PARTITION"],
            nodes=int(env["NODES"]),
            cluster=env["CLUSTER"],
            account=env["ACCOUNT"],
            own_hostnames=env.get("OWN_HOSTNAMES") == "1",
        )
    except (KeyError, ValueError) as e:
        raise ValueError(f"{env_file} is incomplete ({e}): rerun scripts/slurm-up.sh") from e


def slurm_stack() -> SlurmStack:
    """The stack scripts/test.sh set up, or skip the calling test (fail it with CI=true)."""
    reason = os.environ.get("NEMORUN_TEST_SLURM_SKIP")
    base = os.environ.get("NEMORUN_TEST_SLURM_BASE")
    stack = None
    if not reason and not base:
        reason = "no Slurm stack was set up: run the tests through scripts/test.sh"
    elif not reason and base:
        try:
            stack = load_stack(Path(base))
        except ValueError as e:
            reason = str(e)
    if stack is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires the Slurm tests to run: {reason}")
        pytest.skip(f"Slurm tests skipped: {reason}")
    return stack
