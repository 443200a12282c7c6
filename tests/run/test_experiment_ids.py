"""Experiment ids never collide: the folder is claimed exclusively, a taken id is redrawn."""

from __future__ import annotations

import itertools

import pytest

import nemo_run as run
from nemo_run.exceptions import ConfigError
from nemo_run.run import experiment as experiment_module


def test_two_experiments_that_draw_the_same_id_get_distinct_ones(monkeypatch, nemorun_home):
    drawn = itertools.chain(["same_20260101-000000_aaaa"] * 3, (f"same_2026_{i}" for i in range(9)))
    monkeypatch.setattr(experiment_module, "_new_id", lambda title: next(drawn))
    first, second = run.Experiment("same"), run.Experiment("same")
    assert first.id == second.id  # drawn alike
    for exp in (first, second):
        exp.add(run.Script(inline="true"), name="t")
        exp.run(detach=True)
    assert first.id != second.id
    assert run.Experiment.from_id(first.id).status(return_dict=True)["t"]["handle"]
    assert run.Experiment.from_id(second.id).status(return_dict=True)["t"]["handle"]
    assert len(list(nemorun_home.glob("experiments/same/*/experiment.json"))) == 2


def test_a_given_id_that_is_taken_is_refused(nemorun_home):
    exp = run.Experiment("given", id="given_fixed")
    exp.add(run.Script(inline="true"), name="t")
    exp.run(detach=True)
    again = run.Experiment("given", id="given_fixed")
    again.add(run.Script(inline="true"), name="t")
    with pytest.raises(ConfigError, match="is taken"):
        again.run(detach=True)
