"""Slurm scheduler without a cluster: state table, sacct/squeue parsing, and the batched refresh
through a fake tunnel that counts its calls."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from torchx.specs import AppState

from nemo_run.core.store import get_store
from nemo_run.core.store.records import REMOTE_DIR, REMOTE_ID, JobRecord
from nemo_run.exceptions import TunnelConnectionError
from nemo_run.run.torchx_backend.schedulers import slurm
from nemo_run.run.torchx_backend.schedulers.api import LAUNCH, LAUNCH_DONE

INFO = {"kind": "ssh", "host": "login", "user": "me", "port": 22, "identity": None, "job_dir": "/j"}


@dataclass
class Answer:
    stdout: str = ""
    stderr: str = ""
    return_code: int = 0

    @property
    def ok(self) -> bool:
        return self.return_code == 0

    @property
    def failed(self) -> bool:
        return not self.ok


@dataclass
class FakeTunnel:
    """Answers sacct/squeue from `jobs` (id -> sacct row fields); counts every command."""

    jobs: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # id -> state, code, name
    fresh: dict[str, str] = field(default_factory=dict)  # ids only squeue knows -> state
    calls: list[str] = field(default_factory=list)
    down: bool = False
    sacct_error: str = ""

    def run(self, command: str, **kwargs: Any) -> Answer:
        self.calls.append(command)
        if self.down:
            raise TunnelConnectionError("ssh: connect to host login port 22: Connection refused")
        out = ""
        for part in command.split("; echo __NEMO_RUN_EXIT__ $?"):
            part = part.strip("; ")
            if part:
                text, code = self._one(part)
                out += f"{text}__NEMO_RUN_EXIT__ {code}\n"
        return Answer(out)

    def _one(self, command: str) -> tuple[str, int]:
        ids = command.split(" -j ", 1)[1].split()[0].strip("'").split(",")
        if command.startswith("sacct"):
            if self.sacct_error:
                return self.sacct_error + "\n", 1
            rows = [
                f"{i}|{self.jobs[i][2]}|{self.jobs[i][0]}|{self.jobs[i][1]}|2026-01-01T00:00:00|"
                "Unknown\n"
                for i in ids
                if i in self.jobs
            ]
            return "".join(rows), 0
        if command.startswith("squeue"):
            rows = [f"{i}|job|{self.fresh[i]}|0|N/A|N/A|None\n" for i in ids if i in self.fresh]
            return "".join(rows), 0
        raise AssertionError(f"unexpected command {command}")

    def count(self, word: str) -> int:
        return sum(c.count(word + " ") for c in self.calls)


@pytest.fixture
def fake(monkeypatch):
    tunnel = FakeTunnel()
    monkeypatch.setitem(slurm._tunnels, slurm.tunnel_key(INFO), tunnel)
    return tunnel


def stored(app_id: str, job_id: str, state: str = "SUBMITTED") -> JobRecord:
    record = JobRecord(
        backend=slurm.BACKEND,
        app_id=app_id,
        state=state,
        data={
            slurm.TUNNEL: INFO,
            REMOTE_ID: job_id,
            REMOTE_DIR: f"/j/{app_id}",
            LAUNCH: LAUNCH_DONE,
        },
    )
    get_store().put(record)
    return record


def test_every_documented_state_is_mapped_and_a_new_one_reads_unknown(caplog):
    documented = """BOOT_FAIL CANCELLED COMPLETED CONFIGURING COMPLETING DEADLINE FAILED NODE_FAIL
    OUT_OF_MEMORY PENDING PREEMPTED RUNNING RESV_DEL_HOLD REQUEUE_FED REQUEUE_HOLD REQUEUED
    RESIZING REVOKED SIGNALING SPECIAL_EXIT STAGE_OUT STOPPED SUSPENDED TIMEOUT""".split()
    assert set(documented) <= set(slurm.SLURM_STATES)
    assert slurm.state_of("CANCELLED by 0") == AppState.CANCELLED
    assert slurm.state_of("COMPLETING") == AppState.RUNNING  # not ended until it is
    assert slurm.state_of("REQUEUED") == AppState.PENDING
    with caplog.at_level(logging.WARNING):
        assert slurm.state_of("WARPED_2031") == AppState.UNKNOWN
    assert "unmapped Slurm job state 'WARPED_2031'" in caplog.text


def test_the_exit_code_is_in_a_failure_message():
    job = slurm.SlurmJob("7", "x", "FAILED", "3:0")
    assert slurm.describe_exit(job) == "Slurm FAILED, exit code 3"
    killed = slurm.SlurmJob("7", "x", "CANCELLED by 0", "0:9")
    assert slurm.describe_exit(killed) == "Slurm CANCELLED by 0"
    oom = slurm.SlurmJob("7", "x", "OUT_OF_MEMORY", "0:125")
    assert "killed by signal 125" in slurm.describe_exit(oom)


def test_array_tasks_combine_into_one_job():
    text = (
        "10_0|a|COMPLETED|0:0|s1|e\n10_1|a|FAILED|2:0|s0|e\n10_[2-3]|a|PENDING|0:0|Unknown|U\n"
        "11_0|b|COMPLETED|0:0|s|e\n11_1|b|COMPLETED|0:0|s|e\n12|c|RUNNING|0:0|s|U\n"
    )
    jobs = slurm.combine(slurm.parse_sacct(text))
    assert jobs["10"].state == "PENDING" and jobs["10"].tasks == 3  # one still waits
    assert jobs["11"].state == "COMPLETED" and jobs["12"].state == "RUNNING"
    done = slurm.combine(slurm.parse_sacct("10_0|a|COMPLETED|0:0|s|e\n10_1|a|FAILED|2:0|s|e\n"))
    assert done["10"].state == "FAILED" and done["10"].exit_code == "2:0"


def test_a_job_name_with_a_pipe_stays_one_field():
    [job] = slurm.parse_sacct("5|we|ird|COMPLETED|0:0|a|b\n")
    assert (job.name, job.state) == ("we|ird", "COMPLETED")


def test_describing_100_jobs_of_a_cluster_is_one_sacct_call(fake):
    for i in range(100):
        fake.jobs[str(1000 + i)] = ("FAILED" if i == 7 else "RUNNING", "3:0", f"j{i}")
        stored(f"job-{i}", str(1000 + i))
    stored("fresh", "2000")  # sbatch answered; the accounting database has not seen it yet
    fake.fresh["2000"] = "PENDING"
    scheduler = slurm.create_scheduler("nemo_run")
    out = scheduler.refresh_states([f"job-{i}" for i in range(100)] + ["fresh"])
    # one round trip: one sacct for all, and squeue (which sacct lags behind) in the same call
    assert fake.count("sacct") == 1 and fake.count("squeue") == 1 and len(fake.calls) == 1
    assert out["job-0"].state == AppState.RUNNING and out["fresh"].state == AppState.PENDING
    assert out["job-7"].state == AppState.FAILED and "exit code 3" in out["job-7"].msg
    assert get_store().get(slurm.BACKEND, "job-7").state == "FAILED"
    assert "1007" in out["job-7"].msg  # the Slurm job id is shown


def test_list_is_every_stored_job_with_one_query(fake):
    for i in range(5):
        fake.jobs[str(i + 1)] = ("COMPLETED", "0:0", "x")
        stored(f"j{i}", str(i + 1))
    stored("old", "99", state="SUCCEEDED")
    listed = slurm.create_scheduler("nemo_run").list()
    assert {r.app_id for r in listed} == {"j0", "j1", "j2", "j3", "j4", "old"}
    assert all(r.state == AppState.SUCCEEDED for r in listed)
    assert fake.count("sacct") == 1


def test_no_connection_keeps_the_last_state(fake):
    stored("a", "1", state="RUNNING")
    fake.down = True
    resp = slurm.create_scheduler("nemo_run").describe("a")
    assert resp.state == AppState.RUNNING and "not answering" in resp.msg
    assert getattr(resp, "unanswered", None)
    assert get_store().get(slurm.BACKEND, "a").state == "RUNNING"


def test_an_unreachable_accounting_database_keeps_the_last_state(fake):
    stored("a", "1", state="RUNNING")
    stored("b", "2", state="PENDING")
    fake.sacct_error = (
        "sacct: error: slurm_persist_conn_open_without_init: failed to open persistent "
        "connection to host:localhost:6819: Connection refused"
    )
    out = slurm.create_scheduler("nemo_run").refresh_states(["a", "b"])
    assert out["a"].state == AppState.RUNNING and out["b"].state == AppState.PENDING
    assert all(getattr(r, "unanswered", None) for r in out.values())
    assert fake.count("sacct") == 1


def test_without_accounting_squeue_answers(fake):
    stored("a", "1")
    fake.sacct_error = "Slurm accounting storage is disabled"
    fake.fresh["1"] = "COMPLETED"
    scheduler = slurm.create_scheduler("nemo_run")
    assert scheduler.describe("a").state == AppState.SUCCEEDED
    stored("b", "2")
    fake.fresh["2"] = "RUNNING"
    assert scheduler.describe("b").state == AppState.RUNNING
    assert fake.count("sacct") == 1  # learnt once per process and cluster


def test_output_paths_and_array_indices():
    assert slurm.array_indices("0-3,7,10-20:5%2") == [0, 1, 2, 3, 7, 10, 15, 20]
    script = "#!/bin/bash\n#SBATCH --array=0-1\n#SBATCH --output=/j/sbatch_x_%A_%a.out\n"
    pattern = slurm.output_pattern(script)
    assert slurm.output_file(pattern, "/j", "55", "x", 1) == "/j/sbatch_x_55_1.out"
    assert slurm.output_pattern("#SBATCH --array=1-2\n") == "slurm-%A_%a.out"
    assert slurm.output_file("slurm-%j.out", "/j", "9", "x", None) == "/j/slurm-9.out"


def test_a_record_keeps_no_secret_of_the_tunnel():
    tunnel = slurm.SSHTunnel(host="login", user="me", job_dir="/j")
    info = slurm.tunnel_info(tunnel)
    assert set(info) == {"kind", "host", "user", "port", "identity", "job_dir"}
    again = slurm.open_tunnel(info)
    assert (again.host, again.user, again.job_dir) == ("login", "me", "/j")
