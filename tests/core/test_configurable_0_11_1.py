# ruff: noqa: UP007, UP045  (typing.Optional/Union on purpose: what 0.11.1 users write)
"""run.Config / run.Partial helpers and nemo_run.config / nemo_run.api names, as in 0.11.1."""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

import fiddle as fdl
import pytest

import nemo_run as run
from nemo_run.config import (
    OptionalDefaultConfig,
    from_dict,
    get_underlying_types,
    set_value,
)
from nemo_run.exceptions import ConfigError, SetValueError


@dataclasses.dataclass
class Inner:
    seq_length: int = 128
    tp: int = 1


@dataclasses.dataclass
class Outer:
    model: Inner
    name: str = "x"
    tp: int = 4


def train(model: Inner, lr: float = 0.1) -> tuple[Inner, float]:
    """Train a model."""
    return model, lr


def test_clone_is_deep():
    cfg = run.Config(Outer, model=run.Config(Inner, seq_length=64))
    copy = cfg.clone()
    copy.model.seq_length = 1
    assert copy is not cfg and type(copy) is run.Config
    assert cfg.model.seq_length == 64 and copy.model.seq_length == 1


def test_walk_applies_to_every_nested_config_in_place():
    cfg = run.Config(Outer, model=run.Config(Inner, seq_length=64))
    assert cfg.walk(seq_length=lambda c: c.seq_length * 2) is cfg
    assert cfg.model.seq_length == 128
    cfg.walk(tp=lambda c: c.tp + 1)
    assert (cfg.tp, cfg.model.tp) == (5, 2)


def test_broadcast_sets_where_the_argument_exists():
    cfg = run.Config(Outer, model=run.Config(Inner))
    assert cfg.broadcast(tp=2, nonexistent=3) is cfg
    assert (cfg.tp, cfg.model.tp) == (2, 2)
    assert "nonexistent" not in cfg.__arguments__


def test_dataclass_keyword_arguments_become_configs():
    cfg = run.Config(Outer, model=Inner(seq_length=5))
    assert type(cfg.model) is run.Config
    assert cfg.model.__arguments__ == {"seq_length": 5, "tp": 1}
    assert fdl.build(cfg) == Outer(model=Inner(seq_length=5))
    raw = run.Partial(train, model=Inner(), bind_args=False)
    assert raw.model == Inner()


def test_positional_arguments_bind_by_position():
    p = run.Partial(train, run.Config(Inner), 0.5)
    assert p.lr == 0.5
    assert fdl.build(p)() == (Inner(), 0.5)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((Inner(), "n", 3, 4), {}, "too many positional arguments"),
        ((), {"model": Inner(), "bogus": 1}, "unexpected keyword argument 'bogus'"),
        ((Inner(),), {"model": Inner()}, "multiple values for argument 'model'"),
    ],
)
def test_bad_arguments_fail_when_the_config_is_written(args, kwargs, message):
    with pytest.raises(TypeError, match=message) as info:
        run.Config(Outer, *args, **kwargs)
    assert isinstance(info.value, ConfigError)
    assert "Cannot bind arguments to" in str(info.value)


def test_set_value_follows_dotted_paths():
    cfg = run.Config(Outer, model=run.Config(Inner))
    set_value(cfg, "model.tp", 3)
    set_value(cfg, "name", "zz")
    assert (cfg.model.tp, cfg.name) == (3, "zz")
    lst = run.Config(dict, layers=[1, run.Config(Inner)])
    set_value(lst, "layers[0]", 9)
    set_value(lst, "layers[1].tp", 7)
    assert lst.layers[0] == 9 and lst.layers[1].tp == 7


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("model.bogus", 'Could not set "model.bogus" to "1"'),
        ("nope.tp", 'Invalid path "nope.tp"'),
        ("model..tp", 'Invalid path "model..tp"'),
        ("model.tp.x", 'Could not set "model.tp.x" to "1"'),
    ],
)
def test_set_value_errors(key, message):
    cfg = run.Config(Outer, model=run.Config(Inner))
    with pytest.raises(SetValueError, match=message) as info:
        set_value(cfg, key, 1)
    assert isinstance(info.value, ValueError)


def test_from_dict_builds_nested_dataclasses():
    assert from_dict({"model": {"tp": 2}, "name": "n"}, Outer) == Outer(
        model=Inner(seq_length=128, tp=2), name="n"
    )
    assert from_dict([{"tp": 1}], list[Inner]) == [Inner(tp=1)]
    assert from_dict(None, Optional[Inner]) is None
    assert from_dict({"tp": 5}, Optional[Inner]) == Inner(tp=5)
    assert from_dict(3, int) == 3


def test_from_dict_names_an_unknown_key():
    with pytest.raises(ConfigError, match="'bogus' is no field of Inner; its fields are"):
        from_dict({"bogus": 1}, Inner)


def test_get_underlying_types():
    assert get_underlying_types(int) == {int}
    assert get_underlying_types(Optional[int]) == {int, type(None)}
    assert get_underlying_types(Union[Optional[int], Inner]) == {int, type(None), Inner}
    assert get_underlying_types(list[int]) == {list[int]}


def test_optional_default_config_is_annotated():
    hint = OptionalDefaultConfig[Inner]
    assert hint.__origin__ == Optional[Inner]
    assert hint.__metadata__[0].__origin__ is run.Config


def test_visualize_and_diff_return_graphs():
    pytest.importorskip("graphviz")
    cfg = run.Config(Inner, tp=2)
    assert "Inner" in cfg.visualize().source
    assert "tp" in run.Config(Inner, tp=3).diff(cfg).source


def test_autoconvert_returns_a_config_of_the_call():
    @run.autoconvert
    def make() -> Inner:
        return Inner(tp=5)

    cfg = make()
    assert type(cfg) is run.Config and cfg.tp == 5
    assert fdl.build(cfg) == Inner(tp=5)

    def plain() -> tuple[Inner, float]:
        return train(model=Inner(tp=2), lr=0.3)

    p = run.autoconvert(partial=True)(plain)()
    assert type(p) is run.Partial
    assert fdl.build(p)() == (Inner(tp=2), 0.3)


def test_dryrun_fn_prints_arguments_and_masks_secrets(capsys):
    def login(user: str, api_token: str) -> None:
        raise AssertionError("a dry run must not call the task")

    run.dryrun_fn(run.Partial(login, user="me", api_token="s3cr3t"), build=True)
    out = capsys.readouterr().out
    assert "Dry run for task" in out and "login" in out
    assert "'me'" in out and "s3cr3t" not in out and "***" in out


def test_help_prints_arguments_and_docs(capsys):
    run.help(train)
    out = capsys.readouterr().out
    assert "Train a model." in out and "Arguments" in out
    assert "lr" in out and "float" in out and "0.1" in out
