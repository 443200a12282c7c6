"""Put files on a Run:ai PVC from outside the cluster, through short-lived workspaces.

The payload travels in environment variables (see `datamover`); the command stays far
inside the API's ~10,000-character `args` limit. Every workspace is deleted afterwards,
also on failure and timeout.
"""

from __future__ import annotations

import logging
import shlex
import time
from typing import Any

from nemo_run.core.clients.datamover import chunk_groups, unpack_script
from nemo_run.core.clients.runai import RunAIClient, phase_of
from nemo_run.exceptions import BackendError

log = logging.getLogger(__name__)

DONE_PHASES = {"Completed"}
FAILED_PHASES = {"Failed", "Stopped", "Deleting"}


def upload(client: RunAIClient, *, name: str, project_id: str, cluster_id: str, image: str,
           pvcs: list[dict[str, Any]], dest: str, payload: bytes, timeout: float = 600.0) -> int:
    """Unpack `payload` into `dest` on the PVC; returns how many workspaces it took."""
    groups = chunk_groups(payload)
    for index, chunks in enumerate(groups):
        script = unpack_script(dest, len(chunks), first=index == 0, last=index == len(groups) - 1)
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
