"""`Experiment`: a named group of tasks, launched respecting dependencies and reopenable by id.

Everything needed to come back to it later lives in
`$NEMORUN_HOME/experiments/<title>/<id>/experiment.json`; live states come from the job store
and the backends, so `Experiment.from_id(id)` in a new process sees what the launcher sees.
"""

from __future__ import annotations

import copy
import os
import pickle
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal, overload

from nemo_run.core import processes
from nemo_run.core.diskerrors import raise_if_disk_trouble
from nemo_run.core.execution.base import Executor
from nemo_run.core.execution.local import LocalExecutor
from nemo_run.core.names import check_folder_name
from nemo_run.core.runners.partial import refuse_launch_while_loading_main
from nemo_run.exceptions import ConfigError, UnknownExperimentError, UnknownJobError
from nemo_run.run import experiment_files as files
from nemo_run.run.driver import Driver, driver_alive, identity_of_this_process
from nemo_run.run.experiment_files import ExperimentRecord, TaskEntry
from nemo_run.run.experiment_status import task_done, task_status
from nemo_run.run.job import job_log_lines
from nemo_run.run.plan import PlannedTask, check_new_task_id, launch_order
from nemo_run.run.plugin import ExperimentPlugin, apply_plugins, describe_plugin, plugin_list
from nemo_run.run.render import print_experiment_status
from nemo_run.run.torchx_backend.packaging import package, task_name
from nemo_run.run.torchx_backend.poller import poll_handles, seconds_to_next
from nemo_run.run.torchx_backend.runner import get_runner
from nemo_run.run.torchx_backend.schedulers.backends import backend_for_executor

WAIT_STEP_S = 0.5  # how often `wait` re-reads the experiment for tasks launched meanwhile


def _new_id(title: str) -> str:
    """`<title>_<time>_<48 random bits>`: ids of one title in one second must not collide
    (`ExperimentRecord.create` still refuses a taken one)."""
    return f"{title}_{time.strftime('%Y%m%d-%H%M%S')}_{secrets.token_hex(6)}"


def _check_title(title: str) -> str:
    return check_folder_name(title, "Experiment title")


class Experiment:
    """Tasks (Scripts, Partials, or groups of them) on executors, run as one unit.

    >>> with run.Experiment("sweep") as exp:
    ...     prep = exp.add(run.Script(inline="echo prep"), name="prep")
    ...     exp.add(run.Partial(train, lr=0.1), name="train", dependencies=[prep])
    ...     exp.run()
    """

    def __init__(
        self,
        title: str,
        executor: Executor | None = None,
        base_dir: str | None = None,
        id: str | None = None,
    ) -> None:
        self.title = _check_title(title)
        self.executor = executor
        self._base_dir = base_dir
        self._id = id or _new_id(self.title)
        self._id_given = id is not None
        self._planned: list[PlannedTask] = []
        self._plugins: dict[str, list[ExperimentPlugin]] = {}
        self._record: ExperimentRecord | None = None
        self._tailers: list[threading.Thread] = []
        self.launch_errors: dict[str, Exception] = {}

    # -- identity -----------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self._id

    @property
    def dir(self) -> str:
        return os.path.join(files.experiments_root(self._base_dir), self.title, self._id)

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc: object) -> None:
        for thread in self._tailers:
            thread.join(timeout=5)

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

    @classmethod
    def from_id(cls, id: str, base_dir: str | None = None) -> Experiment:
        """Reopen an experiment launched by any process, by its exact id.

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
        dependencies: list[str] | None = None,
    ) -> str:
        """Add a task (or a list of tasks run together as one job); returns its task id.

        Each plugin's `setup(task, executor)` runs here, on this experiment's copies of the
        task and executor, before anything is checked or packaged."""
        if self._record is not None:
            raise ConfigError(
                f"experiment {self._id} was already launched; create a new Experiment to add tasks"
            )
        group = list(task) if isinstance(task, (list, tuple)) else [task]
        if not group:
            raise ConfigError("add() needs a task, or a non-empty list of tasks for a task group")
        executor = executor or self.executor
        if executor is None:
            executor = LocalExecutor()
        if not isinstance(executor, Executor):
            raise ConfigError(f"executor must be a run.Executor, got {type(executor).__name__}")
        backend = backend_for_executor(executor)
        if len(group) > 1 and not backend.supports_groups:
            raise ConfigError(
                f"the {backend.short} backend runs one task per job; add the tasks separately"
            )
        task_id = name or task_name(group[0])
        check_new_task_id(task_id, [t.id for t in self._planned])
        if dependencies is not None and not isinstance(dependencies, (list, tuple)):
            raise ConfigError(
                "dependencies must be a list of task ids, e.g. dependencies=[prep_id]"
            )
        hooks = plugin_list(plugins)
        for member in group:
            task_name(member)  # raises on something that is not a task
        executor, group = self._apply_plugins(hooks, executor, group)
        for member in group:
            executor.validate_task(member)
        self._planned.append(
            PlannedTask(task_id, group, executor, [str(d) for d in dependencies or []])
        )
        self._plugins[task_id] = hooks
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

    def dryrun(self) -> dict[str, str]:
        """The request each task would send, as text; starts nothing and writes nothing."""
        return {task_id: str(info) for task_id, info in self._prepare()[1].items()}

    def run(
        self,
        sequential: bool = False,
        detach: bool = False,
        tail_logs: bool = False,
        dryrun: bool = False,
    ) -> None:
        """Launch every task, respecting dependencies. Attached runs wait for all of them.

        A dependent starts only after its dependencies SUCCEEDED; if one fails, its
        dependents are marked as not run, with the reason. Ctrl+C while attached cancels
        the running jobs (a second Ctrl+C exits at once).
        """
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
            return
        launch_order(self._planned)  # unknown dependencies or cycles: before any folder exists
        self._claim_folder()
        try:
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
                    executor={"type": type(p.executor).__name__, **p.executor.describe_fields()},
                    plugins=[describe_plugin(plugin) for plugin in self._plugins.get(p.id, [])],
                )
                for p in self._planned
            ],
        )
        self._record = record
        has_dependencies = any(p.dependencies for p in self._planned)
        if detach and has_dependencies:
            self._spawn_driver(record, apps)
            return
        record.driver = identity_of_this_process()
        record.save()
        on_launch = self._start_tailing if tail_logs else None
        driver = Driver(record, infos.__getitem__, runner, on_launch=on_launch)
        if detach:
            driver.step()
            self.launch_errors = driver.launch_errors
            if not record.launch_done:
                record.launch_done = True
                record.save()
            return
        try:
            driver.run()
        except KeyboardInterrupt:
            self._interrupted(driver)
            raise
        finally:
            self.launch_errors = driver.launch_errors
        for thread in self._tailers:
            thread.join()

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
        result = {entry.id: task_status(entry, record, launcher_gone) for entry in record.tasks}
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

    def logs(self, task_id: str, follow: bool = False, regex: str | None = None) -> None:
        """Print a task's logs (every role and replica); `follow` streams until it ends."""
        entry = self._current_record().task(task_id)
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

    def cancel(self, task_id: str | None = None) -> list[str]:
        """Cancel one task (or every task with None); returns the task ids acted on."""
        record = self._current_record()
        targets = [record.task(task_id)] if task_id is not None else list(record.tasks)
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
