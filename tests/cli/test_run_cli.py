"""`run.cli` (issue 15): entrypoint scripts driven as subprocesses with real command lines, and
the registry/parser API in process."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import nemo_run as run
from nemo_run.cli import cli_parser, registry
from nemo_run.cli.errors import ArgumentValueError, CLIException

SCRIPTS = Path(__file__).resolve().parent / "scripts"
TRAIN = SCRIPTS / "train_script.py"
EXPERIMENT = SCRIPTS / "experiment_script.py"
SECRET = "hf_abcdefghijklmnopqrstuvwxyz0123"


def cli(
    script: Path, *args: str, home: Path, stdin: str = "", timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NEMORUN_HOME": str(home)}
    return subprocess.run(
        [sys.executable, str(script), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=str(home),
        timeout=timeout,
    )


def result_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON the train entrypoint prints, from its output."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, proc.stdout
    return dict(json.loads(lines[0][len("RESULT ") :]))


# -- command lines --------------------------------------------------------------------------
def test_help_shows_parameters_types_defaults_factories_and_options(tmp_path: Path) -> None:
    proc = cli(TRAIN, "--help", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for expected in (
        "[Entrypoint] train",
        "Train a model (a test entrypoint).",
        "model            Model                    (required)",
        "maybe            Optional[int]            None",
        "either           list | str               'plain'",
        "mode             Literal['fast', 'slow']  'fast'",
        "precision        Precision                Precision.FP32",
        "Factories for model (Model):",
        "llama3_8b(seq_length: int = 8192)",
        "plain_trainer(steps: int = 7)",
        "Factories of the entrypoint (--factory NAME):",
        "quick",
        "built in: local, docker",
        "quiet_local",
        "-f, --factory",
        "-y, --yes",
        "--dryrun",
        "--detach",
    ):
        assert expected in out, f"{expected!r} not in:\n{out}"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not written, f"--help wrote into the home folder: {written}"


def test_help_loads_neither_fiddle_nor_torchx(tmp_path: Path) -> None:
    """The factory is registered by target (no autoconvert), so the script itself loads no
    fiddle: --help must not load it either."""
    script = tmp_path / "light.py"
    script.write_text(
        "from dataclasses import dataclass\nimport nemo_run as run\n\n"
        "@dataclass\nclass M:\n    x: int = 1\n\n"
        "@run.cli.factory(target=M)\ndef small():\n    return run.Config(M)\n\n"
        "@run.cli.entrypoint\ndef go(m: M, n: int = 2):\n    pass\n"
    )
    probe = (
        "import runpy, sys\n"
        f"sys.argv = [{str(script)!r}, '--help']\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='x')\n"
        "    import nemo_run as run\n"
        "    run.cli.main(sys.modules['__main__'].__dict__.get('go') or "
        "[v for v in run.cli.list_entrypoints()['x'].values()][0].fn)\n"
        "except SystemExit as e:\n"
        "    print('EXIT', e.code)\n"
        "print('HEAVY', sorted(m for m in ('fiddle', 'torchx') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "NEMORUN_HOME": str(tmp_path)},
        timeout=60,
    )
    assert "EXIT 0" in proc.stdout, proc.stdout + proc.stderr
    assert "small" in proc.stdout
    assert "HEAVY []" in proc.stdout, proc.stdout


def test_overrides_of_every_form_and_the_types_0_11_1_crashed_on(tmp_path: Path) -> None:
    proc = cli(
        TRAIN,
        "model=llama3_8b(seq_length=4096)",
        "model.layers=3",
        "trainer.max_steps+=1",
        "trainer.lr*=2",
        "trainer.devices+=1",
        "tags=[1,2]",
        "opts={'a': 1, 'b': [x, y]}",
        "maybe=None",
        "either=[1,2]",
        "mode=slow",
        "precision=bf16",
        "out=/data/run",
        "run_name=rr",
        "executor_count=3",
        "plugins_enabled=true",
        "ratio/=2",
        "--yes",
        home=tmp_path,
    )
    got = result_of(proc)
    assert got["model"] == [4096, 3, 4096]
    assert got["trainer"] == [101, 0.2, [0, 1]]
    assert got["tags"] == [1, 2]  # bare `list`: 0.11.1 raises IndexError
    assert got["opts"] == {"a": 1, "b": ["x", "y"]}
    assert got["either"] == [1, 2]  # Union[list, str]: 0.11.1 gives the string "[1,2]"
    assert (got["mode"], got["precision"], got["out"]) == ("slow", "BF16", "/data/run")
    assert (got["run_name"], got["executor_count"], got["plugins_enabled"]) == ("rr", 3, True)
    assert got["maybe"] is None and got["ratio"] == 0.25
    assert "train: SUCCEEDED direct://train" in proc.stdout


def test_unions_optionals_and_object_returning_factories(tmp_path: Path) -> None:
    proc = cli(
        TRAIN,
        "model=tiny",
        "either=word",
        "maybe=4",
        "trainer=plain_trainer(steps=9)",
        "trainer.lr=0.5",
        "name='quoted name'",
        "tags=None",
        "-y",
        home=tmp_path,
    )
    got = result_of(proc)
    assert got["either"] == "word" and got["maybe"] == 4
    assert got["trainer"] == [9, 0.5, [0]]
    assert got["name"] == "quoted name" and got["tags"] is None
    assert got["model"] == [8, 1, 16]


def test_factory_flag_then_operations(tmp_path: Path) -> None:
    got = result_of(cli(TRAIN, "--factory", "quick", "trainer.max_steps*=2", "-y", home=tmp_path))
    assert got["model"] == [8, 1, 16] and got["trainer"][0] == 6 and got["name"] == "quick"
    got = result_of(cli(TRAIN, "--factory=quick", "name=other", "--yes", home=tmp_path))
    assert got["name"] == "other" and got["trainer"][0] == 3


def test_confirmation_declined_runs_nothing_and_accepted_runs(tmp_path: Path) -> None:
    declined = cli(TRAIN, "model=tiny", home=tmp_path, stdin="n\n")
    assert declined.returncode == 0, declined.stderr
    assert "Continue? [y/N]" in declined.stdout and "Exiting..." in declined.stdout
    assert "RESULT" not in declined.stdout
    assert "Resolved Arguments" in declined.stdout  # what would run is shown first
    accepted = cli(TRAIN, "model=tiny", home=tmp_path, stdin="y\n")
    assert result_of(accepted)["model"] == [8, 1, 16]


BAD = [
    (
        ["trainer.max_stpes=10", "model=tiny"],
        "no parameter max_stpes on trainer; did you mean max_steps?",
    ),
    (["trainer.max_steps=ten", "model=tiny"], "trainer.max_steps: expected int, got 'ten'"),
    (["model=tiny", "mode=medium"], "mode: expected one of 'fast', 'slow', got 'medium'"),
    (["model=tiny", "precision=fp16"], "precision: expected Precision (one of FP32, BF16)"),
    (["model=llama3"], "model: no factory llama3 for Model; did you mean llama3_8b?"),
    (["model=llama3_8b(seq_len=1)"], "no parameter seq_len on llama3_8b; did you mean seq_length?"),
    (
        ["steps=3", "model=tiny"],
        "no parameter steps on train; its parameters are model, trainer, name",
    ),
    (["name=x"], "missing a value for model (Model): pass model=... (registered: llama3_8b, tiny)"),
    (
        ["model=tiny", "executor=locl"],
        "executor: no factory locl for Executor; did you mean local?",
    ),
    (
        ["model=tiny", "executor.nodes=2"],
        "cannot set executor.nodes: executor has no value yet; give one first, e.g. "
        "executor=<factory> (registered: local, docker",
    ),
    (["model=tiny", "--bogus"], "no option --bogus"),
    (["model=tiny", "justaword"], "cannot read argument 'justaword'"),
    (["model=tiny", "tags=[1,"], "tags: expected list"),
    (["model=tiny", "--repl"], "--repl (an interactive shell) is not available"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_command_lines_exit_2_with_one_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = cli(TRAIN, *args, "-y", home=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "RESULT" not in proc.stdout


def test_dryrun_with_an_executor_prints_the_request_masks_secrets_and_starts_nothing(
    tmp_path: Path,
) -> None:
    proc = cli(
        TRAIN,
        "model=tiny",
        "executor=quiet_local",
        f"executor.env_vars={{'HF_TOKEN': '{SECRET}', 'MODE': 'dry'}}",
        "--dryrun",
        home=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Resolved Arguments" in proc.stdout and "Dry run for train:" in proc.stdout
    assert "env MODE=dry" in proc.stdout and "nemo_run.core.runners" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr
    assert "RESULT" not in proc.stdout and "Continue?" not in proc.stdout
    jobs = subprocess.run(
        [sys.executable, "-m", "nemo_run.cli.nemorun", "job", "list", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "NEMORUN_HOME": str(tmp_path)},
        timeout=60,
    )
    assert json.loads(jobs.stdout or "[]") == []


def test_local_run_reaches_succeeded_in_the_job_store(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = cli(
        TRAIN,
        "model=tiny",
        "trainer.max_steps=5",
        "executor=local",
        f"executor.env_vars={{'CLI_TEST_OUT': '{out}'}}",
        "--name",
        "cli-local",
        "--yes",
        home=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cli-local: SUCCEEDED local_persistent://" in proc.stdout
    assert json.loads(out.read_text())["trainer"][0] == 5  # ran in the job, not in the CLI
    jobs = json.loads(
        subprocess.run(
            [sys.executable, "-m", "nemo_run.cli.nemorun", "job", "list", "--json"],
            capture_output=True,
            text=True,
            env={**os.environ, "NEMORUN_HOME": str(tmp_path)},
            timeout=60,
            check=True,
        ).stdout
    )
    assert [job["state"] for job in jobs] == ["SUCCEEDED"]


def test_detach_returns_and_the_job_still_finishes(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = cli(
        TRAIN,
        "model=tiny",
        "executor=local",
        f"executor.env_vars={{'CLI_TEST_OUT': '{out}'}}",
        "--detach",
        "-y",
        home=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "train: " in proc.stdout and "local_persistent://" in proc.stdout
    deadline = time.monotonic() + 30
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # polling for the job's output file, with a deadline
    assert out.exists(), "the detached job never ran"


def test_experiment_entrypoint_runs_two_tasks(tmp_path: Path) -> None:
    proc = cli(EXPERIMENT, "x=7", "executor=local", "-y", home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exp_id = next(
        line.split()[1] for line in proc.stdout.splitlines() if line.startswith("EXPERIMENT ")
    )
    status = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "nemo_run.cli.nemorun",
                "experiment",
                "status",
                exp_id,
                "--json",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "NEMORUN_HOME": str(tmp_path)},
            timeout=60,
            check=True,
        ).stdout
    )
    text = json.dumps(status)
    assert text.count('"SUCCEEDED"') >= 2, text


def test_experiment_entrypoint_help_and_dryrun(tmp_path: Path) -> None:
    helped = cli(EXPERIMENT, "--help", home=tmp_path)
    assert helped.returncode == 0 and "x         int       5" in helped.stdout
    assert "ctx" not in helped.stdout.split("Arguments")[1].split("Executors")[0]
    dry = cli(EXPERIMENT, "x=2", "--dryrun", home=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "dryrun..." in dry.stdout and "EXPERIMENT" in dry.stdout
    bad = cli(EXPERIMENT, "x=two", "-y", home=tmp_path)
    assert bad.returncode == 2 and "x: expected int, got 'two'" in bad.stderr


# -- the API in process ---------------------------------------------------------------------
@dataclass
class Inner:
    size: int = 1
    names: list[str] | None = None


@dataclass
class Outer:
    inner: Inner | None = None
    rate: float = 0.1


@run.cli.factory
def big_inner(size: int = 100) -> run.Config[Inner]:
    return run.Config(Inner, size=size)


def target_fn(outer: Outer, steps: int = 1) -> None:
    pass


@run.cli.factory(target=target_fn, target_arg="outer")
def special_outer() -> run.Config[Outer]:
    return run.Config(Outer, rate=0.9)


def test_run_cli_names_and_parse_functions() -> None:
    assert run.cli.parse_partial is cli_parser.parse_partial
    cfg = run.cli.parse_config(Outer, "inner=big_inner(size=5)", "inner.names=[a, b]", "rate*=3")
    assert isinstance(cfg, run.Config)
    built = __import__("fiddle").build(cfg)
    assert built == Outer(inner=Inner(size=5, names=["a", "b"]), rate=pytest.approx(0.3))
    partial = run.cli.parse_cli_args(target_fn, ["outer=special_outer", "outer.inner.size=4"])
    assert isinstance(partial, run.Partial)
    assert partial.outer.rate == 0.9 and partial.outer.inner.size == 4


def test_registry_queries() -> None:
    assert run.cli.resolve_factory(Inner, "big_inner") is big_inner
    assert big_inner in run.cli.list_factories(Inner)
    assert special_outer in run.cli.list_factories(f"{__name__}.target_fn.outer")
    with pytest.raises(run.ConfigError, match="no factory 'nope'"):
        run.cli.resolve_factory(Inner, "nope")

    @run.cli.entrypoint(namespace="tests.cli", name="listed")
    def listed(n: int = 1) -> None:
        pass

    entry = run.cli.list_entrypoints()["tests"]["cli"]["listed"]
    assert entry.fn is listed and listed.cli_entrypoint is entry
    assert run.cli.list_entrypoints("tests.cli") == {"listed": entry}


def test_unknown_parameter_messages_name_close_matches() -> None:
    with pytest.raises(ArgumentValueError, match="no parameter rte on Outer; did you mean rate"):
        run.cli.parse_config(Outer, "rte=1")
    with pytest.raises(CLIException, match=r"inner.size: expected int, got '1.5'"):
        run.cli.parse_config(Outer, "inner.size=1.5")


def test_entry_points_load_only_on_a_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[str] = []

    class FakeEntryPoint:
        name, value = "pkg", "pkg.factories"

        def load(self) -> None:
            loaded.append(self.name)

            @run.cli.factory(name="from_package")
            def from_package() -> run.Config[Inner]:
                return run.Config(Inner, size=77)

    def fake_entry_points(group: str) -> list[FakeEntryPoint]:
        assert group == "nemo_run.cli"
        return [FakeEntryPoint()]

    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry.importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "_FACTORIES", list(registry._FACTORIES))
    run.cli.parse_config(Outer, "inner=big_inner")  # found locally: packages not loaded
    assert loaded == []
    cfg = run.cli.parse_config(Outer, "inner=from_package")
    assert loaded == ["pkg"] and cfg.inner.size == 77


def test_entrypoint_arguments_are_checked_at_decoration() -> None:
    with pytest.raises(run.ConfigError, match="type='task' or type='experiment'"):
        run.cli.entrypoint(type="job")(target_fn)
    with pytest.raises(run.ConfigError, match="has no such parameter; its parameters are outer"):
        run.cli.factory(target=target_fn, target_arg="outr")


def test_cli_main_stays_the_function_once_the_nemorun_module_is_imported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import nemo_run.cli.nemorun as nemorun_app  # the `nemorun` command's module

    assert nemorun_app.app is not None
    assert inspect.isfunction(run.cli.main)
    monkeypatch.setattr(sys, "argv", ["prog", "--help"])
    with pytest.raises(SystemExit) as exited:
        run.cli.main(target_fn)
    assert exited.value.code == 0
    assert "[Entrypoint] target_fn" in capsys.readouterr().out
