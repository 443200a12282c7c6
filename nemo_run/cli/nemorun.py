"""`nemorun`: list, watch, tail and cancel experiments and jobs on any backend, or run a command.

`nemorun --help` and the commands that read the store (`job list`, `experiment list`) start
fast: what only other commands need is imported inside them, when they run (torchx through
`Experiment` and `run.job`, ~0.2 s; the executors and HTTP clients of `login`, ~0.05 s).
Every error is one `nemorun: ...` line on stderr, never a traceback (set NEMORUN_DEBUG=1 to
see one), with the exit statuses of `EXIT_STATUS_HELP`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import json
import logging
import os
import re
import shlex
import sys
from typing import TYPE_CHECKING, Any

import typer

from nemo_run.core.credentials import save_profile
from nemo_run.core.script import Script
from nemo_run.core.states import JOB_STATES, State
from nemo_run.core.store import get_store
from nemo_run.exceptions import (
    BackendError,
    ConfigError,
    DiskError,
    NemoRunError,
    StoreError,
    UnknownExperimentError,
    UnknownJobError,
)
from nemo_run.run.experiment_files import list_experiments
from nemo_run.run.render import print_experiment_status, print_table, state_text, waiting, when
from nemo_run.run.torchx_backend.schedulers.backends import backend_named

if TYPE_CHECKING:
    from nemo_run.run.experiment import Experiment

EXIT_FAILED, EXIT_INVALID, EXIT_NO_ANSWER = 1, 2, 3
EXIT_NOT_FOUND = EXIT_INVALID  # an unknown thing is invalid input
EXIT_STATUS_HELP = (
    "Exit status:\n\n"
    "  0  fine\n\n"
    "  1  a job or task failed, was cancelled or skipped (or its logs are gone)\n\n"
    "  2  invalid input, or the experiment, task or job named does not exist\n\n"
    "  3  a backend or the store did not answer (the state shown is the last recorded), or the\n"
    "     home folder cannot be written (no space, read-only)"
)

app = typer.Typer(
    name="nemorun",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    help="Launch jobs and follow them later from any shell.",
    epilog=(
        "Examples:\n\n"
        "  nemorun run -- python train.py --lr 0.1\n\n"
        "  nemorun experiment list\n\n"
        "  nemorun experiment status my-exp_20260101-120000_ab12cd34ef56\n\n"
        "  nemorun job logs local_persistent://nemo_run/train-abc123 --follow\n\n"
        "  nemorun job list --state RUNNING --json\n\n" + EXIT_STATUS_HELP
    ),
)
experiment_app = typer.Typer(
    no_args_is_help=True, help="Experiments: groups of tasks launched together."
)
job_app = typer.Typer(no_args_is_help=True, help="Single jobs on any backend, by app handle.")
login_app = typer.Typer(
    no_args_is_help=True,
    help="Save a backend's credentials to a private profile ($NEMORUN_HOME/profiles, mode 0600).",
)
app.add_typer(experiment_app, name="experiment")
app.add_typer(job_app, name="job")
app.add_typer(login_app, name="login")

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON.")


def _emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_plain(value), default=str) + "\n")


def _plain(value: Any) -> Any:
    """`value` with enums as their names: AppState is an int enum, which json writes as a
    bare number."""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text.strip())


def _fail(message: str, code: int) -> None:
    typer.echo(f"nemorun: {_one_line(message)}", err=True)
    raise typer.Exit(code)


class _WarningLines(logging.Handler):
    """Library warnings (a skipped file, an unreadable record) as `nemorun: warning: ...`
    lines on the current stderr (looked up per message, so test runners can capture it)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = record.levelname.lower()
            sys.stderr.write(f"nemorun: {level}: {_one_line(record.getMessage())}\n")
        except Exception:  # noqa: BLE001 - a warning must never break a command
            self.handleError(record)


def _warnings_to_stderr() -> None:
    logger = logging.getLogger("nemo_run")
    if not any(isinstance(h, _WarningLines) for h in logger.handlers):
        logger.addHandler(_WarningLines())


def _backend_refused(e: BackendError) -> bool:
    """A 4xx other than 429: the backend answered, and said no."""
    return e.status is not None and 400 <= e.status < 500 and e.status != 429


def _guard(fn: Any) -> Any:
    """Turn every error into one line and the documented exit status (see EXIT_STATUS_HELP)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _warnings_to_stderr()
        try:
            return fn(*args, **kwargs)
        except (
            typer.Exit,
            typer.Abort,
            typer.TyperException,
        ):  # typer's own exits and usage errors
            raise
        except (UnknownJobError, UnknownExperimentError, ConfigError) as e:
            _fail(str(e), EXIT_INVALID)
        except (StoreError, DiskError) as e:
            _fail(str(e), EXIT_NO_ANSWER)
        except BackendError as e:
            _fail(str(e), EXIT_FAILED if _backend_refused(e) else EXIT_NO_ANSWER)
        except NemoRunError as e:
            _fail(str(e), EXIT_FAILED)
        except BrokenPipeError:  # `nemorun job logs X | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as e:
            if os.environ.get("NEMORUN_DEBUG") == "1":
                raise
            _fail(f"error: {type(e).__name__}: {e}", EXIT_INVALID)

    return wrapper


def _open_experiment(id_or_title: str) -> Experiment:
    from nemo_run.run.experiment import Experiment  # noqa: PLC0415 - loads torchx

    try:
        return Experiment.from_id(id_or_title)
    except UnknownExperimentError as by_id:
        try:
            return Experiment.from_title(id_or_title)
        except UnknownExperimentError:
            raise by_id from None


# -- experiment ------------------------------------------------------------------------------
@experiment_app.command("list")
@_guard
def experiment_list(
    title: str = typer.Argument(None, help="Only experiments with exactly this title."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List experiments, newest first.   Example: nemorun experiment list my-exp"""
    records = list_experiments(title)[::-1]
    rows: list[dict[str, Any]] = [
        {
            "id": r.id,
            "title": r.title,
            "created_at": r.created_at,
            "tasks": [t.id for t in r.tasks],
            "dir": r.dir,
            "written_by": r.written_by,  # set for a folder nemo-run 0.11.1 wrote (read-only)
        }
        for r in records
    ]
    if as_json:
        _emit_json(rows)
        return
    print_table(
        "Experiments",
        ["id", "title", "created", "tasks"],
        [[r["id"], r["title"], when(r["created_at"]), ", ".join(r["tasks"])] for r in rows],
    )


@experiment_app.command("status")
@_guard
def experiment_status(
    id: str = typer.Argument(..., help="Experiment id (or a title: its latest)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Each task's state, handle, times and exit code.   Example: nemorun experiment status ID"""
    exp = _open_experiment(id)
    statuses = exp.status(return_dict=True)
    if as_json:
        _emit_json({"id": exp.id, "title": exp.title, "dir": exp.dir, "tasks": statuses})
    else:
        print_experiment_status(exp._current_record(), statuses)
    if any(State.parse(s["state"]).is_bad_end() for s in statuses.values()):
        raise typer.Exit(EXIT_FAILED)


@experiment_app.command("logs")
@_guard
def experiment_logs(
    id: str = typer.Argument(..., help="Experiment id or title."),
    task: str = typer.Argument(..., help="Task id within the experiment."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream until the task ends."),
    regex: str = typer.Option(None, "--regex", help="Only lines matching this regex."),
) -> None:
    """Print a task's logs.   Example: nemorun experiment logs ID train --follow"""
    exp = _open_experiment(id)
    _print_lines(exp.log_lines(task, follow=follow, regex=regex))


@experiment_app.command("cancel")
@_guard
def experiment_cancel(
    id: str = typer.Argument(..., help="Experiment id or title."),
    task: str = typer.Argument(None, help="Task id; omit with --all."),
    all_tasks: bool = typer.Option(False, "--all", help="Cancel every task."),
) -> None:
    """Cancel one task or all of them.   Example: nemorun experiment cancel ID --all"""
    if (task is None) == (not all_tasks):
        _fail("name one TASK or pass --all (not both)", EXIT_INVALID)
    exp = _open_experiment(id)
    acted = exp.cancel(None if all_tasks else task)
    typer.echo(f"cancelled: {', '.join(acted) if acted else 'nothing was running'}")


# -- job -------------------------------------------------------------------------------------
def _state_named(state: str) -> str:
    """A known job state (any case), or ConfigError with the closest one."""
    names = [s.value for s in JOB_STATES]

    wanted = state.strip().upper()
    if wanted in names:
        return wanted
    close = difflib.get_close_matches(wanted, names, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ConfigError(f"unknown state {state!r}; {hint}known states: {', '.join(names)}")


@job_app.command("list")
@_guard
def job_list(
    backend: str = typer.Option(
        None, "--backend", "-b", help="local, docker, skypilot, dgxcloud, lepton."
    ),
    state: str = typer.Option(None, "--state", "-s", help="e.g. RUNNING, FAILED."),
    limit: int = typer.Option(50, "--limit", "-n", help="Newest N jobs; 0 for all."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List known jobs, newest first, states as recorded.   Example: nemorun job list -b local"""
    scheduler = None
    if backend is not None:
        scheduler = backend_named(backend).scheduler
    wanted = _state_named(state) if state is not None else None
    if limit < 0:
        raise ConfigError(f"--limit must be 0 (all) or more, got {limit}")
    records = get_store().list(scheduler, state=wanted, limit=limit or None, include_data=False)
    rows: list[dict[str, Any]] = [
        {
            "handle": r.handle,
            "backend": r.backend,
            "app_id": r.app_id,
            "state": r.state,
            "experiment_id": r.experiment_id,
            "created_at": r.created_at,
            "job_dir": r.log_dir,
        }
        for r in records
    ]
    if as_json:
        _emit_json(rows)
        return
    print_table(
        "Jobs",
        ["handle", "state", "created", "experiment"],
        [
            [r["handle"], state_text(r["state"]), when(r["created_at"]), r["experiment_id"]]
            for r in rows
        ],
    )


@job_app.command("status")
@_guard
def job_status(
    handle: str = typer.Argument(..., help="App handle, e.g. local_persistent://nemo_run/<id>."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The live state of one job.   Example: nemorun job status HANDLE --json"""
    from nemo_run.run.job import job_status as status_of  # noqa: PLC0415 - loads torchx

    status = status_of(handle)
    silence = status.get("unanswered")
    if as_json:
        _emit_json(status)
    elif not silence:
        print_table(
            status["handle"],
            ["state", "exit", "started", "ended", "job dir", "note"],
            [
                [
                    state_text(status["state"]),
                    status["exit_code"],
                    when(status["started_at"]),
                    when(status["ended_at"]),
                    status["job_dir"],
                    status["msg"],
                ]
            ],
        )
    if silence:
        _fail(
            f"{status['backend']} backend not answering: {silence}; "
            f"last recorded state {status['state']}",
            EXIT_NO_ANSWER,
        )
    if State.parse(status["state"]).is_bad_end():
        raise typer.Exit(EXIT_FAILED)


def _print_lines(lines: Any) -> None:
    for line in lines:
        sys.stdout.write(line)
        sys.stdout.flush()


@job_app.command("logs")
@_guard
def job_logs(
    handle: str = typer.Argument(..., help="App handle."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream until the job ends."),
    regex: str = typer.Option(None, "--regex", help="Only lines matching this regex."),
) -> None:
    """Print a job's logs (all roles and replicas).   Example: nemorun job logs HANDLE -f"""
    from nemo_run.run.job import job_log_lines  # noqa: PLC0415 - loads torchx

    _print_lines(job_log_lines(handle, follow=follow, regex=regex))


@job_app.command("cancel")
@_guard
def job_cancel(handle: str = typer.Argument(..., help="App handle.")) -> None:
    """Cancel a job (process group, containers, workload).   Example: nemorun job cancel HANDLE"""
    from nemo_run.run.job import job_status as status_of  # noqa: PLC0415 - loads torchx
    from nemo_run.run.torchx_backend.runner import get_runner  # noqa: PLC0415 - loads torchx

    status_of(handle)  # raises a clear error for an unknown handle or backend
    get_runner().cancel(handle)
    typer.echo(f"{handle}: {status_of(handle)['state']}")


# -- run -------------------------------------------------------------------------------------
def _parse_pairs(pairs: list[str], flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} takes KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _executor_fields(cls: type, options: list[str], env: list[str]) -> dict[str, Any]:
    """`-o KEY=VALUE` (JSON values) and `--env K=V` as keyword arguments for `cls`: an unknown
    field (with the closest known one) or an `env_vars` that is not an object is refused here;
    the executor checks the types of the other values when it is created."""
    prefix = f"--option for {cls.__name__}"
    known = (
        [f.name for f in dataclasses.fields(cls) if f.init] if dataclasses.is_dataclass(cls) else []
    )
    fields: dict[str, Any] = {}
    for key, text in _parse_pairs(options, "--option").items():
        if known and key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{prefix}: unknown field {key!r}; {hint}fields: {', '.join(sorted(known))}"
            )
        fields[key] = _option_value(text)
    env_vars = fields.get("env_vars", {})
    if not isinstance(env_vars, dict):
        raise ConfigError(
            f'{prefix}: env_vars takes a JSON object like env_vars=\'{{"K": "v"}}\' '
            f"(or use --env K=V), got {json.dumps(env_vars)}"
        )
    fields["env_vars"] = {**env_vars, **_parse_pairs(env, "--env")}
    return fields


@app.command("run", context_settings={"allow_interspersed_args": False})
@_guard
def run_command(
    cmd: list[str] = typer.Argument(..., help="The command and its arguments, after --."),
    executor: str = typer.Option(
        "local", "--executor", "-e", help="local, docker, skypilot, dgxcloud, lepton."
    ),
    name: str = typer.Option(None, "--name", help="Task name (default: the command's name)."),
    env: list[str] = typer.Option(
        [], "--env", help="KEY=VALUE for the job's environment (repeatable)."
    ),
    option: list[str] = typer.Option(
        [],
        "--option",
        "-o",
        help="Executor field KEY=VALUE, e.g. -o ntasks_per_node=2 (repeatable).",
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait for the job and exit with its outcome."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run a command as a one-task experiment.   Example: nemorun run -- python train.py"""
    from nemo_run.run.experiment import Experiment  # noqa: PLC0415 - loads torchx

    if name is not None and not name.strip():
        raise ConfigError("--name is empty; give the task a name, or leave --name out")
    executor_class = backend_named(executor).executor_class()
    fields = _executor_fields(executor_class, option, env)
    try:
        chosen = executor_class(**fields)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--option for {executor_class.__name__}: {e}") from e
    task_name = name or os.path.basename(cmd[0]).replace(".", "-") or "cmd"
    exp = Experiment(task_name, executor=chosen)
    exp.add(Script(inline=shlex.join(cmd)), name=task_name)
    exp.run(detach=True)
    info = {"experiment_id": exp.id, "task": task_name, **exp.status(return_dict=True)[task_name]}
    if wait:
        with waiting(f"waiting for {task_name} ({exp.id})"):
            info.update(exp.wait()[task_name])
    if as_json:
        _emit_json(info)
    else:
        typer.echo(f"experiment {exp.id}: task {task_name} {info['state']} ({info['handle']})")
        if not wait:
            typer.echo(f"follow it:  nemorun experiment logs {exp.id} {task_name} --follow")
            typer.echo(f"status:     nemorun experiment status {exp.id}")
    if State.parse(info["state"]).is_bad_end():
        raise typer.Exit(EXIT_FAILED)


# -- login -----------------------------------------------------------------------------------
@login_app.command("dgxcloud")
@_guard
def login_dgxcloud(
    base_url: str = typer.Option(
        ...,
        "--base-url",
        prompt="Run:ai API URL (ends in /api/v1)",
        help="e.g. https://my-org.run.ai/api/v1",
    ),
    client_id: str = typer.Option(..., "--client-id", prompt="Client (application) id"),
    client_secret: str = typer.Option(
        ...,
        "--client-secret",
        prompt="Client secret",
        hide_input=True,
        help="Prompted for (hidden) when not given.",
    ),
    check: bool = typer.Option(True, "--check/--no-check", help="Ask the API for a token first."),
) -> None:
    """Save DGX Cloud (Run:ai) credentials.   Example: nemorun login dgxcloud --base-url URL --client-id ID"""
    from nemo_run.core.clients.runai import RunAIClient  # noqa: PLC0415 - only login needs it
    from nemo_run.core.execution.dgxcloud import PROFILE, check_base_url  # noqa: PLC0415 - same

    base_url = check_base_url(base_url.strip())
    if check:
        RunAIClient(base_url, client_id, client_secret, timeout=15).call(
            "GET", "/org-unit/projects", idempotent=True
        )
    path = save_profile(
        PROFILE, {"base_url": base_url, "client_id": client_id, "client_secret": client_secret}
    )
    typer.echo(f"saved to {path} (mode 0600); DGXCloudExecutor reads it when DGX_CLOUD_* are unset")


@login_app.command("lepton")
@_guard
def login_lepton(
    workspace_id: str = typer.Option(..., "--workspace-id", prompt="Workspace id"),
    token: str = typer.Option(
        ...,
        "--token",
        prompt="Workspace token",
        hide_input=True,
        help="Prompted for (hidden) when not given.",
    ),
    url: str = typer.Option("", "--url", help="Workspace URL, when it is not the default one."),
    check: bool = typer.Option(True, "--check/--no-check", help="List the workspace's jobs first."),
) -> None:
    """Save DGX Cloud Lepton credentials.   Example: nemorun login lepton --workspace-id ID"""
    from nemo_run.core.clients.lepton import LeptonClient  # noqa: PLC0415 - only login needs it
    from nemo_run.core.execution.lepton import PROFILE  # noqa: PLC0415 - same

    if check:
        LeptonClient(
            timeout=15, workspace_id=workspace_id, token=token, url=url or None
        ).list_jobs()
    path = save_profile(PROFILE, {"workspace_id": workspace_id, "token": token, "url": url})
    typer.echo(
        f"saved to {path} (mode 0600); LeptonExecutor reads it when LEPTON_WORKSPACE_* are unset"
    )


# -- dashboard -------------------------------------------------------------------------------
@app.command("dashboard")
@_guard
def dashboard(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on; any but loopback needs the token."
    ),
    port: int = typer.Option(8765, "--port", help="Port to listen on (0: any free port)."),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in a browser."),
    read_only: bool = typer.Option(False, "--read-only", help="Hide and refuse cancelling."),
) -> None:
    """A web page of every experiment and job, with live logs.   Example: nemorun dashboard --open"""
    # the optional server stack (starlette, uvicorn: the `dashboard` extra) and torchx, which
    # no other command needs: loaded only when this one runs
    from nemo_run.dashboard.server import serve  # noqa: PLC0415

    serve(host, port, open_browser=open_browser, read_only=read_only)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
