"""The job record: what any later process needs to describe, list, tail and cancel a job."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nemo_run.core.redact import redact

# Keys every backend's `data` spells the same way (schema 2, see migrations.py).
REMOTE_ID = "remote_id"  # the backend's own id of the job (workload id, job id)
REMOTE_STATE = "remote_state"  # the backend's own last state ("Running", "Completed", ...)
REMOTE_DIR = "remote_dir"  # the job's folder on the backend's storage
NODES = "nodes"  # how many nodes (replicas of the one role) the job has


@dataclass
class JobRecord:
    """One job on one backend. `data` is backend-specific JSON; the store masks any secret in it."""

    backend: str
    app_id: str
    session: str = "nemo_run"
    state: str = "SUBMITTED"
    experiment_id: str | None = None
    log_dir: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def handle(self) -> str:
        """The torchx app handle, `{backend}://{session}/{app_id}`."""
        return f"{self.backend}://{self.session}/{self.app_id}"


def mask_secrets(data: Mapping[str, Any]) -> dict[str, Any]:
    """The data as it may be stored: every secret-looking value masked (under a secret-looking
    key, in an env-style name/value item, in a command line or a task payload), so no backend
    can persist a credential by mistake."""
    return redact(data)
