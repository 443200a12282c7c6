"""Experiment folders nemo-run 0.11.1 wrote in the same home: listed, reopened read-only,
their secrets dropped on read and never copied, the folder never written.

Most tests use a hand-written copy of such a folder (tests/data/legacy_0_11_1); one module
fixture makes a real one with the peer (bench/.peer-venv, or a venv built on the fly) and
skips, saying why, where it cannot be had."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

import nemo_run as run
from nemo_run.cli.nemorun import app
from nemo_run.exceptions import ConfigError, UnknownExperimentError
from nemo_run.run import experiment_files as files
from nemo_run.run.legacy_experiments import (
    LegacyFormatError,
    public,
    read_config,
    read_legacy_experiment,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "legacy_0_11_1"
REPO = Path(__file__).resolve().parent.parent.parent
EXP_ID = "old-demo_1796226030928213570"
SECRET = "hf_HANDMADESECRET0042"
PEER_SECRET = "hf_PEERSECRET0099887766"


def encode(doc: object) -> str:
    """As 0.11.1 stores a fiddle config: JSON, zlib, url-safe base64."""
    return base64.urlsafe_b64encode(zlib.compress(json.dumps(doc).encode())).decode()


def build_folder(home: Path) -> Path:
    """The hand-written experiment, laid out as 0.11.1 leaves it (job folders, logs, the
    plain-text executor YAML holding the secret, and its `.local_jobs.json`)."""
    folder = home / "experiments" / "old-demo" / EXP_ID
    folder.mkdir(parents=True)

    def text(name: str) -> str:
        return (DATA / name).read_text().replace("@FOLDER@", str(folder))

    (folder / "_CONFIG").write_text(encode(json.loads(text("config.json"))))
    tasks = [[encode(json.loads(text(f"job_{t}.json"))), encode({})] for t in ("first", "second")]
    (folder / "_TASKS").write_text(json.dumps(tasks))
    (folder / "_VERSION").write_text(text("_VERSION"))
    (folder / "_DONE").write_text("")
    for task, app_id, out in (
        ("first", "first-aaaa1111", "hello from first\n"),
        ("second", "second-bbbb2222", "boom\n"),
    ):
        replica = folder / task / "nemo_run" / app_id / task / "0"
        replica.mkdir(parents=True)
        for name in ("combined.log", "stdout.log"):
            (replica / name).write_text(out)
        (replica / "stderr.log").write_text("")
        (folder / task / "configs").mkdir()
    (folder / "second" / "configs" / "second_executor.yaml").write_text(
        f"env_vars:\n  HF_TOKEN: {SECRET}\n"
    )
    (home / ".local_jobs.json").write_text(text("local_jobs.json"))
    return folder


def snapshot(folder: Path) -> dict[str, tuple[float, bytes]]:
    return {
        str(p): (p.stat().st_mtime, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def secret_copies(home: Path, old: dict[str, object], secret: str) -> list[str]:
    """Files in the home holding the secret, other than the old experiment's own."""
    return [
        str(p)
        for p in home.rglob("*")
        if p.is_file() and str(p) not in old and secret.encode() in p.read_bytes()
    ]


@pytest.fixture
def legacy(nemorun_home: Path) -> Path:
    return build_folder(nemorun_home)


# -- reading --------------------------------------------------------------------------------
def test_reads_title_id_tasks_handles_and_executor_type(legacy: Path) -> None:
    exp = read_legacy_experiment(str(legacy))
    assert (exp.id, exp.title, exp.version, exp.done) == (
        EXP_ID,
        "old-demo",
        "0.11.1+38fb223",
        True,
    )
    assert [(t.id, t.handle, t.executor_type) for t in exp.tasks] == [
        ("first", "local_persistent://nemo_run/first-aaaa1111", "LocalExecutor"),
        ("second", "local_persistent://nemo_run/second-bbbb2222", "LocalExecutor"),
    ]
    assert exp.tasks[1].dependencies == ["first"]
    assert exp.tasks[1].job_dir == f"{legacy}/second"
    assert exp.created_at == pytest.approx(1796226030.928)


def test_secret_env_vars_are_dropped_on_read_and_others_kept(legacy: Path) -> None:
    second = read_legacy_experiment(str(legacy)).tasks[1]
    assert second.executor["env_vars"] == {"PLAIN": "visible"}
    assert SECRET not in json.dumps(files.find_by_id(EXP_ID).tasks[1].executor)


def test_public_drops_secret_keys_and_named_env_items() -> None:
    value = {
        "client_secret": "s3cret",
        "env": [{"name": "API_KEY", "value": "k"}, {"name": "HOME", "value": "/h"}],
        "args": ["--token", "tok123", "--lr", "0.1"],
        "n": 2,
    }
    out = public(value)
    assert out["env"] == [{"name": "HOME", "value": "/h"}] and out["n"] == 2
    assert "client_secret" not in out and "tok123" not in json.dumps(out)


def test_decoding_never_imports_the_modules_a_config_names() -> None:
    doc = json.loads((DATA / "job_first.json").read_text())
    doc["objects"]["meta_exec"]["items"][0][1]["module"] = "nemo_run_legacy_test_never_imported"
    job = read_config(encode(doc))
    assert job["executor"]["__fn__"] == "nemo_run_legacy_test_never_imported.LocalExecutor"
    assert "nemo_run_legacy_test_never_imported" not in sys.modules


@pytest.mark.parametrize("blob", ["not base64!", encode([1, 2]), base64.b64encode(b"x").decode()])
def test_a_broken_blob_is_a_format_error(blob: str) -> None:
    with pytest.raises(LegacyFormatError):
        read_config(blob)


def test_a_broken_folder_is_skipped_in_listings_and_named_on_lookup(
    legacy: Path, nemorun_home: Path
) -> None:
    bad = nemorun_home / "experiments" / "old-demo" / "old-demo_2"
    bad.mkdir()
    (bad / "_CONFIG").write_text("garbage")
    assert [r.id for r in files.list_experiments()] == [EXP_ID]
    with pytest.raises(UnknownExperimentError, match="_CONFIG"):
        run.Experiment.from_id("old-demo_2")


# -- reopening ------------------------------------------------------------------------------
def test_from_id_and_from_title_show_status_and_logs_of_its_jobs(legacy: Path) -> None:
    exp = run.Experiment.from_id(EXP_ID)
    assert (exp.id, exp.title) == (EXP_ID, "old-demo")
    rows = exp.status(return_dict=True)
    assert {k: r["state"] for k, r in rows.items()} == {"first": "SUCCEEDED", "second": "FAILED"}
    assert "".join(exp.log_lines("first")) == "hello from first\n"
    assert run.Experiment.from_title("old-demo").id == EXP_ID
    assert run.Experiment.catalog("old-demo") == [EXP_ID]


@pytest.mark.parametrize(
    "action",
    [
        lambda e: e.run(),
        lambda e: e.add(run.Script(inline="echo x")),
        lambda e: e.reset(),
        lambda e: e.dryrun(log=False),
    ],
    ids=["run", "add", "reset", "dryrun"],
)
def test_changing_it_is_refused_naming_the_version(legacy: Path, action) -> None:
    exp = run.Experiment.from_id(EXP_ID)
    with pytest.raises(ConfigError, match=r"written by nemo-run 0\.11\.1.*read-only"):
        action(exp)


def test_nothing_is_written_into_the_old_folder_and_no_secret_copied(
    legacy: Path, nemorun_home: Path
) -> None:
    before = snapshot(legacy)
    exp = run.Experiment.from_id(EXP_ID)
    exp.status(return_dict=True)
    list(exp.log_lines("second"))
    exp.cancel()  # both ended: nothing to do, and no cancel marker written
    invoke(["experiment", "list", "--json"])
    invoke(["experiment", "status", EXP_ID, "--json"])
    assert snapshot(legacy) == before
    assert (nemorun_home / "jobs.db").exists() or any(nemorun_home.iterdir())
    assert secret_copies(nemorun_home, before, SECRET) == []


# -- the CLI --------------------------------------------------------------------------------
def invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def test_cli_lists_shows_and_prints_logs(legacy: Path) -> None:
    listed = invoke(["experiment", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.stdout)
    assert (row["id"], row["tasks"], row["written_by"]) == (
        EXP_ID,
        ["first", "second"],
        "nemo-run 0.11.1+38fb223",
    )
    status = invoke(["experiment", "status", EXP_ID, "--json"])
    assert status.exit_code == 1  # a task FAILED
    assert json.loads(status.stdout)["tasks"]["first"]["state"] == "SUCCEEDED"
    logs = invoke(["experiment", "logs", "old-demo", "second"])
    assert (logs.exit_code, logs.stdout) == (0, "boom\n")


# -- an experiment the peer itself wrote ----------------------------------------------------
PEER_SCRIPT = """
import os
import nemo_run as run
with run.Experiment("peer-demo") as exp:
    exp.add(run.Script(inline="echo hi"), executor=run.LocalExecutor(), name="first")
    exp.add(
        run.Script(inline="echo there"),
        executor=run.LocalExecutor(env_vars={"HF_TOKEN": os.environ["PEER_SECRET"]}),
        name="second",
    )
    exp.run(detach=False)
print("EXPERIMENT_ID", exp._id)
"""


def _peer_python(tmp: Path) -> Path:
    """bench/.peer-venv's interpreter, the venv built there when missing; else pytest.skip why."""
    venv = REPO / "bench" / ".peer-venv"  # scripts/test.sh builds it while services start
    bundled = venv / "bin" / "python"
    if bundled.exists():
        return bundled
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "nemo-run==0.11.1", "leptonai==0.27.3"],
            check=True,
            timeout=600,
            capture_output=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"no nemo-run 0.11.1 to write a real folder: building its venv failed ({e})")
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def peer_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("peer")
    python = _peer_python(tmp)
    home = tmp / "home"
    home.mkdir()
    script = tmp / "make_experiment.py"
    script.write_text(PEER_SCRIPT)
    env = {**os.environ, "NEMORUN_HOME": str(home), "PEER_SECRET": PEER_SECRET}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(  # cwd=/tmp-like folder: never import this checkout as nemo_run
        [str(python), str(script)], cwd=tmp, env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        pytest.skip(f"nemo-run 0.11.1 could not run its experiment: {result.stderr[-500:]}")
    exp_id = result.stdout.rsplit("EXPERIMENT_ID", 1)[-1].strip()
    return home, exp_id


def test_reopens_an_experiment_the_peer_wrote(
    peer_home: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, exp_id = peer_home  # its job records name absolute folders: read it where it is
    monkeypatch.setenv("NEMORUN_HOME", str(home))
    run.config.set_nemorun_home(None)
    folder = home / "experiments" / "peer-demo" / exp_id
    assert (folder / "_TASKS").exists() and not (folder / "experiment.json").exists()
    before = snapshot(folder)
    try:
        exp = run.Experiment.from_id(exp_id)
        rows = exp.status(return_dict=True)
        assert {k: r["state"] for k, r in rows.items()} == {
            "first": "SUCCEEDED",
            "second": "SUCCEEDED",
        }
        assert "".join(exp.log_lines("second")) == "there\n"
        assert PEER_SECRET not in json.dumps(exp._current_record().tasks[1].executor)
        with pytest.raises(ConfigError, match="0.11.1"):
            exp.run()
        listed = invoke(["experiment", "list", "--json"])
        assert [r["id"] for r in json.loads(listed.stdout)] == [exp_id]
    finally:
        run.config.set_nemorun_home(None)
    assert snapshot(folder) == before
    assert secret_copies(home, before, PEER_SECRET) == []
