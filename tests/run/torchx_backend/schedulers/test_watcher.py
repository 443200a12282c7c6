"""One watcher per backend and process: states of many jobs with one refresh per interval,
and intervals that grow while it waits."""

from __future__ import annotations

import time
from typing import Any

import pytest
from torchx.specs import AppState

import nemo_run as run
from nemo_run.run.torchx_backend.schedulers import watcher as watchers
from nemo_run.run.torchx_backend.schedulers.watcher import REMOTE, Schedule, Watcher
from tests.run.torchx_backend.schedulers.test_remote_faults import (  # noqa: F401
    app_id_of,
    dgx_emulator,
    emu,
    lepton_emulator,
)


class Resp:
    def __init__(self, state: AppState) -> None:
        self.state, self.msg = state, ""


class FakeScheduler:
    """Counts batch refreshes; every job ends after `ends_after` refreshes."""

    def __init__(self, ends_after: int) -> None:
        self.calls: list[list[str]] = []
        self.ends_after = ends_after

    def refresh_states(self, app_ids: list[str]) -> dict[str, Any]:
        self.calls.append(sorted(app_ids))
        done = len(self.calls) >= self.ends_after
        return {a: Resp(AppState.SUCCEEDED if done else AppState.RUNNING) for a in app_ids}


def test_remote_intervals_grow_to_thirty_seconds():
    delays, delay = [], None
    for _ in range(7):
        delay = REMOTE.next(delay)
        delays.append(delay)
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_one_refresh_serves_every_tracked_job_until_the_next_is_due():
    sched = FakeScheduler(ends_after=3)
    watcher = Watcher(sched, Schedule(first=0.05, factor=1.0, cap=0.05))
    ids = [f"job-{i}" for i in range(100)]
    first = watcher.poll(ids)
    assert len(sched.calls) == 1 and len(sched.calls[0]) == 100
    assert all(s.state == AppState.RUNNING for s in first.values())
    for _ in range(50):  # asking again before the interval passed costs nothing
        watcher.poll(ids)
    assert len(sched.calls) == 1
    deadline = time.monotonic() + 5
    while not all(s.done for s in watcher.poll(ids).values()):
        assert time.monotonic() < deadline
        time.sleep(watcher.seconds_to_next())
    assert len(sched.calls) == 3
    watcher.poll(ids)
    time.sleep(0.06)
    watcher.poll(ids)
    assert len(sched.calls) == 3  # ended jobs are not refreshed again


def test_a_newly_tracked_job_is_refreshed_at_once():
    sched = FakeScheduler(ends_after=99)
    watcher = Watcher(sched, Schedule(first=60, factor=1.0, cap=60))
    watcher.poll(["a"])
    watcher.poll(["a", "b"])
    assert sched.calls == [["a"], ["a", "b"]]


@pytest.mark.parametrize("seconds", [5])
def test_waiting_on_a_cloud_job_costs_a_few_state_requests(emu, seconds, monkeypatch):  # noqa: F811
    """An attached run of a 5 s job: the driver's waiting goes through the watcher, whose
    intervals grow (0, 2, 4, 8 s...): a handful of state requests, not one every 0.2 s."""
    monkeypatch.delenv("NEMORUN_REMOTE_POLL")
    monkeypatch.setattr(watchers, "_watchers", {})
    before = emu.state()["requests"]
    result = run.run(
        run.Script(inline=f"sleep {seconds}; echo done"), executor=emu.executor(), name="timed"
    )
    assert result.state == AppState.SUCCEEDED
    after = emu.state()["requests"]
    grew = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert sum(v for k, v in grew.items() if _is_state_request(emu, k)) <= 6, grew


def test_many_cloud_jobs_waited_on_together_cost_one_list_per_interval(emu, monkeypatch):  # noqa: F811
    monkeypatch.delenv("NEMORUN_REMOTE_POLL")
    monkeypatch.setattr(watchers, "_watchers", {})
    with run.Experiment("many") as exp:
        for i in range(12):
            exp.add(run.Script(inline="sleep 2"), executor=emu.executor(), name=f"t{i}")
        exp.run(detach=True)
    before = emu.state()["requests"]
    states = exp.wait(timeout=120)
    assert {s["state"] for s in states.values()} == {"SUCCEEDED"}, states
    after = emu.state()["requests"]
    grew = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    refreshes = watchers.watcher(emu.backend).refreshes
    assert sum(v for k, v in grew.items() if _is_state_request(emu, k)) <= refreshes + 2, grew
    assert refreshes <= 6


def _is_state_request(emu, key: str) -> bool:  # noqa: F811
    """A GET of one job or of the job listing (not node groups, projects, tokens)."""
    path = key.split(" ", 1)[1] if key.startswith("GET ") else ""
    return path.endswith(("/jobs", "/workloads")) or "/jobs/" in path or "/workloads/" in path


def test_the_remote_schedule_can_be_set_and_is_checked(monkeypatch):
    monkeypatch.setenv("NEMORUN_REMOTE_POLL", "0.5,2,4")
    assert watchers.schedule_for("dgx_cloud") == Schedule(0.5, 2.0, 4.0)
    assert watchers.schedule_for("local_persistent") == watchers.LOCAL
    monkeypatch.setenv("NEMORUN_REMOTE_POLL", "fast")
    from nemo_run.exceptions import ConfigError

    with pytest.raises(ConfigError, match="FIRST,FACTOR,CAP"):
        watchers.schedule_for("lepton")
