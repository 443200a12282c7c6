"""Tunnels (issue 14): `LocalTunnel` on this machine, `SSHTunnel` against the Slurm test stack's
loopback sshd (skipped, with the reason, when the stack is not up)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import nemo_run as run
from nemo_run.core.tunnel import client
from nemo_run.core.tunnel.callback import Callback
from nemo_run.core.tunnel.client import LocalTunnel, PackagingJob, Result, SSHTunnel, Tunnel
from nemo_run.core.tunnel.rsync import rsync
from nemo_run.exceptions import (
    BackendError,
    ConfigError,
    TunnelCommandError,
    TunnelConnectionError,
)
from tests.helpers import wait_for
from tests.slurm_stack import SlurmStack, slurm_stack

# -- the 0.11.1 surface -------------------------------------------------------------------------


def test_fields_and_defaults_are_0_11_1s():
    names = [f.name for f in dataclasses.fields(SSHTunnel)]
    assert names[:8] == [
        "job_dir",
        "host",
        "user",
        "packaging_jobs",
        "port",
        "identity",
        "shell",
        "pre_command",
    ]
    ssh = SSHTunnel(host="h", user="u", job_dir="/j")
    assert (ssh.port, ssh.identity, ssh.shell, ssh.pre_command) == (None, None, None, None)
    assert ssh.packaging_jobs == {} and ssh.key == "u@h" and ssh.connect_timeout == 15
    local = LocalTunnel(job_dir="/j")
    assert (local.host, local.user, local.key) == ("localhost", "", "@localhost")
    with pytest.raises(TypeError):
        LocalTunnel(job_dir="/j", host="other")
    assert issubclass(SSHTunnel, Tunnel) and issubclass(LocalTunnel, run.ConfigurableMixin)
    assert run.LocalTunnel is LocalTunnel and run.SSHTunnel is SSHTunnel
    assert client.Callback is Callback


def test_to_config_builds_an_equal_tunnel():
    import fiddle as fdl

    tunnel = SSHTunnel(host="h", user="u", job_dir="/j", port=2200, pre_command="module load x")
    assert fdl.build(tunnel.to_config()) == tunnel


def test_set_job_dir_and_packaging_job(nemorun_home):
    ssh = SSHTunnel(host="h", user="u", job_dir="/jobs")
    ssh._set_job_dir("exp_1")
    assert ssh.job_dir == "/jobs/exp_1"
    local = LocalTunnel(job_dir="")
    local._set_job_dir("exp_1")
    assert local.job_dir == os.path.join(str(nemorun_home), "experiments", "exp_1")
    job = PackagingJob(symlink=True, src_path="/a/code", dst_path="/b/code")
    assert job.symlink_cmd() == "ln -s /a/code /b/code"


def test_result_has_invokes_names():
    ok, bad = Result("true", "out", "err", 0), Result("false", "", "", 1)
    assert (ok.ok, ok.failed, ok.return_code, bool(ok)) == (True, False, 0, True)
    assert (bad.ok, bad.failed, bad.exited, bool(bad)) == (False, True, 1, False)


# -- LocalTunnel ----------------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> LocalTunnel:
    return LocalTunnel(job_dir=str(tmp_path / "jobs"))


def test_local_run_echo(local):
    result = local.run("echo hi; echo oops >&2")
    assert (result.stdout, result.stderr, result.exited, result.ok) == ("hi\n", "oops\n", 0, True)
    assert result.command == "echo hi; echo oops >&2"


def test_local_nonzero_exit_raises_with_output_unless_warn(local):
    with pytest.raises(TunnelCommandError) as caught:
        local.run("echo partial; echo broken >&2; exit 3")
    error = caught.value
    assert isinstance(error, BackendError)
    assert (error.result.stdout, error.result.stderr, error.result.exited) == (
        "partial\n",
        "broken\n",
        3,
    )
    assert "exited 3" in str(error) and "broken" in str(error)
    result = local.run("exit 4", warn=True)
    assert (result.exited, result.failed) == (4, True)


def test_local_input_env_and_hide(local, capsys):
    assert local.run("cat", input="text in").stdout == "text in"
    assert local.run("wc -c", input=b"\x00\x01\x02").stdout.strip() == "3"
    assert local.run("echo $GREETING", env={"GREETING": "hello"}).stdout == "hello\n"
    local.run("echo shown; echo shown-err >&2", hide=False)
    local.run("echo quiet")
    captured = capsys.readouterr()
    assert captured.out == "shown\n" and captured.err == "shown-err\n"
    with pytest.raises(ConfigError, match="hide"):
        local.run("true", hide="sideways")
    with pytest.raises(TypeError, match="bogus"):
        local.run("true", bogus=1)


def test_local_timeout_kills_the_command_and_its_children(local, tmp_path):
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(TunnelCommandError, match="timed out"):
        local.run(f"sleep 60 & echo $! > {pid_file}; wait", timeout=0.5)
    assert time.monotonic() - started < 5
    pid = int(pid_file.read_text())
    wait_for(lambda: not _alive(pid), timeout=5, what="the timed-out child to end")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_local_stream_yields_lines_as_printed(local, tmp_path):
    gate = tmp_path / "gate"
    lines = local.stream(f"echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second")
    assert next(lines) == "first"  # arrives while the command still waits for the gate
    gate.touch()
    assert list(lines) == ["second"]


def test_local_stream_close_kills_the_command(local):
    lines = local.stream("sh -c 'echo $$; exec sleep 60'")
    pid = int(next(lines))
    assert _alive(pid)
    lines.close()
    wait_for(lambda: not _alive(pid), timeout=5, what="the streamed command to end")


def test_local_stream_nonzero_exit_raises_unless_warn(local):
    with pytest.raises(TunnelCommandError) as caught:
        list(local.stream("echo last words; exit 2"))
    assert caught.value.result.exited == 2 and "last words" in caught.value.result.stdout
    assert list(local.stream("echo x; exit 2", warn=True)) == ["x"]


def test_local_put_get_setup(local, tmp_path):
    source = tmp_path / "src.txt"
    source.write_text("payload")
    local.setup()
    assert os.path.isdir(local.job_dir)
    local.put(str(source), os.path.join(local.job_dir, "copy.txt"))
    local.get(os.path.join(local.job_dir, "copy.txt"), str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "payload"
    folder = tmp_path / "tree"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "f").write_text("deep")
    local.put(str(folder), os.path.join(local.job_dir, "tree"))
    assert Path(local.job_dir, "tree", "sub", "f").read_text() == "deep"
    with pytest.raises(ConfigError, match="local_path"):
        local.put(str(tmp_path / "missing"), local.job_dir)
    with pytest.raises(TunnelCommandError):
        local.get(str(tmp_path / "missing"), str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="job_dir"):
        LocalTunnel(job_dir="").setup()


def test_keep_alive_runs_callbacks_until_an_error(local):
    calls: list[str] = []

    class Recorder(Callback):
        def __init__(self, name: str, fail_at: int = 0) -> None:
            self.name, self.fail_at, self.count = name, fail_at, 0

        def on_start(self) -> None:
            calls.append(f"{self.name}.start")

        def on_interval(self) -> None:
            self.count += 1
            calls.append(f"{self.name}.interval")
            if self.count == self.fail_at:
                raise RuntimeError("boom")

        def on_stop(self) -> None:
            calls.append(f"{self.name}.stop")

        def on_error(self, error: Exception) -> None:
            calls.append(f"{self.name}.error:{error}")

    first, second = Recorder("a", fail_at=2), Recorder("b")
    assert local.keep_alive(first, second, interval=0) is None
    assert first.tunnel is local and second.tunnel is local
    assert calls == [
        "a.start",
        "b.start",
        "a.interval",
        "b.interval",
        "a.interval",
        "a.error:boom",
        "b.error:boom",
        "a.stop",
        "b.stop",
    ]


# -- SSHTunnel without a host -------------------------------------------------------------------


def test_ssh_fields_are_checked_at_the_first_call_not_at_construction(tmp_path):
    tunnel = SSHTunnel(host="", user="u", job_dir="/j")  # 0.11.1 lets you fill in later
    with pytest.raises(ConfigError, match="host"):
        tunnel.run("true")
    with pytest.raises(ConfigError, match="host"):
        SSHTunnel(host="-oProxyCommand=x", user="u", job_dir="/j").run("true")
    with pytest.raises(ConfigError, match="identity"):
        SSHTunnel(host="h", user="u", job_dir="/j", identity=str(tmp_path / "nokey")).connect()
    with pytest.raises(ConfigError, match="port"):
        SSHTunnel(host="h", user="u", job_dir="/j", port=70000).run("true")
    with pytest.raises(ConfigError, match="connect_timeout"):
        SSHTunnel(host="h", user="u", job_dir="/j", connect_timeout=0).run("true")
    with pytest.raises(ConfigError, match="job_dir"):
        SSHTunnel(host="h", user="u", job_dir="").setup()


# -- SSHTunnel against the loopback sshd ---------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> SlurmStack:
    """The test stack, its sshd answering to the stack's key; else skip with the reason."""
    found = slurm_stack()
    try:
        probe = subprocess.run(
            found.ssh_argv("true"), capture_output=True, stdin=subprocess.DEVNULL, timeout=20
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"the stack's sshd at {found.ssh_host}:{found.ssh_port} does not answer")
    if probe.returncode != 0:
        pytest.skip(f"ssh to the stack's sshd fails: {probe.stderr.decode().strip()}")
    return found


@pytest.fixture(scope="module")
def ssh_home(stack) -> Iterator[Path]:
    """A short private folder for sockets and known_hosts, and an ssh config with an alias
    for the stack's login node, so the tests touch neither ~/.ssh nor the shared sockets."""
    folder = Path(tempfile.mkdtemp(prefix="nrssh", dir="/tmp"))
    os.chmod(folder, 0o700)
    (folder / "config").write_text(
        f"Host stack-login\n"
        f"  HostName {stack.ssh_host}\n"
        f"  Port {stack.ssh_port}\n"
        f"  User {stack.ssh_user}\n"
        f"  IdentityFile {stack.ssh_key}\n"
        f"Host *\n"
        f"  UserKnownHostsFile {folder}/known_hosts\n"
    )
    yield folder
    for socket_path in folder.glob("cm*/*"):
        subprocess.run(
            ["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "x"],
            capture_output=True,
            timeout=10,
        )
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def control(ssh_home, monkeypatch) -> Path:
    monkeypatch.setenv(client.CONTROL_DIR_ENV, str(ssh_home / "cm"))
    return ssh_home / "cm"


@pytest.fixture
def ssh(ssh_home, control) -> SSHTunnel:
    """The stack's login node by its alias in our ssh config (IdentityFile, Port, User)."""
    return SSHTunnel(
        host="stack-login",
        user="",
        job_dir="/tmp/nemorun-tunnel-test",
        config_file=str(ssh_home / "config"),
    )


def test_ssh_alias_run_echo(ssh):
    result = ssh.run("echo hi; echo oops >&2; whoami")
    assert result.stdout.splitlines() == ["hi", "skyuser"] and result.stderr == "oops\n"


def test_ssh_fields_override_the_config(stack, ssh_home, control):
    tunnel = SSHTunnel(
        host=stack.ssh_host,
        user=stack.ssh_user,
        port=stack.ssh_port,
        identity=str(stack.ssh_key),
        job_dir="/tmp",
        config_file=str(ssh_home / "config"),
    )
    assert tunnel.run("whoami").stdout == f"{stack.ssh_user}\n"


def test_ssh_nonzero_exit_raises_with_output_unless_warn(ssh):
    with pytest.raises(TunnelCommandError) as caught:
        ssh.run("echo partial; echo broken >&2; exit 3")
    result = caught.value.result
    assert (result.stdout, result.stderr, result.exited) == ("partial\n", "broken\n", 3)
    assert ssh.run("exit 4", warn=True).exited == 4
    # a command's own 255, over a live connection, is the command's exit, not ssh's
    assert ssh.run("exit 255", warn=True).exited == 255


def test_ssh_input_env_pre_command_and_shell(ssh):
    assert ssh.run("cat", input="script body\n").stdout == "script body\n"
    assert ssh.run("echo $GREETING", env={"GREETING": "hi there"}).stdout == "hi there\n"
    ssh.pre_command = "export FROM_PRE=yes"
    ssh.shell = "sh"
    assert ssh.run("echo $FROM_PRE $0").stdout == "yes sh\n"


def test_ssh_stream_yields_lines_as_printed(ssh):
    gate = f"/tmp/nemorun-tunnel-gate-{os.getpid()}-{time.monotonic_ns()}"
    lines = ssh.stream(f"echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second")
    try:
        assert next(lines) == "first"  # before the gate exists
        ssh.run(f"touch {gate}")
        assert list(lines) == ["second"]
    finally:
        ssh.run(f"rm -f {gate}")


def test_ssh_stream_close_kills_the_remote_command(ssh):
    lines = ssh.stream("sh -c 'echo $$; exec sleep 60'")
    pid = int(next(lines))
    assert ssh.run(f"kill -0 {pid}", warn=True).ok
    lines.close()
    wait_for(lambda: not ssh.run(f"kill -0 {pid}", warn=True).ok, timeout=10, what="remote end")


def test_ssh_timeout_kills_the_remote_command(ssh):
    marker = f"/tmp/nemorun-tunnel-pid-{os.getpid()}-{time.monotonic_ns()}"
    started = time.monotonic()
    with pytest.raises(TunnelCommandError, match="timed out"):
        ssh.run(f"sh -c 'echo $$ > {marker}; exec sleep 60'", timeout=1)
    assert time.monotonic() - started < 8
    pid = ssh.run(f"cat {marker}; rm -f {marker}").stdout.strip()
    wait_for(lambda: not ssh.run(f"kill -0 {pid}", warn=True).ok, timeout=10, what="remote end")


def test_ssh_put_get_round_trip(ssh, tmp_path):
    remote = f"/tmp/nemorun-tunnel-files-{os.getpid()}-{time.monotonic_ns()}"
    try:
        ssh.job_dir = remote
        ssh.setup()
        source = tmp_path / "up.txt"
        source.write_text("payload ✓")
        ssh.put(str(source), f"{remote}/up.txt")
        ssh.get(f"{remote}/up.txt", str(tmp_path / "down.txt"))
        assert (tmp_path / "down.txt").read_text() == "payload ✓"
        tree = tmp_path / "tree"
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "f").write_text("deep")
        ssh.put(str(tree), f"{remote}/tree")
        assert ssh.run(f"cat {remote}/tree/sub/f").stdout == "deep"
        with pytest.raises(TunnelCommandError):
            ssh.get(f"{remote}/missing", str(tmp_path / "nothing"))
    finally:
        ssh.run(f"rm -rf {remote}")


def test_ssh_calls_share_one_connection(ssh, control):
    ports = {ssh.run("echo $SSH_CONNECTION").stdout.split()[1] for _ in range(5)}
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(ssh.run("echo $SSH_CONNECTION").stdout))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    ports |= {line.split()[1] for line in results}
    assert len(ports) == 1, f"calls used {len(ports)} TCP connections"
    sockets = list(control.iterdir())
    assert len(sockets) == 1 and sockets[0].is_socket()
    assert os.stat(control).st_mode & 0o777 == 0o700
    assert ssh._master_alive()
    # a new tunnel object (or a later process) for the same host reuses the connection
    again = dataclasses.replace(ssh)
    assert again.run("echo $SSH_CONNECTION").stdout.split()[1] in ports
    ssh.cleanup()
    wait_for(lambda: not ssh._master_alive(), timeout=10, what="the connection to stop")
    assert ssh.run("echo $SSH_CONNECTION").stdout.split()[1] not in ports  # opens a new one


def test_ssh_wrong_key_fails_fast_with_the_fix(stack, ssh_home, monkeypatch, tmp_path):
    # its own socket folder: a live shared connection to the same user@host:port would be
    # reused whatever the key (as OpenSSH does), and this test wants a fresh login
    monkeypatch.setenv(client.CONTROL_DIR_ENV, str(ssh_home / "cm-wrong-key"))
    wrong = tmp_path / "wrong_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True, timeout=30
    )
    tunnel = SSHTunnel(
        host=stack.ssh_host,
        user=stack.ssh_user,
        port=stack.ssh_port,
        identity=str(wrong),
        job_dir="/tmp",
        config_file=str(ssh_home / "config"),
    )
    started = time.monotonic()
    with pytest.raises(TunnelConnectionError) as caught:
        tunnel.run("true")
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert f"{stack.ssh_user}@{stack.ssh_host}" in message
    assert "identity" in message and "ssh-agent" in message and "Permission denied" in message


def test_ssh_closed_port_fails_fast(ssh_home, control):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tunnel = SSHTunnel(
        host="127.0.0.1",
        user="nobody",
        port=port,
        job_dir="/tmp",
        config_file=str(ssh_home / "config"),
    )
    with pytest.raises(TunnelConnectionError, match="(?i)refused"):
        tunnel.run("true")


def test_ssh_silent_host_times_out_within_connect_timeout(ssh_home, control):
    with socket.socket() as silent:  # accepts TCP (the backlog) but never says hello
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        tunnel = SSHTunnel(
            host="127.0.0.1",
            user="nobody",
            port=silent.getsockname()[1],
            job_dir="/tmp",
            connect_timeout=1,
            config_file=str(ssh_home / "config"),
        )
        started = time.monotonic()
        with pytest.raises(TunnelConnectionError, match="connect_timeout"):
            tunnel.run("true")
        assert time.monotonic() - started < 2 * 1 + 5


# -- rsync (0.11.1's nemo_run.core.tunnel.rsync) ------------------------------------------------
def _tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    (root / "skip.log").write_text("x")


def test_rsync_through_a_local_tunnel_with_exclude_and_delete(local, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    dst.mkdir()
    (dst / "stale.txt").write_text("old")
    rsync(local, f"{src}/", str(dst), exclude=["*.log"], delete=True)
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*")) == [
        "a.txt",
        "sub",
        "sub/b.txt",
    ]


def test_rsync_over_ssh_rides_the_shared_connection(ssh, tmp_path):
    src = tmp_path / "src"
    _tree(src)
    target = f"/tmp/nemorun-rsync-test-{os.getpid()}"
    rsync(ssh, f"{src}/", target, exclude="*.log")
    try:
        listing = ssh.run(f"cd {target} && find . -type f | sort && cat sub/b.txt").stdout
        assert listing.split() == ["./a.txt", "./sub/b.txt", "b"]
        with pytest.raises(TunnelCommandError, match="rsync .* failed"):
            rsync(ssh, str(tmp_path / "missing"), target)
    finally:
        ssh.run(f"rm -rf {target}")
