"""The job record: what any later process needs to describe, list, tail and cancel a job."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nemo_run.core.redact import is_secret_name
from nemo_run.exceptions import StoreError


@dataclass
class JobRecord:
    """One job on one backend. `data` is backend-specific JSON and must never hold a secret."""

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


def refuse_secrets(data: Mapping[str, Any], where: str = "data") -> None:
    """Raise if a key names a secret: a guard so no backend can persist credentials by mistake."""
    for key, value in data.items():
        if is_secret_name(str(key)) and value not in (None, "", [], {}):
            raise StoreError(
                f"refusing to store {where}[{key!r}]: job records never hold secrets; "
                "read credentials from the environment or a 0600 profile at call time"
            )
        if isinstance(value, Mapping):
            refuse_secrets(value, f"{where}[{key!r}]")
        elif isinstance(value, (list, tuple)):  # e.g. roles: [{"env": {...}}]
            refuse_secrets(dict(enumerate(value)), f"{where}[{key!r}]")
