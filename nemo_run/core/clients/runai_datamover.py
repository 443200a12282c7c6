"""Put files on a Run:ai PVC from outside the cluster, through short-lived workspaces.

The payload (a gzip'd tar) travels base64-encoded in environment variables of at most
100,000 characters each (below Linux's 128 KiB limit for one string), up to ~900 KB per
workspace; the command itself stays a few hundred characters, far inside the API's
~10,000-character `args` limit. A 2 MB code tree compresses into one or two workspaces.
Every workspace is deleted afterwards, also on failure and timeout.
"""

from __future__ import annotations

import base64
import io
import logging
import shlex
import tarfile
import time
from typing import Any

from nemo_run.core.clients.runai import RunAIClient, phase_of
from nemo_run.exceptions import BackendError

log = logging.getLogger(__name__)

CHUNK_CHARS = 100_000
CHUNKS_PER_WORKLOAD = 9
DONE_PHASES = {"Completed"}
FAILED_PHASES = {"Failed", "Stopped", "Deleting"}


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
                    data = code.extractfile(member) if member.isfile() else None
                    member.name = f"{code_dir}/{member.name}"
                    out.addfile(member, data)
    return buffer.getvalue()


def chunk_groups(payload: bytes) -> list[list[str]]:
    encoded = base64.b64encode(payload).decode("ascii")
    chunks = [encoded[i:i + CHUNK_CHARS] for i in range(0, len(encoded), CHUNK_CHARS)] or [""]
    return [chunks[i:i + CHUNKS_PER_WORKLOAD] for i in range(0, len(chunks), CHUNKS_PER_WORKLOAD)]


def _script(dest: str, count: int, first: bool, last: bool) -> str:
    upload = shlex.quote(f"{dest}/.nemo_run_upload.b64")
    parts = ["set -e", f"mkdir -p {shlex.quote(dest)}"]
    if first:
        parts.append(f"rm -f {upload}")
    parts.append("printf %s " + '"' + "".join(f"$NEMORUN_CHUNK_{i}" for i in range(count)) + '"' + f" >> {upload}")
    if last:
        parts.append(f"base64 -d {upload} | tar -xzf - -C {shlex.quote(dest)}")
        parts.append(f"rm -f {upload}")
    return "; ".join(parts)


def upload(client: RunAIClient, *, name: str, project_id: str, cluster_id: str, image: str,
           pvcs: list[dict[str, Any]], dest: str, payload: bytes, timeout: float = 600.0) -> int:
    """Unpack `payload` into `dest` on the PVC; returns how many workspaces it took."""
    groups = chunk_groups(payload)
    for index, chunks in enumerate(groups):
        script = _script(dest, len(chunks), first=index == 0, last=index == len(groups) - 1)
        body = {
            "name": f"{name[:33].rstrip('-')}-mv{index}",
            "projectId": project_id,
            "clusterId": cluster_id,
            "spec": {
                "command": "sh",
                "args": f"-c {shlex.quote(script)}",
                "image": image,
                "environmentVariables": [{"name": f"NEMORUN_CHUNK_{i}", "value": c} for i, c in enumerate(chunks)],
                "storage": {"pvc": pvcs},
            },
        }
        created = client.create_workload("workspaces", body)
        workload_id = created["workloadId"]
        try:
            _wait(client, workload_id, timeout, body["name"])
        finally:
            try:
                client.delete("workspaces", workload_id)
            except BackendError as e:
                log.warning("could not delete data-mover workspace %s: %s", body["name"], e)
    return len(groups)


def _wait(client: RunAIClient, workload_id: str, timeout: float, name: str) -> None:
    deadline, delay = time.monotonic() + timeout, 0.05
    while True:
        workload = client.get_workload("workspaces", workload_id)
        phase = phase_of(workload) if workload else "Deleted"
        if phase in DONE_PHASES:
            return
        if phase in FAILED_PHASES or workload is None:
            raise BackendError(f"data-mover workspace {name} ended {phase} while copying code to the PVC")
        if time.monotonic() > deadline:
            raise BackendError(f"data-mover workspace {name} still {phase} after {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
