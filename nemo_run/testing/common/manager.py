"""What both emulators' managers share: owning the emulated workloads (Run:ai workloads,
Lepton jobs) and the threads that drive, stop, kill and remove them.

An item has ``id``, ``lock``, ``generation`` (bumped by every command that takes over from
the thread driving it), ``deleted``/``deleted_at``, ``mode`` (the backend that runs it) and
``replicas``. A subclass supplies ``image_of``, ``runtimes_of`` and ``set_state``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

MODES = ("auto", "docker", "subprocess")


class ManagerBase:
    def __init__(
        self,
        data_dir: Path,
        mode: str,
        phase_delay: float,
        stop_grace: float,
        poll_interval: float,
        subprocess_backend: Any,
        docker_backend: Any,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.data_dir = data_dir
        self.mode = mode
        self.phase_delay = phase_delay
        self.stop_grace = stop_grace
        self.poll_interval = poll_interval
        self.lock = threading.RLock()
        self.items: dict[str, Any] = {}
        self.subprocess = subprocess_backend
        self.docker = docker_backend
        self._docker_ok: bool | None = None

    # -- what a subclass supplies -----------------------------------------------------------------
    def image_of(self, item) -> str | None:
        raise NotImplementedError

    def runtimes_of(self, item) -> list:
        """What to terminate: the item's running (or finished) replicas."""
        raise NotImplementedError

    def set_state(self, item, state: str, message: str | None) -> None:
        raise NotImplementedError

    # -- queries ----------------------------------------------------------------------------------
    def get(self, item_id: str, include_deleted: bool = False):
        with self.lock:
            item = self.items.get(item_id)
        if item is None or (item.deleted and not include_deleted):
            return None
        return item

    def all(self) -> list:
        with self.lock:
            return list(self.items.values())

    def log_dir(self, item_id: str) -> Path:
        return self.data_dir / "logs" / item_id

    # -- commands ---------------------------------------------------------------------------------
    def _register(self, item) -> None:
        with self.lock:
            self.items[item.id] = item
        self._spawn(self._drive, item, item.generation)

    def _take_over(self, item, state: str) -> int:
        """Enter ``state`` as a new generation (the caller holds ``item.lock``); its number."""
        item.generation += 1
        self.set_state(item, state, None)
        return item.generation

    def reset(self) -> None:
        """Forget every item, killing its replicas and removing its containers first."""
        with self.lock:
            items = list(self.items.values())
            self.items.clear()
        threads = []
        for item in items:
            with item.lock:
                item.generation += 1
            t = threading.Thread(target=self._kill_and_clean, args=(item,), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join(timeout=self.stop_grace + 15)

    def shutdown(self) -> None:
        self.reset()
        self.docker.shutdown()

    # -- internals --------------------------------------------------------------------------------
    @staticmethod
    def _spawn(target, *args) -> None:
        threading.Thread(target=target, args=args, daemon=True).start()

    def _drive(self, item, gen: int) -> None:
        raise NotImplementedError

    def _backend_for(self, item):
        if self.mode == "subprocess":
            return self.subprocess
        if self.mode == "docker":
            return self.docker
        if self._docker_ok is None:
            self._docker_ok = self.docker.available()
        if self._docker_ok and self.docker.has_image(self.image_of(item)):
            return self.docker
        return self.subprocess

    def _kill(self, item) -> None:
        threads = [
            threading.Thread(target=r.terminate, args=(self.stop_grace,), daemon=True)
            for r in self.runtimes_of(item)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _kill_and_clean(self, item) -> None:
        self._kill(item)
        (self.docker if item.mode == "docker" else self.subprocess).cleanup(item.id)

    def _advance(self, item, gen: int, state: str, message: str | None = None) -> bool:
        """Move to ``state`` unless a later command (stop, delete, ...) took over."""
        with item.lock:
            if item.generation != gen:
                return False
            self.set_state(item, state, message)
            return True

    def _stop(self, item, gen: int) -> None:
        self._kill(item)
        time.sleep(self.phase_delay)
        self._advance(item, gen, "Stopped")

    def _remove(self, item, gen: int) -> None:
        self._kill_and_clean(item)
        time.sleep(self.phase_delay)
        with item.lock:
            if item.generation == gen:
                item.deleted_at = time.time()
