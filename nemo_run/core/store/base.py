"""The store interface every scheduler uses, small enough that a server-backed store can fit it."""

from __future__ import annotations

import abc
import builtins
from collections.abc import Iterable
from typing import Any

from nemo_run.core.store.records import JobRecord


class JobStore(abc.ABC):
    """Durable, concurrent-safe job records keyed by (backend, app_id)."""

    location: str

    @abc.abstractmethod
    def put(self, record: JobRecord) -> None:
        """Insert or replace a record; it is durable when this returns."""

    @abc.abstractmethod
    def put_many(self, records: Iterable[JobRecord], *, replace: bool = True) -> int:
        """Write many records in one transaction; with `replace=False` existing ones win."""

    @abc.abstractmethod
    def get(self, backend: str, app_id: str) -> JobRecord | None:
        """The record, or None when this store never saw the job."""

    @abc.abstractmethod
    def update(
        self,
        backend: str,
        app_id: str,
        *,
        data: dict[str, Any] | None = None,
        if_state_in: Iterable[str] | None = None,
        **fields: Any,
    ) -> JobRecord:
        """Atomically change columns and merge `data` keys; raises UnknownJobError if absent.

        With `if_state_in`, nothing changes unless the stored state is one of those (a
        compare-and-set, so a late describe never overwrites a cancel); the stored record
        is returned either way.
        """

    @abc.abstractmethod
    def list(
        self,
        backend: str | None = None,
        *,
        state: str | None = None,
        experiment_id: str | None = None,
        limit: int | None = None,
        include_data: bool = True,
    ) -> list[JobRecord]:
        """Records newest first, optionally filtered; `include_data=False` skips decoding
        each record's backend data (for listings of many records)."""

    @abc.abstractmethod
    def find(self, app_id: str) -> builtins.list[JobRecord]:  # `list` is a method here
        """Every record with this app id, whatever its backend."""

    @abc.abstractmethod
    def delete(self, backend: str, app_id: str) -> bool:
        """Remove a record; True when one existed."""
