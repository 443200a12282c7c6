"""Slurm costs on the local test stack (scripts/slurm-up.sh), over its SSH login node:

* refreshing 100 stored jobs of one cluster: how many remote calls, and how many `sacct`;
* scheduling one job over SSH: round trips after the first connection (the dry run's `sinfo`
  opens it), with and without a code archive to copy.

    .venv/bin/python bench/slurm_poll.py [--base /tmp/nemorun-sky]

Prints one line per figure; exits 2 when the stack is not up.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nemo_run as run  # noqa: E402
from nemo_run.core.store import get_store  # noqa: E402
from nemo_run.core.store.records import REMOTE_DIR, REMOTE_ID, JobRecord  # noqa: E402
from nemo_run.run.torchx_backend.schedulers import slurm  # noqa: E402
from nemo_run.run.torchx_backend.schedulers.api import LAUNCH, LAUNCH_DONE  # noqa: E402
from tests.slurm_stack import load_stack  # noqa: E402

CALLS: list[str] = []  # every remote call of every CountingTunnel (copies included)


class CountingTunnel(run.SSHTunnel):
    """An SSHTunnel that notes every remote call (run, put)."""

    def run(self, command: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        CALLS.append(command)
        return super().run(command, *args, **kwargs)

    def put(self, local_path: str, remote_path: str) -> None:
        CALLS.append(f"put {remote_path}")
        super().put(local_path, remote_path)


def tunnel(stack: Any, job_dir: str) -> CountingTunnel:
    return CountingTunnel(
        host=stack.ssh_host,
        user=stack.ssh_user,
        port=stack.ssh_port,
        identity=str(stack.ssh_key),
        job_dir=job_dir,
    )


def poll_figures(stack: Any, job_dir: str) -> None:
    t = tunnel(stack, job_dir)
    info = slurm.tunnel_info(t)
    slurm._tunnels[slurm.tunnel_key(info)] = t
    t.run("true")  # the first connection is not counted
    known = t.run("sacct -X -n -P -a -S 2020-01-01 -o JobID").stdout.split()
    ids = [i for i in known if i.isdigit()] or ["1"]
    for i in range(100):
        get_store().put(
            JobRecord(
                backend=slurm.BACKEND,
                app_id=f"bench-{i}",
                state="RUNNING",
                data={
                    slurm.TUNNEL: info,
                    REMOTE_ID: ids[i % len(ids)],
                    REMOTE_DIR: job_dir,
                    LAUNCH: LAUNCH_DONE,
                },
            )
        )
    CALLS.clear()
    start = time.perf_counter()
    slurm.create_scheduler("nemo_run").refresh_states([f"bench-{i}" for i in range(100)])
    took = time.perf_counter() - start
    sacct = sum(c.count("sacct ") for c in CALLS)
    print(f"refresh 100 jobs: {len(CALLS)} remote call(s), {sacct} sacct, {took * 1000:.0f} ms")
    slurm._tunnels.clear()


def schedule_figures(stack: Any, job_dir: str, packager: Any, label: str) -> None:
    t = tunnel(stack, job_dir)
    ex = run.SlurmExecutor(
        account=stack.account, partition=stack.partition, tunnel=t, packager=packager
    )
    with run.Experiment(f"bench-{label}") as exp:
        exp.add(run.Script(inline="echo bench"), executor=ex, name="b")
        exp.dryrun(log=False)  # opens the connection (the partition check)
        CALLS.clear()
        exp.run(detach=True)
        used = [c.split()[0] for c in CALLS]  # before the status the experiment prints
    print(f"schedule over SSH ({label}): {len(used)} round trip(s) after the first: {used}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--base", default=os.environ.get("NEMORUN_TEST_SLURM_BASE", "/tmp/nemorun-sky")
    )
    args = parser.parse_args()
    try:
        stack = load_stack(Path(args.base))
    except ValueError as e:
        print(f"Slurm stack not up: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="nemorun-bench-home-") as home:
        os.environ["NEMORUN_HOME"] = home
        root = stack.base / "skyuser-home" / "nemo_run_bench" / uuid.uuid4().hex[:8]
        root.mkdir(parents=True)
        for folder in (root, root.parent):
            os.chmod(folder, 0o777)
        poll_figures(stack, str(root))
        schedule_figures(stack, str(root), run.Packager(), "no-code")
        repo = str(Path(__file__).resolve().parent.parent)
        os.chdir(repo)
        schedule_figures(stack, str(root), run.GitArchivePackager(), "git-archive")
    return 0


if __name__ == "__main__":
    sys.exit(main())
