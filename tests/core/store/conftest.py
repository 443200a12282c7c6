"""Fixtures for the job store tests: every test starts without cached store connections."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nemo_run.core.store import JobStore, get_store
from tests.core.store._helpers import forget_open_stores


@pytest.fixture(autouse=True)
def _fresh_store_connections():
    forget_open_stores()
    yield
    forget_open_stores()


@pytest.fixture
def reopen() -> Callable[[], JobStore]:
    """Re-open the current home's store as a new process would (no cached connection)."""

    def _reopen() -> JobStore:
        forget_open_stores()
        return get_store()

    return _reopen
