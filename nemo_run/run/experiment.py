"""`Experiment`: a named group of tasks, launched respecting dependencies and reopenable by id.

Everything needed to come back to it later lives in
`$NEMORUN_HOME/experiments/<title>/<id>/experiment.json`; live states come from the job store
and the backends, so `Experiment.from_id(id)` in a new process sees what the launcher sees.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import logging
import os
import pickle
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal, overload

from torchx.specs import AppState

from nemo_run.config import get_nemorun_home as get_nemorun_home
from nemo_run.config import get_type_namespace as get_type_namespace
from nemo_run.core import processes
from nemo_run.core.config_mixin import ConfigurableMixin as ConfigurableMixin
from nemo_run.core.diskerrors import raise_if_disk_trouble
from nemo_run.core.execution.base import Executor
from nemo_run.core.execution.local import LocalExecutor
from nemo_run.core.names import check_folder_name
from nemo_run.core.runners.partial import refuse_launch_while_loading_main
from nemo_run.core.script import Script
from nemo_run.exceptions import (
    ConfigError,
    JobFailedError,
    UnknownExperimentError,
    UnknownJobError,
)
from nemo_run.run import experiment_files as files
from nemo_run.run import task_definitions
from nemo_run.run.driver import (
    Driver,
    driver_alive,
    identity_of_this_process,
    needs_no_driver,
)
from nemo_run.run.experiment_files import ExperimentRecord, TaskEntry
from nemo_run.run.experiment_status import task_done, task_status
from nemo_run.run.job import Job, JobGroup, job_log_lines, parse_handle, stored_record
from nemo_run.run.plan import (
    PlannedTask,
    check_new_task_id,
    default_task_id,
    is_external_dependency,
    launch_order,
    unique_task_id,
)
from nemo_run.run.plugin import ExperimentPlugin, apply_plugins, describe_plugin, plugin_list
from nemo_run.run.render import print_experiment_status
from nemo_run.run.torchx_backend.packaging import package, task_name
from nemo_run.run.torchx_backend.poller import poll_handles, seconds_to_next
from nemo_run.run.torchx_backend.runner import get_runner
from nemo_run.run.torchx_backend.schedulers.backends import backend_for_executor

if TYPE_CHECKING:
    from nemo_run.core.configurable import Config

log = logging.getLogger(__name__)

WAIT_STEP_S = 0.5  # how often `wait` re-reads the experiment for tasks launched meanwhile
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _new_id(title: str) -> str:
    """`<title>_<time>_<48 random bits>`: ids of one title in one second must not collide
    (`ExperimentRecord.create` still refuses a taken one)."""
    return f"{title}_{time.strftime('%Y%m%d-%H%M%S')}_{secrets.token_hex(6)}"


def _check_title(title: str) -> str:
    return check_folder_name(title, "Experiment title")


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def _check_log_level(level: Any) -> str:
    """0.11.1 hands the level to `logging`; a typo there failed deep inside it."""
    if not isinstance(level, str) or level.upper() not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return level.upper()


def _check_workers(workers: Any) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(
            f"threadpool_workers must be a positive int (jobs launched at once), got {workers!r}"
        )
    return workers


def _set_log_level(level: str) -> None:
    """0.11.1's `log_level`, applied to this package's loggers only (never the root)."""
    logging.getLogger("nemo_run").setLevel(level)


def _script_argv(script: Script) -> list[str]:
    entrypoint = sys.executable if script.entrypoint == "python" else script.entrypoint
    if script.inline:
        return [entrypoint, "-c", script.inline, *script.args]
    return [entrypoint, *(["-m"] if script.m else []), script.path, *script.args]


def _run_in_process(task_id: str, task: Any) -> None:
    """One task of a direct run: a Script as a child process (its output is ours), a
    Partial/Config built and called here. A Script's non-zero exit raises JobFailedError."""
    if isinstance(task, Script):
        try:
            code = subprocess.call(
                _script_argv(task), env={**os.environ, **task.env}, stdin=subprocess.DEVNULL
            )
        except OSError as e:
            raise ConfigError(
                f"task {task_id!r}: cannot start {task.entrypoint!r} ({e.strerror or e}); "
                "check Script.entrypoint"
            ) from e
        if code != 0:
            raise JobFailedError(f"direct://{task_id}", "FAILED", f"exit code {code}")
        return
    import fiddle as fdl  # noqa: PLC0415 - fiddle (~0.3 s), only when a Partial runs here

    built = fdl.build(task)
    if isinstance(task, fdl.Partial):
        built()


def _check_dependencies(dependencies: Any) -> list[str]:
    """Task ids of this experiment, or app handles of other experiments' jobs; a handle is
    parsed here so a typo fails at `add`, before anything runs."""
    if dependencies is None:
        return []
    if not isinstance(dependencies, (list, tuple)) or not all(
        isinstance(d, str) for d in dependencies
    ):
        raise ConfigError(
            "dependencies must be a list of task ids (or app handles of other experiments' "
            f"jobs), e.g. dependencies=[prep_id]; got {dependencies!r}"
        )
    for dep in dependencies:
        if is_external_dependency(dep):
            try:
                parse_handle(dep)
            except UnknownJobError as e:
                raise ConfigError(f"dependency {dep!r}: {e}") from e
    return list(dependencies)


class Experiment(ConfigurableMixin):
    """Tasks (Scripts, Partials, or groups of them) on executors, run as one unit.

    >>> with run.Experiment("sweep") as exp:
    ...     prep = exp.add(run.Script(inline="echo prep"), name="prep")
    ...     exp.add(run.Partial(train, lr=0.1), name="train", dependencies=[prep])
    ...     exp.run()
    """

    GOODBYE_MESSAGE_PYTHON = """
# The experiment was run with the following tasks: {tasks}
# You can inspect it later, from any process:
experiment = run.Experiment.from_id("{exp_id}")
experiment.status()  # every task's state
experiment.logs("{tasks[0]}")  # a task's logs
experiment.cancel("{tasks[0]}")  # cancels that task if it still runs
"""
    GOODBYE_MESSAGE_BASH = """
# or from the shell:
nemorun experiment status {exp_id}
nemorun experiment logs {exp_id} TASK
nemorun experiment cancel {exp_id} TASK
"""

    def __init__(
        self,
        title: str,
        executor: Executor | None = None,
        id: str | None = None,
        log_level: str = "INFO",
        _reconstruct: bool = False,
        jobs: list[Job | JobGroup] | None = None,
        base_dir: str | None = None,
        clean_mode: bool = False,
        enable_goodbye_message: bool = True,
        threadpool_workers: int = 16,
        skip_status_at_exit: bool = False,
        serialize_metadata_for_scripts: bool = True,
    ) -> None:
        self.title = _check_title(title)
        if executor is not None and not isinstance(executor, Executor):
            raise ConfigError(
                f"executor must be a run.Executor (e.g. run.LocalExecutor()), "
                f"got {type(executor).__name__}"
            )
        self.executor: Executor = executor if executor is not None else LocalExecutor()
        self.log_level = _check_log_level(log_level)
        self.clean_mode = _check_flag(clean_mode, "clean_mode")
        self.enable_goodbye_message = _check_flag(enable_goodbye_message, "enable_goodbye_message")
        self.skip_status_at_exit = _check_flag(skip_status_at_exit, "skip_status_at_exit")
        self.serialize_metadata_for_scripts = _check_flag(
            serialize_metadata_for_scripts, "serialize_metadata_for_scripts"
        )
        self.threadpool_workers = _check_workers(threadpool_workers)
        self._reconstruct = bool(_reconstruct)
        self._base_dir = base_dir
        self._id = id or _new_id(self.title)
        self._id_given = id is not None
        self._planned: list[PlannedTask] = []
        self._plugins: dict[str, list[ExperimentPlugin]] = {}
        self._record: ExperimentRecord | None = None
        self._tailers: list[threading.Thread] = []
        self._launched_here = False
        self.launch_errors: dict[str, Exception] = {}
        for job in jobs or []:
            self._add_job(job)

    def _add_job(self, job: Job | JobGroup) -> None:
        """Add a 0.11.1 `Job`/`JobGroup` (as `jobs=` passes them) like `add` would."""
        if isinstance(job, JobGroup):
            executor = job.executors[0] if isinstance(job.executors, list) else job.executors
            self.add(
                list(job.tasks),
                executor=executor,
                name=job.id,
                plugins=job.plugins,
                tail_logs=job.tail_logs,
                dependencies=list(job.dependencies) or None,
            )
        elif isinstance(job, Job):
            self.add(
                job.task,
                executor=job.executor,
                name=job.id,
                plugins=job.plugins,
                tail_logs=job.tail_logs,
                dependencies=list(job.dependencies) or None,
            )
        else:
            raise ConfigError(
                f"jobs= takes run.Job or run.JobGroup items, got {type(job).__name__}; "
                "add tasks with exp.add(...) instead"
            )

    # -- identity -----------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self._id

    @property
    def dir(self) -> str:
        return os.path.join(files.experiments_root(self._base_dir), self.title, self._id)

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        """Let log tailers finish; after a clean block that launched, print the status table
        (unless `skip_status_at_exit` or `clean_mode`) and how to reopen the experiment
        (unless `enable_goodbye_message=False` or `clean_mode`), as 0.11.1 does. Only here,
        not in `run()`: `run.run` and `nemorun run` print data on stdout."""
        for thread in self._tailers:
            thread.join(timeout=5)
        if exc_type is None and self._launched_here and not self._quiet_exit:
            try:
                self.status()
            except Exception as e:  # noqa: BLE001 - a status table must not hide the block's outcome
                log.warning("could not show the status of experiment %s: %s", self._id, e)
        if exc_type is None and self._launched_here:
            self._say_goodbye()

    @property
    def _quiet_exit(self) -> bool:
        return self.skip_status_at_exit or self.clean_mode

    def __repr__(self) -> str:
        return f"Experiment(title={self.title!r}, id={self._id!r})"

    # -- reopening ----------------------------------------------------------------------
    @classmethod
    def _from_record(cls, record: ExperimentRecord) -> Experiment:
        exp = cls("reopened", id=record.id)
        exp.title = record.title  # as recorded, even by another version: not re-checked
        exp._base_dir = os.path.dirname(os.path.dirname(os.path.dirname(record.dir)))
        exp._record = record
        return exp

    def _refuse_if_legacy(self, action: str) -> None:
        """A folder nemo-run 0.11.1 wrote is only read: it keeps no task we could rerun."""
        if self._record is not None:
            files.refuse_if_legacy(self._record, action)

    @classmethod
    def from_id(cls, id: str, base_dir: str | None = None) -> Experiment:
        """Reopen an experiment launched by any process, by its exact id (one nemo-run 0.11.1
        wrote in this home too, read-only: status, logs and cancel only).

        An empty id raises ConfigError (an unset variable must not pick an experiment); an id
        that matches nothing raises UnknownExperimentError.
        """
        files.require_name(id, "experiment id")
        return cls._from_record(files.find_by_id(id, base_dir))

    @classmethod
    def from_title(cls, title: str, base_dir: str | None = None) -> Experiment:
        """Reopen the most recent experiment with exactly this title.

        An empty title raises ConfigError (it never means "any title"); no match raises
        UnknownExperimentError.
        """
        files.require_name(title, "experiment title")
        return cls._from_record(files.find_latest(title, base_dir))

    # -- building -----------------------------------------------------------------------
    def add(
        self,
        task: Any,
        executor: Executor | None = None,
        name: str = "",
        plugins: ExperimentPlugin | list[ExperimentPlugin] | None = None,
        tail_logs: bool = False,
        dependencies: list[str] | None = None,
    ) -> str:
        """Add a task (or a list of tasks run together as one job); returns its task id.

        A name already taken gets a suffix, `<name>_<n>` (with a warning), as in 0.11.1.
        `dependencies` are task ids of this experiment or app handles of other experiments'
        jobs (`local_persistent://nemo_run/<app id>`, any backend): the task starts once each
        SUCCEEDED. `tail_logs=True` prints this task's logs while an attached run waits.
        Each plugin's `setup(task, executor)` runs here, on this experiment's copies of the
        task and executor, before anything is checked or packaged."""
        self._refuse_if_legacy("given new tasks")
        if self._record is not None:
            raise ConfigError(
                f"experiment {self._id} was already launched; create a new Experiment to add tasks"
            )
        group = list(task) if isinstance(task, (list, tuple)) else [task]
        if not group:
            raise ConfigError("add() needs a task, or a non-empty list of tasks for a task group")
        _check_flag(tail_logs, "tail_logs")
        if isinstance(executor, list):  # 0.11.1 takes one executor per member of a group
            executor = executor[0] if executor else None
        executor = executor or self.executor
        if not isinstance(executor, Executor):
            raise ConfigError(f"executor must be a run.Executor, got {type(executor).__name__}")
        backend = backend_for_executor(executor)
        if len(group) > 1 and not backend.supports_groups:
            raise ConfigError(
                f"the {backend.short} backend runs one task per job; add the tasks separately"
            )
        for member in group:
            task_name(member)  # raises on something that is not a task
        task_id = self._free_task_id(name or default_task_id(group[0]))
        deps = _check_dependencies(dependencies)
        hooks = plugin_list(plugins)
        executor, group = self._apply_plugins(hooks, executor, group)
        for member in group:
            executor.validate_task(member)
        self._planned.append(PlannedTask(task_id, group, executor, deps, tail_logs=tail_logs))
        self._plugins[task_id] = hooks
        return task_id

    def _free_task_id(self, wanted: str) -> str:
        """The name checked as a folder name; a taken one suffixed like 0.11.1 does, with a
        warning (two tasks never share an id or a job folder)."""
        existing = [t.id for t in self._planned]
        check_new_task_id(wanted, [])
        task_id = unique_task_id(wanted, existing)
        if task_id != wanted:
            log.warning(
                "experiment %s already has a task named %r; this one is named %r",
                self.title,
                wanted,
                task_id,
            )
            check_new_task_id(task_id, existing)
        return task_id

    def _apply_plugins(
        self, plugins: list[ExperimentPlugin], executor: Executor, group: list[Any]
    ) -> tuple[Executor, list[Any]]:
        """This task's own executor (and, with plugins, task copies) after every plugin's setup:
        plugins edit in place, and what the caller passed in must stay as it was."""
        executor = executor.clone()
        if plugins:
            group = [copy.deepcopy(member) for member in group]
            for member in group:
                apply_plugins(plugins, self._id, member, executor)
        return executor, group

    @property
    def plugins(self) -> dict[str, list[dict[str, Any]]]:
        """Each task's plugins (type and public fields, secrets masked), also when reopened."""
        if self._record is not None:
            return {entry.id: list(entry.plugins) for entry in self._current_record().tasks}
        return {tid: [describe_plugin(p) for p in ps] for tid, ps in self._plugins.items()}

    def _apps(self) -> dict[str, tuple[Any, Executor]]:
        """Package every task (AppDef per task; task groups become several roles)."""
        out = {}
        for planned in self._planned:
            planned.executor.assign(self._id, self.dir, planned.id, planned.id)
            roles = []
            for member in planned.tasks:
                role_name = planned.id if len(planned.tasks) == 1 else task_name(member)
                roles.extend(
                    package(planned.id, member, planned.executor, role_name=role_name).roles
                )
            names = [r.name for r in roles]
            if len(set(names)) != len(names):
                raise ConfigError(
                    f"task group {planned.id!r} has two members named alike ({names}); "
                    "wrap them in differently named functions or scripts"
                )
            app = package(planned.id, planned.tasks[0], planned.executor)
            app.roles = roles
            out[planned.id] = (app, planned.executor)
        return out

    # -- running ------------------------------------------------------------------------
    def _prepare(self) -> tuple[dict[str, tuple[Any, Executor]], dict[str, Any]]:
        """Check the plan and dry-run every task: all bad input fails here, before any launch."""
        launch_order(self._planned)  # unknown dependencies or cycles raise here
        apps = self._apps()
        runner = get_runner()
        return apps, {task_id: runner.dryrun_for(app, ex) for task_id, (app, ex) in apps.items()}

    def dryrun(
        self, log: bool = True, exist_ok: bool = False, delete_exp_dir: bool = True
    ) -> dict[str, str]:
        """The request each task would send, as text (printed with `log=True`); starts nothing
        and writes nothing, so `exist_ok` and `delete_exp_dir` (0.11.1's handling of the
        folder its dry-run wrote) have nothing to act on and are only checked."""
        _check_flag(log, "log")
        _check_flag(exist_ok, "exist_ok")
        _check_flag(delete_exp_dir, "delete_exp_dir")
        self._refuse_if_legacy("dry-run")
        texts = {task_id: str(info) for task_id, info in self._prepare()[1].items()}
        if log:
            print(f"Experiment {self._id} dryrun...")
            for task_id, text in texts.items():
                print(f"# task {task_id}\n{text}\n")
        return texts

    def run(
        self,
        sequential: bool = False,
        detach: bool = False,
        tail_logs: bool = False,
        direct: bool = False,
        dryrun: bool = False,
    ) -> None:
        """Launch every task, respecting dependencies. Attached runs wait for all of them.

        A dependent starts only after its dependencies SUCCEEDED (a dependency may be another
        experiment's job, by app handle); if one fails, its dependents are marked as not run,
        with the reason. Ctrl+C while attached cancels the running jobs (a second Ctrl+C
        exits at once). `direct=True` runs every task in this process instead, one after the
        other in dependency order, with no executor, job or record.
        """
        for flag, name in ((sequential, "sequential"), (detach, "detach"), (direct, "direct")):
            _check_flag(flag, name)
        self._refuse_if_legacy("run")
        _set_log_level(self.log_level)
        if direct:
            self._run_direct(sequential, detach, dryrun)
            return
        if self._run(sequential, detach, tail_logs, dryrun):
            self._launched_here = True

    def _run(self, sequential: bool, detach: bool, tail_logs: bool, dryrun: bool) -> bool:
        """Launch (True), or only print the dry-run (False)."""
        refuse_launch_while_loading_main()
        if self._record is not None:
            raise ConfigError(f"experiment {self._id} was already launched; reopen it to follow it")
        if not self._planned:
            raise ConfigError(f"experiment {self.title!r} has no tasks; add some with exp.add(...)")
        if detach and tail_logs:
            raise ConfigError(
                "tail_logs=True needs an attached run; drop detach=True or tail_logs=True"
            )
        if sequential:
            for before, after in zip(self._planned, self._planned[1:], strict=False):
                if before.id not in after.dependencies:
                    after.dependencies.append(before.id)
        if dryrun:
            for task_id, info in self._prepare()[1].items():
                print(f"# task {task_id}\n{info}\n")
            return False
        launch_order(self._planned)  # unknown dependencies or cycles: before any folder exists
        self._check_external_dependencies()
        self._claim_folder()
        try:
            task_definitions.save(self.dir, self._planned)  # for reset() in a later process
            apps, infos = self._prepare()  # job folders are placed under the claimed one
        except BaseException:
            self._release_folder()
            raise
        runner = get_runner()

        record = ExperimentRecord(
            id=self._id,
            title=self.title,
            dir=self.dir,
            tasks=[
                TaskEntry(
                    id=p.id,
                    backend=backend_for_executor(p.executor).scheduler,
                    roles=[r.name for r in apps[p.id][0].roles],
                    dependencies=list(p.dependencies),
                    executor={
                        "type": type(p.executor).__name__,
                        "info": p.executor.info(),
                        **p.executor.describe_fields(),
                    },
                    plugins=[describe_plugin(plugin) for plugin in self._plugins.get(p.id, [])],
                )
                for p in self._planned
            ],
        )
        self._record = record
        has_dependencies = any(p.dependencies for p in self._planned)
        if detach and has_dependencies and not needs_no_driver(record):
            self._spawn_driver(record, apps)
            return True
        record.driver = identity_of_this_process()
        record.save()
        tailed = {p.id for p in self._planned if tail_logs or p.tail_logs}
        on_launch = None
        if tailed and not detach:
            on_launch = self._tail_some(tailed)
        driver = Driver(
            record,
            infos.__getitem__,
            runner,
            on_launch=on_launch,
            max_parallel=self.threadpool_workers,
        )
        if detach:
            driver.launch_all()
            self.launch_errors = driver.launch_errors
            if not record.launch_done:
                record.launch_done = True
                record.save()
            return True
        try:
            driver.run()
        except KeyboardInterrupt:
            self._interrupted(driver)
            raise
        finally:
            self.launch_errors = driver.launch_errors
        for thread in self._tailers:
            thread.join()
        return True

    def _tail_some(self, task_ids: set[str]) -> Any:
        """An on-launch hook that tails the logs of these tasks only."""

        def hook(entry: TaskEntry) -> None:
            if entry.id in task_ids:
                self._start_tailing(entry)

        return hook

    def _check_external_dependencies(self) -> None:
        """Every other experiment's job named as a dependency must be known to the job store
        before anything starts: a typo'd handle would otherwise make its dependent wait on
        nothing."""
        for planned in self._planned:
            for dep in planned.dependencies:
                if is_external_dependency(dep) and stored_record(dep) is None:
                    raise ConfigError(
                        f"task {planned.id!r} depends on {dep}, which the job store does not "
                        "know; use the handle another experiment's status() shows for its task"
                    )

    def _say_goodbye(self) -> None:
        """0.11.1's closing hint: how to come back to this experiment later."""
        if not self.enable_goodbye_message or self.clean_mode:
            return
        ids = [p.id for p in self._planned]
        python = self.GOODBYE_MESSAGE_PYTHON.format(tasks=ids, exp_id=self._id)
        print(python + self.GOODBYE_MESSAGE_BASH.format(exp_id=self._id))

    def _run_direct(self, sequential: bool, detach: bool, dryrun: bool) -> None:
        """Each task in this process, in dependency order (0.11.1's `direct=True`): a Partial
        is called, a Script runs as a child; the first failure stops the run."""
        if detach or dryrun:
            raise ConfigError("run(direct=True) runs in this process; drop detach= and dryrun=")
        if not self._planned:
            raise ConfigError(f"experiment {self.title!r} has no tasks; add some with exp.add(...)")
        for planned in self._planned:
            if any(is_external_dependency(d) for d in planned.dependencies):
                raise ConfigError(
                    f"task {planned.id!r} depends on another experiment's job; "
                    "run(direct=True) cannot wait on jobs, launch without direct=True"
                )
        del sequential  # one task at a time anyway
        by_id = {p.id: p for p in self._planned}
        for task_id in launch_order(self._planned):
            for member in by_id[task_id].tasks:
                _run_in_process(task_id, member)

    def _claim_folder(self) -> None:
        """Make this experiment's folder exclusively, before anything is written in it: two
        launchers never share one folder; a generated id taken in the same instant is redrawn."""
        for _ in range(5):
            try:
                os.makedirs(os.path.dirname(self.dir), mode=0o700, exist_ok=True)
                os.mkdir(self.dir, mode=0o700)
                return
            except FileExistsError:
                if self._id_given:
                    raise ConfigError(
                        f"experiment id {self._id!r} is taken ({self.dir} exists); "
                        "leave id= unset to get a new one"
                    ) from None
                self._id = _new_id(self.title)
            except OSError as e:
                raise_if_disk_trouble(e, self.dir, "creating the experiment folder")
                raise
        raise ConfigError(f"could not find a free experiment id under {os.path.dirname(self.dir)}")

    def _release_folder(self) -> None:
        """Undo `_claim_folder` when nothing was launched (bad input found while preparing)."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self.dir, task_definitions.DEFINITIONS_FILE))
        title_dir = os.path.dirname(self.dir)
        for folder in (self.dir, title_dir, os.path.dirname(title_dir)):
            try:
                os.rmdir(folder)  # only when empty
            except OSError:
                return

    def _interrupted(self, driver: Any) -> None:
        previous = signal.signal(signal.SIGINT, lambda *_: os._exit(130))  # second Ctrl+C: now
        try:
            print(
                f"\nInterrupted: cancelling the running jobs of experiment {self._id} "
                "(Ctrl+C again to exit at once)",
                file=sys.stderr,
                flush=True,
            )
            cancelled = driver.interrupt()
            print(
                f"Cancelled {len(cancelled)} job(s): {', '.join(cancelled) or 'none running'}",
                file=sys.stderr,
                flush=True,
            )
        finally:
            signal.signal(signal.SIGINT, previous)

    def _spawn_driver(
        self, record: ExperimentRecord, apps: dict[str, tuple[Any, Executor]]
    ) -> None:
        os.makedirs(record.dir, mode=0o700, exist_ok=True)
        with open(os.path.join(record.dir, "driver.log"), "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "nemo_run.run.driver"],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=out,
                start_new_session=True,
                cwd=os.getcwd(),
            )
        stat = processes.proc_stat(proc.pid)
        record.driver = {
            "pid": proc.pid,
            "start_ticks": stat.start_ticks if stat else None,
            "boot_id": processes.boot_id(),
        }
        record.save()  # before the plan is sent: the driver loads the record after reading it
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps({"dir": record.dir, "apps": apps}))
        proc.stdin.close()

    def _start_tailing(self, entry: TaskEntry) -> None:
        thread = threading.Thread(
            target=self._print_logs, args=(entry, True, None), daemon=True, name=f"tail-{entry.id}"
        )
        thread.start()
        self._tailers.append(thread)

    # -- observing ----------------------------------------------------------------------
    def _current_record(self) -> ExperimentRecord:
        if self._record is None:
            raise ConfigError(
                f"experiment {self.title!r} has not been launched; call exp.run() first"
            )
        if self._record.driver.get("pid") != os.getpid():  # another process writes it: re-read
            self._record = ExperimentRecord.load(self._record.dir)
        return self._record

    @overload
    def status(self, return_dict: Literal[True]) -> dict[str, dict[str, Any]]: ...
    @overload
    def status(self, return_dict: Literal[False] = False) -> None: ...
    def status(self, return_dict: bool = False) -> dict[str, dict[str, Any]] | None:
        """Each task's state, app handle, backend, job dir, start/end times and exit code.

        Returns the dict with `return_dict=True`; otherwise prints a table.
        """
        record = self._current_record()
        launcher_gone = not record.launch_done and not driver_alive(record)
        result = {
            entry.id: _with_peer_keys(task_status(entry, record, launcher_gone), entry)
            for entry in record.tasks
        }
        if return_dict:
            return result
        print_experiment_status(record, result)
        return None

    def wait(self, timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """Block until every task ended (or was skipped); returns the final status dict.
        States come from this process's watchers (`poller`), so waiting costs a few backend
        requests per interval whatever the number of tasks."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self._current_record()
            launcher_gone = not record.launch_done and not driver_alive(record)
            handles = [e.handle for e in record.tasks if e.handle and not (e.skipped or e.error)]
            seen = poll_handles(handles)
            if all(task_done(e, record, seen, launcher_gone) for e in record.tasks):
                return self.status(return_dict=True)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"experiment {self._id} still running after {timeout} s")
            wait = seconds_to_next(handles) if handles else WAIT_STEP_S
            time.sleep(min(max(wait, 0.01), WAIT_STEP_S))

    def logs(self, job_id: str, regex: str | None = None, follow: bool = False) -> None:
        """Print a task's logs (every role and replica); `follow` streams until it ends."""
        entry = self._current_record().task(job_id)
        self._print_logs(entry, follow, regex)

    def log_lines(
        self, task_id: str, follow: bool = False, regex: str | None = None
    ) -> Iterator[str]:
        """A task's log lines, prefixed `[role:k]` when it has several roles or replicas."""
        entry = self._current_record().task(task_id)
        if entry.handle is None:
            raise UnknownExperimentError(
                f"task {task_id!r} of experiment {self._id} never launched"
                + (
                    f" ({entry.skipped or entry.error})"
                    if entry.skipped or entry.error
                    else " (yet)"
                )
            )
        return job_log_lines(entry.handle, follow=follow, regex=regex)

    def _print_logs(self, entry: TaskEntry, follow: bool, regex: str | None) -> None:
        many = len(self._record.tasks) > 1 if self._record else False
        prefix = f"[{entry.id}] " if many and follow else ""
        for line in self.log_lines(entry.id, follow=follow, regex=regex):
            sys.stdout.write(prefix + line)
            sys.stdout.flush()

    def cancel(self, job_id: str | None = None) -> list[str]:
        """Cancel one task (or every task with None); returns the task ids acted on."""
        record = self._current_record()
        targets = [record.task(job_id)] if job_id is not None else list(record.tasks)
        acted = []
        for entry in targets:
            if entry.handle:
                try:
                    get_runner().cancel(entry.handle)
                except UnknownJobError:  # its launcher died before starting it: it never ran
                    if entry.skipped or entry.error:
                        continue
                    record.request_cancel(entry.id)
                acted.append(entry.id)
            elif not (entry.skipped or entry.error):
                record.request_cancel(entry.id)
                acted.append(entry.id)
        return acted

    # -- 0.11.1's views and helpers -----------------------------------------------------
    @property
    def jobs(self) -> list[Job | JobGroup]:
        """Each task as 0.11.1's Job (one task) or JobGroup (several), with its handle and
        state once launched. A reopened experiment has no task objects (none are written to
        disk), so it lists none."""
        rows = self.status(return_dict=True) if self._record is not None else {}
        out: list[Job | JobGroup] = []
        for planned in self._planned:
            row = rows.get(planned.id, {})
            handle, state = row.get("handle") or "", _app_state(row.get("state"))
            common: dict[str, Any] = {
                "plugins": self._plugins.get(planned.id) or None,
                "tail_logs": planned.tail_logs,
                "dependencies": list(planned.dependencies),
            }
            if len(planned.tasks) == 1:
                out.append(
                    Job(
                        planned.id,
                        planned.tasks[0],
                        planned.executor,
                        handle,
                        bool(handle),
                        state,
                        **common,
                    )
                )
            else:
                out.append(
                    JobGroup(
                        planned.id,
                        list(planned.tasks),
                        planned.executor,
                        [handle] if handle else [],
                        bool(handle),
                        [state],
                        **common,
                    )
                )
        return out

    @property
    def tasks(self) -> list[Any]:
        """What was added, in order: a task, or the list of a task group's members."""
        return [p.tasks[0] if len(p.tasks) == 1 else list(p.tasks) for p in self._planned]

    @classmethod
    def catalog(cls, title: str = "", base_dir: str | None = None) -> list[str]:
        """The ids of the experiments titled `title`, oldest first; without a title, every
        title that has experiments."""
        if not isinstance(title, str):
            raise ConfigError(f"catalog(title=...) takes a str, got {type(title).__name__}")
        if title.strip():
            return [r.id for r in files.list_experiments(title, base_dir)]
        return sorted({r.title for r in files.list_experiments(base_dir=base_dir)})

    def to_config(self) -> Config[Experiment]:
        """This experiment's settings as a `run.Config` (tasks are not part of it, as in
        0.11.1); the executor is a config too, with its secret fields left out."""
        from nemo_run.core.configurable import Config  # noqa: PLC0415 - fiddle (~0.3 s), only here

        return Config(
            Experiment,
            title=self.title,
            executor=self.executor.to_config(),
            id=self._id,
            log_level=self.log_level,
            clean_mode=self.clean_mode,
            enable_goodbye_message=self.enable_goodbye_message,
            threadpool_workers=self.threadpool_workers,
            skip_status_at_exit=self.skip_status_at_exit,
            serialize_metadata_for_scripts=self.serialize_metadata_for_scripts,
        )

    def reset(self, skip_succeeded: bool = False) -> Experiment:
        """Make this experiment ready to run again, under a new id; returns it (0.11.1 returns
        the same object too). By default every task runs again, as in 0.11.1; with
        `skip_succeeded=True` only the tasks that did not SUCCEED (failed, cancelled, skipped,
        failed to launch) do, and a dependency on a task that succeeded becomes a dependency
        on that task's finished job, which is met at once.

        Not launched yet: nothing to reset (a warning, as in 0.11.1). Still running: ConfigError.
        A reopened experiment reads its tasks from its folder; secrets were not saved there and
        are taken from this process's environment (`task_definitions`).
        """
        _check_flag(skip_succeeded, "skip_succeeded")
        self._refuse_if_legacy("reset")
        if self._record is None:
            log.warning("experiment %s has not run yet; nothing to reset", self._id)
            return self
        rows = self._finished_rows()
        if not self._planned:  # reopened: the definitions kept in its folder
            self._planned = task_definitions.load(self.dir, self._id)
        succeeded = {tid: row["handle"] for tid, row in rows.items() if row["state"] == "SUCCEEDED"}
        planned = self._planned
        if skip_succeeded:
            planned = [p for p in planned if p.id not in succeeded]
            if not planned:
                raise ConfigError(
                    f"every task of experiment {self._id} SUCCEEDED; nothing to rerun "
                    "(reset() without skip_succeeded=True reruns them all)"
                )
            for p in planned:
                p.dependencies = [succeeded.get(d) or d for d in p.dependencies]
        self._planned = planned
        self._plugins = {p.id: self._plugins.get(p.id, []) for p in planned}
        self._id, self._id_given = _new_id(self.title), False
        self._record, self._launched_here = None, False
        self._tailers, self.launch_errors = [], {}
        return self

    def _finished_rows(self) -> dict[str, dict[str, Any]]:
        """The status rows, refusing while a task may still change."""
        record = self._current_record()
        launcher_gone = not record.launch_done and not driver_alive(record)
        handles = [e.handle for e in record.tasks if e.handle and not (e.skipped or e.error)]
        seen = poll_handles(handles)
        busy = [e.id for e in record.tasks if not task_done(e, record, seen, launcher_gone)]
        if busy:
            raise ConfigError(
                f"experiment {self._id} still has tasks running or waiting ({', '.join(busy)}); "
                "wait() or cancel() before reset()"
            )
        return self.status(return_dict=True)


def _with_peer_keys(row: dict[str, Any], entry: TaskEntry) -> dict[str, Any]:
    """A status row with 0.11.1's keys beside ours (`name`, `status` as an AppState,
    `executor` as `Executor.info()`, `job_id`, `handle`, `local_dir`: the executor's job folder
    here, and `remote_dir` where the job's files live on a remote machine), so callers
    written for 0.11.1 read the same dict."""
    handle = entry.handle or ""
    try:
        job_id = parse_handle(handle)[2] if handle else ""
    except (UnknownJobError, ConfigError):
        job_id = ""
    executor = entry.executor or {}
    row.update(
        name=entry.id,
        status=_app_state(row["state"]),
        executor=str(executor.get("info") or executor.get("type", "")),
        job_id=job_id,
        local_dir=str(executor.get("job_dir") or row.get("job_dir") or ""),
    )
    if not row.get("remote_dir"):
        row.pop("remote_dir", None)  # 0.11.1 has the key only where a job has one
    return row


def _app_state(name: Any) -> AppState:
    """A status row's state as an AppState (WAITING is UNSUBMITTED, SKIPPED is CANCELLED)."""
    if isinstance(name, str) and name in AppState.__members__:
        return AppState[name]
    return {"WAITING": AppState.UNSUBMITTED, "SKIPPED": AppState.CANCELLED}.get(
        str(name), AppState.UNSUBMITTED
    )


class Tasks(list, ConfigurableMixin):
    """0.11.1's list of an experiment's tasks (a list that can be shown as a config)."""


class Jobs(list, ConfigurableMixin):
    """0.11.1's list of an experiment's jobs (a list that can be shown as a config)."""


class DummyConsole:
    """A console that prints nothing: every method of rich's Console is a no-op (0.11.1 uses
    it where output is switched off)."""

    def __getattr__(self, name: str) -> Any:
        def ignore(*args: Any, **kwargs: Any) -> None:
            return None

        return ignore


_external_mains: set[str] = set()


def maybe_load_external_main(exp_dir: str) -> None:
    """Run the `__main__.py` kept in an experiment folder (once per process) and make its
    public names visible from `__main__` and `__external_main__`, as 0.11.1 does so that
    objects defined in a script's main module resolve when the experiment is reopened.
    Nothing happens when the folder has no such file."""
    path = os.path.join(exp_dir, "__main__.py")
    if not os.path.isfile(path) or os.path.abspath(path) in _external_mains:
        return
    _external_mains.add(os.path.abspath(path))
    spec = importlib.util.spec_from_file_location("__external_main__", path)
    if spec is None or spec.loader is None:
        return
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    public = {k: v for k, v in vars(loaded).items() if not k.startswith("__")}
    target = sys.modules.setdefault("__external_main__", loaded)
    for module in (target, sys.modules["__main__"]):
        for key, value in public.items():
            setattr(module, key, value)


# 0.11.1's re-exports here, loaded on first use (configs import fiddle; executors are not
# needed to run an experiment of other ones; the console helpers load rich)
_LAZY_NAMES = {
    "CONSOLE": "nemo_run.core.frontend.console.api",
    "configure_logging": "nemo_run.core.frontend.console.api",
    "deconfigure_logging": "nemo_run.core.frontend.console.api",
    "TeeStdoutStderr": "nemo_run.run.utils",
    "SlurmExecutor": "nemo_run.core.execution.slurm",
    "SSHTunnel": "nemo_run.core.tunnel.client",
    "Tunnel": "nemo_run.core.tunnel.client",
    "rsync": "nemo_run.core.tunnel.rsync",
    "Config": "nemo_run.core.configurable",
    "Partial": "nemo_run.core.configurable",
    "DGXCloudExecutor": "nemo_run.core.execution.dgxcloud",
    "DockerExecutor": "nemo_run.core.execution.docker",
    "LeptonExecutor": "nemo_run.core.execution.lepton",
    "SkypilotExecutor": "nemo_run.core.execution.skypilot",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_NAMES])
