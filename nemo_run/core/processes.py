"""Process identity on Linux: a pid plus its start time (and boot id) names one process for good.

A bare pid is reused by the kernel after the process exits; comparing the start time from
`/proc/<pid>/stat` tells "our job" from "another program that got the same pid".
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str  # R, S, D, Z (zombie), T, ...
    pgrp: int
    start_ticks: int


@cache
def boot_id() -> str:
    """Changes at every boot, so start ticks from before a reboot never match again."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def proc_stat(pid: int) -> ProcStat | None:
    """The process's stat line, or None when no such process exists (or /proc is missing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
    except (OSError, ValueError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces or ')'
    return ProcStat(pid=pid, state=fields[0], pgrp=int(fields[2]), start_ticks=int(fields[19]))


def is_same_process_alive(pid: int, start_ticks: int, boot: str) -> bool:
    """True while the process that had `start_ticks` at launch is alive (zombies are dead)."""
    if boot and boot != boot_id():
        return False
    stat = proc_stat(pid)
    if stat is None:
        if not os.path.isdir("/proc"):
            try:  # no /proc (not Linux): the best available answer is "some process has this pid"
                os.kill(pid, 0)
                return True
            except OSError:
                return False
        return False
    return stat.start_ticks == start_ticks and stat.state not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live pids whose process group is `pgid`."""
    members = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat.pgrp == pgid and stat.state not in ("Z", "X"):
                members.append(stat.pid)
    return members


def has_env_marker(pid: int, marker: bytes) -> bool:
    """True when the process's environment holds `marker` (e.g. b'NEMORUN_APP_ID=abc')."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return marker in fh.read().split(b"\0")
    except OSError:
        return False


def find_env_marker(marker: bytes) -> list[int]:
    """Live pids whose environment holds `marker`: finds a job's processes without any record
    of them (its launcher died before writing their pid)."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit() and has_env_marker(int(entry), marker):
            stat = proc_stat(int(entry))
            if stat is not None and stat.state not in ("Z", "X"):
                found.append(stat.pid)
    return found


def find_fd_holders(path: str, fd: int) -> list[int]:
    """Live pids whose descriptor `fd` is the file at `path` (same device and inode). Names a
    process by a file it holds where its environment cannot: a process forked without exec
    keeps the environment its parent was started with."""
    try:
        wanted = os.stat(path)
    except OSError:
        return []
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            held = os.stat(f"/proc/{entry}/fd/{fd}")
        except OSError:  # gone, no such descriptor, or another user's process
            continue
        if (held.st_dev, held.st_ino) == (wanted.st_dev, wanted.st_ino):
            stat = proc_stat(int(entry))
            if stat is not None and stat.state not in ("Z", "X"):
                found.append(stat.pid)
    return found


def marked_group_members(pgid: int, marker: bytes) -> list[int]:
    """Live members of process group `pgid` that carry `marker` (a reused pgid has none)."""
    return [p for p in group_members(pgid) if has_env_marker(p, marker)]


def is_locked(path: str) -> bool:
    """True while some process holds an flock on `path` (False when it does not exist).

    A lock taken before a fork is held by the child from its first instant, so it shows a
    process that exists but has not exec'd yet (and so cannot be found by its environment)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops our shared lock
    return False
