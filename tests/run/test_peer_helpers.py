"""The smaller names of 0.11.1's run layer: status dict keys, console and logging helpers,
the task/job lists, external mains, direct runs and module constants."""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys

import pytest
from torchx.specs import AppState

import nemo_run as run
from nemo_run.run import experiment as experiment_module


def test_status_dict_has_0_11_1_keys_beside_ours():
    exp = run.Experiment("keys", enable_goodbye_message=False)
    exp.add(run.Script(inline="true"), name="a")
    exp.run()
    row = exp.status(return_dict=True)["a"]
    assert row["name"] == "a" and row["status"] == AppState.SUCCEEDED
    assert row["executor"] == "LocalExecutor"
    assert row["handle"].endswith("/" + row["job_id"]) and row["job_id"]
    # as 0.11.1: the executor's job folder, which holds the job's own folder
    assert row["local_dir"] and row["job_dir"].startswith(row["local_dir"] + "/")
    assert "remote_dir" not in row  # a local job has none
    assert row["state"] == "SUCCEEDED"  # ours stay


def test_status_json_from_the_cli_shows_state_names(tmp_path):
    exp = run.Experiment("cli-json", enable_goodbye_message=False)
    exp.add(run.Script(inline="true"), name="a")
    exp.run()
    out = subprocess.run(
        [sys.executable, "-m", "nemo_run.cli.nemorun", "experiment", "status", exp.id, "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out)["tasks"]["a"]["status"] == "SUCCEEDED"


def test_tasks_and_jobs_are_lists_and_dummy_console_prints_nothing(capsys):
    tasks = experiment_module.Tasks([1, 2])
    assert tasks == [1, 2] and isinstance(experiment_module.Jobs(), list)
    console = experiment_module.DummyConsole()
    assert console.print("hidden") is None and console.rule() is None
    assert capsys.readouterr().out == ""


def test_tee_copies_output_to_a_file_with_secrets_masked(tmp_path, capsys):
    path = tmp_path / "tee.log"
    with experiment_module.TeeStdoutStderr(str(path)):
        print("hello HF_TOKEN=abc123")
        print("to stderr", file=sys.stderr)
    assert "HF_TOKEN=abc123" in capsys.readouterr().out  # the terminal sees it as printed
    text = path.read_text()
    assert "hello HF_TOKEN=***" in text and "to stderr" in text and "abc123" not in text


def test_configure_logging_installs_one_handler_and_removes_it():
    console_api = importlib.import_module("nemo_run.core.frontend.console.api")
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        experiment_module.configure_logging("DEBUG")
        experiment_module.configure_logging("INFO")
        added = [h for h in root.handlers if h not in before]
        assert len(added) == 1 and root.level == logging.INFO
        experiment_module.deconfigure_logging()
        assert root.handlers == before
        with pytest.raises(ValueError, match="level='LOUD'"):
            console_api.configure_logging("LOUD")
    finally:
        root.setLevel(level)
    assert experiment_module.CONSOLE is console_api.CONSOLE
    assert "***" in repr(console_api.CustomConfigRepr({"api_key": "k"}))


def test_maybe_load_external_main_exposes_its_names_once(tmp_path, monkeypatch):
    (tmp_path / "__main__.py").write_text("VALUE = 41\nVALUE += 1\ndef helper():\n    return 7\n")
    main = sys.modules["__main__"]
    monkeypatch.delitem(sys.modules, "__external_main__", raising=False)
    try:
        experiment_module.maybe_load_external_main(str(tmp_path))
        assert main.VALUE == 42 and sys.modules["__external_main__"].helper() == 7
        main.VALUE = 0
        experiment_module.maybe_load_external_main(str(tmp_path))  # once per process
        assert main.VALUE == 0
        experiment_module.maybe_load_external_main(str(tmp_path / "missing"))
    finally:
        for name in ("VALUE", "helper"):
            if hasattr(main, name):
                delattr(main, name)


def append(path: str, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def test_direct_run_fn_runs_partials_and_scripts_and_dry_runs(tmp_path, capfd):
    direct_run_fn = importlib.import_module("nemo_run.run.api").direct_run_fn
    path = tmp_path / "x"
    direct_run_fn(run.Partial(append, path=str(path), text="p"))
    direct_run_fn(run.Script(inline="echo from-script"))
    assert path.read_text() == "p" and "from-script" in capfd.readouterr().out
    direct_run_fn(run.Partial(append, path=str(path), text="q"), dryrun=True)
    assert path.read_text() == "p" and "append" in capfd.readouterr().out


def test_module_constants():
    config = importlib.import_module("nemo_run.config")
    api = importlib.import_module("nemo_run.api")
    assert config.SCRIPTS_DIR == "scripts"
    assert config.USE_WITH_RAY_CLUSTER_KEY == "use_with_ray_cluster"
    assert len(config.RECURSIVE_TYPES) == 2
    assert api.ROOT_TASK_NAMESPACE == "nemo_run.task"
    assert api.ROOT_TASK_FACTORY_NAMESPACE == "nemo_run.task_factory"
    assert api.ROOT_TYPER_NAMESPACE == "nemo_run.typer" and api.DEFAULT_NAME == "default"
    assert (
        api.AUTOBUILD_CLASSES == (run.Executor,) or api.AUTOBUILD_CLASSES[0].__name__ == "Executor"
    )
