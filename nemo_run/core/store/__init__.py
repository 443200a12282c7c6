"""THE job store: the only code that reads or writes job records, for every backend.

`get_store()` resolves the home folder on every call, so `set_nemorun_home()` and
`$NEMORUN_HOME` always count; the backing file is `$NEMORUN_HOME/jobs.db`.
"""

from __future__ import annotations

import os

from nemo_run.config import get_nemorun_home
from nemo_run.core.store.base import JobStore
from nemo_run.core.store.records import JobRecord, mask_secrets
from nemo_run.core.store.sqlite import SqliteJobStore

STORE_FILENAME = "jobs.db"
_stores: dict[str, JobStore] = {}


def store_path(home: str | None = None) -> str:
    """The store file for `home` (default: the current home folder)."""
    return os.path.join(home or get_nemorun_home(), STORE_FILENAME)


def get_store(home: str | None = None) -> JobStore:
    """The job store of the current home folder (one object per file, connections per thread)."""
    home = os.path.abspath(home or get_nemorun_home())
    store = _stores.get(home)
    if store is None:
        store = _stores[home] = SqliteJobStore(store_path(home), import_legacy_from=home)
    return store


__all__ = ["JobRecord", "JobStore", "get_store", "mask_secrets", "store_path", "STORE_FILENAME"]
