"""Running one replica for real: a host process group or a Docker container.

A ``Runtime`` reports its exit code (a container's way: killed by signal N is 128+N; a
command that cannot be started is 127, or 126 when not executable) and can be terminated
(SIGTERM, then SIGKILL after a grace period); its combined stdout and stderr is appended to
its log file. ``DockerEngine`` holds what both emulators' Docker backends share: the client,
image checks, a bridge network per workload and removal of labelled containers.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

from nemo_run.testing.torchrun_standin import HOSTS_ENV, NODE_ADDR_ENV


class Runtime:
    """What runs one replica: a process, a container, or nothing (it could not start)."""

    argv: list[str] | None = None

    def exit_code(self) -> int | None:
        raise NotImplementedError

    def terminate(self, grace: float) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        """Release what the replica holds (a container); the log file stays."""

    def describe(self) -> dict[str, Any]:
        return {}


class ProcessRuntime(Runtime):
    """A process group of its own on the host, its output appended to ``log_path``."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, log_path: Path):
        self.argv = argv
        self.log_path = log_path
        self._code: int | None = None
        self.proc: subprocess.Popen | None = None
        with open(log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as e:  # E2BIG, ENOENT, EACCES: what a container would report too
                log.write(f"emulator: cannot start {argv[0]!r}: {e}\n".encode())
                self._code = 126 if isinstance(e, PermissionError) else 127

    def exit_code(self) -> int | None:
        if self._code is None and self.proc is not None:
            code = self.proc.poll()
            if code is not None:
                self._code = 128 - code if code < 0 else code  # killed by signal N -> 128+N
        return self._code

    def terminate(self, grace: float) -> None:
        if self.proc is None or self.exit_code() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # children may outlive the group leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.exit_code()

    def describe(self) -> dict[str, Any]:
        return {"pid": self.proc.pid if self.proc else None, "argv": self.argv}


class ContainerRuntime(Runtime):
    """A running container, its log copied to ``log_path`` as it comes.

    With ``logs_wait`` set, the exit code shows only once the log has been copied out (or
    that many seconds after the exit).
    """

    def __init__(
        self, container, argv: list[str] | None, log_path: Path, logs_wait: float | None = None
    ):
        self.container = container
        self.argv = argv
        self.log_path = log_path
        self.logs_wait = logs_wait
        self._code: int | None = None
        self._exited = threading.Event()
        self._logs_done = threading.Event()
        threading.Thread(target=self._wait, daemon=True).start()
        threading.Thread(target=self._copy_logs, daemon=True).start()

    def _wait(self) -> None:
        try:
            self._code = int(self.container.wait().get("StatusCode", 1))
        except Exception:  # noqa: BLE001 - removed under us
            self._code = 137
        self._exited.set()

    def _copy_logs(self) -> None:
        try:
            with open(self.log_path, "ab") as log:
                for chunk in self.container.logs(stream=True, follow=True):
                    log.write(chunk)
                    log.flush()
        except Exception:  # noqa: BLE001 - removed while streaming
            pass
        finally:
            self._logs_done.set()

    def exit_code(self) -> int | None:
        if not self._exited.is_set():
            return None
        if self.logs_wait is not None:
            self._logs_done.wait(self.logs_wait)
        return self._code

    def terminate(self, grace: float) -> None:
        for sig, wait in (("SIGTERM", grace), ("SIGKILL", 10.0)):
            if self._exited.is_set():
                return
            try:
                self.container.kill(signal=sig)
            except Exception:  # noqa: BLE001 - already stopped
                pass
            self._exited.wait(wait)

    def remove(self) -> None:
        try:
            self.container.remove(force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def describe(self) -> dict[str, Any]:
        return {"container": self.container.name, "argv": self.argv}


class StartFailure(Runtime):
    """A replica that could not be started at all (e.g. the image is missing)."""

    def __init__(self, message: str, log_path: Path, code: int = 1):
        self.message = message
        self.log_path = log_path
        self._code = code
        with open(log_path, "ab") as log:
            log.write(f"emulator: {message}\n".encode())

    def exit_code(self) -> int | None:
        return self._code

    def terminate(self, grace: float) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"error": self.message}


# ---------------------------------------------------------------------------------------------
# Host helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_BLOCKS: set[tuple[int, int]] = set()
_BLOCKS_LOCK = threading.Lock()


def loopback_addresses(count: int) -> list[str]:
    """`count` addresses (127.a.b.1, 127.a.b.2, ...) of a /24 block no other job of this
    process holds, picked at random so concurrent emulators rarely share one: host processes
    emulating pods get an address each, so every pod can listen on the same port as real pods
    do, and no pod's `localhost` is another's."""
    if not 0 < count < 255:
        raise ValueError(f"a job of {count} pods does not fit in one loopback /24 block")
    with _BLOCKS_LOCK:
        for _ in range(1000):
            block = (random.randint(2, 254), random.randint(0, 255))
            if block not in _BLOCKS:
                _BLOCKS.add(block)
                return [f"127.{block[0]}.{block[1]}.{i}" for i in range(1, count + 1)]
    raise RuntimeError("no free loopback block left for emulated pods")


def node_env(addresses: list[str], index: int, names: dict[str, int]) -> dict[str, str]:
    """What tells a host process which emulated node it is, for the torchrun stand-in: its own
    address, and the cluster's names (name -> node index) it would resolve through DNS."""
    hosts = ",".join(f"{name}={addresses[i]}" for name, i in names.items())
    return {NODE_ADDR_ENV: addresses[index], HOSTS_ENV: hosts}


def path_replacer(pairs: list[tuple[str, str]]):
    """Replace container paths (as whole path components) with host paths in a string."""
    pairs = sorted(
        ((c.rstrip("/") or "/", h) for c, h in pairs if c.rstrip("/")), key=lambda p: -len(p[0])
    )
    if not pairs:
        return lambda text: text
    table = dict(pairs)
    pattern = re.compile("|".join(rf"(?<![\w.\-/]){re.escape(c)}(?![\w.\-])" for c in table))
    return lambda text: pattern.sub(lambda m: table[m.group(0)], text)


# ---------------------------------------------------------------------------------------------
# Docker


class DockerEngine:
    """The local Docker engine, reached lazily; containers carry the label ``label=<id>``."""

    name = "docker"
    label = "nemo_run.emulator"

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self._client = None
        self._lock = threading.Lock()
        self._networks: dict[str, Any] = {}

    def network_name(self, owner_id: str) -> str:
        raise NotImplementedError

    @property
    def client(self):
        with self._lock:
            if self._client is None:
                import docker  # noqa: PLC0415 - optional SDK: only docker mode needs it

                self._client = docker.from_env(timeout=30, max_pool_size=64)
            return self._client

    def available(self) -> bool:
        try:
            self.client.ping()
            return True
        except Exception:  # noqa: BLE001 - no engine, no docker-py, no socket: all mean "no"
            return False

    def has_image(self, image: str | None) -> bool:
        if not image:
            return False
        try:
            self.client.images.get(image)
            return True
        except Exception:  # noqa: BLE001
            return False

    def _network(self, owner_id: str):
        with self._lock:
            net = self._networks.get(owner_id)
        if net is None:
            net = self.client.networks.create(
                self.network_name(owner_id), driver="bridge", labels={self.label: owner_id}
            )
            with self._lock:
                self._networks[owner_id] = net
        return net

    def remove_containers(self, owner_id: str) -> None:
        try:
            found = self.client.containers.list(
                all=True, filters={"label": f"{self.label}={owner_id}"}
            )
        except Exception:  # noqa: BLE001
            return
        for container in found:
            try:
                container.remove(force=True)
            except Exception:  # noqa: BLE001
                pass

    def cleanup(self, owner_id: str) -> None:
        self.remove_containers(owner_id)
        with self._lock:
            net = self._networks.pop(owner_id, None)
        if net is not None:
            try:
                net.remove()
            except Exception:  # noqa: BLE001
                pass

    def shutdown(self) -> None:
        for owner_id in list(self._networks):
            self.cleanup(owner_id)
