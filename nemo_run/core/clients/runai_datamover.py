"""The Run:ai side of the data mover: helpers are short-lived workspaces that mount the PVC.

The payload travels in environment variables (see `datamover`); the command stays far
inside the API's ~10,000-character `args` limit. `datamover.DataMover` runs the upload and
deletes every workspace afterwards, also on failure and timeout.
"""

from __future__ import annotations

import shlex
from typing import Any

from nemo_run.core.clients.datamover import DONE, FAILED, GONE, RUNNING, HelperOps
from nemo_run.core.clients.runai import RunAIClient, phase_of

KIND = "workspaces"
DONE_PHASES = {"Completed"}
FAILED_PHASES = {"Failed", "Stopped", "Deleting"}


def helper_name(name: str, index: int) -> str:
    """The workspace name of the index-th helper of job `name` (<= 40 characters)."""
    return f"{name[:33].rstrip('-')}-mv{index}"


def helper_ops(
    client: RunAIClient, *, project_id: str, cluster_id: str, image: str, pvcs: list[dict[str, Any]]
) -> HelperOps:
    """Create, read and delete data-mover workspaces in one project."""

    def create(name: str, script: str, env: dict[str, str]) -> dict[str, Any]:
        body = {
            "name": name,
            "projectId": project_id,
            "clusterId": cluster_id,
            "spec": {
                "command": "sh",
                "args": f"-c {shlex.quote(script)}",
                "image": image,
                "environmentVariables": [{"name": k, "value": v} for k, v in env.items()],
                "storage": {"pvc": pvcs},
            },
        }
        created = client.create_workload(KIND, body)
        return {"id": created["workloadId"], "name": name, "kind": KIND}

    def status(entry: dict[str, Any]) -> str:
        workload = client.get_workload(entry.get("kind", KIND), entry["id"])
        phase = phase_of(workload) if workload else None
        if workload is None:
            return GONE
        return DONE if phase in DONE_PHASES else FAILED if phase in FAILED_PHASES else RUNNING

    return HelperOps(create, status, lambda entry: delete_helper(client, entry))


def delete_helper(client: RunAIClient, entry: dict[str, Any]) -> None:
    """Delete one helper workspace; a 404 means it is already gone. Raises BackendError."""
    client.delete(entry.get("kind", KIND), entry["id"])
