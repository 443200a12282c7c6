"""0.11.1's `nemo_run.core.tunnel.rsync.rsync`: copy a folder to a login node with rsync.

0.11.1 takes a fabric `Connection`; here the first argument is one of our tunnels (an
`SSHTunnel` lends its ssh options, so rsync rides the tunnel's shared connection; a
`LocalTunnel` copies on this machine) or any object with `host`, `user` and `port`
attributes, as a fabric `Connection` has.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from nemo_run.core.redact import redact_text
from nemo_run.core.tunnel.client import LocalTunnel, Result, SSHTunnel
from nemo_run.exceptions import ConfigError, TunnelCommandError

RSYNC_FLAGS = ["-pthrz"]  # permissions, times, human-readable sizes, recursive, compressed


def rsync(
    c: Any,
    source: str,
    target: str,
    exclude: str | Sequence[str] = (),
    delete: bool = False,
    strict_host_keys: bool = True,
    rsync_opts: str = "",
    ssh_opts: str = "",
    hide_output: bool = True,
) -> None:
    """Copy `source` to `target` on the host of `c` with rsync (`delete=True` removes files
    in `target` that `source` lacks; `exclude` patterns are skipped). A failure raises
    `TunnelCommandError` with rsync's output."""
    if shutil.which("rsync") is None:
        raise ConfigError("rsync is not on PATH: install it (apt-get install rsync)")
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    argv = ["rsync", *RSYNC_FLAGS, *shlex.split(rsync_opts)]
    argv += [f"--exclude={pattern}" for pattern in patterns]
    if delete:
        argv.append("--delete")
    if isinstance(c, LocalTunnel):
        argv += [source, target]
    else:
        ssh = ["ssh", *_ssh_options(c, strict_host_keys), *shlex.split(ssh_opts)]
        argv += ["-e", shlex.join(ssh), source, f"{c.host}:{target}"]
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if not hide_output:
        print(done.stdout, end="")
    if done.returncode != 0:
        result = Result(shlex.join(argv), done.stdout, done.stderr, done.returncode)
        raise TunnelCommandError(
            f"rsync {source} -> {target} failed (exit {done.returncode}): "
            + redact_text(done.stderr.strip()[-2000:]),
            result,
        )


def _ssh_options(c: Any, strict_host_keys: bool) -> list[str]:
    """The ssh options for `c`: an SSHTunnel's own (shared connection, keys, timeouts), or
    built from a fabric-like connection's user, port and key files."""
    if isinstance(c, SSHTunnel):
        options = c.ssh_options()
    else:
        options = ["-o", "BatchMode=yes"]
        if getattr(c, "user", None):
            options += ["-o", f"User={c.user}"]
        if getattr(c, "port", None):
            options += ["-o", f"Port={c.port}"]
        for key in (getattr(c, "connect_kwargs", None) or {}).get("key_filename", []) or []:
            options += ["-i", key]
    if not strict_host_keys:
        options += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    return options
