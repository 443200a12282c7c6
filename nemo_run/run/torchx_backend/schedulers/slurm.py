"""Slurm backend (`slurm_tunnel`): each job is one `sbatch` job on a cluster reached through a
tunnel (SSH to a login node, or the local machine when it is one).

The app id is the job's unique name, known before anything starts so the intent record comes
first; the record keeps the Slurm job id, the job folder on the cluster and how to reach the
cluster again (tunnel kind, host, user, port, identity file path: never a secret), so any later
process can describe, tail and cancel the job.

Costs: a dry run makes no remote call except one `sinfo` per cluster and process when a
partition is named; a launch makes at most two round trips (the code archive, once per
experiment, then one `bash -s` that makes the job folder, unpacks the code, writes the script
and runs `sbatch`); refreshing N jobs of one cluster is one `sacct` (plus one `squeue` for jobs
the accounting database does not know yet), not N.
"""

from __future__ import annotations

import builtins
import copy
import importlib
import logging
import os
import posixpath
import re
import secrets
import shlex
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from torchx.schedulers.api import AppDryRunInfo, DescribeAppResponse, Scheduler, Stream
from torchx.specs import AppDef, AppState

from nemo_run.config import USE_WITH_RAY_CLUSTER_KEY as USE_WITH_RAY_CLUSTER_KEY
from nemo_run.config import get_nemorun_home as get_nemorun_home
from nemo_run.core.clients.http import UnconfirmedError
from nemo_run.core.execution.base import RUNDIR_NAME as RUNDIR_NAME
from nemo_run.core.execution.base import Executor as Executor
from nemo_run.core.execution.slurm import SlurmBatchRequest, SlurmExecutor
from nemo_run.core.execution.slurm import SlurmJobDetails as SlurmJobDetails
from nemo_run.core.packaging.base import code_archive
from nemo_run.core.redact import redact_text
from nemo_run.core.store import JobRecord, store_path
from nemo_run.core.store.records import NODES, REMOTE_DIR, REMOTE_ID
from nemo_run.core.tunnel.client import LocalTunnel, SSHTunnel
from nemo_run.core.tunnel.client import PackagingJob as PackagingJob
from nemo_run.core.tunnel.client import Tunnel as Tunnel
from nemo_run.exceptions import (
    BackendError,
    ConfigError,
    TunnelCommandError,
    TunnelConnectionError,
)
from nemo_run.run.torchx_backend.schedulers.api import SchedulerMixin as SchedulerMixin
from nemo_run.run.torchx_backend.schedulers.api import (
    map_state,
    single_role_response,
    unique_name,
)
from nemo_run.run.torchx_backend.schedulers.remote import RemoteSchedulerMixin
from nemo_run.run.torchx_backend.schedulers.runopts import DryRun
from nemo_run.run.torchx_backend.schedulers.slurm_batch import batch_request

log = logging.getLogger(__name__)

BACKEND = "slurm_tunnel"
SACCT_FIELDS = "JobID,JobName,State,ExitCode,Start,End"
SQUEUE_FIELDS = "JobArrayID:|,Name:|,State:|,exit_code:|,StartTime:|,EndTime:|,Reason:"
CALL_TIMEOUT_S = 120.0  # one remote command (sacct, squeue, sbatch, scancel)
JOB_ID_FILE = ".slurm_job_id"  # written next to the script the moment sbatch answers
TUNNEL = "tunnel"  # record key: how to reach the cluster again
DEPENDS_ON = "depends_on"  # record key: Slurm ids this job waits on (with the handle)
_ACCOUNTING_OFF = "accounting storage is disabled"
_SECTION = "__NEMO_RUN_EXIT__"  # ends each command's output in a combined round trip

# Every state Slurm documents (`man squeue`, JOB STATE CODES); a new one reads UNKNOWN.
SLURM_STATES: dict[str, AppState] = {
    "PENDING": AppState.PENDING,
    "CONFIGURING": AppState.PENDING,  # nodes allocated, booting
    "POWER_UP_NODE": AppState.PENDING,
    "REQUEUED": AppState.PENDING,  # going back to the queue (a retry)
    "REQUEUE_FED": AppState.PENDING,
    "REQUEUE_HOLD": AppState.PENDING,  # requeued and held: waits for `scontrol release`
    "SPECIAL_EXIT": AppState.PENDING,  # requeued and held after a special exit code
    "RESV_DEL_HOLD": AppState.PENDING,
    "RESIZING": AppState.PENDING,
    "SUSPENDED": AppState.PENDING,  # as torchx: not running now, may resume
    "STOPPED": AppState.PENDING,  # SIGSTOPped; resources kept, may resume
    "RUNNING": AppState.RUNNING,
    "COMPLETING": AppState.RUNNING,  # processes ending: the outcome is not known yet
    "SIGNALING": AppState.RUNNING,
    "STAGE_OUT": AppState.RUNNING,
    "UPDATE_DB": AppState.RUNNING,
    "COMPLETED": AppState.SUCCEEDED,
    "CANCELLED": AppState.CANCELLED,
    "FAILED": AppState.FAILED,
    "TIMEOUT": AppState.FAILED,
    "NODE_FAIL": AppState.FAILED,
    "PREEMPTED": AppState.FAILED,
    "OUT_OF_MEMORY": AppState.FAILED,
    "BOOT_FAIL": AppState.FAILED,
    "DEADLINE": AppState.FAILED,
    "REVOKED": AppState.FAILED,  # a federated sibling ran it instead
    "LAUNCH_FAILED": AppState.FAILED,
    "RECONFIG_FAIL": AppState.FAILED,
}
_ACTIVE_RANK = ("RUNNING", "PENDING", "UNKNOWN")  # how an array's active tasks combine
_ENDED_RANK = ("FAILED", "CANCELLED", "SUCCEEDED")  # how an ended array's tasks combine


def __getattr__(name: str) -> Any:
    if name == "SLURM_JOB_DIRS":  # 0.11.1's job-dir file; here the store file in use now
        return store_path()
    if name == "from_dict":  # 0.11.1's re-export; it loads fiddle, so only when asked for
        return importlib.import_module("nemo_run.core.configurable").from_dict
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The names `__getattr__` serves too, so `dir()` and API tools see them."""
    return sorted([*globals(), "SLURM_JOB_DIRS", "from_dict"])


def native_state(value: str) -> str:
    """`CANCELLED by 1001` -> `CANCELLED`; `RUNNING+` (sacct's mark) -> `RUNNING`."""
    return value.strip().split(" ", 1)[0].rstrip("+").upper()


def state_of(value: str) -> AppState:
    """A Slurm state through SLURM_STATES; one added later reads UNKNOWN, with a warning."""
    return map_state(SLURM_STATES, native_state(value), "Slurm job")


@dataclass(frozen=True)
class SlurmJob:
    """One job (or array / het job, its tasks combined) as sacct or squeue reported it."""

    job_id: str
    name: str
    state: str  # Slurm's own words, e.g. "CANCELLED by 0"
    exit_code: str = ""  # "3:0" (exit status:signal)
    start: str = ""
    end: str = ""
    reason: str = ""
    tasks: int = 1


def base_id(job_id: str) -> str:
    """`123_4` (array task), `123_[5-9]`, `123+1` (het component) -> `123`."""
    return re.split(r"[_+.]", job_id, maxsplit=1)[0]


def parse_rows(text: str, width: int) -> list[list[str]]:
    """Pipe-separated rows of `width` fields; a job name holding `|` stays one field."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("|")
        if len(parts) < width:
            continue
        extra = len(parts) - width
        rows.append([parts[0], "|".join(parts[1 : 2 + extra]), *parts[2 + extra :]][:width])
    return rows


def parse_sacct(text: str) -> list[SlurmJob]:
    """`sacct -X -n -P -o JobID,JobName,State,ExitCode,Start,End` output."""
    return [
        SlurmJob(i, name, state, code, start, end)
        for i, name, state, code, start, end in parse_rows(text, 6)
    ]


def parse_squeue(text: str) -> list[SlurmJob]:
    """`squeue -h -O JobArrayID:|,Name:|,State:|,exit_code:|,StartTime:|,EndTime:|,Reason:`."""
    out = []
    for row in parse_rows(text, 7):
        job_id, name, state, code, start, end, reason = (v.strip() for v in row)
        if code.isdigit():  # squeue shows the raw wait status: exit status << 8 | signal
            code = f"{int(code) >> 8}:{int(code) & 0x7F}"
        out.append(SlurmJob(job_id, name, state, code, start, end, reason))
    return out


def combine(jobs: list[SlurmJob]) -> dict[str, SlurmJob]:
    """One answer per Slurm job id: an array's (or het job's) tasks as one job, active while
    any task is, else FAILED if any failed, CANCELLED if any was, SUCCEEDED when all did."""
    groups: dict[str, list[SlurmJob]] = {}
    for job in jobs:
        groups.setdefault(base_id(job.job_id), []).append(job)
    out = {}
    for job_id, members in groups.items():
        if len(members) == 1 and members[0].job_id == job_id:
            out[job_id] = members[0]
            continue
        states = [state_of(m.state) for m in members]
        active = [r for r in _ACTIVE_RANK if any(s.name == r for s in states)]
        rank = active or [r for r in _ENDED_RANK if any(s.name == r for s in states)]
        pick = next(m for m, s in zip(members, states, strict=True) if s.name == rank[0])
        starts = sorted(m.start for m in members if m.start and m.start != "Unknown")
        out[job_id] = SlurmJob(
            job_id,
            pick.name,
            pick.state,
            pick.exit_code,
            starts[0] if starts else pick.start,
            pick.end,
            pick.reason,
            tasks=len(members),
        )
    return out


def describe_exit(job: SlurmJob) -> str:
    """The message of an answer: the state, and for a failure its exit status or signal."""
    text = f"Slurm {job.state}"
    status, _, signal = job.exit_code.partition(":")
    if state_of(job.state) == AppState.FAILED and job.exit_code:
        if signal and signal != "0":
            text += f", killed by signal {signal}"
        if status and status != "0" or not signal or signal == "0":
            text += f", exit code {status}"
    if job.reason and job.reason not in ("None", "(null)"):
        text += f" ({job.reason})"
    return text


# -- tunnels ------------------------------------------------------------------------------------
def tunnel_info(tunnel: Any) -> dict[str, Any]:
    """What a later process needs to open the same tunnel: never a password or key content."""
    if isinstance(tunnel, LocalTunnel):
        return {"kind": "local", "job_dir": tunnel.job_dir}
    if isinstance(tunnel, SSHTunnel):
        return {
            "kind": "ssh",
            "host": tunnel.host,
            "user": tunnel.user,
            "port": getattr(tunnel, "port", None),
            "identity": getattr(tunnel, "identity", None),
            "job_dir": tunnel.job_dir,
        }
    raise ConfigError(
        f"SlurmExecutor.tunnel must be a run.SSHTunnel or run.LocalTunnel, got "
        f"{type(tunnel).__name__}"
    )


def tunnel_key(info: dict[str, Any]) -> tuple[Any, ...]:
    """Jobs with the same key are on the same cluster: one sacct call covers them all."""
    if info.get("kind") == "local":
        return ("local",)
    return ("ssh", info.get("host"), info.get("user"), info.get("port"))


def open_tunnel(info: dict[str, Any]) -> Any:
    """A tunnel rebuilt from a record (a later process)."""
    if info.get("kind") == "local":
        return LocalTunnel(job_dir=info.get("job_dir") or "")
    kwargs = {k: info[k] for k in ("port", "identity") if info.get(k) is not None}
    return SSHTunnel(
        host=info["host"], user=info["user"], job_dir=info.get("job_dir", ""), **kwargs
    )


_tunnels: dict[tuple[Any, ...], Any] = {}  # this process's open tunnels, one per cluster
_tunnels_lock = threading.Lock()


def tunnel_for(info: dict[str, Any], given: Any = None) -> Any:
    """This process's tunnel to a cluster: the executor's own when it brings one first."""
    key = tunnel_key(info)
    with _tunnels_lock:
        found = _tunnels.get(key)
        if found is None:
            found = _tunnels[key] = given if given is not None else open_tunnel(info)
        return found


def run_remote(tunnel: Any, command: str, *, stdin: str | bytes | None = None) -> Any:
    """One round trip; the result even on a non-zero exit. No connection is a transient
    BackendError (the job's state stays as it was)."""
    try:
        return tunnel.run(command, hide=True, warn=True, input=stdin, timeout=CALL_TIMEOUT_S)
    except TunnelConnectionError as e:
        raise BackendError(f"cannot reach the Slurm cluster: {e}") from e
    except TunnelCommandError as e:  # with warn=True: only a timeout
        raise BackendError(f"the Slurm cluster did not answer in time: {e}") from e


def _sections(stdout: str) -> list[tuple[str, int]]:
    """(output, exit code) of each command of a combined round trip."""
    out: list[tuple[str, int]] = []
    lines: list[str] = []
    for line in stdout.splitlines(keepends=True):
        if line.startswith(_SECTION):
            code = line[len(_SECTION) :].strip()
            out.append(("".join(lines), int(code) if code.isdigit() else 1))
            lines = []
        else:
            lines.append(line)
    return out


def _quoted_ids(ids: Iterable[str]) -> str:
    return shlex.quote(",".join(sorted(set(ids), key=lambda i: (len(i), i))))


_checked: set[tuple[Any, ...]] = set()  # (cluster, partition) pairs validated by this process


def check_remote(executor: SlurmExecutor, info: dict[str, Any]) -> None:
    """The executor's cluster checks (`validate_remote`: one `sinfo`), once per cluster and
    partition per process: a dry run's only remote call."""
    key = (*tunnel_key(info), executor.partition)
    if key in _checked:
        return
    executor.validate_remote(tunnel_for(info, executor.tunnel))
    _checked.add(key)


def remote_job_dir(executor: SlurmExecutor, info: dict[str, Any], app_id: str) -> str:
    """The job's folder on the cluster: `<tunnel.job_dir>/<task>` in an experiment (whose
    `assign` moved the tunnel's folder into the experiment's, as 0.11.1), else
    `<tunnel.job_dir>/<app id>` for a job started alone."""
    base = info.get("job_dir") or posixpath.join(get_nemorun_home(), "experiments")
    if executor.experiment_id and executor.job_dir:
        return posixpath.join(base, posixpath.basename(executor.job_dir.rstrip("/")))
    return posixpath.join(base, app_id)


# -- the request -------------------------------------------------------------------------------
@dataclass
class SlurmJobRequest:
    """What `schedule` submits: the batch request (0.11.1's `SlurmBatchRequest`, whose names
    this object forwards), the app id and the job folder on the cluster. `str()` is the
    sbatch script as a dry run shows it (secrets masked)."""

    batch: SlurmBatchRequest
    app_id: str
    job_dir: str
    script: str
    executor: SlurmExecutor
    tunnel: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        if name == "batch":  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.batch, name)

    @property
    def log_dir(self) -> str:
        return self.job_dir

    @property
    def script_path(self) -> str:
        return os.path.join(self.job_dir, f"sbatch_{self.app_id}.sh")

    def __str__(self) -> str:
        return redact_text(self.script)

    def __repr__(self) -> str:
        return str(self)


_OUTPUT = re.compile(r"^#SBATCH\s+(?:--output[=\s]|-o\s*)(\S+)", re.MULTILINE)
_ARRAY = re.compile(r"^#SBATCH\s+(?:--array[=\s]|-a\s*)(\S+)", re.MULTILINE)


def output_pattern(script: str) -> str:
    """Where the job writes its output, as the script says (Slurm's default otherwise)."""
    found = _OUTPUT.search(script)
    if found:
        return found.group(1).strip("'\"")
    return "slurm-%A_%a.out" if _ARRAY.search(script) else "slurm-%j.out"


def array_indices(spec: str | None) -> list[int]:
    """`0-3,7,10-20:5%2` -> [0, 1, 2, 3, 7, 10, 15, 20]."""
    if not spec:
        return []
    out: list[int] = []
    for part in spec.split("%")[0].split(","):
        rng, _, step = part.partition(":")
        first, _, last = rng.partition("-")
        if not first.strip().isdigit() or (last and not last.strip().isdigit()):
            continue
        out.extend(range(int(first), int(last or first) + 1, int(step or 1)))
    return out


def output_file(pattern: str, job_dir: str, job_id: str, name: str, index: int | None) -> str:
    """Slurm's filename pattern for one job (or array task), relative to the job folder."""
    values = {
        "j": job_id,
        "A": job_id,
        "a": str(index if index is not None else 0),
        "x": name,
        "%": "%",
    }
    path = re.sub(
        r"%(\d*)([jAax%])", lambda m: values[m.group(2)].zfill(int(m.group(1) or 0)), pattern
    )
    return path if os.path.isabs(path) else os.path.join(job_dir, path)


# -- the scheduler ------------------------------------------------------------------------------
class SlurmTunnelScheduler(RemoteSchedulerMixin, Scheduler[dict[str, str]]):
    """Slurm jobs as torchx apps, durable through the job store; the state rules are the
    remote backends' (`RemoteSchedulerMixin`), the hooks below are Slurm's."""

    label = "Slurm"
    deleted_msg = "Slurm no longer knows the job (neither sacct nor squeue lists it)"

    def __init__(self, session_name: str, experiment: Any = None) -> None:
        super().__init__(BACKEND, session_name)
        self.experiment = experiment  # 0.11.1's parameter; not needed here
        self._group = threading.local()  # ids of the records one `_list_live` call covers
        self._no_accounting: set[tuple[Any, ...]] = set()
        self._shipped: dict[tuple[Any, ...], str] = {}  # (cluster, experiment) -> archive path
        self._ship_locks: dict[tuple[Any, ...], threading.Lock] = {}
        self._ship_locks_guard = threading.Lock()

    # -- dry run ----------------------------------------------------------------------------
    def _submit_dryrun(self, app: AppDef, cfg: SlurmExecutor) -> AppDryRunInfo[SlurmJobRequest]:
        validate = getattr(cfg, "validate", None)
        if validate is not None:
            validate()  # fields may have been set after construction: check them all now
        info = tunnel_info(cfg.tunnel)
        if info["kind"] == "ssh" and not posixpath.isabs(info.get("job_dir") or ""):
            raise ConfigError(
                f"SSHTunnel.job_dir={info.get('job_dir')!r}: give an absolute folder on the "
                "cluster for the jobs' files, e.g. job_dir='/home/<user>/nemo_run'"
            )
        app_id = unique_name(app.name, 63)
        job_dir = remote_job_dir(cfg, info, app_id)
        executor = copy.copy(cfg)  # the script waits on Slurm ids, not on app handles
        executor.dependencies = [d["id"] for d in self._dependencies(cfg, info)]
        check_remote(cfg, info)
        batch = batch_request(app, executor, job_dir)
        script = batch.materialize()
        request = SlurmJobRequest(batch, app_id, job_dir, script, executor, info)
        return AppDryRunInfo(request, str)

    def _app_id_of(self, request: SlurmJobRequest) -> str:
        return request.app_id

    # -- schedule ---------------------------------------------------------------------------
    def schedule(self, dryrun_info: DryRun[SlurmJobRequest]) -> str:  # type: ignore[override]
        request = dryrun_info.request
        ex = request.executor
        # set after the dry run too (an experiment's driver names what a task waits on)
        depends_on = self._dependencies(dryrun_info.executor, request.tunnel)  # type: ignore[arg-type]
        data = {
            TUNNEL: request.tunnel,
            REMOTE_DIR: request.job_dir,
            "script": request.script_path,
            "output": output_pattern(request.script),
            "logs": role_logs(request, dryrun_info.app),
            "array": ex.array or None,
            NODES: int(getattr(ex, "nodes", 1) or 1),
            "role": dryrun_info.app.roles[0].name if dryrun_info.app.roles else "main",
            DEPENDS_ON: depends_on or None,
            "dependency_type": getattr(dryrun_info.executor, "dependency_type", "afterok"),
        }
        tunnel = tunnel_for(request.tunnel, ex.tunnel)
        return self._launch_remote(
            request.app_id,
            experiment_id=ex.experiment_id,
            log_dir=request.job_dir,
            data=data,
            ship=lambda leftovers, heartbeat: self._ship(request, tunnel),
            create=lambda: self._sbatch(request, tunnel, depends_on),
        )

    def _dependencies(self, ex: SlurmExecutor, info: dict[str, Any]) -> list[dict[str, str]]:
        """`executor.dependencies` (handles of other Slurm jobs, or Slurm ids) as Slurm ids:
        a dependency must run on the same cluster, and be launched (its id known)."""
        out = []
        for dep in getattr(ex, "dependencies", None) or []:
            dep = str(dep)
            if dep.isdigit():
                out.append({"id": dep, "handle": dep})
                continue
            app_id = dep.rsplit("/", 1)[-1]
            record = self._store().get(self.backend, app_id) if "://" in dep else None
            if record is None or not dep.startswith(f"{self.backend}://"):
                raise ConfigError(
                    f"SlurmExecutor.dependencies: {dep!r} is not a Slurm job this job store "
                    "knows; name the handles of slurm_tunnel jobs (or Slurm job ids)"
                )
            if tunnel_key(record.data.get(TUNNEL) or {}) != tunnel_key(info):
                raise ConfigError(
                    f"SlurmExecutor.dependencies: {dep} runs on another cluster; Slurm can only "
                    "wait on jobs of its own cluster (put both tasks on the same tunnel)"
                )
            if not record.data.get(REMOTE_ID):
                raise ConfigError(
                    f"SlurmExecutor.dependencies: {dep} has no Slurm job id yet (its launch "
                    "is not confirmed); launch this task once it has one"
                )
            if record.state == "SUCCEEDED":
                continue  # met already (and Slurm may have forgotten the job)
            out.append({"id": str(record.data[REMOTE_ID]), "handle": dep})
        return out

    def _ship(self, request: SlurmJobRequest, tunnel: Any) -> dict[str, Any]:
        """The code archive onto the cluster: once per experiment (and cluster) per process."""
        ex = request.executor
        scope = ex.experiment_id or request.app_id
        key = (*tunnel_key(request.tunnel), scope, repr(ex.packager))
        with self._ship_locks_guard:  # tasks launched in parallel ship their code once
            lock = self._ship_locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._shipped:
                return {"code_archive": self._shipped[key]}
            return self._ship_once(request, tunnel, key, scope)

    def _ship_once(
        self, request: SlurmJobRequest, tunnel: Any, key: tuple[Any, ...], scope: str
    ) -> dict[str, Any]:
        ex = request.executor
        with tempfile.TemporaryDirectory(prefix="nemo_run_slurm_") as scratch:
            archive = code_archive(ex.packager, os.getcwd(), scratch)
            if archive is None:
                return {}
            parent = os.path.dirname(request.job_dir.rstrip("/")) if ex.experiment_id else ""
            remote = os.path.join(parent or request.job_dir, f"code_{scope}.tar.gz")
            with open(archive, "rb") as fh:
                data = fh.read()
            folder = shlex.quote(posixpath.dirname(remote))
            part = shlex.quote(f"{remote}.part-{secrets.token_hex(4)}")  # one per writer
            # one round trip: the folder, and the archive as the command's stdin
            result = run_remote(
                tunnel,
                f"mkdir -p {folder} && cat > {part} && mv -f {part} {shlex.quote(remote)}",
                stdin=data,
            )
            if result.failed:
                raise BackendError(
                    f"cannot copy the code to {remote} on the Slurm cluster: "
                    f"{(result.stderr or result.stdout).strip()}",
                    status=400,
                )
        self._shipped[key] = remote
        return {"code_archive": remote}

    def _sbatch(
        self, request: SlurmJobRequest, tunnel: Any, depends_on: list[dict[str, str]]
    ) -> str:
        """One round trip: folder, code, script, sbatch. Returns the Slurm job id. No answer
        after the command may have run is UnconfirmedError (the id file settles it later)."""
        record = self._store().get(self.backend, request.app_id)
        archive = (record.data.get("code_archive") if record else None) or ""
        program = submit_program(request, archive, depends_on)
        try:
            result = tunnel.run(
                "bash -s", hide=True, warn=True, input=program, timeout=CALL_TIMEOUT_S
            )
        except (TunnelConnectionError, TunnelCommandError) as e:
            raise UnconfirmedError(f"no answer from the cluster during sbatch ({e})") from e
        found = re.search(r"^NEMO_RUN_JOB_ID=(\d+)", result.stdout, re.MULTILINE)
        if result.failed or not found:
            raise BackendError(
                f"sbatch refused {request.app_id}: {(result.stderr or result.stdout).strip()}",
                status=400,
            )
        return found.group(1)

    # -- hooks of the remote state rules -------------------------------------------------------
    def _query(self, info: dict[str, Any], ids: list[str]) -> dict[str, SlurmJob]:
        """Slurm's answer for these job ids, in one round trip: one sacct (every job, ended
        ones too) and one squeue (the controller's own view, which the accounting database
        lags behind: it wins for the jobs it still holds). Raises a transient BackendError
        when Slurm cannot say what became of a job."""
        key = tunnel_key(info)
        quoted = _quoted_ids(ids)
        squeue = f"squeue -h -t all -j {quoted} -O {shlex.quote(SQUEUE_FIELDS)}"
        parts = (
            [] if key in self._no_accounting else [f"sacct -X -n -P -j {quoted} -o {SACCT_FIELDS}"]
        )
        parts.append(squeue)
        command = "; ".join(f"{p} 2>&1; echo {_SECTION} $?" for p in parts)
        result = run_remote(tunnel_for(info), command)
        sections = _sections(result.stdout)
        if len(sections) != len(parts):
            raise BackendError(f"Slurm did not answer: {(result.stderr or result.stdout).strip()}")
        jobs: dict[str, SlurmJob] = {}
        sacct_failed = ""
        if len(parts) == 2:
            text, code = sections[0]
            if code and _ACCOUNTING_OFF in text:
                self._no_accounting.add(key)
                sacct_failed = "Slurm accounting is disabled"
            elif code:
                sacct_failed = f"sacct failed: {text.strip()}"
            else:
                jobs = combine(parse_sacct(text))
        text, code = sections[-1]
        if code and "Invalid job id" not in text:
            raise BackendError(f"squeue failed: {text.strip()}")
        if not code:
            jobs.update(combine(parse_squeue(text)))
        missing = [i for i in ids if i not in jobs]
        if missing and sacct_failed and key not in self._no_accounting:
            raise BackendError(f"{sacct_failed} (jobs {', '.join(missing)} not answered)")
        return {i: jobs[i] for i in ids if i in jobs}

    def _get(self, record: JobRecord) -> SlurmJob | None:
        job_id = str(record.data[REMOTE_ID])
        if job_id in getattr(self._group, "answered", set()):
            return None  # this refresh's query already answered without it: no second ask
        return self._query(record.data[TUNNEL], [job_id]).get(job_id)

    def _lookup(self, record: JobRecord) -> SlurmJob | None:
        """An unconfirmed launch: the id file sbatch's answer went into, then that job."""
        info = record.data[TUNNEL]
        path = os.path.join(record.data[REMOTE_DIR], JOB_ID_FILE)
        result = run_remote(tunnel_for(info), f"cat {shlex.quote(path)} 2>/dev/null || true")
        job_id = result.stdout.strip()
        if not job_id.isdigit():
            return None
        return self._query(info, [job_id]).get(job_id) or SlurmJob(job_id, record.app_id, "PENDING")

    def _list_key(self, record: JobRecord) -> tuple[Any, ...]:
        return tunnel_key(record.data.get(TUNNEL) or {})

    def _refresh_listed(self, records: builtins.list[JobRecord]) -> dict[str, Any]:
        """Note which ids each cluster's single query must cover, then refresh as the base."""
        groups: dict[tuple[Any, ...], builtins.list[str]] = {}
        for record in records:
            if record.data.get(REMOTE_ID):
                groups.setdefault(self._list_key(record), []).append(str(record.data[REMOTE_ID]))
        self._group.ids, self._group.answered = groups, set()
        try:
            return super()._refresh_listed(records)
        finally:
            self._group.ids, self._group.answered = {}, set()

    def _list_live(self, record: JobRecord) -> builtins.list[SlurmJob]:
        ids = getattr(self._group, "ids", {}).get(self._list_key(record))
        if not ids:
            ids = [str(record.data[REMOTE_ID])] if record.data.get(REMOTE_ID) else []
        if not ids:
            return []
        jobs = list(self._query(record.data[TUNNEL], ids).values())
        self._group.answered = {*getattr(self._group, "answered", set()), *ids}
        return jobs

    def _id_of(self, job: SlurmJob) -> str:
        return job.job_id

    def _name_of(self, job: SlurmJob) -> str:
        return job.name

    def _observe(self, job: SlurmJob) -> tuple[AppState, str, str]:
        return state_of(job.state), native_state(job.state), describe_exit(job)

    def _apply(self, record: JobRecord, job: SlurmJob) -> Any:
        """As the base; a job pending on a dependency that can no longer succeed is cancelled
        (Slurm would keep it pending forever: DependencyNeverSatisfied)."""
        seen = super()._apply(record, job)
        status = job.exit_code.partition(":")[0]
        if (
            seen.record.state in _ENDED_RANK
            and status.isdigit()
            and "exit_code" not in seen.record.data
        ):
            seen.record = self._store().update(
                self.backend, record.app_id, data={"exit_code": int(status)}
            )
        if seen.state == AppState.PENDING and record.data.get(DEPENDS_ON):
            why = self._dependency_failed(record)
            if why:
                log.warning("cancelling %s: %s", record.app_id, why)
                if self._stop_remote(seen.record):
                    final = self._record_final(record.app_id, "CANCELLED", msg=f"not run: {why}")
                    return type(seen)(final, AppState[final.state], final.data.get("msg", why))
        return seen

    def _dependency_failed(self, record: JobRecord) -> str | None:
        """Why an `afterok` dependency can never be met (it ended, not SUCCEEDED), or None."""
        if record.data.get("dependency_type", "afterok") != "afterok":
            return None
        for dep in record.data.get(DEPENDS_ON) or []:
            found = self._store().get(self.backend, dep["handle"].rsplit("/", 1)[-1])
            if found is not None and found.state in ("FAILED", "CANCELLED"):
                return f"dependency {dep['handle']} ended {found.state}"
        return None

    def _stop_remote(self, record: JobRecord) -> bool:
        """`scancel`: True once Slurm took it; an ended or unknown job is not an error."""
        info = record.data[TUNNEL]
        result = run_remote(tunnel_for(info), f"scancel {shlex.quote(str(record.data[REMOTE_ID]))}")
        text = (result.stderr + result.stdout).strip()
        if not result.failed:
            return True
        if "already completing or completed" in text or "Invalid job id" in text:
            return False
        raise BackendError(f"scancel {record.data[REMOTE_ID]} failed: {text}")

    def _stop(self, record: JobRecord) -> None:
        """scancel; a job that had already ended is left as it ended (see `_cancel_existing`)."""
        if not record.data.get(REMOTE_ID):
            super()._stop(record)  # raises: nothing to stop yet
        if not self._stop_remote(record):
            raise _AlreadyEnded(record.app_id)

    def _cancel_existing(self, app_id: str) -> None:
        """Cancel, recording CANCELLED once Slurm took the scancel; a job that ended first
        keeps its own end state (cancelling it again is fine)."""
        try:
            super()._cancel_existing(app_id)
        except _AlreadyEnded:  # the base has taken back the cancel request
            self.describe(app_id)

    def _delete_helper(self, record: JobRecord, entry: dict[str, Any]) -> None:
        """Slurm launches use no helper jobs."""

    def _response(self, record: JobRecord, state: AppState, msg: str) -> DescribeAppResponse:
        job_id = record.data.get(REMOTE_ID)
        if job_id and msg and f"job {job_id}" not in msg:
            msg = f"{msg} (Slurm job {job_id})"
        return single_role_response(
            record,
            state,
            msg,
            nodes=self._replicas(record),
            entrypoint="sbatch",
            args=[record.data.get("script", "")],
            hostname=str((record.data.get(TUNNEL) or {}).get("host") or "localhost"),
        )

    @staticmethod
    def _replicas(record: JobRecord) -> int:
        """Array jobs: one replica per array task (its own output file); else the nodes."""
        indices = array_indices(record.data.get("array"))
        return len(indices) if indices else int(record.data.get(NODES, 1))

    # -- logs -------------------------------------------------------------------------------
    def log_iter(
        self,
        app_id: str,
        role_name: str,
        k: int = 0,
        regex: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        should_tail: bool = False,
        streams: Stream | None = None,
    ) -> Iterable[str]:
        record = self._known_record(app_id)
        self._check_replica(
            app_id, {record.data.get("role", "main"): self._replicas(record)}, role_name, k
        )
        return self._matching(self._lines(record, k, should_tail), regex)

    def _lines(self, record: JobRecord, k: int, should_tail: bool) -> Iterator[str]:
        """The role's srun log (its latest attempt) through the tunnel, the batch output while
        there is none; following ends on the cluster when the job leaves the queue, so no
        `tail` outlives it even if this process dies."""
        job_id = record.data.get(REMOTE_ID)
        if not job_id:
            yield f"nemo_run: {record.app_id} has no Slurm job id (yet); no logs\n"
            return
        indices = array_indices(record.data.get("array"))
        index = indices[k] if indices else None
        batch_out = output_file(
            record.data.get("output") or "slurm-%j.out",
            record.data[REMOTE_DIR],
            str(job_id),
            record.app_id,
            index,
        )
        role = record.data.get("role", "main")
        name = (record.data.get("logs") or {}).get(role) or "*"
        pick = pick_log_snippet(record.data[REMOTE_DIR], name, str(job_id), index, batch_out)
        tail = should_tail and not self._finished(record.app_id)
        command = follow_command(pick, str(job_id)) if tail else read_command(pick)
        try:
            tunnel = tunnel_for(record.data[TUNNEL])
            for line in tunnel.stream(command, warn=True):
                yield line + "\n"
        except (TunnelConnectionError, TunnelCommandError, BackendError) as e:
            yield f"nemo_run: the logs of {record.app_id} are not available ({e})\n"


class _AlreadyEnded(Exception):
    """scancel found the job already over: the cancel records nothing."""


def pick_log_snippet(job_dir: str, name: str, job_id: str, index: int | None, fallback: str) -> str:
    """Shell lines defining `pick` (sets `f` to the newest srun log of the job, or to the
    batch output `fallback`) and `queued` (true while Slurm lists the job as not ended)."""
    d, fb, j = shlex.quote(job_dir), shlex.quote(fallback), shlex.quote(job_id)
    glob = f'{d}/log-{name if name == "*" else shlex.quote(name)}_"$jid"_*.out'
    if index is None:
        jid = f"jid={j}"
    else:  # an array task has its own job id, known once it started
        task = shlex.quote(f"{job_id}_{index}")
        jid = (
            f"jid=$(sacct -n -X -P -j {task} -o JobIDRaw 2>/dev/null | head -n 1); "
            f'[ -n "$jid" ] || jid=$(squeue -h -t all -j {task} -O JobID 2>/dev/null '
            "| head -n 1 | tr -d ' ')"
        )
    return (
        f'pick() {{ {jid}; f=; [ -n "$jid" ] && f=$(ls -1v {glob} 2>/dev/null | tail -n 1); '
        f'[ -n "$f" ] || f={fb}; }}\n'
        f"queued() {{ s=$(squeue -h -j {j} -o %T 2>&1) || "
        'case "$s" in *\'Invalid job id\'*) return 1;; esac; [ -n "$s" ]; }\n'
    )


def read_command(pick: str) -> str:
    """The log file whole, or a note when there is none (yet)."""
    return (
        pick + 'pick; if [ -e "$f" ]; then cat "$f"; else echo "nemo_run: no output yet ($f)"; fi\n'
    )


def follow_command(pick: str, job_id: str) -> str:
    """Wait for the srun log while the job is queued, then `tail -F` it until Slurm no
    longer lists the job."""
    return pick + (
        'pick; while case "$f" in */log-*) false;; *) true;; esac && queued; do sleep 2; pick; done\n'
        'tail -n +1 -s 0.5 -F "$f" 2>/dev/null & t=$!\n'
        "trap 'kill $t 2>/dev/null' EXIT\n"
        "while queued; do sleep 2; done\n"
        "sleep 1.5\n"
    )


def submit_program(request: SlurmJobRequest, archive: str, depends_on: list[dict[str, str]]) -> str:
    """The `bash -s` program of a launch (sent on stdin, never written whole anywhere):
    folder, code, script, sbatch, and the id written next to the script before it is
    printed."""
    job_dir = shlex.quote(request.job_dir)
    script = shlex.quote(request.script_path)
    marker = f"NEMO_RUN_SCRIPT_{secrets.token_hex(8)}"
    lines = ["set -e", f"mkdir -p {job_dir}", f"cd {job_dir}"]
    link = request.executor.packager.code_link
    if archive:
        lines.append(f"mkdir -p code && tar -xzf {shlex.quote(archive)} -C code")
    elif link:
        lines.append(f"ln -sfn {shlex.quote(link)} code")
    lines += [f"cat > {script} <<'{marker}'", request.script.rstrip("\n"), marker]
    for name, value in secret_env(request).items():
        lines.append(f"export {name}={shlex.quote(value)}")
    flags = ["--parsable"]
    if depends_on:
        kind = getattr(request.executor, "dependency_type", None) or "afterok"
        flags.append(f"--dependency={kind}:" + ":".join(d["id"] for d in depends_on))
    lines += [
        f"id=$(sbatch {' '.join(flags)} {script})",
        'id="${id%%;*}"',
        f'echo "$id" > {JOB_ID_FILE}',
        'echo "NEMO_RUN_JOB_ID=$id"',
    ]
    # parsed whole before anything runs (a connection lost mid-send runs nothing), and not
    # stopped by a hang-up once it runs: the id file is written whenever sbatch answered
    return "trap '' HUP PIPE\n{\n" + "\n".join(lines) + "\n}\n"


def secret_env(request: SlurmJobRequest) -> dict[str, str]:
    """Secret values the job gets through sbatch's environment instead of its script."""
    return {str(k): str(v) for k, v in request.batch.secret_env.items()}


def role_logs(request: SlurmJobRequest, app: AppDef) -> dict[str, str]:
    """Each role's srun log name (`log-<name>_<job id>_<restart>.out`), by role."""
    names = [getattr(g, "name", "") for g in request.batch.groups]
    roles = [r.name for r in app.roles]
    if len(names) != len(roles):
        return {}
    return dict(zip(roles, names, strict=True))


def create_scheduler(session_name: str, **kwargs: Any) -> SlurmTunnelScheduler:
    """Entry point for the `slurm_tunnel` torchx scheduler."""
    return SlurmTunnelScheduler(session_name, kwargs.get("experiment"))
