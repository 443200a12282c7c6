"""Titles and task names become folder names: hostile ones are refused before anything is
written, so no record lands outside `experiments/` and no empty folder is left behind."""

from __future__ import annotations

import os

import pytest

import nemo_run as run
from nemo_run.exceptions import ConfigError

BAD_TITLES = [
    " .. ",
    " . ",
    "..",
    "a/b",
    "/abs",
    "a\\b",
    "nul\0byte",
    "line\nbreak",
    "x" * 250,
    "",
    "   ",
]
BAD_TASK_NAMES = [
    *(t for t in BAD_TITLES if t),
    "experiment.json",
    "experiment.json.tmp.1",
    "cancel",
    "driver.log",
]


def _files(home) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), home) for d, _, fs in os.walk(home) for f in fs
    )


@pytest.mark.parametrize("title", BAD_TITLES, ids=repr)
def test_bad_titles_are_refused_before_anything_is_written(title, nemorun_home):
    with pytest.raises(ConfigError, match="Experiment title"):
        exp = run.Experiment(title)
        exp.add(run.Script(inline="true"), name="t")
        exp.run()
    assert not (nemorun_home / "experiments").exists()
    assert not (nemorun_home.parent / "experiment.json").exists()


@pytest.mark.parametrize("name", BAD_TASK_NAMES, ids=repr)
def test_bad_task_names_are_refused_before_anything_is_written(name, nemorun_home):
    """(An empty name means "derive it from the task", as in nemo-run.)"""
    exp = run.Experiment("fine")
    with pytest.raises(ConfigError, match="task name"):
        exp.add(run.Script(inline="true"), name=name)
    with pytest.raises(ConfigError, match="task name|Experiment title"):
        run.run(run.Script(inline="true"), run.LocalExecutor(), name=name, detach=True)
    assert not (nemorun_home / "experiments").exists()
    assert _files(nemorun_home) in ([], ["jobs.db"], ["jobs.db", "jobs.db-shm", "jobs.db-wal"])


def test_blanks_around_a_title_are_trimmed_and_the_experiment_is_reachable(nemorun_home):
    exp = run.Experiment("  padded title ")
    exp.add(run.Script(inline="true"), name="t")
    exp.run(detach=True)
    assert exp.title == "padded title"
    assert run.Experiment.from_id(exp.id).title == "padded title"
    assert (nemorun_home / "experiments" / "padded title" / exp.id / "experiment.json").is_file()


def test_a_long_title_within_the_limit_works(nemorun_home):
    exp = run.Experiment("t" * 200)
    exp.add(run.Script(inline="true"), name="n" * 200)
    exp.run(detach=True)
    assert run.Experiment.from_id(exp.id).status(return_dict=True)["n" * 200]["handle"]
