"""Lepton through the real leptonai SDK, against the Lepton emulator running as its own process."""

from __future__ import annotations

import json
import os
import random
import re
import string
import urllib.request

import pytest
from torchx.specs import AppState, is_terminal, parse_app_handle

import nemo_run as run
from nemo_run.core.store import get_store
from nemo_run.exceptions import ConfigError
from nemo_run.run.torchx_backend.schedulers.lepton import LEPTON_STATES, create_scheduler, job_name
from tests.helpers import run_python, wait_for

pytest.importorskip("leptonai.api.v2.client", reason="the lepton extra (leptonai) is not installed")

TOKEN = "lepton-token-7e1d44"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    from nemo_run.testing.lepton import launch

    mode = "docker" if os.environ.get("NEMORUN_TEST_IMAGE") else "subprocess"
    handle = launch(
        "--mode",
        mode,
        "--node-group",
        "nemo-nodes:2",
        "--node-group",
        "spare:1",
        data_dir=tmp_path_factory.mktemp("lepton"),
        token=TOKEN,
    )
    handle.mode = mode
    yield handle
    handle.stop()


@pytest.fixture(autouse=True)
def workspace_env(monkeypatch, emulator):
    for key, value in emulator.env().items():
        monkeypatch.setenv(key, value)
    yield
    control(emulator, "DELETE", "faults")


def control(emulator, method: str, path: str, body: object = None) -> object:
    request = urllib.request.Request(
        f"{emulator.origin}/_emulator/{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def jobs(emulator) -> list[dict]:
    return control(emulator, "GET", "state")["jobs"]


def image() -> str:
    return os.environ.get("NEMORUN_TEST_IMAGE") or "unused-in-subprocess-mode"


def shared_executor(emulator, **kwargs) -> run.LeptonExecutor:
    """The shared mount is visible here at the same path as in the job (launched_from_cluster)."""
    host = str(emulator.data_dir / "storage" / "node-nfs" / "shared")
    settings = {
        "container_image": image(),
        "nemo_run_dir": f"{host}/nemo",
        "resource_shape": "cpu.small",
        "node_group": "nemo-nodes",
        "launched_from_cluster": True,
        "mounts": [{"path": "/shared", "from": "node-nfs", "mount_path": host}],
    }
    return run.LeptonExecutor(**{**settings, **kwargs})


def app_id_of(result: run.RunResult) -> str:
    return parse_app_handle(result.handle).app_id


def wait_terminal(app_id: str) -> AppState:
    sched = create_scheduler("t")
    return wait_for(
        lambda: (d := sched.describe(app_id)) and is_terminal(d.state) and d,
        timeout=60,
        what=app_id,
    ).state


def test_every_lepton_state_is_mapped_and_unknown_is_not_failed():
    from leptonai.api.v2.types.job import LeptonJobState

    assert {s.value for s in LeptonJobState} <= set(LEPTON_STATES)
    assert LEPTON_STATES[LeptonJobState.Unknown.value] == AppState.UNKNOWN


def test_lepton_states_are_keyed_by_the_sdk_enum():
    from leptonai.api.v2.types.job import LeptonJobState

    assert set(LEPTON_STATES) == set(LeptonJobState)
    assert all(isinstance(key, LeptonJobState) for key in LEPTON_STATES)
    assert LEPTON_STATES[LeptonJobState.Running] == AppState.RUNNING
    assert LEPTON_STATES["Completed"] == AppState.SUCCEEDED  # a str enum: the API's strings too


def test_node_variables_come_from_leptons_own(tmp_path, monkeypatch):
    """Lepton sets only LEPTON_* variables: the launch script derives worker 0's address, the
    worker count and index as lepton_env_to_pytorch.sh does, and references to them in the
    arguments (what torchrun's flags become) expand on each worker."""
    from nemo_run.testing.lepton import launch

    bare = launch(
        "--mode",
        "subprocess",
        "--node-group",
        "g:2",
        "--no-torch-env",
        data_dir=tmp_path,
        token=TOKEN,
    )
    try:
        for key, value in bare.env().items():
            monkeypatch.setenv(key, value)
        host = str(tmp_path / "storage" / "node-nfs" / "shared")
        ex = run.LeptonExecutor(container_image="unused", nemo_run_dir=f"{host}/nemo")
        ex.resource_shape, ex.node_group, ex.nodes, ex.gpus_per_node = "cpu.small", "g", 2, 4
        ex.launched_from_cluster = True
        ex.mounts = [{"path": "/shared", "from": "node-nfs", "mount_path": host}]
        task = run.Script(
            inline='echo "node $1 of $2 at $3:$4 x$5"',
            args=["$NODE_RANK", "$WORLD_SIZE", "$MASTER_ADDR", "${MASTER_PORT}", "$NPROC_PER_NODE"],
        )
        result = run.run(task, executor=ex, name="vars")
        app_id = app_id_of(result)
        sched = create_scheduler("t")
        lines = [line for k in range(2) for line in sched.log_iter(app_id, "vars", k)]
        # worker 0 as Lepton names it: <service prefix (the job id)>-0.<job id>-job-svc
        head = rf"({app_id}-[a-z0-9]+)-0\.\1-job-svc:29400"
        assert len(lines) == 2
        for k, line in enumerate(sorted(lines)):
            assert re.fullmatch(rf"node {k} of 2 at {head} x4\n", line), line
    finally:
        bare.stop()


def test_executor_calls_as_0_11_1_offers_them(emulator):
    from leptonai.api.v2.types.job import LeptonJobState

    from nemo_run.core.store.records import REMOTE_ID

    ex = shared_executor(emulator)
    result = run.run(run.Script(inline="sleep 300"), executor=ex, name="calls", detach=True)
    job_id = get_store().get("lepton", app_id_of(result)).data[REMOTE_ID]
    wait_for(lambda: ex.status(job_id) == LeptonJobState.Running, timeout=60, what="running")
    ex.stop_job(job_id)
    wait_for(lambda: ex.status(job_id) == LeptonJobState.Stopped, timeout=60, what="stopped")
    ex.cancel(job_id)  # 0.11.1's cancel deletes the job
    wait_for(lambda: ex.status(job_id) == LeptonJobState.Unknown, timeout=60, what="deleted")


def test_job_names_follow_lepton_rules():
    for raw in ("My_Train.Job", "9lives", "y" * 60):
        name = job_name(raw)
        assert (
            len(name) <= 36
            and name[0].isalpha()
            and set(name) <= set(string.ascii_lowercase + string.digits + "-")
        )
    assert job_name("a") != job_name("a")


def test_two_replicas_with_real_output_from_both(emulator):
    result = run.run(
        run.Script(inline='echo "replica $NODE_RANK of $WORLD_SIZE"'),
        executor=shared_executor(emulator, nodes=2),
        name="pair",
    )
    assert result.ok
    app_id = app_id_of(result)
    sched = create_scheduler("t")
    from_files = sorted(line for k in range(2) for line in sched.log_iter(app_id, "pair", k))
    assert from_files == ["replica 0 of 2\n", "replica 1 of 2\n"]
    get_store().update(
        "lepton", app_id, data={"launched_from_cluster": False}
    )  # now through the API
    from_api = sorted(
        line for k in range(2) for line in create_scheduler("api").log_iter(app_id, "pair", k)
    )
    assert from_api == from_files


def test_failure(emulator):
    with pytest.raises(run.JobFailedError, match="FAILED"):
        run.run(
            run.Script(inline="echo failing; exit 4"),
            executor=shared_executor(emulator),
            name="bad",
        )


def test_cancel_describe_list_logs_from_a_new_process_without_token_on_disk(emulator, nemorun_home):
    result = run.run(
        run.Script(inline="echo started; sleep 300"),
        executor=shared_executor(emulator),
        name="long",
        detach=True,
    )
    app_id = app_id_of(result)
    sched = create_scheduler("t")
    wait_for(lambda: sched.describe(app_id).state == AppState.RUNNING, timeout=60, what="running")
    out = run_python(f"""
        from nemo_run.run.torchx_backend.schedulers.lepton import create_scheduler
        s = create_scheduler("other")
        s.cancel("{app_id}")
        s.cancel("{app_id}")
        print(s.describe("{app_id}").state.name)
        print([r.state.name for r in s.list() if r.app_id == "{app_id}"])
        print(list(s.log_iter("{app_id}", "long", should_tail=True)))
    """).stdout.splitlines()
    assert out == ["CANCELLED", "['CANCELLED']", "['started\\n']"]
    wait_for(
        lambda: next(j for j in jobs(emulator) if j["name"] == app_id)["state"] == "Stopped",
        timeout=30,
        what="the job to stop",
    )
    for folder, _, files in os.walk(nemorun_home):
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                assert TOKEN.encode() not in fh.read(), f"token found in {name}"


def test_deleted_job_reads_terminal(emulator):
    result = run.run(
        run.Script(inline="sleep 300"), executor=shared_executor(emulator), name="gone", detach=True
    )
    app_id = app_id_of(result)
    from nemo_run.core.clients.lepton import LeptonClient

    LeptonClient().delete_job(get_store().get("lepton", app_id).data["remote_id"])
    assert wait_terminal(app_id) == AppState.CANCELLED


def test_error_storm_creates_exactly_one_job(emulator):
    control(
        emulator,
        "POST",
        "faults",
        [
            {
                "match": {"method": "POST", "path_prefix": "/jobs"},
                "count": 2,
                "action": {"status": 503},
            },
            {
                "match": {"method": "POST", "path_prefix": "/jobs"},
                "count": 1,
                "action": {"status": 429, "retry_after": 0.2},
            },
            {
                "match": {"method": "POST", "path_prefix": "/jobs"},
                "count": 1,
                "action": {"drop_after_commit": True},
            },
            {
                "match": {"method": "GET", "path_prefix": "/jobs"},
                "count": 2,
                "action": {"status": 500},
            },
        ],
    )
    result = run.run(
        run.Script(inline="echo once"), executor=shared_executor(emulator), name="storm"
    )
    assert result.ok
    assert [j["name"] for j in jobs(emulator) if not j.get("deleted")].count(app_id_of(result)) == 1


def test_bad_input_before_any_job(emulator, monkeypatch):
    before = len(jobs(emulator))
    with pytest.raises(
        ConfigError,
        match="node_group='gpu-pool' does not exist; available node groups: nemo-nodes, spare",
    ):
        run.run(
            run.Script(inline="true"),
            executor=shared_executor(emulator, node_group="gpu-pool"),
            name="x",
        )
    monkeypatch.delenv("LEPTON_WORKSPACE_ID")
    monkeypatch.setenv("HOME", str(emulator.data_dir / "nohome"))  # no `lep login` record either
    with pytest.raises(
        ConfigError, match="LEPTON_WORKSPACE_ID, LEPTON_WORKSPACE_TOKEN and LEPTON_WORKSPACE_URL"
    ):
        run.run(run.Script(inline="true"), executor=shared_executor(emulator), name="x")
    assert len(jobs(emulator)) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"mounts": [{"path": "/s", "from": "f", "mount_path": "/usr/local"}]},
            "reserved system path",
        ),
        ({"mounts": [{"path": "/s", "mount_path": "relative"}]}, "must be absolute"),
        ({"resource_shape": "8 gpus"}, "is not a resource shape"),
        ({"nemo_run_dir": "/elsewhere"}, "must be inside one of the mounts"),
        ({"queue_priority": "urgent"}, "use low, mid or high"),
        ({"nodes": 0}, "nodes must be an integer >= 1"),
        ({"resource_shape": ""}, "resource_shape is required"),
        ({"node_group": ""}, "node_group is required"),
    ],
)
def test_executor_rejects_bad_input(kwargs, message):
    base = {
        "container_image": "i",
        "nemo_run_dir": "/ws/n",
        "resource_shape": "cpu.small",
        "node_group": "g",
        "mounts": [{"path": "/s", "from": "f", "mount_path": "/ws"}],
    }
    ex = run.LeptonExecutor(**{**base, **kwargs})  # as 0.11.1: checked at launch
    with pytest.raises(ConfigError, match=message):
        ex.validate()
    with pytest.raises(ConfigError, match=message):
        run.run(run.Script(inline="true"), executor=ex, name="x", dryrun=True)


@pytest.mark.docker
def test_two_mb_repository_through_helper_jobs(emulator, tmp_path, monkeypatch, docker_image):
    if emulator.mode != "docker":
        pytest.skip("helper jobs write inside containers: needs the emulator in docker mode")
    code = tmp_path / "repo"
    rng = random.Random(11)
    for i in range(40):
        path = code / f"pkg{i % 4}" / f"mod_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            " ".join(
                "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9)))
                for _ in range(9000)
            )
            + "\n"
        )
    (code / "main.sh").write_text(
        'echo "files: $(find . -name "*.py" | wc -l) bytes: $(cat pkg*/*.py | wc -c)"\n'
    )
    total = sum(p.stat().st_size for p in code.rglob("*.py"))
    assert total > 2_000_000
    monkeypatch.chdir(code)
    ex = run.LeptonExecutor(
        container_image=docker_image,
        nemo_run_dir="/ws/nemo",
        resource_shape="cpu.small",
        node_group="nemo-nodes",
        mounts=[{"path": "/big", "from": "node-nfs", "mount_path": "/ws"}],
        packager=run.PatternPackager(include_pattern=["**/*.py", "main.sh"], relative_path=""),
    )
    result = run.run(run.Script(inline="bash main.sh"), executor=ex, name="bigrepo")
    assert result.ok
    assert list(create_scheduler("t").log_iter(app_id_of(result), "bigrepo")) == [
        f"files: 40 bytes: {total}\n"
    ]
    record = get_store().get("lepton", app_id_of(result))
    assert 1 <= record.data["data_mover_jobs"] <= 3
    helpers = [
        j
        for j in jobs(emulator)
        if j["name"].startswith(app_id_of(result)[:20]) and j["name"] != app_id_of(result)
    ]
    assert helpers and all(j.get("deleted") for j in helpers)
