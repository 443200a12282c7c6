"""Every test gets its own home folder, so no test sees another's jobs."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def nemorun_home(tmp_path, monkeypatch):
    """Point NEMORUN_HOME at a fresh folder; child processes inherit it through the environment."""
    from nemo_run.config import set_nemorun_home

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("NEMORUN_HOME", str(home))
    set_nemorun_home(None)
    yield home
    set_nemorun_home(None)
