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
    # the emulators do not mind being asked often: keep waits short (tests of the real
    # schedule unset this)
    monkeypatch.setenv("NEMORUN_REMOTE_POLL", "0.2,1.5,1")
    set_nemorun_home(None)
    yield home
    set_nemorun_home(None)


@pytest.fixture(scope="session")
def docker_image():
    """The local test image on a live engine; skip (or fail when CI=true) without one."""
    import os

    reason = os.environ.get("NEMORUN_TEST_DOCKER_SKIP")
    image = os.environ.get("NEMORUN_TEST_IMAGE")
    if not reason and not image:
        reason = (
            "no engine was set up: run the tests through scripts/test.sh (NEMORUN_TEST_IMAGE unset)"
        )
    if not reason:
        try:
            import docker

            client = docker.from_env(timeout=10)
            client.ping()
            client.images.get(image)
            client.close()
        except Exception as e:  # noqa: BLE001 - any failure means no usable engine
            reason = f"Docker engine or image {image} unusable: {e}"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires the Docker tests to run: {reason}")
        pytest.skip(f"Docker tests skipped: {reason}")
    return image
