"""Tunnels: run commands and copy files where Slurm jobs are submitted (0.11.1's
`nemo_run.core.tunnel.client`: `Tunnel`, `LocalTunnel`, `SSHTunnel`, `PackagingJob`, `Callback`).

`LocalTunnel` runs on this machine (a login node); `SSHTunnel` reaches a login node with the
system OpenSSH client (`ssh`, `scp`), not fabric/paramiko as 0.11.1 does, because:

- it is the user's own ssh: ~/.ssh/config is read exactly as a shell `ssh` reads it (Host
  aliases, Match, ProxyJump/ProxyCommand, IdentityFile, certificates, the agent, known_hosts);
  paramiko implements only part of it;
- connection sharing (ControlMaster, a 0700 socket folder, ControlPersist): one TCP
  connection and one login per host, reused by every call of this process and by later
  processes for a few minutes; commands cost ~10 ms over it;
- `BatchMode=yes`: it never prompts for a password or passphrase; a login that needs one
  fails at once with a message that names host, user and the fix;
- no new dependency: OpenSSH is on every machine that reaches a cluster.

The shared connection is keyed by user, host and port (OpenSSH's `%C`), so a tunnel naming
another key for the same user@host:port uses the connection already logged in, as a shell
`ssh` with the same ControlPath would.

Exit code 255 is ssh's own failure, but a remote command may exit 255 too: a 255 counts as a
connection problem (`TunnelConnectionError`) only when the shared connection is gone.

Commands without stdin input run under a small bash watchdog on the host: when our ssh client
ends (a timeout, a closed `stream`), the remote command's process group is killed, so nothing
lingers. Commands are logged at DEBUG level with secret-looking values masked; pass secrets
as `input=` (stdin), never on the command line, which the host's `ps` shows.
"""

from __future__ import annotations

import codecs
import collections
import logging
import math
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from nemo_run.config import get_nemorun_home
from nemo_run.core.config_mixin import ConfigurableMixin
from nemo_run.core.redact import redact_text
from nemo_run.core.tunnel.callback import Callback
from nemo_run.exceptions import ConfigError, TunnelCommandError, TunnelConnectionError

__all__ = [
    "Callback",
    "LocalTunnel",
    "PackagingJob",
    "Result",
    "SSHTunnel",
    "Tunnel",
]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
CONTROL_PERSIST_S = 600  # the shared connection outlives the last call by ten minutes
SERVER_ALIVE_INTERVAL_S = 15  # a dead connection is noticed within interval x count
SERVER_ALIVE_COUNT = 4
CONTROL_DIR_ENV = "NEMORUN_SSH_CONTROL_DIR"
SSH_FAILED = 255
STOP_GRACE_S = 2.0
CHECK_TIMEOUT_S = 10.0
_ERROR_TAIL_LINES = 20
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Runs COMMAND in its own process group; a watcher reading our stdin kills that group when
# the stdin ends (our ssh client closed it or died), then the script exits with its status.
_WATCHDOG = (
    "set -m; ( COMMAND\n) </dev/null & p=$!; "
    "{ cat >/dev/null 2>&1; kill -TERM -$p 2>/dev/null; } & w=$!; set +m; "
    "wait $p; rc=$?; kill -TERM -$w 2>/dev/null; exit $rc"
)


class Result:
    """What a command did, under the attribute names of invoke's `Result` that 0.11.1
    callers read (`stdout`, `stderr`, `exited`, `return_code`, `ok`, `failed`, `command`)."""

    def __init__(self, command: str, stdout: str = "", stderr: str = "", exited: int = 0) -> None:
        self.command = command
        self.stdout = stdout
        self.stderr = stderr
        self.exited = exited

    @property
    def return_code(self) -> int:
        return self.exited

    @property
    def ok(self) -> bool:
        return self.exited == 0

    @property
    def failed(self) -> bool:
        return not self.ok

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"<Result cmd={redact_text(self.command)!r} exited={self.exited}>"


@dataclass(kw_only=True)
class PackagingJob(ConfigurableMixin):
    """Code shipped to a tunnel's job folder, linked from `src_path` to `dst_path`."""

    symlink: bool = False
    src_path: str | None = None
    dst_path: str | None = None

    def symlink_cmd(self) -> str:
        """The shell command that makes the link (paths quoted when they need it)."""
        return f"ln -s {shlex.quote(str(self.src_path))} {shlex.quote(str(self.dst_path))}"


# -- processes ---------------------------------------------------------------------------------
@dataclass
class _Spawn:
    """How to start one command: argv, environment, and whether stdin stays open (the
    remote watchdog's lifeline) and the process gets its own group (local commands)."""

    argv: list[str]
    env: dict[str, str] | None = None
    keep_stdin_open: bool = False
    new_session: bool = False


class _Pump(threading.Thread):
    """Reads one pipe to its end, keeping the text and echoing it as it arrives."""

    def __init__(self, pipe: IO[bytes], echo: IO[str] | None) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.echo = echo
        self.parts: list[str] = []

    def run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        read = getattr(self.pipe, "read1", self.pipe.read)
        try:
            while chunk := read(65536):
                self._add(decoder.decode(chunk))
            self._add(decoder.decode(b"", final=True))
        finally:
            self.pipe.close()

    def _add(self, text: str) -> None:
        if not text:
            return
        self.parts.append(text)
        if self.echo is not None:
            self.echo.write(text)
            self.echo.flush()

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class _Outcome:
    exited: int
    stdout: str
    stderr: str
    timed_out: bool = False


def _hidden(hide: object) -> frozenset[str]:
    """invoke's `hide` values: True/'both', False/None, 'out'/'stdout', 'err'/'stderr'."""
    if hide is True or hide == "both":
        return frozenset({"stdout", "stderr"})
    if hide is False or hide is None:
        return frozenset()
    if hide in ("out", "stdout"):
        return frozenset({"stdout"})
    if hide in ("err", "stderr"):
        return frozenset({"stderr"})
    raise ConfigError(f"hide={hide!r} is not valid: give True, False, 'out', 'err' or 'both'")


def _feed(pipe: IO[bytes], data: bytes) -> None:
    """Writes stdin and closes it; a command that exits without reading all is fine."""
    try:
        pipe.write(data)
    except (BrokenPipeError, ValueError):
        pass
    finally:
        try:
            pipe.close()
        except BrokenPipeError:
            pass


def _stop(proc: subprocess.Popen[bytes], spawn: _Spawn) -> None:
    """Ends a command: closing stdin first lets the remote watchdog kill the remote side;
    then TERM (the whole group for local commands), then KILL after a grace period."""
    if proc.stdin is not None and not proc.stdin.closed:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
    try:
        proc.wait(STOP_GRACE_S if spawn.keep_stdin_open else 0.0)
        if not spawn.new_session:
            return
    except subprocess.TimeoutExpired:
        pass
    _signal(proc, spawn, signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        _signal(proc, spawn, signal.SIGKILL)
        proc.wait()


def _signal(proc: subprocess.Popen[bytes], spawn: _Spawn, sig: signal.Signals) -> None:
    try:
        if spawn.new_session:
            os.killpg(proc.pid, sig)
        elif proc.poll() is None:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pipe(pipe: IO[bytes] | None) -> IO[bytes]:
    """A pipe asked for with PIPE (typed as optional by subprocess)."""
    if pipe is None:
        raise RuntimeError("subprocess gave no pipe where PIPE was asked for")
    return pipe


def _execute(
    spawn: _Spawn, *, data: bytes | None, timeout: float | None, hidden: frozenset[str]
) -> _Outcome:
    """Runs one command to its end (or `timeout`), collecting and optionally echoing its
    output as it comes; stops it on any interruption, Ctrl-C included."""
    logger.debug("running %s", redact_text(shlex.join(spawn.argv)))
    stdin = subprocess.PIPE if data is not None or spawn.keep_stdin_open else subprocess.DEVNULL
    proc = subprocess.Popen(
        spawn.argv,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=spawn.env,
        start_new_session=spawn.new_session,
    )
    out = _Pump(_pipe(proc.stdout), None if "stdout" in hidden else sys.stdout)
    err = _Pump(_pipe(proc.stderr), None if "stderr" in hidden else sys.stderr)
    out.start()
    err.start()
    if data is not None and proc.stdin is not None:
        threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True).start()
    timed_out = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _stop(proc, spawn)
    except BaseException:
        _stop(proc, spawn)
        raise
    finally:
        if spawn.keep_stdin_open and proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
    grace = STOP_GRACE_S if timed_out else None
    out.join(grace)
    err.join(grace)
    return _Outcome(proc.returncode, out.text, err.text, timed_out)


def _run_options(kwargs: dict[str, Any]) -> tuple[dict[str, str], bool]:
    """The invoke keyword arguments 0.11.1 callers pass (`env`, `echo`, `pty=False`)."""
    env = kwargs.pop("env", None) or {}
    echo = bool(kwargs.pop("echo", False))
    if kwargs.pop("pty", False):
        raise ConfigError("pty=True is not supported by tunnels: run the command without a pty")
    kwargs.pop("in_stream", None)
    if kwargs:
        raise TypeError(f"run() got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
    if not isinstance(env, Mapping):
        raise ConfigError(f"env={env!r} is not valid: give a dict of variable names to values")
    for name in env:
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ConfigError(f"env name {name!r} is not a valid variable name: use [A-Za-z_0-9]")
    return {k: str(v) for k, v in env.items()}, echo


def _tail(text: str, lines: int = _ERROR_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# -- tunnels -----------------------------------------------------------------------------------
@dataclass(kw_only=True)
class Tunnel(ABC, ConfigurableMixin):
    """Where Slurm commands run and job files live: `job_dir` on `host` as `user`."""

    job_dir: str
    host: str
    user: str
    packaging_jobs: dict[str, PackagingJob] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """`user@host`: experiments share one tunnel per key."""
        return f"{self.user}@{self.host}"

    def _set_job_dir(self, experiment_id: str) -> None:
        """Moves `job_dir` into the experiment's own sub-folder."""
        self.job_dir = os.path.join(self.job_dir, experiment_id)

    def run(
        self,
        command: str,
        hide: bool | str = True,
        warn: bool = False,
        *,
        input: str | bytes | None = None,  # noqa: A002 - invoke's and subprocess's name
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Result:
        """Runs `command` through a shell and returns its `Result`; a non-zero exit raises
        `TunnelCommandError` unless `warn`. `hide=False` echoes output as it comes; `input`
        is the command's stdin (text or bytes); `timeout` (seconds) stops it and raises."""
        hidden = _hidden(hide)
        env, echo = _run_options(dict(kwargs))
        if timeout is not None and not timeout > 0:
            raise ConfigError(f"timeout={timeout!r} is not valid: give seconds > 0, or None")
        self._prepare()
        if echo:
            print(redact_text(command), flush=True)
        data = input.encode() if isinstance(input, str) else input
        spawn = self._spawn(command, env=env, uses_stdin=data is not None)
        outcome = _execute(spawn, data=data, timeout=timeout, hidden=hidden)
        result = Result(command, outcome.stdout, outcome.stderr, outcome.exited)
        if outcome.timed_out:
            raise TunnelCommandError(
                f"command timed out after {timeout} s on {self._where()}: {redact_text(command)}",
                result,
            )
        self._check_connection(result.exited, result.stderr)
        if result.failed and not warn:
            raise TunnelCommandError(self._failure_message(result), result)
        return result

    def stream(self, command: str, *, warn: bool = False) -> Iterator[str]:
        """Runs `command` and yields its output lines (stdout and stderr, without the line
        end) as they are printed. Ends with the command (a non-zero exit then raises
        `TunnelCommandError` unless `warn`); closing the iterator kills the command."""
        self._prepare()
        return self._lines(command, self._spawn(command, env={}, uses_stdin=False), warn)

    def _lines(self, command: str, spawn: _Spawn, warn: bool) -> Iterator[str]:
        logger.debug("streaming %s", redact_text(shlex.join(spawn.argv)))
        proc = subprocess.Popen(
            spawn.argv,
            stdin=subprocess.PIPE if spawn.keep_stdin_open else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=spawn.env,
            start_new_session=spawn.new_session,
        )
        stdout = _pipe(proc.stdout)
        tail: collections.deque[str] = collections.deque(maxlen=_ERROR_TAIL_LINES)
        try:
            for raw in iter(stdout.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                tail.append(line)
                yield line
            exited = proc.wait()
        finally:
            _stop(proc, spawn)
            stdout.close()
        output = "\n".join(tail)
        self._check_connection(exited, output)
        if exited != 0 and not warn:
            result = Result(command, output, "", exited)
            raise TunnelCommandError(self._failure_message(result), result)

    def _failure_message(self, result: Result) -> str:
        detail = _tail(result.stderr) or _tail(result.stdout)
        said = f"\n{redact_text(detail)}" if detail else ""
        return (
            f"command exited {result.exited} on {self._where()}: "
            f"{redact_text(result.command)}{said}"
        )

    def _where(self) -> str:
        return self.key

    def _prepare(self) -> None:
        """Checks the fields and opens what the call needs; raises before anything runs."""

    def _check_connection(self, exited: int, stderr: str) -> None:
        """Raises `TunnelConnectionError` when an exit code was the tunnel's, not the
        command's."""

    @abstractmethod
    def _spawn(self, command: str, *, env: dict[str, str], uses_stdin: bool) -> _Spawn: ...

    @abstractmethod
    def put(self, local_path: str, remote_path: str) -> None:
        """Copies a local file or folder to `remote_path`."""

    @abstractmethod
    def get(self, remote_path: str, local_path: str) -> None:
        """Copies a file or folder at `remote_path` to `local_path`."""

    @abstractmethod
    def connect(self) -> None:
        """Opens the connection (once; later calls reuse it)."""

    @abstractmethod
    def cleanup(self) -> None:
        """Releases the connection."""

    def setup(self) -> None:
        """Creates the job dir if it doesn't exist."""
        if not self.job_dir:
            raise ConfigError(
                f"{type(self).__name__}.job_dir is empty: set it to the folder where job files go"
            )
        self.run(f"mkdir -p {_path_arg(self.job_dir)}")

    def keep_alive(self, *callbacks: Callback, interval: int = 1) -> None:
        """Keep the tunnel connection alive: calls each callback's `on_interval` every
        `interval` seconds until Ctrl-C or an error (passed to every `on_error`), then
        every `on_stop`."""
        for callback in callbacks:
            callback.setup(self)
            callback.on_start()
        try:
            while True:
                for callback in callbacks:
                    callback.on_interval()
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
        except Exception as error:  # noqa: BLE001 - handed to the callbacks, as 0.11.1 does
            for callback in callbacks:
                callback.on_error(error)
        finally:
            for callback in callbacks:
                callback.on_stop()


def _path_arg(path: str) -> str:
    """A path for a shell command line: quoted, a leading `~/` left for the shell to expand."""
    if path == "~":
        return path
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


@dataclass(kw_only=True)
class LocalTunnel(Tunnel):
    """
    Local Tunnel for supported executors. Executes all commands locally.
    Currently only supports SlurmExecutor.
    Use if you are launching from login/other node inside the cluster.
    """

    host: str = field(default="localhost", init=False)
    user: str = field(default="", init=False)

    def _set_job_dir(self, experiment_id: str) -> None:
        """An empty `job_dir` means the experiment's folder under the nemo_run home."""
        base = self.job_dir or os.path.join(get_nemorun_home(), "experiments")
        self.job_dir = os.path.join(base, experiment_id)

    def _spawn(self, command: str, *, env: dict[str, str], uses_stdin: bool) -> _Spawn:
        shell = "/bin/bash" if os.path.exists("/bin/bash") else (shutil.which("bash") or "/bin/sh")
        return _Spawn(
            [shell, "-c", command], env={**os.environ, **env} if env else None, new_session=True
        )

    def put(self, local_path: str, remote_path: str) -> None:
        if not os.path.exists(local_path):
            raise ConfigError(f"put(local_path={local_path!r}): no such file or folder")
        _copy(local_path, remote_path)

    def get(self, remote_path: str, local_path: str) -> None:
        try:
            _copy(remote_path, local_path)
        except OSError as error:
            result = Result(f"copy {remote_path} {local_path}", "", str(error), 1)
            raise TunnelCommandError(f"get({remote_path!r}) failed: {error}", result) from error

    def _where(self) -> str:
        return "localhost"

    def connect(self) -> None:
        """Nothing to open on this machine."""

    def cleanup(self) -> None:
        """Nothing to release on this machine."""

    def setup(self) -> None:
        """Creates the job dir if it doesn't exist."""
        if not self.job_dir:
            raise ConfigError("LocalTunnel.job_dir is empty: set it to the folder for job files")
        os.makedirs(os.path.expanduser(self.job_dir), exist_ok=True)


def _copy(src: str, dst: str) -> None:
    """cp -r semantics: a folder's tree, or a file into `dst` (a file, or a folder)."""
    if os.path.isdir(src):
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
        return
    if os.path.exists(dst) and os.path.samefile(src, dst):
        return
    shutil.copy2(src, dst)


# -- SSH ---------------------------------------------------------------------------------------
_CONNECTED: set[tuple[str, ...]] = set()  # connections this process has opened (and checked)
_LOCKS: dict[tuple[str, ...], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_EFFECTIVE: dict[tuple[str, ...], dict[str, str]] = {}  # `ssh -G` answers, per option set


def _lock(signature: tuple[str, ...]) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(signature, threading.Lock())


def control_dir() -> str:
    """The 0700 folder of shared-connection sockets, kept short (a socket path holds ~104
    bytes): $NEMORUN_SSH_CONTROL_DIR, else $XDG_RUNTIME_DIR/nemorun-ssh, else
    /tmp/nemorun-ssh-<uid>. Refuses a folder someone else owns or can enter."""
    path = os.environ.get(CONTROL_DIR_ENV)
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if not path:
        if runtime and len(runtime) <= 40 and os.path.isdir(runtime):
            path = os.path.join(runtime, "nemorun-ssh")
        else:
            path = f"/tmp/nemorun-ssh-{os.getuid()}"  # noqa: S108 - checked below
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as error:
        raise TunnelConnectionError(
            f"cannot create the ssh socket folder {path}: {error.strerror}; set "
            f"{CONTROL_DIR_ENV} to a short folder you own"
        ) from error
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise TunnelConnectionError(
            f"the ssh socket folder {path} is not a folder owned by you: remove it, or set "
            f"{CONTROL_DIR_ENV} to a short folder you own"
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


@dataclass(kw_only=True)
class SSHTunnel(Tunnel):
    """
    SSH Tunnel for supported executors.
    Currently only supports SlurmExecutor.

    Uses the system OpenSSH client and ~/.ssh/config: `host` may be a Host alias there, and
    `user`, `port`, `identity` override what it says when set. Keys come from `identity`,
    the config's IdentityFile or ssh-agent; a password is never asked for.

    Beyond 0.11.1: `connect_timeout` (seconds to reach the host and finish the handshake)
    and `config_file` (an ssh config file read instead of ~/.ssh/config, as `ssh -F`).

    Examples
    --------
    .. code-block:: python

        ssh_tunnel = SSHTunnel(
            host=os.environ["SSH_HOST"],
            user=os.environ["SSH_USER"],
            job_dir=os.environ["REMOTE_JOBDIR"],
        )

        another_ssh_tunnel = SSHTunnel(
            host=os.environ["ANOTHER_SSH_HOST"],
            user=os.environ["ANOTHER_SSH_USER"],
            job_dir=os.environ["ANOTHER_REMOTE_JOBDIR"],
            identity="path_to_private_key"
        )
    """

    port: int | None = None
    identity: str | None = None
    shell: str | None = None
    pre_command: str | None = None
    connect_timeout: float = CONNECT_TIMEOUT_S
    config_file: str | None = None

    # -- checks and options -------------------------------------------------------------
    def _validate(self) -> None:
        """Every field the ssh command line uses, checked before ssh starts."""
        host, user = self.host, self.user
        if not isinstance(host, str) or not host.strip():
            raise ConfigError(
                "SSHTunnel.host is empty: set it to the login node's name or a Host alias "
                "from ~/.ssh/config"
            )
        if host.startswith("-") or any(c.isspace() for c in host):
            raise ConfigError(f"SSHTunnel.host={host!r} is not a host name: remove the spaces/'-'")
        if user and (user.startswith("-") or "@" in user or any(c.isspace() for c in user)):
            raise ConfigError(
                f"SSHTunnel.user={user!r} is not a user name: give the bare login name"
            )
        port = self.port
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
            raise ConfigError(f"SSHTunnel.port={port!r} is not valid: give a number or None")
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"SSHTunnel.port={port} is out of range: give 1-65535 or None")
        if self.identity and not os.path.isfile(os.path.expanduser(self.identity)):
            raise ConfigError(
                f"SSHTunnel.identity={self.identity!r}: no such file; give the private key's "
                "path, or None to use ~/.ssh/config and ssh-agent"
            )
        if self.config_file and not os.path.exists(os.path.expanduser(self.config_file)):
            raise ConfigError(f"SSHTunnel.config_file={self.config_file!r}: no such file")
        timeout = self.connect_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ConfigError(
                f"SSHTunnel.connect_timeout={timeout!r} is not valid: give seconds > 0"
            )
        if shutil.which("ssh") is None:
            raise ConfigError("SSHTunnel needs OpenSSH's `ssh` on PATH: install openssh-client")

    def _given_options(self) -> list[str]:
        """The options that come from the fields (they decide which connection is used)."""
        opts: list[str] = []
        if self.config_file:
            opts += ["-F", os.path.expanduser(self.config_file)]
        if self.identity:
            opts += ["-i", os.path.expanduser(self.identity), "-o", "IdentitiesOnly=yes"]
        if self.user:
            opts += ["-o", f"User={self.user}"]
        if self.port:
            opts += ["-o", f"Port={self.port}"]
        return opts

    def _options(self) -> list[str]:
        """All options for ssh and scp: the fields, no prompts, timeouts, and connection
        sharing unless the user's ssh config already shares connections its own way."""
        given = self._given_options()
        opts = [
            *given,
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={max(1, math.ceil(self.connect_timeout))}",
            "-o",
            f"ServerAliveInterval={SERVER_ALIVE_INTERVAL_S}",
            "-o",
            f"ServerAliveCountMax={SERVER_ALIVE_COUNT}",
        ]
        effective = self._effective(given)
        if effective.get("stricthostkeychecking", "ask") == "ask":
            # "ask" cannot be answered without a terminal; accept a new host's key (as 0.11.1
            # does) but still refuse a changed one
            opts += ["-o", "StrictHostKeyChecking=accept-new"]
        if effective.get("controlmaster", "false") == "false" or not effective.get("controlpath"):
            opts += [
                "-o",
                "ControlMaster=auto",
                "-o",
                f"ControlPath={control_dir()}/%C",
                "-o",
                f"ControlPersist={CONTROL_PERSIST_S}",
            ]
        return opts

    def _effective(self, given: list[str]) -> dict[str, str]:
        """What ssh makes of its config for this host (`ssh -G`, no connection made)."""
        signature = (*given, self.host)
        if signature not in _EFFECTIVE:
            argv = ["ssh", "-G", *given, self.host]
            try:
                done = subprocess.run(
                    argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=CHECK_TIMEOUT_S
                )
            except subprocess.TimeoutExpired as error:
                raise ConfigError(
                    f"`ssh -G {self.host}` did not answer: check ~/.ssh/config"
                ) from error
            if done.returncode != 0:
                said = _tail(done.stderr.decode("utf-8", "replace"), 3)
                source = self.config_file or "~/.ssh/config"
                raise ConfigError(
                    f"ssh cannot read its config for {self.host!r} ({source}): {said}"
                )
            found: dict[str, str] = {}
            for line in done.stdout.decode("utf-8", "replace").splitlines():
                name, _, value = line.partition(" ")
                found.setdefault(name.lower(), value.strip())
            _EFFECTIVE[signature] = found
        return _EFFECTIVE[signature]

    def _signature(self) -> tuple[str, ...]:
        return (*self._options(), self.host)

    def ssh_options(self) -> list[str]:
        """The options every ssh/scp call of this tunnel uses (for other OpenSSH-based tools,
        such as `rsync -e`), after opening the shared connection they will reuse."""
        self._prepare()
        return self._options()

    def _where(self) -> str:
        user = self.user or "(user from ssh config)"
        port = f" port {self.port}" if self.port else ""
        return f"{user}@{self.host}{port}"

    # -- connection ---------------------------------------------------------------------
    def _prepare(self) -> None:
        self._validate()
        if self._signature() not in _CONNECTED:
            self.connect()

    def connect(self) -> None:
        """Opens the shared connection (a login, at most `connect_timeout` per step); a
        failure raises `TunnelConnectionError` naming host, user and the fix."""
        self._validate()
        signature = self._signature()
        with _lock(signature):
            if signature in _CONNECTED and self._master_alive():
                return
            argv = ["ssh", "-T", *signature[:-1], self.host, "true"]
            limit = 2 * self.connect_timeout + 5
            outcome = _execute(_Spawn(argv), data=None, timeout=limit, hidden=_hidden(True))
            if outcome.timed_out:
                raise TunnelConnectionError(
                    f"SSH to {self._where()} did not finish logging in within {limit:.0f} s: "
                    "check the network/VPN, host and port, or raise SSHTunnel.connect_timeout"
                )
            if outcome.exited != 0:
                raise TunnelConnectionError(self._connection_message(outcome.stderr))
            _CONNECTED.add(signature)
            logger.debug("connected to %s", self._where())

    def _master_alive(self) -> bool:
        """True while the shared connection answers (`ssh -O check`, a local socket call)."""
        argv = ["ssh", *self._options(), "-O", "check", self.host]
        try:
            done = subprocess.run(
                argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=CHECK_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def _check_connection(self, exited: int, stderr: str) -> None:
        """An exit of 255 with the shared connection gone was ssh failing, not the command."""
        if exited != SSH_FAILED or self._master_alive():
            return
        _CONNECTED.discard(self._signature())
        raise TunnelConnectionError(self._connection_message(stderr))

    def _connection_message(self, stderr: str) -> str:
        """What went wrong, in the words of ssh's own message, and the fix."""
        lower = stderr.lower()
        if "permission denied" in lower or "too many authentication failures" in lower:
            fix = (
                "no key was accepted (passwords are never asked for). Give "
                "SSHTunnel(identity='<private key path>'), an IdentityFile for this Host in "
                "~/.ssh/config, or load the key into ssh-agent (ssh-add); its public key must "
                "be in ~/.ssh/authorized_keys of that user on the host"
            )
        elif "identification has changed" in lower:
            fix = (
                "the host's key differs from the one in known_hosts: ask the cluster admins "
                f"whether it changed, then remove the old entry (ssh-keygen -R {self.host})"
            )
        elif "host key verification failed" in lower:
            fix = (
                "the host's key is not in known_hosts and your ssh config refuses new keys: "
                f"connect once with `ssh {self.host}` to accept it"
            )
        elif "could not resolve hostname" in lower:
            fix = "the name does not resolve: check host, or define it as a Host in ~/.ssh/config"
        elif "connection refused" in lower:
            fix = (
                "nothing listens there: check host and port (SSHTunnel.port or Port in ssh config)"
            )
        elif "timed out" in lower or "timeout" in lower:
            fix = (
                f"no answer within connect_timeout={self.connect_timeout} s: check the "
                "network/VPN, host and port, or raise SSHTunnel.connect_timeout"
            )
        else:
            fix = f"run `ssh -v {self.host}` to see why"
        lines = [line for line in stderr.splitlines() if not line.startswith("Warning: Perm")]
        said = redact_text(_tail("\n".join(lines), 3)).replace("\n", " | ")
        return f"SSH to {self._where()} failed: {fix}. ssh said: {said or '(nothing)'}"

    def cleanup(self) -> None:
        """Stops the shared connection from taking new calls (`ssh -O stop`): calls still
        running finish, then it ends; the next call opens a new one."""
        if not self.host:
            return
        signature = self._signature()
        argv = ["ssh", *signature[:-1], "-O", "stop", self.host]
        try:
            subprocess.run(
                argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=CHECK_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            logger.debug("ssh -O stop %s did not answer", self.host)
        _CONNECTED.discard(signature)

    # -- commands and files ----------------------------------------------------------------
    def _remote_command(self, command: str, env: dict[str, str], watchdog: bool) -> str:
        """The command line the host's login shell runs: exports, pre_command, the user's
        `shell`, and the watchdog that ends it with our client."""
        line = command
        if self.pre_command:
            line = f"{self.pre_command} && {line}"
        if env:
            line = "".join(f"export {k}={shlex.quote(v)}; " for k, v in env.items()) + line
        if self.shell:
            line = f"{self.shell} -c {shlex.quote(line)}"
        if watchdog:
            line = "bash -c " + shlex.quote(_WATCHDOG.replace("COMMAND", line))
        return line

    def _spawn(self, command: str, *, env: dict[str, str], uses_stdin: bool) -> _Spawn:
        remote = self._remote_command(command, env, watchdog=not uses_stdin)
        argv = ["ssh", "-T", *self._options(), self.host, remote]
        return _Spawn(argv, keep_stdin_open=not uses_stdin)

    def _scp_target(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{path}"

    def _copy(self, sources: list[str], target: str, recursive: bool, label: str) -> None:
        """One scp over the shared connection; failures raise as run() does."""
        self._prepare()
        argv = ["scp", "-q", *(["-r"] if recursive else []), *self._options(), *sources, target]
        outcome = _execute(_Spawn(argv), data=None, timeout=None, hidden=_hidden(True))
        self._check_connection(SSH_FAILED if outcome.exited else 0, outcome.stderr)
        if outcome.exited != 0:
            result = Result(label, outcome.stdout, outcome.stderr, outcome.exited)
            raise TunnelCommandError(self._failure_message(result), result)

    def put(self, local_path: str, remote_path: str) -> None:
        if not os.path.exists(local_path):
            raise ConfigError(f"put(local_path={local_path!r}): no such file or folder")
        source = os.path.abspath(local_path)  # a relative name with ':' would read as a host
        self._copy(
            [source], self._scp_target(remote_path), os.path.isdir(source), f"put {local_path}"
        )

    def get(self, remote_path: str, local_path: str) -> None:
        target = os.path.abspath(local_path)
        self._copy([self._scp_target(remote_path)], target, True, f"get {remote_path}")
