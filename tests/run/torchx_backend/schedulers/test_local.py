"""The local backend across process boundaries: schedule in one process, observe from others."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import signal
import threading

import pytest
from torchx import specs
from torchx.schedulers.api import Stream
from torchx.schedulers.local_scheduler import LocalScheduler
from torchx.specs import AppState

import nemo_run as run
from nemo_run.core import processes
from nemo_run.core.store import JobRecord, get_store, store_path
from nemo_run.exceptions import ConfigError, UnknownJobError
from nemo_run.run.torchx_backend.schedulers import local
from nemo_run.run.torchx_backend.schedulers.local import PersistentLocalScheduler, create_scheduler
from tests.helpers import run_python, wait_for

SCHEDULE_IN_CHILD = """
import sys
from torchx import specs
import nemo_run as run
from nemo_run.run.torchx_backend.schedulers.local import create_scheduler
script, replicas, retries = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
app = specs.AppDef(name="job", roles=[specs.Role(name="main", image="", entrypoint="bash",
                   args=["-c", script], num_replicas=replicas, max_retries=retries)])
sched = create_scheduler("test")
print(sched.schedule(sched.submit_dryrun(app, run.LocalExecutor())))
"""


def schedule_in_child(script: str, replicas: int = 1, retries: int = 0) -> str:
    """Schedule a bash job from a separate Python process that exits right away."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", SCHEDULE_IN_CHILD, script, str(replicas), str(retries)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip().splitlines()[-1]


def gated(tmp_path, body: str) -> tuple[str, str]:
    """A script that waits for a gate file before running `body` (no timing guesses)."""
    gate = tmp_path / "gate"
    return str(gate), f'while [ ! -e "{gate}" ]; do sleep 0.02; done; {body}'


def wait_terminal(sched: PersistentLocalScheduler, app_id: str) -> specs.AppState:
    desc = wait_for(
        lambda: (d := sched.describe(app_id)) and specs.is_terminal(d.state) and d,
        what=f"{app_id} to finish",
    )
    return desc.state


def test_seed_signatures():
    params = list(inspect.signature(PersistentLocalScheduler.__init__).parameters)
    assert params == [
        "self",
        "session_name",
        "image_provider_class",
        "cache_size",
        "extra_paths",
        "experiment",
    ]
    sig = inspect.signature(create_scheduler)
    assert list(sig.parameters) == ["session_name", "cache_size", "extra_paths", "kwargs"]
    assert sig.parameters["cache_size"].default == 100
    assert PersistentLocalScheduler.__mro__[1].__name__ == "SchedulerMixin"
    assert issubclass(PersistentLocalScheduler, LocalScheduler)


def test_job_outlives_launcher_and_reports_success(tmp_path):
    gate, script = gated(tmp_path, "echo to-stdout; echo to-stderr >&2")
    app_id = schedule_in_child(script)
    sched = create_scheduler("other")
    assert sched.describe(app_id).state == AppState.RUNNING  # launcher exited, job still waiting
    open(gate, "w").close()
    assert wait_terminal(sched, app_id) == AppState.SUCCEEDED
    desc = sched.describe(app_id)
    assert [r.name for r in desc.roles] == ["main"]
    assert desc.roles_statuses[0].replicas[0].state == AppState.SUCCEEDED
    assert list(sched.log_iter(app_id, "main", streams=Stream.STDOUT)) == ["to-stdout\n"]
    assert list(sched.log_iter(app_id, "main", streams=Stream.STDERR)) == ["to-stderr\n"]
    assert sorted(sched.log_iter(app_id, "main")) == ["to-stderr\n", "to-stdout\n"]


def test_failure_exit_code_recorded_and_seen_from_new_process(tmp_path):
    app_id = schedule_in_child("echo boom >&2; exit 3")
    child = run_python(f"""
        import time
        from torchx.specs import is_terminal
        from nemo_run.run.torchx_backend.schedulers.local import create_scheduler
        s = create_scheduler("x")
        deadline = time.monotonic() + 20
        while not is_terminal(s.describe("{app_id}").state) and time.monotonic() < deadline:
            time.sleep(0.02)
        d = s.describe("{app_id}")
        print(d.state.name, "|", d.msg)
    """)
    state, msg = child.stdout.strip().split(" | ")
    assert state == "FAILED"
    assert "exited with code 3" in msg
    assert get_store().get("local_persistent", app_id).state == "FAILED"


def test_tail_from_another_process_ends_when_job_ends(tmp_path):
    gate, script = gated(tmp_path, "for i in 1 2 3; do echo line-$i; done; echo skip-me; exit 0")
    app_id = schedule_in_child(f"echo first; {script}")
    sched = create_scheduler("reader")
    lines: list[str] = []
    done = threading.Event()

    def reader() -> None:
        lines.extend(sched.log_iter(app_id, "main", should_tail=True, regex=r"line-|first"))
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    wait_for(lambda: lines == ["first\n"], what="the first line while the job still runs")
    assert not done.is_set()
    open(gate, "w").close()
    assert done.wait(20), "log_iter did not end after the job ended"
    assert lines == ["first\n", "line-1\n", "line-2\n", "line-3\n"]


def test_tailing_a_finished_job_returns_at_once():
    app_id = schedule_in_child("echo only")
    sched = create_scheduler("r")
    wait_terminal(sched, app_id)
    assert list(sched.log_iter(app_id, "main", should_tail=True)) == ["only\n"]


def test_cancel_from_another_process_kills_whole_group(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    app_id = schedule_in_child(f'sleep 300 & echo $! > "{pidfile}"; wait')
    grandchild = int(
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="pid file")
    )
    assert processes.proc_stat(grandchild) is not None
    run_python(f"""
        from nemo_run.run.torchx_backend.schedulers.local import create_scheduler
        create_scheduler("canceller").cancel("{app_id}")
    """)
    sched = create_scheduler("observer")
    assert sched.describe(app_id).state == AppState.CANCELLED
    stat = processes.proc_stat(grandchild)
    assert stat is None or stat.state == "Z", "a process of the cancelled job survived"
    sched.cancel(app_id)  # idempotent
    assert sched.describe(app_id).state == AppState.CANCELLED


def test_cancel_after_success_keeps_success():
    app_id = schedule_in_child("true")
    sched = create_scheduler("s")
    assert wait_terminal(sched, app_id) == AppState.SUCCEEDED
    sched.cancel(app_id)
    assert sched.describe(app_id).state == AppState.SUCCEEDED


def test_reused_pid_is_not_mistaken_for_the_job(tmp_path):
    me = processes.proc_stat(os.getpid())
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    get_store().put(
        JobRecord(
            "local_persistent",
            "ghost-1",
            state="RUNNING",
            log_dir=str(log_dir),
            data={
                "pid": os.getpid(),
                "start_ticks": me.start_ticks - 1,
                "boot_id": processes.boot_id(),
                "roles": [{"name": "main", "num_replicas": 1}],
            },
        )
    )
    desc = create_scheduler("s").describe("ghost-1")
    assert desc.state == AppState.FAILED
    assert "exit codes are lost" in desc.msg
    create_scheduler("s").cancel("ghost-1")  # must not signal this (unrelated) process
    assert processes.proc_stat(os.getpid()) is not None


def test_supervisor_killed_reads_as_failed(tmp_path):
    gate, script = gated(tmp_path, "true")
    app_id = schedule_in_child(script)  # its launcher exited: the host supervises this job only
    record = get_store().get("local_persistent", app_id)
    job = wait_for(lambda: marked(app_id), what="the job's processes")
    os.kill(record.data["pid"], signal.SIGKILL)  # the host...
    os.killpg(processes.proc_stat(job[0]).pgrp, signal.SIGKILL)  # ...and the job's group
    sched = create_scheduler("s")
    assert wait_terminal(sched, app_id) == AppState.FAILED
    assert "exit codes are lost" in sched.describe(app_id).msg


def test_retries_restart_a_failed_replica(tmp_path):
    counter = tmp_path / "attempts"
    app_id = schedule_in_child(
        f'echo x >> "{counter}"; [ $(wc -l < "{counter}") -ge 2 ]', retries=2
    )
    sched = create_scheduler("s")
    assert wait_terminal(sched, app_id) == AppState.SUCCEEDED
    assert counter.read_text().count("x") == 2
    assert sched.describe(app_id).num_restarts == 1


def test_replicas_each_get_their_rank_and_any_failure_fails_the_job():
    executor = run.LocalExecutor(ntasks_per_node=3)
    result = run.run(
        run.Script(inline="echo rank=$RANK of $WORLD_SIZE"), executor=executor, name="ranks"
    )
    sched = create_scheduler("s")
    _, _, app_id = specs.parse_app_handle(result.handle)
    seen = sorted(line for k in range(3) for line in sched.log_iter(app_id, "ranks", k))
    assert seen == ["rank=0 of 3\n", "rank=1 of 3\n", "rank=2 of 3\n"]
    with pytest.raises(run.JobFailedError, match="FAILED"):
        run.run(run.Script(inline='[ "$RANK" != 1 ]'), executor=executor, name="one-fails")


def test_list_returns_every_local_job():
    ids = {schedule_in_child("true") for _ in range(3)}
    sched = create_scheduler("s")
    for app_id in ids:
        wait_terminal(sched, app_id)
    listed = {r.app_id: r for r in create_scheduler("fresh").list()}
    assert ids <= set(listed)
    assert all(listed[i].state == AppState.SUCCEEDED for i in ids)
    assert listed[next(iter(ids))].app_handle.startswith("local_persistent://")


def test_unknown_app_ids():
    sched = create_scheduler("s")
    assert sched.describe("nope-123") is None
    with pytest.raises(UnknownJobError, match="nope-123"):
        list(sched.log_iter("nope-123", "main"))
    with pytest.raises(UnknownJobError, match="nope-123"):
        sched.cancel("nope-123")


def test_bad_role_or_replica_in_log_iter():
    app_id = schedule_in_child("true")
    sched = create_scheduler("s")
    with pytest.raises(ConfigError, match="its roles: \\['main'\\]"):
        sched.log_iter(app_id, "trainer")
    with pytest.raises(ConfigError, match="replicas 0..0"):
        sched.log_iter(app_id, "main", k=4)


def test_dryrun_checks_executor_type_applies_pre_proc_and_has_no_side_effects(nemorun_home):
    from nemo_run.core.execution.base import Executor

    class Other(Executor):
        pass

    app = specs.AppDef(name="d", roles=[specs.Role(name="main", image="", entrypoint="true")])
    sched = create_scheduler("s")
    with pytest.raises(
        ConfigError, match="PersistentLocalScheduler needs a LocalExecutor, got Other"
    ):
        sched.submit_dryrun(app, Other())
    seen = []
    app.roles[0].pre_proc = lambda backend, info: seen.append(backend) or info
    info = sched.submit_dryrun(app, run.LocalExecutor())
    assert seen == ["local_persistent"]
    assert info._app is app
    assert not os.path.exists(store_path()) and not os.path.exists(info.request.log_dir)


def test_missing_entrypoint_is_a_config_error_before_anything_starts(nemorun_home):
    app = specs.AppDef(
        name="d", roles=[specs.Role(name="main", image="", entrypoint="no-such-program-xyz")]
    )
    with pytest.raises(ConfigError, match="no-such-program-xyz"):
        create_scheduler("s").submit_dryrun(app, run.LocalExecutor())
    assert list(nemorun_home.iterdir()) == []


def test_local_job_dirs_names_the_store_in_use(tmp_path):
    run.set_nemorun_home(tmp_path / "a")
    assert local.LOCAL_JOB_DIRS == str(tmp_path / "a" / "jobs.db")
    run.set_nemorun_home(tmp_path / "b")
    assert local.LOCAL_JOB_DIRS == str(tmp_path / "b" / "jobs.db")


def test_no_env_values_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_API_TOKEN", "tok-should-not-persist-4711")
    result = run.run(
        run.Script(inline="true"),
        executor=run.LocalExecutor(env_vars={"HF_TOKEN": "hf-secret-0815"}),
    )
    assert result.ok
    home = os.environ["NEMORUN_HOME"]
    for folder, _, files in os.walk(home):
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                blob = fh.read()
            assert b"tok-should-not-persist-4711" not in blob, name
            assert b"hf-secret-0815" not in blob, name
    record = get_store().list()[0]
    assert json.dumps(record.data).find("HF_TOKEN") == -1


# -- the job host ---------------------------------------------------------------------------
def stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, session, ..."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        return fh.read().rsplit(b")", 1)[1].decode().split()


def marked(app_id: str) -> list[int]:
    """Live processes carrying the job's marker."""
    return processes.find_env_marker(f"{local.APP_ID_ENV}={app_id}".encode())


def replicas(app_id: str, host: int) -> list[int]:
    """The job's replica processes: those the host started (not the children they start)."""
    found = []
    for pid in marked(app_id):
        try:
            if int(stat_fields(pid)[1]) == host:
                found.append(pid)
        except OSError:  # a child that just ended
            pass
    return found


def bash_app(name: str, script: str) -> specs.AppDef:
    role = specs.Role(name="main", image="", entrypoint="bash", args=["-c", script])
    return specs.AppDef(name=name, roles=[role])


def test_the_dry_run_starts_the_host_a_bare_interpreter(monkeypatch):
    monkeypatch.setattr(local, "_HOST", None)  # as in a process that never launched
    monkeypatch.setattr(local, "_RETIRED", [])
    sched = create_scheduler("s")
    sched.submit_dryrun(bash_app("dry", "true"), run.LocalExecutor())
    host = local._HOST
    try:

        def command_line() -> list[bytes]:  # empty for an instant: the exec is just done
            with open(f"/proc/{host.pid}/cmdline", "rb") as fh:
                return fh.read().split(b"\0")

        argv = wait_for(lambda: len(command_line()) > 4 and command_line(), what="its argv")
        assert argv[1:3] == [b"-S", b"-I"] and b"local_supervisor.serve" in argv[4]
        assert int(stat_fields(host.pid)[3]) == host.pid  # a session of its own
        app_id = sched.schedule(
            sched.submit_dryrun(bash_app("first", "echo 1"), run.LocalExecutor())
        )
        assert (
            local._HOST is host
            and get_store().get("local_persistent", app_id).data["pid"] == host.pid
        )
        assert wait_terminal(sched, app_id) == AppState.SUCCEEDED
    finally:
        host.sock.close()  # it ends: nothing more will come
        os.waitpid(host.pid, 0)


def inherited_descriptors(pid: int) -> list[str]:
    """What the descriptors of `pid` above 2 point at (those that vanish while read are left
    out: the process may be exec'ing)."""
    found: list[str] = []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # it ended (a `sleep` of the gate loop)
        return found
    for name in names:
        if int(name) > 2:
            try:
                found.append(os.readlink(f"/proc/{pid}/fd/{name}"))
            except OSError:
                pass
    return found


def test_a_launchers_jobs_share_one_host_each_in_a_group_of_its_own(tmp_path):
    sched = create_scheduler("s")
    gate, script = gated(tmp_path, "echo done")
    role = specs.Role(name="main", image="", entrypoint="bash", args=["-c", script])
    try:
        ids = [
            sched.schedule(sched.submit_dryrun(bash_app(f"j{k}", script), run.LocalExecutor()))
            for k in range(2)
        ]
        two = specs.AppDef(name="two", roles=[dataclasses.replace(role, num_replicas=2)])
        ids.append(sched.schedule(sched.submit_dryrun(two, run.LocalExecutor())))
        host = local._HOST.pid
        _, _, host_group, host_session = stat_fields(host)[:4]
        assert int(host_group) == host and int(host_session) == host  # its own session
        assert int(host_session) != int(stat_fields(os.getpid())[3])
        assert not processes.has_env_marker(host, local.APP_ID_ENV.encode())
        groups = set()
        for app_id in ids:
            record = get_store().get("local_persistent", app_id)
            assert record.data["pid"] == host and record.data["host"] is True
            count = 2 if app_id == ids[-1] else 1
            job = wait_for(
                lambda a=app_id, c=count: len(replicas(a, host)) == c and replicas(a, host)
            )
            (group,) = {int(stat_fields(p)[2]) for p in job}  # one group for the whole job
            assert group in job and group != host and group not in groups
            assert all(int(stat_fields(p)[3]) == host for p in job)  # in the host's session
            for pid in job:  # none of the host's descriptors (its socket, other jobs' files);
                # a `sleep` the gate loop is starting may hold a library its loader reads
                held = inherited_descriptors(pid)
                assert not [t for t in held if t.startswith("socket:") or t.endswith("/status")]
            groups.add(group)
            with open(os.path.join(record.log_dir, "status"), "rb") as fh:
                assert fh.readline().split()[:2] == [b"running", str(host).encode()]
    finally:
        open(gate, "w").close()  # no job is left waiting, whatever failed
    for app_id in ids:
        assert wait_terminal(sched, app_id) == AppState.SUCCEEDED
        assert list(sched.log_iter(app_id, "main")) == ["done\n"]
    assert processes.proc_stat(host) is not None  # it outlives its jobs while we live


def test_a_quiet_job_leaves_only_its_logs_and_status():
    """No supervisor.log unless there is something to say; no offsets file without output;
    no exit code file (the status holds every exit code)."""
    sched = create_scheduler("s")
    quiet = sched.schedule(sched.submit_dryrun(bash_app("quiet", "true"), run.LocalExecutor()))
    loud = sched.schedule(sched.submit_dryrun(bash_app("loud", "echo ok"), run.LocalExecutor()))
    for app_id in (quiet, loud):
        assert wait_terminal(sched, app_id) == AppState.SUCCEEDED
    quiet_dir = get_store().get("local_persistent", quiet).log_dir
    files = sorted(
        os.path.relpath(os.path.join(d, f), quiet_dir)
        for d, _, fs in os.walk(quiet_dir)
        for f in fs
    )
    assert files == ["main/0/combined.log", "main/0/stderr.log", "main/0/stdout.log", "status"]
    loud_dir = get_store().get("local_persistent", loud).log_dir
    assert os.path.exists(os.path.join(loud_dir, "main", "0", "combined.offsets"))
    assert list(sched.log_iter(loud, "main")) == ["ok\n"]
    assert list(sched.log_iter(quiet, "main")) == []


def test_exec_supervisor_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv(local.SUPERVISOR_MODE_ENV, "exec")
    sched = create_scheduler("s")
    gate, script = gated(tmp_path, "echo hi; exit 4")
    try:
        app_id = sched.schedule(sched.submit_dryrun(bash_app("ex", script), run.LocalExecutor()))
        pid = get_store().get("local_persistent", app_id).data["pid"]
        marker = f"{local.APP_ID_ENV}={app_id}".encode()  # an exec'd one carries it (once its
        wait_for(lambda: processes.has_env_marker(pid, marker))  # exec is done: right after)
    finally:
        open(gate, "w").close()
    assert wait_terminal(sched, app_id) == AppState.FAILED
    assert "exited with code 4" in sched.describe(app_id).msg
    assert list(sched.log_iter(app_id, "main")) == ["hi\n"]


def test_unknown_supervisor_mode_fails_the_dry_run(monkeypatch):
    monkeypatch.setenv(local.SUPERVISOR_MODE_ENV, "spawn")
    sched = create_scheduler("s")
    with pytest.raises(ConfigError, match=local.SUPERVISOR_MODE_ENV):
        sched.submit_dryrun(bash_app("bad", "true"), run.LocalExecutor())
    assert get_store().list() == []


def test_launches_while_other_threads_use_the_store(tmp_path):
    """Launches from a thread that is not the main one while others hold the job store's
    sqlite connections: the host is started with posix_spawn, nothing of this process runs
    in it, so no lock another thread holds can block a launch."""
    stop = threading.Event()

    def busy(k: int) -> None:
        store, i = get_store(), 0
        while not stop.is_set():
            store.put(JobRecord("local_persistent", f"busy-{k}-{i % 3}", state="SUCCEEDED"))
            i += 1

    workers = [threading.Thread(target=busy, args=(k,), daemon=True) for k in range(2)]
    for worker in workers:
        worker.start()
    ids: list[str] = []
    sched = create_scheduler("s")

    def launch() -> None:
        for k in range(4):
            app = bash_app(f"t{k}", f"echo {k}")
            ids.append(sched.schedule(sched.submit_dryrun(app, run.LocalExecutor())))

    try:
        launcher = threading.Thread(target=launch)  # not the main thread either
        launcher.start()
        launcher.join(60)
        assert not launcher.is_alive()
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
    assert len(ids) == 4
    for k, app_id in enumerate(ids):
        assert wait_terminal(sched, app_id) == AppState.SUCCEEDED
        assert list(sched.log_iter(app_id, "main")) == [f"{k}\n"]


FORKED_LAUNCHER = """
import os
from torchx import specs
import nemo_run as run
from nemo_run.run.torchx_backend.schedulers import local
sched = local.create_scheduler("parent")

def launch(name):
    app = specs.AppDef(name=name, roles=[specs.Role(name="main", image="", entrypoint="true")])
    return sched.schedule(sched.submit_dryrun(app, run.LocalExecutor()))

ids = [launch("p1"), launch("p2")]
parent_host = local._HOST.pid
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    child_id = launch("c1")
    os.write(w, f"{child_id} {local._HOST.pid}".encode())
    os._exit(0)
os.close(w)
child_id, child_host = os.read(r, 200).decode().split()
os.waitpid(pid, 0)
ids += [child_id, launch("p3")]
print(*ids, parent_host, child_host, local._HOST.pid)
"""


def test_a_forked_launcher_gets_its_own_host():
    words = run_python(FORKED_LAUNCHER).stdout.split()
    ids, (parent_host, child_host, parent_after) = words[:4], words[4:]
    assert child_host != parent_host == parent_after
    sched = create_scheduler("s")
    for app_id in ids:
        assert wait_terminal(sched, app_id) == AppState.SUCCEEDED
