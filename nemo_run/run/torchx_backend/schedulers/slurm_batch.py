"""An AppDef on a `SlurmExecutor` -> the `SlurmBatchRequest` whose script `sbatch` runs.

One role is one srun; several roles (a task group) run in one allocation: as a heterogeneous
job (`#SBATCH hetjob`, one group per role) when the executor was merged `heterogeneous`, else
as several sruns sharing the allocation. Secret values (secret-looking environment variables,
secret arguments) are moved out of the script into `SlurmBatchRequest.secret_env`.
"""

from __future__ import annotations

import re
from typing import Any

from torchx.specs import AppDef, Role, macros

from nemo_run.core.execution.slurm import SlurmBatchRequest, SlurmExecutor, SrunGroup
from nemo_run.core.redact import ARG_ENV_PREFIX, is_secret_arg_env, split_secret_args
from nemo_run.core.redact import is_secret_name as is_secret_name
from nemo_run.exceptions import ConfigError

SUBMIT = ["sbatch", "--parsable"]
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@%:=,~/-]*$")
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_RESTART_COUNT")


def batch_request(app: AppDef, executor: SlurmExecutor, job_dir: str) -> SlurmBatchRequest:
    """The request for `app` in `job_dir` (the job's folder where it runs); every check that
    needs no cluster runs here, before anything is submitted."""
    executor.validate()
    if not app.roles:
        raise ConfigError(f"app {app.name!r} has no roles to run")
    if not _SAFE_PATH.match(job_dir or ""):
        raise ConfigError(
            f"Slurm job folder {job_dir!r} must be an absolute path of letters, digits and "
            "'._-+@%:=,~/' (it is written into #SBATCH lines and the script); set the tunnel's "
            "job_dir to such a folder"
        )
    launcher = executor.get_launcher()
    prefix = job_name_prefix(executor)
    secret_env: dict[str, str] = {}
    groups = [
        _group(i, role, executor, prefix, secret_env, app.name) for i, role in enumerate(app.roles)
    ]
    common = _common_env(groups)
    for group in groups:
        group.env = {k: v for k, v in group.env.items() if k not in common}
    packager = executor.packager
    ships = bool(getattr(packager, "ships_code", False) or getattr(packager, "code_link", None))
    macro = executor.macro_values()
    expand = [
        *macro.variable_names(),
        *(f"{macro.het_group_host_var}_{i}" for i in range(len(groups))),
        *SLURM_VARS,
    ]
    return SlurmBatchRequest(
        launch_cmd=list(SUBMIT),
        jobs=[g.name for g in groups],
        command_groups=[g.argv for g in groups],
        executor=executor,
        max_retries=max([executor.retries, *(r.max_retries for r in app.roles)]),
        setup=[executor.setup_lines] if executor.setup_lines else None,
        extra_env=common,
        launcher=launcher,
        job_name=f"{prefix}{app.name}",
        job_dir=job_dir.rstrip("/") or "/",
        groups=groups,
        secret_env=secret_env,
        expand_vars=expand,
        code_dir=f"{job_dir.rstrip('/')}/code" if ships else None,
    )


def job_name_prefix(executor: SlurmExecutor) -> str:
    """`job_name_prefix`, or 0.11.1's default `<account>-<last part of account>.`."""
    if executor.job_name_prefix is not None:
        return executor.job_name_prefix
    return f"{executor.account}-{executor.account.split(':')[-1]}."


def _group(
    index: int,
    role: Role,
    executor: SlurmExecutor,
    prefix: str,
    secret_env: dict[str, str],
    app_id: str,
) -> SrunGroup:
    """Role `index` as one srun: torchx's macros filled with Slurm's variables, secrets out."""
    head = executor.macro_values().head_node_ip_var
    role = macros.Values(
        img_root="", app_id="$SLURM_JOB_ID", replica_id="$SLURM_PROCID", rank0_env=head
    ).apply(role)
    argv, arg_secrets = split_secret_args([role.entrypoint, *role.args])
    argv = _merge_arg_secrets(index, argv, arg_secrets, secret_env)
    group = SrunGroup(name=f"{prefix}{role.name}", argv=argv)
    request = _place(group, index, executor)
    # a merged group's own env_vars win over the first executor's, merged into every role
    merged = {**role.env, **(request.env_vars if request is not None else {})}
    for key, value in merged.items():
        if is_secret_name(key) or is_secret_arg_env(key):
            _add_secret(secret_env, key, value, role.name)
        else:
            group.env[key] = value
    return group


def _merge_arg_secrets(
    index: int, argv: list[str], found: dict[str, str], secret_env: dict[str, str]
) -> list[str]:
    """Secret arguments of role `index` into the job's secret environment; a reference whose
    name another role already uses for another value is renamed (`..._R<index>`)."""
    for name, value in found.items():
        if secret_env.get(name, value) == value:
            secret_env[name] = value
            continue
        renamed = f"{name}_R{index}"
        secret_env[renamed] = value
        argv = [a.replace("${" + name + "}", "${" + renamed + "}") for a in argv]
    return argv


def _add_secret(secret_env: dict[str, str], key: str, value: str, role: str) -> None:
    if key in secret_env and secret_env[key] != value and not key.startswith(ARG_ENV_PREFIX):
        raise ConfigError(
            f"roles of one Slurm job set the secret {key} to different values (role {role!r}); "
            "a job's secrets travel in sbatch's one environment: give them the same value or "
            "different names"
        )
    secret_env[key] = value


def _place(group: SrunGroup, index: int, executor: SlurmExecutor) -> Any:
    """The resources srun `index` runs with: its resource request in a merged group, else the
    executor's; in a heterogeneous job, its hetjob group. Returns the request used, if any."""
    source: Any = executor
    requests = executor.resource_group
    if executor.run_as_group and requests:
        if index >= len(requests):
            raise ConfigError(
                f"SlurmExecutor.resource_group has {len(requests)} entries but the job has "
                f"more roles; merge one executor per task (SlurmExecutor.merge)"
            )
        source = requests[index]
        if executor.heterogeneous:
            het = source.het_group_index
            group.het_group = het if het is not None else index
    group.nodes = source.nodes
    group.ntasks_per_node = source.ntasks_per_node
    group.gpus_per_node = source.gpus_per_node
    group.gpus_per_task = source.gpus_per_task
    group.container_image = source.container_image
    group.container_mounts = list(source.container_mounts)
    group.container_env = list(source.container_env or [])
    group.srun_args = list(source.srun_args or [])
    return source if source is not executor else None


def _common_env(groups: list[SrunGroup]) -> dict[str, str]:
    """Variables every srun sets to the same value: exported once for the whole script."""
    first = groups[0].env
    return {k: v for k, v in first.items() if all(g.env.get(k) == v for g in groups[1:])}
