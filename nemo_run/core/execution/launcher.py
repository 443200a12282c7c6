"""Launchers wrap a task's command, e.g. in `torchrun`, so one process fans out per GPU."""

from __future__ import annotations

from dataclasses import dataclass

from nemo_run.exceptions import ConfigError


@dataclass(kw_only=True)
class Launcher:
    """No wrapping: the command runs as written."""

    def wrap(
        self,
        entrypoint: str,
        args: list[str],
        *,
        python: str,
        is_python: bool,
        nnodes: int,
        nproc_per_node: int,
    ) -> tuple[str, list[str]]:
        return entrypoint, args


@dataclass(kw_only=True)
class Torchrun(Launcher):
    """Run under `torch.distributed.run` with a c10d rendezvous on the head node."""

    rdzv_backend: str = "c10d"
    rdzv_port: int = 29500
    rdzv_host: str = "localhost"

    def __post_init__(self) -> None:
        if not 0 < self.rdzv_port < 65536:
            raise ConfigError(f"Torchrun.rdzv_port must be 1-65535, got {self.rdzv_port}")

    def wrap(
        self,
        entrypoint: str,
        args: list[str],
        *,
        python: str,
        is_python: bool,
        nnodes: int,
        nproc_per_node: int,
    ) -> tuple[str, list[str]]:
        prefix = [
            "-m",
            "torch.distributed.run",
            "--nnodes",
            str(nnodes),
            "--nproc-per-node",
            str(nproc_per_node),
            "--rdzv-backend",
            self.rdzv_backend,
            "--rdzv-endpoint",
            f"{self.rdzv_host}:{self.rdzv_port}",
        ]
        if is_python:
            return python, [*prefix, *args]  # args start with the script or `-m module`
        return python, [*prefix, "--no-python", entrypoint, *args]


LAUNCHERS: dict[str, type[Launcher]] = {"torchrun": Torchrun}


def resolve_launcher(launcher: Launcher | str | None) -> Launcher:
    """Turn the `launcher` field (None, a name, or an object) into a Launcher, or raise."""
    if launcher is None:
        return Launcher()
    if isinstance(launcher, Launcher):
        return launcher
    if isinstance(launcher, str) and launcher.lower() in LAUNCHERS:
        return LAUNCHERS[launcher.lower()]()
    raise ConfigError(
        f"launcher={launcher!r} is not known; use None, one of {sorted(LAUNCHERS)}, or a Launcher object"
    )
