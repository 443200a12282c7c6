"""Run options derived from executor dataclasses, and executors built back from them."""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any

import pytest
from torchx import specs
from torchx.schedulers.api import AppDryRunInfo

import nemo_run as run
from nemo_run.core.execution.base import Executor
from nemo_run.core.execution.dgxcloud import DGXCloudExecutor
from nemo_run.core.execution.docker import DockerExecutor
from nemo_run.core.execution.launcher import Launcher
from nemo_run.core.execution.lepton import LeptonExecutor
from nemo_run.core.execution.local import LocalExecutor
from nemo_run.core.execution.skypilot import SkypilotExecutor
from nemo_run.core.packaging.base import Packager
from nemo_run.exceptions import ConfigError
from nemo_run.run.torchx_backend.runner import Runner
from nemo_run.run.torchx_backend.schedulers.backends import BACKENDS
from nemo_run.run.torchx_backend.schedulers.local import create_scheduler
from nemo_run.run.torchx_backend.schedulers.runopts import (
    STR_DICT,
    STR_LIST,
    DryRun,
    cfg_type,
    executor_from_cfg,
    executor_runopts,
    option_specs,
)


def opts(cls: type) -> dict[str, Any]:
    return dict(executor_runopts(cls))


def echo_app(msg: str = "hi") -> specs.AppDef:
    return specs.AppDef(
        name="echo", roles=[specs.Role(name="echo", image="", entrypoint="echo", args=[msg])]
    )


@dataclasses.dataclass(kw_only=True)
class TokenExecutor(LocalExecutor):
    """A user subclass: a required secret, a field without help, a secret integer."""

    token: str = dataclasses.field(repr=False, metadata={"help": "API token"})
    extra: int = 0
    pin: int = dataclasses.field(default=1234, repr=False)


# -- types ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (str, (str, False)),
        (int, (int, False)),
        (float, (float, False)),
        (bool, (bool, False)),
        (int | None, (int, False)),
        (bool | None, (bool, False)),
        (str | int | None, (str, False)),  # a size: '16g' or bytes
        (int | float | str | None, (str, False)),  # '4+'
        (Launcher | str | None, (str, False)),  # a launcher by name
        (list[str], (STR_LIST, False)),
        (list[int | str] | tuple[int | str, ...] | None, (STR_LIST, False)),
        (dict[str, str], (STR_DICT, False)),
        (dict[str, str] | None, (STR_DICT, False)),
        (dict[str, Any], (str, True)),
        (list[dict[str, Any]], (str, True)),
        (dict[str, dict[str, Any]], (str, True)),
        (Packager, None),
        (Launcher | None, None),
    ],
)
def test_annotation_to_torchx_cfg_type(annotation, expected):
    assert cfg_type(annotation) == expected


def test_torchx_type_spellings_are_the_ones_its_parsers_compare_with():
    assert STR_LIST is typing.List[str]  # noqa: UP006
    assert STR_DICT is typing.Dict[str, str]  # noqa: UP006


def test_docker_options_types_defaults_and_required():
    o = opts(DockerExecutor)
    assert o["container_image"].opt_type is str and o["container_image"].is_required
    assert o["container_image"].default is None
    assert (o["num_gpus"].opt_type, o["num_gpus"].default) == (int, None)
    assert (o["shm_size"].opt_type, o["shm_size"].default) == (str, None)
    assert (o["ulimits"].opt_type, o["ulimits"].default) == (STR_LIST, [])
    assert (o["env_vars"].opt_type, o["env_vars"].default) == (STR_DICT, {})
    assert (o["privileged"].opt_type, o["privileged"].default) == (bool, False)
    assert (o["ntasks_per_node"].opt_type, o["ntasks_per_node"].default) == (int, 1)
    assert o["healthcheck"].opt_type is str and o["healthcheck"].help.endswith("[JSON]")
    assert o["launcher"].opt_type is str
    assert not {"packager", "experiment_id", "experiment_dir"} & set(o)
    assert [k for k, v in o.items() if v.is_required] == ["container_image"]


def test_remote_options_types_and_defaults():
    dgx, lepton, sky = opts(DGXCloudExecutor), opts(LeptonExecutor), opts(SkypilotExecutor)
    assert (dgx["timeout"].opt_type, dgx["timeout"].default) == (float, 30.0)
    assert dgx["distributed_framework"].default == "PyTorch"
    assert dgx["pvcs"].opt_type is str and dgx["pvcs"].default is None
    # as 0.11.1: the project, image and PVC folder have no default (credentials may come
    # from the environment, so they do)
    assert sorted(k for k, v in dgx.items() if v.is_required) == [
        "container_image",
        "project_name",
        "pvc_nemo_run_dir",
    ]
    assert sorted(k for k, v in lepton.items() if v.is_required) == [
        "container_image",
        "nemo_run_dir",
    ]
    assert (lepton["shared_memory_size"].opt_type, lepton["shared_memory_size"].default) == (
        int,
        65536,
    )
    assert (sky["cpus"].opt_type, sky["ports"].opt_type) == (str, STR_LIST)
    assert (sky["use_spot"].opt_type, sky["use_spot"].default) == (bool, None)
    assert (sky["disk_size"].opt_type, sky["gpus"].opt_type) == (int, str)
    assert sky["file_mounts"].opt_type is STR_DICT
    assert sky["storage_mounts"].opt_type is str


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.scheduler)
def test_every_backend_derives_its_options_from_its_executor_with_help(backend):
    cls = backend.executor_class()
    scheduler_opts = backend.create_scheduler("t").run_opts()
    assert dict(scheduler_opts).keys() == dict(executor_runopts(cls)).keys()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, opt in scheduler_opts:
        assert opt.help.startswith(fields[name].metadata["help"]), name
    assert "image_repo" not in dict(scheduler_opts)  # torchx's docker workspace options


def test_options_are_derived_once_per_class():
    assert option_specs(LocalExecutor) is option_specs(LocalExecutor)


# -- help, secrets, user subclasses --------------------------------------------------------------
def test_help_comes_from_field_metadata_with_a_fallback():
    o = opts(TokenExecutor)
    assert o["ntasks_per_node"].help == "processes (ranks) started on this machine"
    assert o["extra"].help == "TokenExecutor.extra"


def test_secrets_show_no_default_and_are_never_required():
    o = opts(TokenExecutor)
    assert not o["token"].is_required and o["token"].default is None
    assert o["pin"].default is None and "secret" in o["pin"].help
    dgx = opts(DGXCloudExecutor)
    for name in ("client_secret", "app_secret"):
        assert dgx[name].default is None and not dgx[name].is_required
    assert "1234" not in repr(executor_runopts(TokenExecutor))


def test_a_bad_secret_value_is_not_echoed():
    with pytest.raises(ConfigError, match=r"TokenExecutor\.pin must be an integer") as e:
        executor_runopts(TokenExecutor).cfg_from_str("token=t,pin=s3cr3t")
    assert "s3cr3t" not in str(e.value)


# -- parsing -cfg text ---------------------------------------------------------------------------
def test_cfg_text_is_parsed_into_typed_values():
    cfg = executor_runopts(DockerExecutor).cfg_from_str(
        "container_image=img,num_gpus=2,privileged=true,volumes=/a:/a;/b:/b:ro,env_vars=A:1;B:2"
    )
    assert cfg == {
        "container_image": "img",
        "num_gpus": 2,
        "privileged": True,
        "volumes": ["/a:/a", "/b:/b:ro"],
        "env_vars": {"A": "1", "B": "2"},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ntasks_per_node=two", r"LocalExecutor\.ntasks_per_node must be an integer, got 'two'"),
        ("retries=1.5", r"LocalExecutor\.retries must be an integer"),
        ("env_vars=FOO", r"LocalExecutor\.env_vars takes KEY:VALUE items"),
        ("jb_dir=/x", r"no run option 'jb_dir'; did you mean 'job_dir'\?"),
        ("job_dir", r"malformed run options for LocalExecutor"),
    ],
)
def test_bad_cfg_text_is_a_config_error_naming_the_field(text, message):
    with pytest.raises(ConfigError, match=message):
        executor_runopts(LocalExecutor).cfg_from_str(text)


def test_a_bool_is_true_or_false_not_anything_else():
    with pytest.raises(ConfigError, match=r"DockerExecutor\.privileged must be true or false"):
        executor_runopts(DockerExecutor).cfg_from_str("privileged=yes")


# -- building the executor -----------------------------------------------------------------------
def test_resolved_defaults_build_the_default_executor():
    resolved = executor_runopts(LocalExecutor).resolve({})
    assert executor_from_cfg(LocalExecutor, resolved) == LocalExecutor()


def test_resolved_defaults_are_not_shared_with_the_executor():
    first = executor_from_cfg(LocalExecutor, executor_runopts(LocalExecutor).resolve({}))
    first.env_vars["LEAK"] = "1"
    second = executor_from_cfg(LocalExecutor, executor_runopts(LocalExecutor).resolve({}))
    defaults = {s.name: s.default for s in option_specs(LocalExecutor)}
    assert second.env_vars == {} and defaults["env_vars"] == {}


def test_json_options_are_decoded_and_validated_by_the_executor():
    ex = executor_from_cfg(
        DGXCloudExecutor,
        {
            "project_name": "p",
            "container_image": "img",
            "pvc_nemo_run_dir": "/nemo/x",
            "pvcs": '[{"claimName": "c", "path": "/nemo"}]',
            "custom_spec": None,
        },
    )
    assert ex.pvcs == [{"claimName": "c", "path": "/nemo"}] and ex.custom_spec == {}
    with pytest.raises(ConfigError, match=r"DGXCloudExecutor\.pvcs takes JSON"):
        executor_from_cfg(DGXCloudExecutor, {"pvcs": "[{claimName: c}]"})
    with pytest.raises(ConfigError, match=r"DGXCloudExecutor\.pvcs must be a list"):
        executor_from_cfg(
            DGXCloudExecutor,
            {"project_name": "p", "container_image": "i", "pvc_nemo_run_dir": "/n", "pvcs": "{}"},
        )


def test_missing_required_option_is_a_config_error():
    with pytest.raises(ConfigError, match=r"DockerExecutor needs container_image.*-cfg"):
        executor_from_cfg(DockerExecutor, {"num_gpus": 1})


# -- submit_dryrun with run options --------------------------------------------------------------
def test_submit_dryrun_builds_the_executor_from_run_options(nemorun_home):
    sched = create_scheduler("s")
    info = sched.submit_dryrun(echo_app(), {"job_dir": str(nemorun_home / "j"), "retries": 2})
    assert isinstance(info, DryRun) and isinstance(info.executor, LocalExecutor)
    assert (info.executor.job_dir, info.executor.retries) == (str(nemorun_home / "j"), 2)
    assert info.request.log_dir.startswith(str(nemorun_home / "j"))
    assert info.app.roles[0].max_retries == 2  # applied to the component's role
    assert info._app is info.app  # what torchx's own Runner reads back
    # get_launcher() keeps the default launcher object it made, as in 0.11.1
    assert sched.submit_dryrun(echo_app(), None).executor == LocalExecutor(launcher=Launcher())


def test_submit_dryrun_with_a_bad_value_names_the_field(nemorun_home):
    sched = create_scheduler("s")
    with pytest.raises(ConfigError, match=r"LocalExecutor\.ntasks_per_node must be an integer"):
        sched.submit_dryrun(echo_app(), {"ntasks_per_node": "two"})
    with pytest.raises(ConfigError, match="no run option 'bogus'"):
        sched.submit_dryrun(echo_app(), {"bogus": 1})
    assert list(nemorun_home.iterdir()) == []


def test_run_options_apply_env_and_launcher_to_the_components_roles(
    nemorun_home, tmp_path, monkeypatch
):
    (tmp_path / "torchrun").write_text("#!/bin/sh\n")  # the dry run checks it is on PATH
    (tmp_path / "torchrun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    app = echo_app()
    app.roles[0].env = {"KEEP": "role", "BOTH": "role"}
    info = create_scheduler("s").submit_dryrun(
        app, {"env_vars": {"BOTH": "executor", "NEW": "executor"}, "launcher": "torchrun"}
    )
    role = info.app.roles[0]
    assert {k: role.env[k] for k in ("KEEP", "BOTH", "NEW")} == {
        "KEEP": "role",
        "BOTH": "role",
        "NEW": "executor",
    }
    assert role.entrypoint == "torchrun" and role.args[:2] == ["--rdzv-backend", "c10d"]
    assert role.args[-3:] == ["--no-python", "echo", "hi"]


def test_an_executor_still_passes_through_unchanged(nemorun_home):
    ex = LocalExecutor(env_vars={"A": "1"})
    app = echo_app()
    info = create_scheduler("s").submit_dryrun(app, ex)
    assert info.executor is ex and info.app is app and "A" not in app.roles[0].env
    with pytest.raises(ConfigError, match="needs a LocalExecutor, got DockerExecutor"):
        create_scheduler("s").submit_dryrun(echo_app(), DockerExecutor(container_image="i"))


# -- the runner: no private torchx fields needed --------------------------------------------------
def test_runner_plans_and_schedules_from_the_dry_run_alone(nemorun_home):
    runner = Runner("sess")
    info = runner.dryrun_for(echo_app(), run.LocalExecutor())
    assert info._scheduler is None  # our path never sets torchx's private back-reference
    planned = runner.planned_handle(info)
    assert planned.startswith("local_persistent://sess/echo-")
    assert runner.schedule(info) == planned
    assert runner.wait_until_done(planned, timeout=30).state == specs.AppState.SUCCEEDED


def test_runner_takes_run_options_through_torchx(nemorun_home):
    runner = Runner("sess")
    info = runner.dryrun(echo_app(), "local_persistent", {"retries": 1})
    assert isinstance(info.executor, LocalExecutor) and info.executor.retries == 1
    handle = runner.run(echo_app("again"), "local_persistent", {})
    assert runner.wait_until_done(handle, timeout=30).state == specs.AppState.SUCCEEDED


def test_runner_refuses_a_foreign_dry_run():
    foreign = AppDryRunInfo(object(), str)
    with pytest.raises(ConfigError, match="did not come from Runner.dryrun"):
        Runner("sess").schedule(foreign)
    with pytest.raises(ConfigError, match="did not come from Runner.dryrun"):
        Runner("sess").planned_handle(foreign)


def test_executor_subclass_fields_are_options_too():
    assert issubclass(TokenExecutor, Executor)
    o = opts(TokenExecutor)
    assert {"token", "extra", "pin", "ntasks_per_node"} <= set(o)
