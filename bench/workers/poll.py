"""`dgx-wait`: run an experiment of N `sleep S` tasks on DGX Cloud (the Run:ai emulator the
harness started) and wait for it attached, as a user's script does; the harness counts the
workload requests the emulator saw."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from workers.common import is_ours


def executor(cfg: dict[str, Any]) -> Any:
    import nemo_run as run

    pvc = cfg["pvc"]
    common: dict[str, Any] = {
        "base_url": cfg["url"],
        "client_id": cfg["client_id"],
        "client_secret": cfg["secret"],
        "project_name": cfg["project"],
        "container_image": cfg["image"],
        "pvc_nemo_run_dir": f"{pvc}/jobs",
        "pvcs": [{"claimName": "bench-pvc", "path": pvc}],
        "launched_from_cluster": True,
    }
    if not is_ours():
        common["kube_apiserver_url"] = cfg["url"]  # required by the peer; not used to wait
        # launched from the cluster, the peer finds its launch script on the PVC at the path
        # of its experiment folder relative to the home: so its home is that PVC folder
        run.config.set_nemorun_home(f"{pvc}/jobs")
    return run.DGXCloudExecutor(**common)


def cmd_dgx_wait(args: argparse.Namespace) -> dict[str, Any]:
    """--ids-file CONFIG.json (url, client_id, secret, project, pvc, jobs, seconds)."""
    import nemo_run as run

    with open(args.ids_file) as fh:
        cfg = json.load(fh)
    os.makedirs(f"{cfg['pvc']}/jobs", exist_ok=True)
    ex = executor(cfg)
    t0 = time.monotonic()
    with run.Experiment("poll") as exp:
        for i in range(int(cfg["jobs"])):
            exp.add(run.Script(inline=f"sleep {cfg['seconds']}"), executor=ex, name=f"t{i}")
        exp.run()
    waited = time.monotonic() - t0
    status = exp.status(return_dict=True) or {}
    return {"seconds": waited, "states": sorted({_state(v) for v in status.values()})}


def _state(task: Any) -> str:
    """A task's state from either implementation's status dict."""
    if isinstance(task, dict):
        value = task.get("state", task.get("status"))
        return str(getattr(value, "name", value))
    return str(task)


COMMANDS = {"dgx-wait": cmd_dgx_wait}
