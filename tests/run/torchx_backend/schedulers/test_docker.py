"""The Docker backend on a real engine: containers, exit codes, cancel, logs across processes."""

from __future__ import annotations

import os
import threading

import pytest
from torchx.specs import AppState, is_terminal, parse_app_handle

import nemo_run as run
from nemo_run.core.store import get_store
from nemo_run.exceptions import ConfigError
from nemo_run.run.torchx_backend.schedulers.docker import LABEL_APP_ID, _hostname, create_scheduler
from tests.helpers import run_python, wait_for

pytestmark = pytest.mark.docker


def engine():
    import docker

    return docker.from_env()


def containers_of(app_id: str) -> list:
    return engine().containers.list(all=True, filters={"label": f"{LABEL_APP_ID}={app_id}"})


def app_id_of(result: run.RunResult) -> str:
    return parse_app_handle(result.handle).app_id


def executor(image: str, **kwargs) -> run.DockerExecutor:
    return run.DockerExecutor(container_image=image, **{"packager": run.Packager(), **kwargs})


def wait_terminal(app_id: str) -> AppState:
    sched = create_scheduler("t")
    return wait_for(
        lambda: (d := sched.describe(app_id)) and is_terminal(d.state) and d, what=app_id
    ).state


def test_success_output_from_a_new_process_after_the_container_is_gone(docker_image):
    result = run.run(
        run.Script(inline='echo "out $GREETING"; echo problem >&2'),
        executor=executor(docker_image, env_vars={"GREETING": "hi"}),
        name="ok",
    )
    assert result.ok
    app_id = app_id_of(result)
    assert containers_of(app_id) == []  # outcome recorded, container removed
    child = run_python(f"""
        from torchx.schedulers.api import Stream
        from nemo_run.run.torchx_backend.schedulers.docker import create_scheduler
        s = create_scheduler("other")
        print(s.describe("{app_id}").state.name)
        print(repr(list(s.log_iter("{app_id}", "ok", streams=Stream.STDOUT))))
        print(repr(list(s.log_iter("{app_id}", "ok", streams=Stream.STDERR))))
    """).stdout.splitlines()
    assert child == ["SUCCEEDED", "['out hi\\n']", "['problem\\n']"]
    assert get_store().get("docker_persistent", app_id).data["exit_code"] == 0


def test_failure_exit_code(docker_image):
    with pytest.raises(run.JobFailedError, match="exited with code 3"):
        run.run(run.Script(inline="exit 3"), executor=executor(docker_image), name="bad")
    [record] = get_store().list("docker_persistent")
    assert record.state == "FAILED" and record.data["exit_code"] == 3


def test_group_with_one_failing_replica_fails(docker_image):
    result = run.run(
        run.Script(inline='[ "$RANK" != 1 ] || exit 7'),
        executor=executor(docker_image, ntasks_per_node=2),
        name="pair",
        detach=True,
    )
    app_id = app_id_of(result)
    assert wait_terminal(app_id) == AppState.FAILED
    desc = create_scheduler("t").describe(app_id)
    states = {r.id: r.state for r in desc.roles_statuses[0].replicas}
    assert states == {0: AppState.SUCCEEDED, 1: AppState.FAILED}
    assert "pair[1] exited with code 7" in desc.msg


def test_cancel_from_another_process_is_idempotent(docker_image):
    result = run.run(
        run.Script(inline="echo started; sleep 300"),
        executor=executor(docker_image),
        name="long",
        detach=True,
    )
    app_id = app_id_of(result)
    sched = create_scheduler("t")
    wait_for(lambda: sched.describe(app_id).state == AppState.RUNNING, what="running")
    run_python(f"""
        from nemo_run.run.torchx_backend.schedulers.docker import create_scheduler
        create_scheduler("canceller").cancel("{app_id}")
    """)
    assert sched.describe(app_id).state == AppState.CANCELLED
    assert containers_of(app_id) == []
    sched.cancel(app_id)
    assert sched.describe(app_id).state == AppState.CANCELLED
    assert list(sched.log_iter(app_id, "long")) == ["started\n"]


def test_retries_restart_the_container(docker_image):
    script = 'echo attempt >> /nemo_run/attempts; [ "$(wc -l < /nemo_run/attempts)" -ge 2 ]'
    result = run.run(
        run.Script(inline=script), executor=executor(docker_image, retries=2), name="retry"
    )
    assert result.ok
    assert open(os.path.join(result.log_dir, "attempts")).read().count("attempt") == 2
    assert create_scheduler("t").describe(app_id_of(result)).num_restarts == 1


def test_tail_while_running_ends_with_the_job(docker_image):
    result = run.run(
        run.Script(inline="echo one; while [ ! -e /nemo_run/go ]; do sleep 0.05; done; echo two"),
        executor=executor(docker_image),
        name="tail",
        detach=True,
    )
    app_id = app_id_of(result)
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        lines.extend(create_scheduler("reader").log_iter(app_id, "tail", should_tail=True))
        done.set()

    threading.Thread(target=read, daemon=True).start()
    wait_for(lambda: lines == ["one\n"], what="the first line")
    open(os.path.join(result.log_dir, "go"), "w").close()
    assert done.wait(30)
    assert lines == ["one\n", "two\n"]
    assert wait_terminal(app_id) == AppState.SUCCEEDED


def test_vanished_container_reads_failed_never_succeeded(docker_image):
    """Its outcome is lost for good: a final FAILED with the reason, so waiters end."""
    result = run.run(
        run.Script(inline="sleep 300"), executor=executor(docker_image), name="gone", detach=True
    )
    app_id = app_id_of(result)
    for container in containers_of(app_id):
        container.remove(force=True)
    desc = create_scheduler("t").describe(app_id)
    assert desc.state == AppState.FAILED
    assert "vanished" in desc.msg


def test_user_labels_and_environment_merge_with_ours(docker_image):
    ex = executor(
        docker_image, additional_kwargs={"labels": {"team": "x"}, "environment": {"EXTRA": "1"}}
    )
    result = run.run(
        run.Script(inline='sleep 2; test "$EXTRA" = 1'), executor=ex, name="merged", detach=True
    )
    [container] = containers_of(app_id_of(result))
    assert container.labels["team"] == "x"
    assert wait_terminal(app_id_of(result)) == AppState.SUCCEEDED


def test_list_includes_this_backends_jobs(docker_image):
    result = run.run(run.Script(inline="true"), executor=executor(docker_image), name="listed")
    listed = {r.app_id: r for r in create_scheduler("t").list()}
    assert listed[app_id_of(result)].state == AppState.SUCCEEDED


def test_parallel_jobs_with_one_name_do_not_collide(docker_image):
    exp = run.Experiment("same-name")
    for i in range(3):
        exp.add(run.Script(inline="true"), executor=executor(docker_image), name=f"t{i}")
    exp.run()
    assert {s["state"] for s in exp.status(return_dict=True).values()} == {"SUCCEEDED"}


def test_missing_image_is_a_clear_error_and_leaves_nothing(docker_image):
    with pytest.raises(ConfigError, match="no-such-image:1.0.*cannot be pulled"):
        run.run(
            run.Script(inline="true"),
            executor=executor("localhost/no-such-image:1.0"),
            name="noimg",
        )
    assert get_store().list("docker_persistent") == []
    assert (
        engine().containers.list(all=True, filters={"ancestor": "localhost/no-such-image:1.0"})
        == []
    )


def test_gpus_on_an_engine_without_gpu_runtime(docker_image):
    with pytest.raises(ConfigError, match="num_gpus=1 but this engine has no GPU runtime"):
        run.run(run.Script(inline="true"), executor=executor(docker_image, num_gpus=1), name="gpu")
    assert engine().containers.list(all=True, filters={"label": LABEL_APP_ID}) == []


def test_close_stops_only_when_asked(docker_image):
    ex = executor(docker_image)
    from nemo_run.run.torchx_backend.packaging import package

    keep, stop = create_scheduler("keep"), create_scheduler("stop", stop_on_close=True)
    app_ids = {}
    for name, sched in (("keep", keep), ("stop", stop)):
        app = package(name, run.Script(inline="sleep 300"), ex)
        app_ids[name] = sched.schedule(sched.submit_dryrun(app, ex))
    keep.close()
    stop.close()
    observer = create_scheduler("observer")
    assert observer.describe(app_ids["stop"]).state == AppState.CANCELLED
    assert observer.describe(app_ids["keep"]).state == AppState.RUNNING
    observer.cancel(app_ids["keep"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"container_image": ""}, "container_image is required"),
        ({"volumes": ["/data"]}, "volumes entry '/data' is malformed"),
        ({"volumes": ["data:/x"]}, None),
        ({"volumes": ["./data:/x"]}, "as an absolute path"),
        ({"volumes": ["/data:relative"]}, "must be absolute"),
        ({"volumes": ["/data:/x:rx"]}, "unknown mode 'rx'"),
        ({"ulimits": ["nofile"]}, "ulimits entry 'nofile' is malformed"),
        ({"ulimits": ["nofile=1:x"]}, "malformed"),
        ({"ulimits": ["nofile:1024:2048", "memlock:-1:-1", "core=0"]}, None),
        ({"shm_size": "lots"}, "shm_size='lots' is malformed"),
        ({"num_gpus": -2}, "num_gpus must be -1"),
        ({"healthcheck": {"interval": 1}}, "healthcheck needs a 'test'"),
    ],
)
def test_executor_validation(kwargs, message):
    kwargs = {"container_image": "img", "packager": run.Packager(), **kwargs}
    ex = run.DockerExecutor(**kwargs)  # as 0.11.1: the settings are checked at launch
    if message is None:
        ex.validate()
        return
    with pytest.raises(ConfigError, match=message):
        ex.validate()
    with pytest.raises(ConfigError, match=message):
        run.run(run.Script(inline="true"), executor=ex, dryrun=True)


def test_hostnames_are_valid_labels():
    long = _hostname("a-very-long-task-name-" * 5 + "abc-0")
    assert len(long) <= 63 and long.replace("-", "").isalnum()
    assert _hostname("X_Y.z") == "x-y-z"
    assert _hostname("a" * 70 + "-0") != _hostname("a" * 70 + "-1")


def test_merged_roles_configs_ulimits_and_node_variables_on_the_engine(docker_image, tmp_path):
    """0.11.1's group of executors (merge), package_configs and NAME:SOFT:HARD ulimits reach
    the containers; node variables in arguments become values (no shell runs the command)."""
    from torchx import specs

    first = executor(docker_image, ulimits=["nofile:1024:2048"])
    second = executor(docker_image)
    merged = run.DockerExecutor.merge([first, second], 2)
    merged.job_dir = str(tmp_path / "job")
    assert merged.package_configs(("c.yaml", "hello")) == ["/nemo_run/configs/c.yaml"]
    roles = [
        specs.Role(
            "a",
            image="",
            entrypoint="bash",
            args=["-c", 'echo "$0 $(cat /nemo_run/configs/c.yaml) $(ulimit -n)"', "$MASTER_ADDR"],
        ),
        specs.Role(
            "b", image="", entrypoint="bash", args=["-c", 'echo "$0 $1"', "$NODE_RANK", "${NNODES}"]
        ),
    ]
    sched = create_scheduler("t")
    info = sched.submit_dryrun(specs.AppDef("grp", roles), merged)
    head = info.request.containers[0].hostname
    app_id = sched.schedule(info)
    assert wait_terminal(app_id) == AppState.SUCCEEDED
    assert list(sched.log_iter(app_id, "a")) == [f"{head} hello 1024\n"]
    assert list(sched.log_iter(app_id, "b")) == ["0 1\n"]


def test_a_volume_from_the_special_rundir_mounts_a_folder_of_the_job(docker_image):
    """ "/$nemo_run/..." as a volume source names the job's own folder, as in 0.11.1."""
    ex = executor(docker_image, volumes=["/$nemo_run/shared:/shared"])
    result = run.run(run.Script(inline="echo kept > /shared/out"), executor=ex, name="rundir")
    assert result.ok
    with open(os.path.join(result.log_dir, "shared", "out")) as fh:
        assert fh.read() == "kept\n"
