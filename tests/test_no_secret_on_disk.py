"""No secret given to a task or an executor is ever written by nemo_run: not in the job store,
experiment files, dry-run text, logs it writes, or job folders."""

from __future__ import annotations

import os

import pytest

import nemo_run as run

SECRETS = {
    "arg": "sk-arg-4c1d9e",
    "arg_eq": "sk-argeq-77aa01",
    "assign": "sk-assign-0b2f33",
    "env": "sk-env-5e6f70",
    "kwarg": "sk-kwarg-81c2d4",
    "docker": "sk-docker-9a8b7c",
}


def task_fn(lr: float = 0.1, api_key: str = "") -> None:
    assert api_key == SECRETS["kwarg"]  # the job itself gets the real value
    print("trained with", lr)


def _files_holding_secrets(root) -> list[str]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                data = open(path, "rb").read()
            except OSError:
                continue
            found += [f"{path}: {key}" for key, value in SECRETS.items() if value.encode() in data]
    return found


def _script() -> run.Script:
    return run.Script(
        inline='test "$1" = --api-key && echo "args ok ($#)"',
        args=[
            "--api-key",
            SECRETS["arg"],
            f"--token={SECRETS['arg_eq']}",
            f"DB_PASSWORD={SECRETS['assign']}",
        ],
    )


def test_local_tasks_keep_no_secret_on_disk(nemorun_home, capsys):
    executor = run.LocalExecutor(env_vars={"HF_TOKEN": SECRETS["env"]})
    with run.Experiment("secrets") as exp:
        exp.add(_script(), executor=executor, name="script")
        exp.add(
            run.Partial(task_fn, lr=0.5, api_key=SECRETS["kwarg"]), executor=executor, name="fn"
        )
        exp.run(dryrun=True)
        exp.run()
    states = {k: v["state"] for k, v in exp.status(return_dict=True).items()}
    assert states == {"script": "SUCCEEDED", "fn": "SUCCEEDED"}
    printed = capsys.readouterr()
    assert not [k for k, v in SECRETS.items() if v in printed.out + printed.err]
    assert _files_holding_secrets(nemorun_home) == []


@pytest.mark.docker
def test_docker_settings_keep_no_secret_on_disk(nemorun_home, docker_image, capsys):
    executor = run.DockerExecutor(
        container_image=docker_image,
        packager=run.Packager(),
        additional_kwargs={"environment": {"HF_TOKEN": SECRETS["docker"]}, "labels": {"team": "x"}},
    )
    with run.Experiment("docker-secrets") as exp:
        exp.add(_script(), executor=executor, name="script")
        exp.run(dryrun=True)
        exp.run()
    assert exp.status(return_dict=True)["script"]["state"] == "SUCCEEDED"
    printed = capsys.readouterr()
    assert not [k for k, v in SECRETS.items() if v in printed.out + printed.err]
    assert _files_holding_secrets(nemorun_home) == []
