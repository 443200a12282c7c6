"""Remote backends whose jobs find their code and write their logs on shared storage (a Run:ai
PVC, a Lepton mount): the request, launch script, code shipping, per-rank logs and describe
response they share. A backend adds its API body, its client and the hooks of
`RemoteSchedulerMixin`.

On the storage every job has `<mount dir>/<app id>/` holding `launch.sh`, `code/` (the
packager's archive) and `logs/rank<k>.log`. The code gets there directly when the storage is
mounted where the launcher runs (`launched_from_cluster=True`), otherwise through short-lived
helper jobs (`core/clients/datamover.py`).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from torchx.schedulers.api import AppDryRunInfo, DescribeAppResponse, Stream
from torchx.specs import AppDef, AppState, macros

from nemo_run.core.clients.datamover import DataMover, HelperOps, build_payload
from nemo_run.core.execution.fields import shell_join
from nemo_run.core.packaging.base import extract
from nemo_run.core.redact import (
    MASK,
    is_secret_arg_env,
    is_secret_name,
    mask_references,
    split_secret_args,
)
from nemo_run.core.store.records import NODES, REMOTE_DIR
from nemo_run.exceptions import ConfigError
from nemo_run.run.torchx_backend.schedulers.api import single_role_response, unique_name
from nemo_run.run.torchx_backend.schedulers.logs import follow_file
from nemo_run.run.torchx_backend.schedulers.remote import RemoteSchedulerMixin

if TYPE_CHECKING:
    from nemo_run.core.store.records import JobRecord


@dataclass
class MountedJobRequest:
    """One job to create. `cmd` has secret values replaced by `${NEMORUN_ARG_<i>}` references;
    `secret_env` holds those values, which travel only in the API request's environment."""

    app: AppDef
    cmd: list[str]
    executor: Any
    name: str
    secret_env: dict[str, str] = field(default_factory=dict)

    rank_var: ClassVar[str] = "NODE_RANK"  # the shell variable naming the node's rank
    job_dir_field: ClassVar[str] = ""  # the executor field told the job's folder at dry run

    @property
    def mount_dir(self) -> str:
        """The folder on the shared storage that holds every job's folder."""
        raise NotImplementedError

    @property
    def job_dir(self) -> str:
        return f"{self.mount_dir.rstrip('/')}/{self.name}"

    @property
    def shown_cmd(self) -> list[str]:
        """The command as records and dry runs show it: secrets masked."""
        return mask_references(self.cmd, self.secret_env)

    def env(self) -> dict[str, str]:
        """What the job's environment gets from the task, and the secret arguments."""
        return {**self.app.roles[0].env, **self.secret_env}

    def prelude(self) -> list[str]:
        """Shell lines that set `rank_var` (and whatever else the platform needs) first."""
        return []

    def node_variables(self) -> list[str]:
        """The executor's macro variables (head node address, node rank, ...) and MASTER_PORT
        (set by the prelude, named by torchrun's static rendezvous): references to them in
        the command expand on each node; everything else is quoted."""
        macros = self.executor.macro_values()
        if macros is None:
            return []
        names = [*macros.variable_names(), "MASTER_PORT"]
        return [n for n in names if n]

    def setup_commands(self) -> list[str]:
        """User commands to run before the task (e.g. `pre_launch_commands`)."""
        return []

    def launch_script(self, with_code: bool) -> str:
        """Runs on every node: a per-rank log on the storage, `pipefail` so the command's exit
        code is the job's; secret arguments are read from the environment, never written."""
        lines = [
            "#!/bin/bash",
            "set -o pipefail",
            *self.prelude(),
            f"mkdir -p {shlex.quote(self.job_dir)}/logs",
            *self.setup_commands(),
        ]
        link = self.executor.packager.code_link  # symlink_from_remote_dir: code on the storage
        if link:
            lines.append(f"ln -sfn {shlex.quote(link)} {shlex.quote(self.job_dir)}/code")
        if with_code or link:
            lines.append(f"cd {shlex.quote(self.job_dir)}/code")
        command = shell_join(self.cmd, self.node_variables(), self.secret_env)
        log = f"{self.job_dir}/logs/rank${{{self.rank_var}}}.log"
        lines.append(f'{command} 2>&1 | tee "{log}"')
        return "\n".join(lines) + "\n"

    def dryrun_text(self, request_line: str, body: dict[str, Any]) -> str:
        """The API request (env values masked) and the launch script, as a dry run prints them."""
        return (
            f"{request_line}\n{json.dumps(mask_env_items(body), indent=2)}\n"
            f"# {self.job_dir}/launch.sh\n{self.launch_script(self.executor.packager.ships_code)}"
        )


def mask_env_items(value: Any) -> Any:
    """A copy of an API body with the value of every secret-looking `{name, value}` item masked
    (Run:ai `environmentVariables`, Lepton `envs`), secret arguments' variables included."""
    if isinstance(value, dict):
        name = value.get("name")
        masked = isinstance(name, str) and (is_secret_name(name) or is_secret_arg_env(name))
        return {
            k: (MASK if k == "value" and masked and v else mask_env_items(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_env_items(v) for v in value]
    return value


def write_locally(job_dir: str, archive: str | None, script: str) -> None:
    """Code and launch script straight onto storage mounted here."""
    os.makedirs(os.path.join(job_dir, "logs"), exist_ok=True)
    if archive:
        extract(archive, os.path.join(job_dir, "code"))
    path = os.path.join(job_dir, "launch.sh")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(script)
    os.chmod(path, 0o755)


class MountedJobSchedulerMixin(RemoteSchedulerMixin):
    """Dry run, code shipping, describe response and logs of a shared-storage backend."""

    request_class: type[MountedJobRequest]
    name_limit: int  # the platform's limit on job names
    helper_timeout_s: float = 600.0
    storage = "shared storage"  # what users call it: "PVC", "shared mount"

    # -- hooks ---------------------------------------------------------------------------------
    def _check_request(self, request: MountedJobRequest) -> None:
        """Platform limits checked at dry run (e.g. the length of the command)."""

    def _ui_url(self, record: JobRecord) -> str | None:
        return None

    def _remote_lines(
        self, record: JobRecord, k: int, should_tail: bool, path: str
    ) -> Iterator[str]:
        """Replica `k`'s log when the storage is not mounted here."""
        executor = self.executor_type.__name__
        yield (
            f"nemo_run: the logs of {record.app_id} are on the {self.storage} at {path}; read "
            f"them where the {self.storage} is mounted ({executor}(launched_from_cluster=True)) "
            f"or in the {self.label} UI\n"
        )

    # -- dry run -------------------------------------------------------------------------------
    def _submit_dryrun(self, app: AppDef, cfg: Any) -> AppDryRunInfo[MountedJobRequest]:
        cfg.validate()  # fields may have been set after construction: check them all now
        if len(app.roles) != 1:
            raise ConfigError(
                f"{self.label} runs one role per job; {app.name!r} has {len(app.roles)}"
            )
        name = unique_name(app.name, self.name_limit)
        # one spec serves every node: no per-replica values to substitute
        role = macros.Values(
            img_root="", app_id=name, replica_id="0", rank0_env="MASTER_ADDR"
        ).apply(app.roles[0])
        app.roles = [role]
        cmd, secret_env = split_secret_args([role.entrypoint, *role.args])
        request = self.request_class(
            app=app, cmd=cmd, executor=cfg, name=name, secret_env=secret_env
        )
        self._check_request(request)
        if request.job_dir_field:
            setattr(cfg, request.job_dir_field, request.job_dir)
        return AppDryRunInfo(request, str)

    def _app_id_of(self, request: MountedJobRequest) -> str:
        return request.name

    def _record_data(self, request: MountedJobRequest) -> dict[str, Any]:
        """What every shared-storage job keeps in its record."""
        ex = request.executor
        return {
            REMOTE_DIR: request.job_dir,
            NODES: ex.nodes,
            "role": request.app.roles[0].name,
            "cmd": request.shown_cmd,
            "launched_from_cluster": ex.launched_from_cluster,
        }

    # -- code onto the storage -------------------------------------------------------------------
    def _ship_code(
        self,
        request: MountedJobRequest,
        archive: str | None,
        script: str,
        *,
        helper_ops: Callable[[], HelperOps],
        helper_name: Callable[[int], str],
        leftovers: list[dict[str, Any]],
        beat: Callable[[], None],
    ) -> int:
        """Directly when the storage is mounted here, else by helper jobs (any that cannot be
        deleted are added to `leftovers`); how many helpers it took."""
        if request.executor.launched_from_cluster:
            write_locally(request.job_dir, archive, script)
            return 0
        mover = DataMover(
            helper_ops(), timeout=self.helper_timeout_s, on_progress=beat, leftovers=leftovers
        )
        payload = build_payload({"launch.sh": script.encode()}, archive)
        return mover.upload(helper_name, request.job_dir, payload)

    # -- describe --------------------------------------------------------------------------------
    def _response(self, record: JobRecord, state: AppState, msg: str) -> DescribeAppResponse:
        cmd = record.data.get("cmd") or [""]
        return single_role_response(
            record,
            state,
            msg,
            nodes=int(record.data.get(NODES, 1)),
            entrypoint=cmd[0],
            args=cmd[1:],
            ui_url=self._ui_url(record),
        )

    # -- logs ------------------------------------------------------------------------------------
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
        counts = {record.data.get("role", "main"): int(record.data.get(NODES, 1))}
        self._check_replica(app_id, counts, role_name, k)
        return self._matching(self._lines(record, k, should_tail), regex)

    def _lines(self, record: JobRecord, k: int, should_tail: bool) -> Iterator[str]:
        path = f"{record.data.get(REMOTE_DIR, '')}/logs/rank{k}.log"
        if record.data.get("launched_from_cluster") and os.path.isdir(os.path.dirname(path)):
            yield from follow_file(path, lambda: self._finished(record.app_id), should_tail)
            return
        yield from self._remote_lines(record, k, should_tail, path)
