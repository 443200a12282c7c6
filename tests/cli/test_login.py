"""`nemorun login dgxcloud` writes the private profile a DGXCloudExecutor reads, after the API
accepted the credentials; a refused secret writes nothing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from tests.helpers import REPO
from tests.run.torchx_backend.schedulers.test_dgxcloud import CLIENT, SECRET, emulator  # noqa: F401
from tests.run.torchx_backend.schedulers.test_remote_faults import lepton_emulator  # noqa: F401


def _login(args: list[str], home, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DGX_CLOUD_")}
    return subprocess.run(
        [sys.executable, "-m", "nemo_run.cli.nemorun", "login", "dgxcloud", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**env, "NEMORUN_HOME": str(home)},
    )


def test_login_writes_a_private_profile_from_flags_and_a_hidden_prompt(emulator, nemorun_home):  # noqa: F811
    proc = _login(
        ["--base-url", emulator.api, "--client-id", CLIENT], nemorun_home, stdin=SECRET + "\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr  # the prompt hides what was typed
    path = nemorun_home / "profiles" / "dgxcloud.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {
        "base_url": emulator.api,
        "client_id": CLIENT,
        "client_secret": SECRET,
    }
    from nemo_run.core.execution.dgxcloud import DGXCloudExecutor

    ex = DGXCloudExecutor(
        project_name="p",
        container_image="i",
        pvc_nemo_run_dir="/a",
        pvcs=[{"claimName": "c", "path": "/a"}],
    )
    env = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("DGX_CLOUD_")}
    try:
        assert ex.credentials() == (emulator.api, CLIENT, SECRET)
    finally:
        os.environ.update(env)


def test_a_refused_secret_writes_nothing(emulator, nemorun_home):  # noqa: F811
    proc = _login(
        ["--base-url", emulator.api, "--client-id", CLIENT, "--client-secret", "wrong"],
        nemorun_home,
    )
    assert proc.returncode != 0
    assert "refused" in proc.stderr and "Traceback" not in proc.stderr
    assert not (nemorun_home / "profiles" / "dgxcloud.json").exists()


def test_a_bad_url_is_refused_before_any_request(nemorun_home):
    proc = _login(
        ["--base-url", "nowhere/api/v1", "--client-id", "x", "--client-secret", "y"], nemorun_home
    )
    assert proc.returncode == 2 and "is not an http(s) URL" in proc.stderr


def test_lepton_login_writes_the_profile_the_scheduler_uses(lepton_emulator, nemorun_home):  # noqa: F811
    env = lepton_emulator.env
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEPTON_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nemo_run.cli.nemorun",
            "login",
            "lepton",
            "--workspace-id",
            env["LEPTON_WORKSPACE_ID"],
            "--url",
            env["LEPTON_WORKSPACE_URL"],
        ],
        input=env["LEPTON_WORKSPACE_TOKEN"] + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**clean, "NEMORUN_HOME": str(nemorun_home), "HOME": str(nemorun_home)},
    )
    assert proc.returncode == 0, proc.stderr
    path = nemorun_home / "profiles" / "lepton.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["token"] == env["LEPTON_WORKSPACE_TOKEN"]
    from nemo_run.core.execution.lepton import workspace_credentials

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("LEPTON_")}
    try:
        assert workspace_credentials() == (
            env["LEPTON_WORKSPACE_ID"],
            env["LEPTON_WORKSPACE_TOKEN"],
            env["LEPTON_WORKSPACE_URL"],
        )
    finally:
        os.environ.update(saved)


def test_lepton_login_with_a_refused_token_writes_nothing(lepton_emulator, nemorun_home):  # noqa: F811
    env = lepton_emulator.env
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEPTON_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nemo_run.cli.nemorun",
            "login",
            "lepton",
            "--workspace-id",
            env["LEPTON_WORKSPACE_ID"],
            "--url",
            env["LEPTON_WORKSPACE_URL"],
            "--token",
            "wrong",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**clean, "NEMORUN_HOME": str(nemorun_home), "HOME": str(nemorun_home)},
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert not (nemorun_home / "profiles" / "lepton.json").exists()
