"""Group `poll`: what waiting on DGX Cloud jobs costs the (rate-limited) API: the workload
requests the Run:ai emulator sees while an attached experiment launches and waits."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness.checks import at_most
from harness.procs import BenchError, Scratch, Side, run_worker
from harness.registry import Group, GroupPlan, Measured, Mode, Row, Step, register

from cases.docker import DOCKER_IMAGE

REPO = Path(__file__).resolve().parents[2]
SECRET = "bench-secret-3c7d"  # the emulator's own test credential
CLIENT = "bench-client"


@dataclass(frozen=True)
class Settings:
    seconds: int  # how long each job runs
    many: int  # how many jobs in the second step
    image: str | None  # pods run as containers of this image; None: as host processes


class Emulator:
    """The Run:ai emulator as its own server process (our interpreter, either side)."""

    def __init__(self, data_dir: str, image: str | None, lenient: bool = False) -> None:
        env = {**os.environ, "RUNAI_EMULATOR_CLIENT_SECRET": SECRET, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nemo_run.testing.dgxcloud",
                "--port",
                "0",
                "--data-dir",
                data_dir,
                "--mode",
                "docker" if image else "subprocess",
                "--client-id",
                CLIENT,
                "--project",
                "bench",
                *(["--lenient-token-keys"] if lenient else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        line = self.proc.stdout.readline().strip() if self.proc.stdout else ""
        if not line.startswith("RUNAI_EMULATOR_URL="):
            self.proc.kill()
            raise BenchError(f"the Run:ai emulator did not start: {line!r}")
        self.url = line.split("=", 1)[1]

    def workload_requests(self) -> int:
        """GETs of workloads (one or the listing); the data mover's workspaces excluded."""
        with urllib.request.urlopen(f"{self.url}/_emulator/state", timeout=10) as response:
            counts = json.loads(response.read())["requests"]
        return sum(
            n
            for key, n in counts.items()
            if key.startswith("GET /api/v1/workloads") and "workspaces" not in key
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def measure(side: Side, s: Settings, jobs: int, row: Row, time_row: Row | None = None) -> Measured:
    seconds = s.seconds
    with Scratch(f"poll{jobs}") as scratch:
        # the peer sends `clientId` where the spec's TokenRequest says `clientID`: its side gets
        # an emulator that reads both spellings, as a case-insensitive JSON server would
        emulator = Emulator(os.path.join(scratch.root, "runai"), s.image, side.name == "peer")
        try:
            cfg = {
                "url": f"{emulator.url}/api/v1",
                "client_id": CLIENT,
                "secret": SECRET,
                "project": "bench",
                "pvc": os.path.join(scratch.root, "runai", "pvcs", "bench-pvc"),
                "jobs": jobs,
                "seconds": seconds,
                "image": s.image or "unused-in-subprocess-mode",
            }
            path = os.path.join(scratch.root, "poll.json")
            Path(path).write_text(json.dumps(cfg))
            before = emulator.workload_requests()
            result = run_worker(side, scratch, ["dgx-wait", "--ids-file", path], 600)
            requests = emulator.workload_requests() - before
        finally:
            emulator.stop()
    ended = ", ".join(result["states"])
    if result["states"] != ["SUCCEEDED"] and side.name != "peer":
        raise BenchError(f"the jobs ended {ended}")
    note = f"{jobs} job(s) of {seconds} s, pods as {'containers' if s.image else 'processes'}"
    if result["states"] != ["SUCCEEDED"]:  # the peer's own reading; its requests still count
        note += f"; it read its jobs as {ended}"
    measured = Measured({"result": result, "requests": requests}).put(row, requests, note)
    return measured.put(time_row, result["seconds"]) if time_row else measured


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--poll-image",
        default=DOCKER_IMAGE,
        help="image the poll group's emulated pods run in (local only, never pulled); 'none' "
        "runs them as host processes, as --smoke does. The peer's launch script links "
        "/nemo_run to its job folder, which host processes of several jobs cannot share",
    )


def plan(mode: Mode, args: argparse.Namespace) -> GroupPlan:
    image = None if mode is Mode.SMOKE or args.poll_image == "none" else args.poll_image
    s = Settings(
        seconds=mode.pick(full=20, quick=20, smoke=2), many=mode.pick(100, 30, 3), image=image
    )
    one = Row(
        "poll_one_requests",
        f"wait on one {s.seconds} s DGX job: workload requests",
        "",
        "<= 10",
        at_most(10),
    )
    one_s = Row("poll_one_s", "  launch + wait, whole experiment (s)", "s")
    many = Row(
        "poll_many_requests",
        f"wait on {s.many} DGX jobs together: workload requests",
        "",
        "<= 15",
        at_most(15),
    )
    steps = [
        Step("one", (one, one_s), lambda side: measure(side, s, 1, one, one_s)),
        Step("many", (many,), lambda side: measure(side, s, s.many, many)),
    ]
    return GroupPlan(s, steps)


register(
    Group(
        "poll",
        85,
        "workload requests while waiting on DGX Cloud jobs",
        plan,
        add_options=add_options,
    )
)
