"""Docker engine client: a thin adapter over docker-py that returns plain data.

docker-py loads when the first call is made (`pip install 'nemo_run[docker]'`). Every engine
error becomes a `BackendError`; a container that no longer exists (or is being removed by
another process) is `ContainerGoneError`, so callers can tell "gone" from "engine trouble".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nemo_run.exceptions import BackendError, ConfigError, MissingDependencyError

DEFAULT_TIMEOUT_S = 60


class ContainerGoneError(BackendError):
    """The container no longer exists, or another process is removing it."""


@dataclass(frozen=True)
class ContainerInfo:
    """What the engine says about one container, as plain data."""

    id: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    status: str = ""  # created, running, exited, restarting, paused, removing, dead
    exit_code: int | None = None
    restart_count: int = 0


@dataclass
class ContainerSpec:
    """A container to run: image, command and docker-py `containers.run` settings as plain data
    (`ulimits` as (name, soft, hard) tuples, `gpus` as a count)."""

    image: str
    command: list[str]
    settings: dict[str, Any] = field(default_factory=dict)


def _sdk() -> Any:
    try:
        import docker  # noqa: PLC0415 - optional SDK, loaded when used
    except ImportError as e:
        raise MissingDependencyError(
            "the docker backend needs docker-py: pip install 'nemo_run[docker]'"
        ) from e
    return docker


class DockerEngine:
    """One engine (`DOCKER_HOST` or the local socket)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._docker = _sdk()
        try:
            self._api = self._docker.from_env(timeout=timeout)
            self._api.ping()
        except Exception as e:
            host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
            raise BackendError(
                f"no Docker engine answers ({host}): {e}; start dockerd or set DOCKER_HOST"
            ) from e

    def close(self) -> None:
        self._api.close()

    # -- errors -----------------------------------------------------------------------------
    def _gone(self, error: Exception) -> bool:
        errors = self._docker.errors
        if isinstance(error, errors.NotFound):
            return True
        return (
            isinstance(error, errors.APIError)
            and getattr(error, "status_code", None) == 409
            and "removal" in str(error).lower()
        )

    def _fail(self, error: Exception, doing: str) -> BackendError:
        status = getattr(error, "status_code", None)
        if self._gone(error):
            return ContainerGoneError(f"{doing}: the container is gone ({error})", status=status)
        return BackendError(f"{doing} failed: {error}", status=status)

    # -- containers -------------------------------------------------------------------------
    @staticmethod
    def _info(container: Any) -> ContainerInfo:
        state = container.attrs.get("State", {}) or {}
        status = state.get("Status", "") or getattr(container, "status", "")
        return ContainerInfo(
            id=container.id,
            name=container.name,
            labels=dict(container.labels or {}),
            status=status,
            exit_code=state.get("ExitCode") if status in ("exited", "dead") else None,
            restart_count=int(container.attrs.get("RestartCount", 0) or 0),
        )

    def containers(self, label: str, value: str | None = None) -> list[ContainerInfo]:
        """Every container (running or not) carrying `label` (with that `value`, if given)."""
        wanted = label if value is None else f"{label}={value}"
        try:
            found = self._api.containers.list(all=True, filters={"label": wanted})
            return [self._info(c) for c in found]
        except Exception as e:
            raise self._fail(e, f"listing containers labelled {wanted}") from e

    def inspect(self, container_id: str) -> ContainerInfo:
        try:
            return self._info(self._api.containers.get(container_id))
        except Exception as e:
            raise self._fail(e, f"inspecting container {container_id}") from e

    def run(self, spec: ContainerSpec) -> str:
        """Create and start a detached container; its id."""
        try:
            container = self._api.containers.run(
                spec.image, spec.command, detach=True, **self._run_kwargs(spec.settings)
            )
        except Exception as e:
            raise self._fail(
                e, f"starting container {spec.settings.get('name', spec.image)}"
            ) from e
        return container.id

    def _run_kwargs(self, settings: dict[str, Any]) -> dict[str, Any]:
        """docker-py objects for the plain-data settings."""
        types = self._docker.types
        kwargs = dict(settings)
        if "ulimits" in kwargs:
            kwargs["ulimits"] = [
                types.Ulimit(name=n, soft=s, hard=h) for n, s, h in kwargs["ulimits"]
            ]
        if "gpus" in kwargs:
            kwargs["device_requests"] = [
                types.DeviceRequest(count=kwargs.pop("gpus"), capabilities=[["gpu"]])
            ]
        return kwargs

    def stop(self, container_id: str, timeout: float) -> None:
        try:
            self._api.containers.get(container_id).stop(timeout=timeout)
        except Exception as e:
            raise self._fail(e, f"stopping container {container_id}") from e

    def remove(self, container_id: str) -> bool:
        """Remove (forcefully); False when it was already gone or being removed."""
        try:
            self._api.containers.get(container_id).remove(force=True)
            return True
        except Exception as e:
            error = self._fail(e, f"removing container {container_id}")
            if isinstance(error, ContainerGoneError):
                return False
            raise error from e

    def logs(
        self,
        container_id: str,
        *,
        stdout: bool = True,
        stderr: bool = True,
        follow: bool = False,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[bytes]:
        """The container's output as byte chunks (streamed: constant memory)."""
        try:
            container = self._api.containers.get(container_id)
            chunks = container.logs(
                stream=True, follow=follow, since=since, until=until, stdout=stdout, stderr=stderr
            )
            yield from chunks
        except Exception as e:
            raise self._fail(e, f"reading the logs of {container_id}") from e

    # -- images, runtimes, networks -----------------------------------------------------------
    def ensure_image(self, image: str) -> None:
        """The image is on the engine, pulled if needed; ConfigError when it cannot be had."""
        errors = self._docker.errors
        try:
            self._api.images.get(image)
            return
        except errors.ImageNotFound:
            pass
        except Exception as e:
            raise self._fail(e, f"looking up image {image}") from e
        try:
            self._api.images.pull(image)
        except Exception as e:
            raise ConfigError(
                f"DockerExecutor.container_image={image!r} is not on this engine and cannot be pulled ({e}); "
                "build or load it first (docker images lists what is there)"
            ) from e

    def runtimes(self) -> set[str]:
        try:
            return set(self._api.info().get("Runtimes", {}))
        except Exception as e:
            raise self._fail(e, "reading the engine's runtimes") from e

    def ensure_network(self, name: str) -> None:
        """A bridge network of that name exists (another process may create it meanwhile)."""
        errors = self._docker.errors
        try:
            self._api.networks.get(name)
            return
        except errors.NotFound:
            pass
        except Exception as e:
            raise self._fail(e, f"looking up network {name}") from e
        try:
            self._api.networks.create(name, driver="bridge")
        except errors.APIError as e:
            if getattr(e, "status_code", None) != 409:
                raise self._fail(e, f"creating network {name}") from e
