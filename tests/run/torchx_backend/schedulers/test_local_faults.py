"""Faults of the local backend, with real processes: a killed supervisor, a killed launcher,
a full or read-only job folder, a launch spec the supervisor cannot use, a killed job host
and one job's trouble among others of the same host."""

from __future__ import annotations

import errno
import fcntl
import marshal
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from torchx import specs
from torchx.schedulers.api import Stream
from torchx.specs import AppState

import nemo_run as run
from nemo_run.core import processes
from nemo_run.core.store import JobRecord, get_store
from nemo_run.exceptions import DiskError
from nemo_run.run.torchx_backend.schedulers import local, local_supervisor
from nemo_run.run.torchx_backend.schedulers.local import create_scheduler
from tests.helpers import run_python, wait_for
from tests.run.torchx_backend.schedulers.test_local import schedule_in_child, wait_terminal

BACKEND = "local_persistent"


def marked_processes(prefix: str) -> dict[int, str]:
    """Live processes whose environment carries `NEMORUN_APP_ID=<prefix>...`: pid -> app id."""
    wanted = f"{local.APP_ID_ENV}={prefix}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        stat = processes.proc_stat(int(entry))
        if stat is None or stat.state in ("Z", "X"):
            continue
        for item in env:
            if item.startswith(wanted):
                found[int(entry)] = item.split(b"=", 1)[1].decode()
    return found


def bash_app(name: str, script: str) -> specs.AppDef:
    return specs.AppDef(
        name=name, roles=[specs.Role(name="main", image="", entrypoint="bash", args=["-c", script])]
    )


# -- 1. signal dispositions ------------------------------------------------------------------
def test_jobs_start_with_no_ignored_or_blocked_signals():
    app_id = schedule_in_child("grep -E '^Sig(Ign|Blk)' /proc/self/status")
    sched = create_scheduler("t")
    assert wait_terminal(sched, app_id) == AppState.SUCCEEDED
    lines = list(sched.log_iter(app_id, "main", streams=Stream.STDOUT))
    masks = {name: int(value, 16) for name, value in (line.split(":") for line in lines)}
    # The C library reserves a few signal numbers (glibc: 32 and 33) that are not signals a
    # program can catch or set: posix_spawn leaves those ignored. Every other one is default.
    reserved = sum(1 << (n - 1) for n in range(1, 65) if n not in signal.valid_signals())
    assert masks["SigBlk"] == 0
    assert masks["SigIgn"] & ~reserved == 0, hex(masks["SigIgn"])


def test_sigpipe_ends_a_pipeline_promptly():
    started = time.monotonic()
    app_id = schedule_in_child('yes | head -1; echo "yes=${PIPESTATUS[0]}"')
    sched = create_scheduler("t")
    assert wait_terminal(sched, app_id) == AppState.SUCCEEDED
    assert time.monotonic() - started < 10
    assert list(sched.log_iter(app_id, "main", streams=Stream.STDOUT)) == ["y\n", "yes=141\n"]
    assert list(sched.log_iter(app_id, "main", streams=Stream.STDERR)) == []


# -- 2. kill -9 of the supervisor ------------------------------------------------------------
DESCRIBE_IN_CHILD = """
import sys
from nemo_run.run.torchx_backend.schedulers.local import create_scheduler
d = create_scheduler("observer").describe(sys.argv[1])
print(f"{d.state.name}|{d.msg}")
"""


def describe_in_child(app_id: str) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", DESCRIBE_IN_CHILD, app_id],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    state, msg = out.stdout.rstrip("\n").splitlines()[-1].split("|", 1)
    return state, msg


def numbered(lines: list[str]) -> list[int]:
    return [int(line.strip().split("-")[1]) for line in lines if line.startswith("line-")]


def test_killed_supervisor_job_keeps_running_logging_and_can_be_cancelled():
    app_id = schedule_in_child("for i in $(seq 1 150); do echo line-$i; sleep 0.1; done")
    sched = create_scheduler("t")
    record = get_store().get(BACKEND, app_id)
    supervisor = record.data["pid"]
    stdout = Path(record.log_dir, "main", "0", "stdout.log")
    tailed: list[str] = []
    tail_done = threading.Event()

    def tail() -> None:
        tailed.extend(create_scheduler("tail").log_iter(app_id, "main", should_tail=True))
        tail_done.set()

    threading.Thread(target=tail, daemon=True).start()
    wait_for(lambda: stdout.exists() and stdout.read_text().count("\n") >= 3, what="3 lines")
    os.kill(supervisor, signal.SIGKILL)
    wait_for(
        lambda: (
            not processes.is_same_process_alive(
                supervisor, record.data["start_ticks"], record.data["boot_id"]
            )
        ),
        what="the supervisor to die",
    )
    at_kill = stdout.read_text().count("\n")

    assert describe_in_child(app_id)[0] == "RUNNING"
    wanted = at_kill + 5
    wait_for(lambda: stdout.read_text().count("\n") >= wanted, what="lines after the kill")
    out = numbered(list(sched.log_iter(app_id, "main", streams=Stream.STDOUT)))
    combined = numbered(list(sched.log_iter(app_id, "main")))
    assert out[:wanted] == list(range(1, wanted + 1))
    assert combined[:wanted] == list(range(1, wanted + 1)), "combined stream lost lines"
    assert combined == list(range(1, len(combined) + 1)), "combined stream repeated lines"

    members = set(marked_processes(app_id))
    assert members, "the job's processes should still run"
    run_python(f"""
        from nemo_run.run.torchx_backend.schedulers.local import create_scheduler
        create_scheduler("canceller").cancel("{app_id}")
    """)
    assert not marked_processes(app_id), "a process of the cancelled job survived"
    for pid in members:
        stat = processes.proc_stat(pid)
        assert stat is None or stat.state == "Z"
    assert describe_in_child(app_id)[0] == "CANCELLED"
    assert tail_done.wait(20), "the tail did not end after the cancel"
    tail = numbered(tailed)
    assert tail == list(range(1, len(tail) + 1)) and len(tail) >= wanted, tail


def test_killed_supervisor_after_its_processes_ended_reads_failed_with_reason(tmp_path):
    gate = tmp_path / "gate"
    app_id = schedule_in_child(f'while [ ! -e "{gate}" ]; do sleep 0.02; done; echo done')
    record = get_store().get(BACKEND, app_id)
    supervisor = record.data["pid"]
    os.kill(supervisor, signal.SIGKILL)
    assert describe_in_child(app_id)[0] == "RUNNING"
    gate.touch()
    sched = create_scheduler("t")
    assert wait_terminal(sched, app_id) == AppState.FAILED
    assert sched.describe(app_id).msg == (
        f"the job's supervisor (pid {supervisor}) was killed; "
        "its processes ended but their exit codes are lost"
    )
    assert list(sched.log_iter(app_id, "main")) == ["done\n"]


# -- 3. kill -9 of the launcher --------------------------------------------------------------
LAUNCH_LOOP = """
import sys
from torchx import specs
import nemo_run as run
from nemo_run.run.torchx_backend.schedulers.local import create_scheduler
sched = create_scheduler("launcher")
print("ready", flush=True)
while True:
    app = specs.AppDef(name=sys.argv[1], roles=[specs.Role(name="main", image="", entrypoint="sleep", args=["60"])])
    sched.schedule(sched.submit_dryrun(app, run.LocalExecutor()))
"""


def test_launcher_killed_at_random_instants_never_leaves_an_unrecorded_job():
    rng = random.Random(20240610)
    name = f"kill-{os.getpid()}"
    try:
        for _ in range(15):
            proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCH_LOOP, name], stdout=subprocess.PIPE, text=True
            )
            assert proc.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.0, 0.12))
            proc.kill()
            proc.wait()
            proc.stdout.close()
        time.sleep(0.5)  # a supervisor whose launcher died mid-handover ends by itself
        live = marked_processes(f"{name}-")
        assert live, "the launcher should have started some jobs"
        sched = create_scheduler("observer")
        running = []
        for app_id in sorted(set(live.values())):
            assert get_store().get(BACKEND, app_id) is not None, f"{app_id} runs without a record"
            if specs.is_terminal(sched.describe(app_id).state):  # it was ending: nothing may run
                wait_for(lambda a=app_id: not marked_processes(a), timeout=5, what=f"{app_id} gone")
            else:
                running.append(app_id)
        assert running, "some jobs should have been running"
        listed = {r.app_id: r.state for r in create_scheduler("lister").list()}
        assert set(live.values()) <= set(listed)
        for app_id in running:
            sched.cancel(app_id)
            assert sched.describe(app_id).state == AppState.CANCELLED
        assert not marked_processes(f"{name}-"), "cancel left processes behind"
        for record in get_store().list(BACKEND):  # none stays pending for ever
            assert sched.describe(record.app_id).state != AppState.SUBMITTED
    finally:
        for pid in marked_processes(f"{name}-"):
            os.kill(pid, signal.SIGKILL)


PATCHED_LAUNCH = """
import os, sys, time
from torchx import specs
import nemo_run as run
from nemo_run.run.torchx_backend.schedulers import local
where, report, go = sys.argv[1], sys.argv[2], sys.argv[3]
cls = local.PersistentLocalScheduler
original = getattr(cls, where)

def stop_here(self, app_id, *args, **kwargs):
    result = original(self, app_id, *args, **kwargs) if where == "_put_intent" else None
    with open(report, "w") as fh:
        fh.write(app_id)
    if where == "_put_intent":  # the launcher lives on, before it starts anything
        deadline = time.monotonic() + 60
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
        if os.path.exists(go):
            return result  # and carries on with the launch
    os._exit(9)  # _launch_confirmed: after the supervisor started, before the record says so

setattr(cls, where, stop_here)
sched = local.create_scheduler("launcher")
app = specs.AppDef(name="patched", roles=[specs.Role(name="main", image="", entrypoint="sleep", args=["60"])])
sched.schedule(sched.submit_dryrun(app, run.LocalExecutor()))
"""


def launch_until(where: str, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """A launcher that stops in `where`: dies in `_launch_confirmed`; waits in `_put_intent`
    (after recording the intent) until `tmp_path/go` exists, then carries on."""
    report = tmp_path / "app_id"
    proc = subprocess.Popen(
        [sys.executable, "-c", PATCHED_LAUNCH, where, str(report), str(tmp_path / "go")]
    )
    app_id = wait_for(lambda: report.exists() and report.read_text(), timeout=10, what="app id")
    return proc, app_id


def test_launcher_that_dies_after_starting_the_supervisor_is_adopted(tmp_path):
    proc, app_id = launch_until("_launch_confirmed", tmp_path)
    assert proc.wait(10) == 9
    assert get_store().get(BACKEND, app_id).data["launch"] == "pending"
    live = wait_for(lambda: marked_processes(app_id), what="the host to start the job")
    assert describe_in_child(app_id)[0] == "RUNNING"
    record = get_store().get(BACKEND, app_id)
    assert record.data["launch"] == "done"
    host = record.data["pid"]  # the job host that took the job, as the status file names it
    assert record.data["host"] is True
    with open(Path(record.log_dir, "status"), "rb") as fh:
        assert fh.readline().split()[:2] == [b"running", str(host).encode()]
    assert processes.proc_stat(host).pgrp == host  # in a session of its own
    (group,) = {processes.proc_stat(p).pgrp for p in live}  # the job's group, not the host's
    assert group in live and group != host
    create_scheduler("c").cancel(app_id)
    assert not marked_processes(app_id)
    assert create_scheduler("c").describe(app_id).state == AppState.CANCELLED


def test_launcher_that_dies_before_starting_reads_never_started(tmp_path):
    proc, app_id = launch_until("_put_intent", tmp_path)
    try:
        sched = create_scheduler("observer")
        assert sched.describe(app_id).state == AppState.SUBMITTED  # its launcher still lives
        assert {r.app_id: r.state for r in sched.list()}[app_id] == AppState.SUBMITTED
    finally:
        proc.kill()
        proc.wait()
    state, msg = describe_in_child(app_id)
    assert (state, msg) == ("FAILED", "never started: its launcher exited before starting it")
    assert {r.app_id: r.state for r in sched.list()}[app_id] == AppState.FAILED


def test_cancel_while_the_launch_is_under_way_stops_the_job(tmp_path):
    proc, app_id = launch_until("_put_intent", tmp_path)
    try:
        sched = create_scheduler("canceller")
        assert sched.describe(app_id).state == AppState.SUBMITTED
        cancel = threading.Thread(target=sched.cancel, args=(app_id,))
        cancel.start()
        time.sleep(0.3)  # the cancel waits for the launch it cannot stop yet
        (tmp_path / "go").touch()
        cancel.join(30)
        assert not cancel.is_alive()
        assert proc.wait(30) == 0
        assert sched.describe(app_id).state == AppState.CANCELLED
        wait_for(
            lambda: not marked_processes(app_id), timeout=10, what="the job's processes to end"
        )
    finally:
        proc.kill()
        proc.wait()
        for pid in marked_processes(app_id):
            os.kill(pid, signal.SIGKILL)


def test_status_written_by_an_earlier_supervisor_is_still_read(tmp_path):
    log_dir = tmp_path / "job"
    (log_dir / "main" / "0").mkdir(parents=True)
    (log_dir / "status").write_text("ended_at 1700000000.5\nterminated 0\n")
    (log_dir / "main" / "0" / "exit_code").write_text("3 1\n")
    get_store().put(
        JobRecord(
            BACKEND,
            "old-1",
            state="RUNNING",
            log_dir=str(log_dir),
            data={
                "pid": 999999999,
                "start_ticks": 0,
                "boot_id": processes.boot_id(),
                "roles": [{"name": "main", "num_replicas": 1}],
            },
        )
    )
    desc = create_scheduler("t").describe("old-1")
    assert (desc.state, desc.msg, desc.num_restarts) == (
        AppState.FAILED,
        "main[0] exited with code 3",
        1,
    )
    assert get_store().get(BACKEND, "old-1").data["ended_at"] == 1700000000.5


# -- 4. a full or read-only job folder -------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root only), unmounted whatever the test did."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        deadline = time.monotonic() + 5
        while subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                subprocess.run(["umount", "-l", str(mnt)], check=True)
                break
            time.sleep(0.05)


def fill(folder: Path) -> None:
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def schedule_into(folder: Path, script: str) -> str:
    sched = create_scheduler("disk")
    executor = run.LocalExecutor(job_dir=str(folder))
    return sched.schedule(sched.submit_dryrun(bash_app("disk", script), executor))


def test_schedule_into_a_full_job_folder_is_a_clear_error_leaving_nothing(small_disk):
    fill(small_disk)
    with pytest.raises(DiskError, match="no space"):
        schedule_into(small_disk, "true")
    assert tree(small_disk) == ["filler"]
    assert get_store().list(BACKEND) == []


def test_schedule_into_a_read_only_job_folder_is_a_clear_error(small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(DiskError, match="read-only"):
        schedule_into(small_disk, "true")
    assert tree(small_disk) == []
    assert get_store().list(BACKEND) == []


def test_job_that_fills_the_disk_says_so(small_disk):
    app_id = schedule_into(small_disk, f'head -c 4M /dev/zero > "{small_disk}/filler"; echo after')
    sched = create_scheduler("t")
    wait_terminal(sched, app_id)
    desc = sched.describe(app_id)
    assert "no space left on device" in desc.msg.lower(), desc.msg
    assert not [name for name in tree(small_disk) if "tmp" in name]
    host = get_store().get(BACKEND, app_id).data["pid"]
    wait_for(lambda: not held_files(host, small_disk), what="the host to let go of the disk")


def held_files(pid: int, folder: Path) -> list[str]:
    """Files (and the working directory) of `pid` inside `folder`: what keeps it mounted."""
    paths = [f"/proc/{pid}/cwd"] + [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
    held = []
    for path in paths:
        try:
            target = os.readlink(path)
        except OSError:
            continue
        if target.startswith(f"{folder}/") or target == str(folder):
            held.append(target)
    return held


# -- 5. a launch spec the supervisor cannot use ----------------------------------------------
def test_replica_env_the_kernel_refuses_is_reported_not_a_crash():
    sched = create_scheduler("t")
    app = bash_app("badenv", "true")
    app.roles[0].env = {"NUL_VALUE": "a\0b"}
    app_id = sched.schedule(sched.submit_dryrun(app, run.LocalExecutor()))
    assert wait_terminal(sched, app_id) == AppState.FAILED
    msg = sched.describe(app_id).msg
    assert "main[0]" in msg and "embedded null byte" in msg, msg
    log_dir = get_store().get(BACKEND, app_id).log_dir
    assert "embedded null byte" in Path(log_dir, "supervisor.log").read_text()


@pytest.mark.parametrize(
    "spec, reason",
    [
        (b"not marshal at all", "launch spec"),
        (marshal.dumps({"retries": 0}), "log_dir"),
        (marshal.dumps({"log_dir": "/", "retries": 0, "replicas": [{"args": []}]}), "launch spec"),
        (b"", "never started: its launcher exited before handing over the job"),
    ],
    ids=["garbage", "no-log-dir", "bad-replica", "empty"],
)
def test_unusable_launch_spec_is_recorded_as_the_reason(tmp_path, spec, reason):
    log_dir = tmp_path / "job"
    log_dir.mkdir()
    with open(log_dir / "status", "wb") as status, open(log_dir / "supervisor.log", "wb") as err:
        subprocess.run(
            [sys.executable, "-S", "-I", local.SUPERVISOR],
            input=spec,
            stdout=status,
            stderr=err,
            cwd=log_dir,
            timeout=30,
        )
    assert "Traceback" not in (log_dir / "supervisor.log").read_text()
    assert reason in (log_dir / "supervisor.log").read_text()
    get_store().put(
        JobRecord(
            BACKEND,
            "bad-spec-1",
            state="RUNNING",
            log_dir=str(log_dir),
            data={
                "pid": 999999999,  # gone
                "start_ticks": 0,
                "boot_id": processes.boot_id(),
                "roles": [{"name": "main", "num_replicas": 1}],
            },
        )
    )
    desc = create_scheduler("t").describe("bad-spec-1")
    assert desc.state == AppState.FAILED
    assert reason in desc.msg, desc.msg


# -- 6. the job host ------------------------------------------------------------------------
def launch(sched, name: str, script: str, retries: int = 0) -> str:
    app = bash_app(name, script)
    app.roles[0].max_retries = retries
    return sched.schedule(sched.submit_dryrun(app, run.LocalExecutor()))


def gone(pid: int) -> bool:
    stat = processes.proc_stat(pid)
    return stat is None or stat.state == "Z"


def final_status(app_id: str) -> list[str]:
    """The lines of the job's status file once its supervisor wrote it whole."""
    path = Path(get_store().get(BACKEND, app_id).log_dir, "status")
    lines = wait_for(
        lambda: "end" in (text := path.read_text().split("\n")) and text,
        what=f"the final status of {app_id}",
    )
    return [line for line in lines[: lines.index("end")] if line]


def test_kill_9_of_the_host_with_two_jobs_running(tmp_path):
    sched = create_scheduler("t")
    gate = tmp_path / "gate"
    waiting = f'echo started; while [ ! -e "{gate}" ]; do sleep 0.02; done; echo waited'
    try:
        jobs = [launch(sched, f"victim{k}", waiting) for k in range(2)]
        host = local._HOST.pid
        assert {get_store().get(BACKEND, a).data["pid"] for a in jobs} == {host}
        for app_id in jobs:
            stdout = Path(get_store().get(BACKEND, app_id).log_dir, "main", "0", "stdout.log")
            wait_for(lambda p=stdout: p.exists() and p.read_text() == "started\n", what="a start")
        os.kill(host, signal.SIGKILL)
        wait_for(lambda: gone(host), what="the host to die")
        for app_id in jobs:  # both lost their supervisor; both still run
            state, msg = describe_in_child(app_id)
            assert (state, msg) == (
                "RUNNING",
                f"the job's supervisor (pid {host}) was killed; its processes still run",
            )
        later = launch(sched, "later", "echo after")  # the next launch gets a new host
        assert local._HOST.pid != host
        assert wait_terminal(sched, later) == AppState.SUCCEEDED
        assert list(sched.log_iter(later, "main")) == ["after\n"]
        sched.cancel(jobs[0])
        assert not marked_processes(jobs[0])
        assert sched.describe(jobs[0]).state == AppState.CANCELLED
        assert marked_processes(jobs[1]), "cancelling one job ended the other"
    finally:
        gate.touch()  # no job is left waiting, whatever failed
    assert wait_terminal(sched, jobs[1]) == AppState.FAILED
    assert sched.describe(jobs[1]).msg == (
        f"the job's supervisor (pid {host}) was killed; "
        "its processes ended but their exit codes are lost"
    )
    assert list(sched.log_iter(jobs[1], "main")) == ["started\n", "waited\n"]


def test_one_host_records_a_cancelled_a_retried_and_a_succeeding_job(tmp_path):
    sched = create_scheduler("t")
    counter = tmp_path / "attempts"
    ok = launch(sched, "ok", "echo fine")
    flaky = launch(sched, "flaky", f'echo x >> "{counter}"; echo try >&2; exit 7', retries=2)
    long = launch(sched, "long", "sleep 300", retries=3)  # a cancel must not restart it
    ids = (ok, flaky, long)
    assert {get_store().get(BACKEND, a).data["pid"] for a in ids} == {local._HOST.pid}
    wait_for(lambda: marked_processes(long), what="the long job to start")
    sched.cancel(long)
    assert not marked_processes(long)
    assert sched.describe(long).state == AppState.CANCELLED
    assert wait_terminal(sched, ok) == AppState.SUCCEEDED
    assert list(sched.log_iter(ok, "main")) == ["fine\n"]
    assert wait_terminal(sched, flaky) == AppState.FAILED
    desc = sched.describe(flaky)
    assert (desc.msg, desc.num_restarts) == ("main[0] exited with code 7", 2)
    assert counter.read_text() == "x\n" * 3
    assert list(sched.log_iter(flaky, "main")) == [
        "try\n",
        "nemo_run: exit code 7; restart 1/2\n",
        "try\n",
        "nemo_run: exit code 7; restart 2/2\n",
        "try\n",
    ]
    assert final_status(long)[:2] == ["terminated 1", f"exit 0 -{signal.SIGTERM} 0 main"]
    assert not marked_processes(long)  # and nothing restarted after the cancel


def test_one_jobs_trouble_stays_with_that_job(tmp_path):
    """A job that kills its own process group, one whose environment the kernel refuses and
    a request the host cannot use each fail alone: the host and its other job live on."""
    sched = create_scheduler("t")
    gate = tmp_path / "gate"
    try:
        bystander = launch(sched, "bystander", f'while [ ! -e "{gate}" ]; do sleep 0.02; done')
        host = local._HOST.pid
        killer = launch(sched, "killer", "kill -9 0; echo survived")
        assert wait_terminal(sched, killer) == AppState.FAILED
        assert sched.describe(killer).msg == "main[0] exited with code -9"
        app = bash_app("badenv", "true")
        app.roles[0].env = {"NUL_VALUE": "a\0b"}
        badenv = sched.schedule(sched.submit_dryrun(app, run.LocalExecutor()))
        assert wait_terminal(sched, badenv) == AppState.FAILED
        log_dir = tmp_path / "garbage"
        log_dir.mkdir()
        fd = os.open(log_dir / "status", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"pending\n".ljust(local_supervisor.status_size([]), b"\n"))
            body = b"not a launch spec"
            with local._HOST_LOCK:
                local._send_to_host(len(body).to_bytes(8, "little") + body, fd)
        finally:
            os.close(fd)
        status = wait_for(
            lambda: "\nend\n" in (t := (log_dir / "status").read_text()) and t, what="its status"
        )
        assert "reason unusable launch spec: ValueError" in status
        assert local._HOST.pid == host and not gone(host)
        assert marked_processes(bystander), "the other job was ended"
        assert sched.describe(bystander).state == AppState.RUNNING
    finally:
        gate.touch()
    assert wait_terminal(sched, bystander) == AppState.SUCCEEDED
    assert get_store().get(BACKEND, badenv).data["pid"] == host


def test_a_job_queued_at_a_host_that_dies_reads_never_started():
    sched = create_scheduler("t")
    launch(sched, "warm", "true")
    host = local._HOST.pid
    os.kill(host, signal.SIGSTOP)  # it takes no request: the next one waits in its socket
    try:
        app_id = launch(sched, "queued", "echo never")
    finally:
        os.kill(host, signal.SIGKILL)
    wait_for(lambda: gone(host), what="the host to die")
    assert describe_in_child(app_id) == (
        "FAILED",
        f"never started: its supervisor (pid {host}) ended before taking it",
    )
    assert not Path(get_store().get(BACKEND, app_id).log_dir, "main").exists()
    after = launch(sched, "after", "echo ok")
    assert wait_terminal(sched, after) == AppState.SUCCEEDED


def test_the_host_itself_ends_a_job_marked_cancelled():
    """A canceller that found none of the job's processes (one was just starting) still
    gets it ended: the host ends a marked job's group itself, and restarts nothing."""
    sched = create_scheduler("t")
    app_id = launch(sched, "marked", "sleep 300 & wait", retries=2)
    wait_for(lambda: len(marked_processes(app_id)) == 2, what="the job and its child")
    assert local._mark_cancelled(get_store().get(BACKEND, app_id).log_dir)  # and no signal
    assert final_status(app_id)[:2] == ["terminated 1", f"exit 0 -{signal.SIGTERM} 0 main"]
    wait_for(lambda: not marked_processes(app_id), what="its child too (same group)")


def test_cancel_before_the_host_takes_the_job_starts_nothing():
    sched = create_scheduler("t")
    launch(sched, "warm", "true")
    host = local._HOST.pid
    os.kill(host, signal.SIGSTOP)
    try:
        app_id = launch(sched, "late", "echo should-not-run", retries=2)
        sched.cancel(app_id)
        assert sched.describe(app_id).state == AppState.CANCELLED
    finally:
        os.kill(host, signal.SIGCONT)
    assert final_status(app_id)[:2] == ["terminated 1", f"exit 0 -{signal.SIGTERM} 0 main"]
    assert not Path(get_store().get(BACKEND, app_id).log_dir, "main").exists()
    assert not marked_processes(app_id)
    assert create_scheduler("o").describe(app_id).state == AppState.CANCELLED


def test_a_request_cut_short_starts_nothing(tmp_path):
    """The launcher died mid-request: the request holds the status file's lock while it
    waits in the socket; the host drops it, and the file reads pending, unlocked."""
    host = local._start_host()  # a host of our own, apart from this process's
    log_dir = tmp_path / "job"
    log_dir.mkdir()
    status = log_dir / "status"
    fd = os.open(status, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"pending\n".ljust(local_supervisor.status_size(["main"]), b"\n"))
    fcntl.flock(fd, fcntl.LOCK_EX)
    spec = {"log_dir": str(log_dir), "retries": 0, "path": os.environ["PATH"], "replicas": []}
    body = marshal.dumps(spec)
    try:
        socket.send_fds(host.sock, [len(body).to_bytes(8, "little") + body[:5]], [fd])
    finally:
        os.close(fd)
    assert processes.is_locked(str(status))  # held by the request on its way
    host.sock.close()  # the launcher is gone
    os.waitpid(host.pid, 0)
    assert not processes.is_locked(str(status))
    assert status.read_bytes().startswith(b"pending\n")
    assert sorted(os.listdir(log_dir)) == ["status"]


def test_a_host_that_had_its_share_is_replaced_and_ends_with_its_last_job(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "HOST_LAUNCHES", 2)
    with local._HOST_LOCK:  # start from a host of this test's own
        if local._HOST is not None:
            local._retire(local._HOST)
            local._HOST = None
    sched = create_scheduler("t")
    gate = tmp_path / "gate"
    try:
        first = [
            launch(sched, "slow", f'while [ ! -e "{gate}" ]; do sleep 0.02; done; echo slow'),
            launch(sched, "quick", "echo quick"),
        ]
        last = launch(sched, "next", "echo next")
        (old,) = {get_store().get(BACKEND, a).data["pid"] for a in first}
        new = get_store().get(BACKEND, last).data["pid"]
        assert new != old and new == local._HOST.pid
        assert wait_terminal(sched, last) == AppState.SUCCEEDED
        assert not gone(old), "a replaced host ended before its last job"
    finally:
        gate.touch()
    wait_for(lambda: gone(old), what="the replaced host to end after its last job")
    for app_id, line in zip(first + [last], ["slow\n", "quick\n", "next\n"], strict=True):
        assert wait_terminal(sched, app_id) == AppState.SUCCEEDED
        assert list(sched.log_iter(app_id, "main")) == [line]


def test_ctrl_c_right_after_the_hand_over_undoes_the_launch(monkeypatch):
    """The Ctrl+C arrives while the request is on its way (signals blocked): it is raised
    once the request is whole, and then the job is withdrawn: cancelled before its record
    and folder go, so nothing of it runs without a record."""
    sched = create_scheduler("t")
    send = local._send_to_host

    def send_then_ctrl_c(message: bytes, status_fd: int) -> dict:
        identity = send(message, status_fd)
        os.kill(os.getpid(), signal.SIGINT)  # pending until the launch unblocks signals
        return identity

    monkeypatch.setattr(local, "_send_to_host", send_then_ctrl_c)
    info = sched.submit_dryrun(bash_app("interrupted", "sleep 60"), run.LocalExecutor())
    app_id = sched.planned_app_id(info)
    with pytest.raises(KeyboardInterrupt):
        sched.schedule(info)
    assert get_store().get(BACKEND, app_id) is None
    wait_for(lambda: not marked_processes(app_id), timeout=10, what="nothing of it to run")
    monkeypatch.undo()
    after = launch(sched, "after", "echo ok")  # the host is unharmed
    assert wait_terminal(sched, after) == AppState.SUCCEEDED
    # the host takes requests in order: it has handled the interrupted one by now
    assert not marked_processes(app_id)


def test_ctrl_c_taken_by_another_thread_mid_hand_over_undoes_the_launch(monkeypatch):
    """In a launcher with other threads the kernel may give the Ctrl+C to one of them (only
    the launching thread blocks it); Python then raises it in the main thread at once, the
    request already sent. The launch is undone all the same: nothing runs without a record."""
    sched = create_scheduler("t")
    send = local._send_to_host
    idle = threading.Event()
    other = threading.Thread(target=idle.wait, daemon=True)
    other.start()

    def send_then_ctrl_c_elsewhere(message: bytes, status_fd: int) -> dict:
        identity = send(message, status_fd)
        assert other.ident is not None
        signal.pthread_kill(other.ident, signal.SIGINT)  # raised here, in this thread
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # Python code runs: the KeyboardInterrupt comes
            pass
        return identity

    monkeypatch.setattr(local, "_send_to_host", send_then_ctrl_c_elsewhere)
    info = sched.submit_dryrun(bash_app("elsewhere", "sleep 60"), run.LocalExecutor())
    app_id = sched.planned_app_id(info)
    try:
        with pytest.raises(KeyboardInterrupt):
            sched.schedule(info)
    finally:
        idle.set()
    assert get_store().get(BACKEND, app_id) is None
    monkeypatch.undo()
    after = launch(sched, "after", "echo ok")  # the host has taken the withdrawn job by now
    assert wait_terminal(sched, after) == AppState.SUCCEEDED
    wait_for(lambda: not marked_processes(app_id), timeout=10, what="nothing of it to run")


LAUNCH_AND_EXIT = """
from torchx import specs
import nemo_run as run
from nemo_run.run.torchx_backend.schedulers import local
sched = local.create_scheduler("launcher")
gate = GATE
scripts = ["true"] * 3 + [f'while [ ! -e "{gate}" ]; do sleep 0.02; done']
for k, script in enumerate(scripts):
    app = specs.AppDef(name=f"x{k}", roles=[specs.Role(name="main", image="", entrypoint="bash", args=["-c", script])])
    last = sched.schedule(sched.submit_dryrun(app, run.LocalExecutor()))
print(local._HOST.pid, last)
"""


def test_launcher_exit_ends_its_host_once_its_jobs_end(tmp_path):
    gate = tmp_path / "gate"
    try:
        words = run_python(LAUNCH_AND_EXIT.replace("GATE", repr(str(gate)))).stdout.split()
        host, app_id = int(words[0]), words[1]
        assert not gone(host), "the host ended before its last job"
        assert describe_in_child(app_id)[0] == "RUNNING"
    finally:
        gate.touch()
    wait_for(lambda: gone(host), timeout=10, what="the host to exit after its last job")
    assert create_scheduler("t").describe(app_id).state == AppState.SUCCEEDED
