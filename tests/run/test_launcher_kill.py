"""kill -9 of the launching process at any instant never leaves a job running without a
record: every job process has a store record and a handle in its experiment, and
`experiment cancel --all` then stops everything."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from nemo_run.core.store import get_store
from nemo_run.run.experiment_files import list_experiments
from tests.helpers import REPO, wait_for

TRIALS = 12


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nemo_run.cli.nemorun", *args]


def _job_processes(home: str) -> dict[int, str]:
    """pid -> app id of every live process started for a job of this home folder."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = dict(v.split(b"=", 1) for v in fh.read().split(b"\0") if b"=" in v)
            with open(f"/proc/{entry}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        if env.get(b"NEMORUN_HOME") == home.encode() and b"NEMORUN_APP_ID" in env:
            found[int(entry)] = env[b"NEMORUN_APP_ID"].decode()
    return found


def test_kill_9_of_the_launcher_at_any_instant_leaves_no_unrecorded_job(nemorun_home):
    home = str(nemorun_home)
    command = _cli("run", "--name", "victim", "--", "sleep", "60")
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO, timeout=60)
    full = time.monotonic() - started  # one whole launch: the instants are spread over it
    rng = random.Random(20261202)
    try:
        for _ in range(TRIALS):
            proc = subprocess.Popen(
                command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            time.sleep(rng.uniform(0.3, 1.0) * full)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        store = get_store()
        for pid, app_id in _job_processes(home).items():
            record = store.get("local_persistent", app_id)
            assert record is not None, f"process {pid} of job {app_id} runs without a record"
        experiments = list_experiments("victim")
        handles = {t.handle for e in experiments for t in e.tasks if t.handle}
        for app_id in set(_job_processes(home).values()):
            assert f"local_persistent://nemo_run/{app_id}" in handles, f"{app_id} has no handle"
        for exp in experiments:
            proc = subprocess.run(
                _cli("experiment", "status", exp.id, "--json"),
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert "Traceback" not in proc.stderr, proc.stderr
            proc = subprocess.run(
                _cli("experiment", "cancel", exp.id, "--all"),
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 0, proc.stderr
        wait_for(lambda: not _job_processes(home), timeout=30, what="every job process to end")
    finally:
        for pid in _job_processes(home):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
