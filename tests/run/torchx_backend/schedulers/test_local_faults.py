"""Faults of the local backend, with real processes: a killed supervisor, a killed launcher,
a full or read-only job folder, a launch spec the supervisor cannot use."""

from __future__ import annotations

import errno
import marshal
import os
import random
import signal
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
from nemo_run.run.torchx_backend.schedulers import local
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
    live = marked_processes(app_id)
    assert live
    assert describe_in_child(app_id)[0] == "RUNNING"
    record = get_store().get(BACKEND, app_id)
    assert record.data["launch"] == "done"
    supervisor = record.data["pid"]  # the leader of the job's group, holding its status file
    assert processes.proc_stat(supervisor).pgrp == supervisor
    assert all(processes.proc_stat(p).pgrp == supervisor for p in live)
    assert supervisor in processes.find_fd_holders(str(Path(record.log_dir, "status")), 1)
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
    pid = get_store().get(BACKEND, app_id).data["pid"]
    wait_for(lambda: processes.proc_stat(pid) is None or processes.proc_stat(pid).state == "Z")


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


# -- 6. the starter and its spares -------------------------------------------------------
def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != b"Z":
                found.append(int(entry))
    return found


def idle_spares() -> list[int]:
    """Spares of this process's starter that have no job yet (their stdout is /dev/null)."""
    spares = []
    for pid in children_of(local._STARTER.pid):
        try:
            if os.readlink(f"/proc/{pid}/fd/1") == os.devnull:
                spares.append(pid)
        except OSError:
            pass
    return spares


def launch(sched, name: str, script: str) -> str:
    return sched.schedule(sched.submit_dryrun(bash_app(name, script), run.LocalExecutor()))


def test_killed_starter_takes_no_job_with_it_and_is_replaced(tmp_path):
    sched = create_scheduler("t")
    gate = tmp_path / "gate"
    waiting = f'while [ ! -e "{gate}" ]; do sleep 0.02; done; echo waited'
    try:
        early = [launch(sched, f"early{k}", waiting) for k in range(3)]
        starter = local._STARTER.pid
        os.kill(starter, signal.SIGKILL)
        later = [launch(sched, f"later{k}", f"echo {k}") for k in range(5)]
        assert local._STARTER.pid != starter
        assert describe_in_child(early[0])[0] == "RUNNING"
    finally:
        gate.touch()  # no job is left waiting, whatever failed
    for app_id in early:
        assert wait_terminal(sched, app_id) == AppState.SUCCEEDED
        assert list(sched.log_iter(app_id, "main")) == ["waited\n"]
    for k, app_id in enumerate(later):
        assert wait_terminal(sched, app_id) == AppState.SUCCEEDED
        assert list(sched.log_iter(app_id, "main")) == [f"{k}\n"]


def test_spares_that_died_before_their_job_are_skipped():
    sched = create_scheduler("t")
    for k in range(3):
        launch(sched, f"warm{k}", "true")
    spares = wait_for(idle_spares, what="spares ready for the next launches")
    for pid in spares:
        os.kill(pid, signal.SIGKILL)
    wait_for(  # a kill takes effect a moment later: a job handed over before is a killed job's
        lambda: all((s := processes.proc_stat(p)) is None or s.state == "Z" for p in spares),
        what="the spares to die",
    )
    app_id = launch(sched, "after", "echo ok")
    assert get_store().get(BACKEND, app_id).data["pid"] not in spares
    assert wait_terminal(sched, app_id) == AppState.SUCCEEDED
    assert list(sched.log_iter(app_id, "main")) == ["ok\n"]


LAUNCH_AND_EXIT = """
import os
from torchx import specs
import nemo_run as run
from nemo_run.run.torchx_backend.schedulers import local
sched = local.create_scheduler("launcher")
for k in range(4):
    app = specs.AppDef(name=f"x{k}", roles=[specs.Role(name="main", image="", entrypoint="true")])
    sched.schedule(sched.submit_dryrun(app, run.LocalExecutor()))
starter = local._STARTER.pid
kids = []
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                if int(fh.read().rsplit(b")", 1)[1].split()[1]) == starter:
                    kids.append(entry)
        except OSError:
            pass
print(starter, *kids)
"""


def test_launcher_exit_ends_its_starter_and_unused_spares():
    pids = [int(p) for p in run_python(LAUNCH_AND_EXIT).stdout.split()]
    assert len(pids) > 1, "the starter should have had spares (or supervisors) running"

    def gone() -> bool:
        stats = [processes.proc_stat(p) for p in pids]
        return all(s is None or s.state == "Z" for s in stats)

    wait_for(gone, timeout=10, what="the starter and its spares to exit")
