"""experiment.json files: read tolerantly across versions, created exclusively, saved atomically."""

from __future__ import annotations

import json
import logging
import os
import threading

import pytest

import nemo_run as run
from nemo_run.exceptions import ConfigError, UnknownExperimentError
from nemo_run.run import experiment_files as files
from nemo_run.run.experiment import _new_id
from nemo_run.run.experiment_files import ExperimentRecord, TaskEntry

LOGGER = "nemo_run.run.experiment_files"


def write(home, folder_title: str, exp_id: str, content) -> str:
    """An experiment.json as another nemo_run version (or a hand edit) might have left it."""
    folder = home / "experiments" / folder_title / exp_id
    folder.mkdir(parents=True)
    path = folder / "experiment.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def good(home, title: str = "t", exp_id: str = "t_1", **extra) -> dict:
    folder = home / "experiments" / title / exp_id
    return {
        "version": 1,
        "id": exp_id,
        "title": title,
        "dir": str(folder),
        "created_at": 10.0,
        "tasks": [{"id": "a", "backend": "local_persistent", "roles": ["a"]}],
        "driver": {},
        "launch_done": True,
        **extra,
    }


def test_unknown_keys_are_ignored_with_a_warning_naming_the_file(nemorun_home, caplog):
    path = write(nemorun_home, "t", "t_1", good(nemorun_home, priority="high"))
    with caplog.at_level(logging.WARNING, LOGGER):
        [record] = files.list_experiments()
    assert record.id == "t_1" and [t.id for t in record.tasks] == ["a"]
    assert any(path in m and "priority" in m for m in caplog.messages)


def test_null_lists_and_dicts_read_as_empty(nemorun_home):
    write(nemorun_home, "t", "t_1", good(nemorun_home, tasks=None, driver=None))
    record = files.find_by_id("t_1")
    assert record.tasks == [] and record.driver == {}
    assert run.Experiment.from_id("t_1").status(return_dict=True) == {}


def test_missing_keys_read_as_their_defaults(nemorun_home):
    folder = nemorun_home / "experiments" / "t" / "t_1"
    write(nemorun_home, "t", "t_1", {"id": "t_1", "title": "t"})
    record = files.find_by_id("t_1")
    assert (record.dir, record.tasks, record.driver, record.launch_done) == (
        str(folder),
        [],
        {},
        False,
    )
    assert record.created_at == os.path.getmtime(folder / "experiment.json")


def test_task_entries_of_another_version(nemorun_home, caplog):
    tasks = [
        {"id": "a", "backend": "local_persistent", "roles": ["a"], "gpus": 2},  # unknown key
        {
            "id": "b",
            "backend": "local_persistent",
            "roles": "b",
            "dependencies": "a",
        },  # wrong types
        {"id": "c", "backend": None, "roles": None, "dependencies": None, "executor": None},
        "not-a-task",
        {"backend": "local_persistent"},  # no id
    ]
    path = write(nemorun_home, "t", "t_1", good(nemorun_home, tasks=tasks))
    with caplog.at_level(logging.WARNING, LOGGER):
        record = files.find_by_id("t_1")
    a, b, c = record.tasks
    assert (a.id, a.roles) == ("a", ["a"])
    assert (b.id, b.roles, b.dependencies) == ("b", [], [])
    assert (c.id, c.backend, c.roles, c.dependencies, c.executor) == ("c", "", [], [], {})
    text = "\n".join(caplog.messages)
    assert "gpus" in text and "roles" in text and "dependencies" in text and "without an id" in text
    assert all(path in m for m in caplog.messages)


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"title": "t", "tasks": []}), "no id"),
        (json.dumps({"id": "t_9", "tasks": []}), "no title"),
    ],
)
def test_a_broken_file_is_named_and_skipped(nemorun_home, caplog, content, problem):
    write(nemorun_home, "t", "t_1", good(nemorun_home))
    broken = write(nemorun_home, "t", "t_9", content)
    with caplog.at_level(logging.WARNING, LOGGER):
        assert [r.id for r in files.list_experiments()] == ["t_1"]
    assert any(broken in m and problem in m for m in caplog.messages)
    assert run.Experiment.from_id("t_1").id == "t_1"
    assert run.Experiment.from_title("t").id == "t_1"
    with pytest.raises(UnknownExperimentError, match=problem) as err:
        files.find_by_id("t_9")
    assert broken in str(err.value)


@pytest.mark.parametrize("name", ["", "   ", "\t"])
def test_empty_id_or_title_is_refused(nemorun_home, name):
    write(nemorun_home, "t", "t_1", good(nemorun_home))
    with pytest.raises(ConfigError, match="empty"):
        run.Experiment.from_id(name)
    with pytest.raises(ConfigError, match="empty"):
        run.Experiment.from_title(name)
    with pytest.raises(ConfigError, match="empty"):
        files.list_experiments(name)


def test_from_title_matches_the_exact_title_only(nemorun_home):
    write(nemorun_home, "t", "t_1", good(nemorun_home, title="other"))
    with pytest.raises(UnknownExperimentError, match="no experiment titled 't'"):
        run.Experiment.from_title("t")
    assert files.list_experiments("t") == []


def test_new_ids_of_one_title_do_not_collide():
    ids = [_new_id("t") for _ in range(3000)]
    assert len(set(ids)) == len(ids)


def test_create_claims_the_folder_exclusively(nemorun_home):
    folder = str(nemorun_home / "experiments" / "t" / "t_1")
    first = ExperimentRecord(
        id="t_1", title="t", dir=folder, tasks=[TaskEntry("a", "local_persistent", ["a"])]
    )
    first.create()
    second = ExperimentRecord(id="t_1", title="t", dir=folder)
    with pytest.raises(ConfigError, match="id 't_1' is taken"):
        second.create()
    assert [t.id for t in files.find_by_id("t_1").tasks] == ["a"]  # the first one is intact


def test_run_never_reuses_the_folder_of_an_experiment(nemorun_home):
    exp = run.Experiment("t")
    exp.add(run.Script(inline="true"), name="a")
    exp.run()
    again = run.Experiment("t", id=exp.id)
    again.add(run.Script(inline="exit 3"), name="b")
    with pytest.raises(ConfigError, match="is taken"):
        again.run()
    assert list(run.Experiment.from_id(exp.id).status(return_dict=True)) == ["a"]


def test_save_from_many_threads_at_once(nemorun_home):
    folder = str(nemorun_home / "experiments" / "t" / "t_1")
    record = ExperimentRecord(id="t_1", title="t", dir=folder)
    record.create()
    errors: list[BaseException] = []

    def saver() -> None:
        try:
            for _ in range(40):
                record.save()
        except BaseException as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=saver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert os.listdir(folder) == ["experiment.json"]
    assert files.find_by_id("t_1").id == "t_1"


def test_a_failed_save_leaves_no_temp_file(nemorun_home):
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("cannot show this")

    folder = str(nemorun_home / "experiments" / "t" / "t_1")
    record = ExperimentRecord(id="t_1", title="t", dir=folder)
    record.create()
    record.driver = {"odd": Unprintable()}
    with pytest.raises(RuntimeError):
        record.save()
    assert os.listdir(folder) == ["experiment.json"]
