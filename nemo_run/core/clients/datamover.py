"""Moving a code archive into a remote filesystem through short-lived helper jobs.

Platforms that can run a container but not copy files into its storage (Run:ai, Lepton)
get the payload (a gzip'd tar) base64-encoded in environment variables of at most 100,000
characters each (below Linux's 128 KiB limit for one string, so nothing hits the per-argument
limit that breaks base64-in-argv movers), up to ~900 KB per helper. The command stays a few
hundred characters.

`DataMover` is the one upload loop every backend uses; a backend gives it three small
callables (`HelperOps`): create a helper, read its status, delete it. A helper whose delete
still fails after retries is kept in `leftovers` (and logged), so the job record can carry it
and later calls delete it; none is ever left silently.
"""

from __future__ import annotations

import base64
import io
import logging
import shlex
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nemo_run.core.clients.http import UnconfirmedError, is_transient
from nemo_run.exceptions import BackendError

log = logging.getLogger(__name__)

CHUNK_CHARS = 100_000
CHUNKS_PER_WORKLOAD = 9
DONE, FAILED, GONE, RUNNING = "done", "failed", "gone", "running"  # what `HelperOps.status` says
GONE_CONFIRMATIONS = 3  # a helper reads as gone only after this many answers in a row say so


def build_payload(files: dict[str, bytes], archive: str | None, code_dir: str = "code") -> bytes:
    """A .tar.gz holding `files` at the top and the packager's archive under `code_dir/`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as out:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, int(time.time())
            out.addfile(info, io.BytesIO(data))
        if archive:
            with tarfile.open(archive) as code:
                for member in code.getmembers():
                    content = code.extractfile(member) if member.isfile() else None
                    member.name = f"{code_dir}/{member.name}"
                    out.addfile(member, content)
    return buffer.getvalue()


def chunk_groups(payload: bytes) -> list[list[str]]:
    encoded = base64.b64encode(payload).decode("ascii")
    chunks = [encoded[i : i + CHUNK_CHARS] for i in range(0, len(encoded), CHUNK_CHARS)] or [""]
    return [chunks[i : i + CHUNKS_PER_WORKLOAD] for i in range(0, len(chunks), CHUNKS_PER_WORKLOAD)]


def unpack_script(dest: str, count: int, first: bool, last: bool) -> str:
    upload = shlex.quote(f"{dest}/.nemo_run_upload.b64")
    parts = ["set -e", f"mkdir -p {shlex.quote(dest)}"]
    if first:
        parts.append(f"rm -f {upload}")
    chunks = "".join(f"$NEMORUN_CHUNK_{i}" for i in range(count))
    parts.append(f'printf %s "{chunks}" >> {upload}')
    if last:
        parts.append(f"base64 -d {upload} | tar -xzf - -C {shlex.quote(dest)}")
        parts.append(f"rm -f {upload}")
    return "; ".join(parts)


@dataclass
class HelperOps:
    """What a backend supplies. `create(name, script, env)` starts a helper running
        `sh -c script` with `env` and returns its leftover entry (a JSON-able dict with at least
        `id` and `name`; a leftover whose create could not be confirmed has `id` None and is
    found by name); `status(entry)` is one of DONE, FAILED, GONE, RUNNING; `delete(entry)`
        removes it (no error when already gone) and raises BackendError when it could not."""

    create: Callable[[str, str, dict[str, str]], dict[str, Any]]
    status: Callable[[dict[str, Any]], str]
    delete: Callable[[dict[str, Any]], None]


@dataclass
class DataMover:
    """Unpack a payload into `dest` through helpers, deleting each one afterwards."""

    ops: HelperOps
    timeout: float = 600.0
    delete_attempts: int = 2
    on_progress: Callable[[], None] | None = None  # called while waiting (launch heartbeat)
    sleep: Callable[[float], None] = time.sleep
    leftovers: list[dict[str, Any]] = field(default_factory=list)

    def upload(self, name_of: Callable[[int], str], dest: str, payload: bytes) -> int:
        """Run the helpers one after another; returns how many it took. Raises BackendError
        when one did not finish; `leftovers` then still lists what could not be deleted."""
        groups = chunk_groups(payload)
        for index, chunks in enumerate(groups):
            script = unpack_script(
                dest, len(chunks), first=index == 0, last=index == len(groups) - 1
            )
            env = {f"NEMORUN_CHUNK_{i}": chunk for i, chunk in enumerate(chunks)}
            name = name_of(index)
            try:
                entry = self.ops.create(name, script, env)
            except UnconfirmedError:  # it may exist: keep its name so it can be found and deleted
                self.leftovers.append({"id": None, "name": name})
                raise
            try:
                self._wait(entry)
            finally:
                self.remove(entry)
        return len(groups)

    def _wait(self, entry: dict[str, Any]) -> None:
        """Poll until DONE; transient errors and a lone 'gone' do not end the wait."""
        deadline, delay, gone = time.monotonic() + self.timeout, 0.05, 0
        what = f"helper {entry.get('name') or entry.get('id')}"
        while True:
            try:
                status = self.ops.status(entry)
            except BackendError as e:
                if not is_transient(e):
                    raise
                log.debug("%s: status not read (%s); retrying", what, e)
                status = RUNNING
            gone = gone + 1 if status == GONE else 0
            if status == DONE:
                return
            if status == FAILED or gone >= GONE_CONFIRMATIONS:
                raise BackendError(f"{what} ended {status} while copying code")
            if time.monotonic() > deadline:
                raise BackendError(f"{what} still {status} after {self.timeout:.0f} s")
            if self.on_progress is not None:
                self.on_progress()
            self.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def remove(self, entry: dict[str, Any]) -> bool:
        """Delete a helper, retrying; on lasting failure keep it in `leftovers` and warn."""
        error: BaseException | None = None
        for attempt in range(self.delete_attempts):
            try:
                self.ops.delete(entry)
                return True
            except BackendError as e:
                error = e
                self.sleep(min(0.2 * 2**attempt, 2.0))
        self.leftovers.append(entry)
        log.warning(
            "could not delete helper %s after %d attempts (%s); it is kept in the job record "
            "and deleted on a later describe or cancel",
            entry.get("name") or entry.get("id"),
            self.delete_attempts,
            error,
        )
        return False


def delete_leftovers(
    entries: list[dict[str, Any]], delete: Callable[[dict[str, Any]], None]
) -> list[dict[str, Any]]:
    """Try once more to delete leftover helpers; returns those still there."""
    remaining = []
    for entry in entries:
        try:
            delete(entry)
        except BackendError as e:
            log.warning("helper %s still not deleted: %s", entry.get("name") or entry.get("id"), e)
            remaining.append(entry)
    return remaining
