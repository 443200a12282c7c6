"""bench/api_diff.py: describing an API, comparing two descriptions, the exceptions table and the
report, on small packages written by the tests (no peer venv needed). One test runs the real
script against the peer, and is skipped where bench/.peer-venv is missing."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))  # last: bench names shadow nothing of the suite

import api_diff  # noqa: E402
from harness import api_compare, api_describe  # noqa: E402

PKG = "apifix"
SUMMARY = re.compile(
    r"^in scope: \d+ names compared; missing: \d+; differing: \d+; intentional: \d+; "
    r"extra here: \d+$"
)


def describe(
    root: Path, files: dict[str, str], modules: list[str], top: list[str]
) -> dict[str, Any]:
    """Write package `apifix` under `root`, describe it, and forget it again (both sides of a
    test use the same package name, as the real sides do)."""
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / PKG / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        return api_describe.describe_scope(top, modules, package=PKG)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PKG or m.startswith(PKG + ".")]:
            del sys.modules[name]


def diff(
    tmp_path: Path,
    peer: dict[str, str],
    ours: dict[str, str],
    modules: tuple[str, ...] = (f"{PKG}.mod",),
    top: tuple[str, ...] = (),
) -> dict[str, api_compare.Difference]:
    p = describe(tmp_path / "peer", peer, list(modules), list(top))
    o = describe(tmp_path / "ours", ours, list(modules), list(top))
    return api_compare.compare(p, o, modules, top, package=PKG).differences


def kinds(diffs: dict[str, api_compare.Difference]) -> dict[str, str]:
    return {key: d.category for key, d in diffs.items()}


# ---------------------------------------------------------------------------- describing


def test_public_names_skip_imports_modules_and_typing(tmp_path: Path) -> None:
    desc = describe(
        tmp_path,
        {
            "mod.py": """
                from __future__ import annotations
                import logging
                import os
                from pathlib import Path
                from typing import TYPE_CHECKING, Optional
                from apifix.other import Shared

                LIMIT = 3
                log = logging.getLogger(__name__)
                _private = 1

                def helper(x: Optional[Path] = None) -> None: ...
            """,
            "other.py": "class Shared: ...\n",
        },
        [f"{PKG}.mod"],
        [],
    )
    mod = desc["modules"][f"{PKG}.mod"]
    assert sorted(mod["names"]) == ["LIMIT", "Shared", "helper", "log"]
    assert mod["skipped"]["os"] == "a module (os)"
    assert mod["skipped"]["Path"] == "an import from pathlib"
    for typing_name in ("Optional", "TYPE_CHECKING", "annotations"):
        assert mod["skipped"][typing_name] == "a typing construct"
    assert mod["names"]["Shared"] == {"kind": "class", "id": f"{PKG}.other.Shared"}
    assert mod["names"]["LIMIT"] == {"kind": "data", "type": "builtins.int", "value": "3"}


def test_names_a_module_serves_through_getattr_count_when_its_dir_lists_them(
    tmp_path: Path,
) -> None:
    """`from mod import LAZY` works for a PEP 562 name: the description has it (resolved with
    getattr) when the module's `__dir__` lists it, even if `__dir__` lists nothing else."""
    eager = "TABLE = {'a': 1}\nJOB_FILE = '/tmp/jobs'\nDIRECT = 2\n"
    lazy = """
        from typing import Any

        DIRECT = 2

        def __getattr__(name: str) -> Any:
            if name == "TABLE":
                return {"a": 1}
            if name in ("JOB_FILE", "UNLISTED"):
                return "/tmp/jobs"
            raise AttributeError(name)

        def __dir__() -> list[str]:
            return ["TABLE", "JOB_FILE"]  # only the lazy ones: the namespace still counts
    """
    desc = describe(tmp_path / "d", {"mod.py": lazy}, [f"{PKG}.mod"], [])
    names = desc["modules"][f"{PKG}.mod"]["names"]
    assert sorted(names) == ["DIRECT", "JOB_FILE", "TABLE"]  # UNLISTED: no __dir__ says so
    assert names["TABLE"] == {"kind": "data", "type": "builtins.dict", "value": "{'a': 1}"}
    assert diff(tmp_path, {"mod.py": eager}, {"mod.py": lazy}) == {}


def test_dataclass_defaults_come_from_the_factories_and_secrets_are_masked(tmp_path: Path) -> None:
    desc = describe(
        tmp_path,
        {
            "mod.py": """
                from dataclasses import dataclass, field

                API_TOKEN = "tok-123"

                @dataclass(kw_only=True)
                class Exe:
                    env: dict = field(default_factory=lambda: {"B": "2", "A": "1"})
                    token: str = "s3cret"
                    job_dir: str = field(init=False, default="")
                    image: str

                def connect(url: str = "http://x", api_key: str = "k-1") -> None: ...
            """
        },
        [f"{PKG}.mod"],
        [],
    )
    exe = desc["objects"][f"{PKG}.mod.Exe"]
    params = {p["name"]: p for p in exe["init"]["params"]}
    assert params["env"]["default"] == "{'A': '1', 'B': '2'}"  # the factory's value, sorted
    assert params["token"]["default"] == "'***'"
    assert params["image"] == {
        "name": "image",
        "kind": "KEYWORD_ONLY",
        "default": None,
        "required": True,
    }
    assert exe["fields"]["job_dir"]["init"] is False
    connect = {p["name"]: p["default"] for p in desc["objects"][f"{PKG}.mod.connect"]["params"]}
    assert connect == {"url": "'http://x'", "api_key": "'***'"}
    assert desc["modules"][f"{PKG}.mod"]["names"]["API_TOKEN"]["value"] == "'***'"
    assert "s3cret" not in json.dumps(desc) and "tok-123" not in json.dumps(desc)


def test_value_repr_is_stable_across_processes() -> None:
    class Thing:
        pass

    assert api_describe.value_repr({"b", "a"}) == "{'a', 'b'}"
    assert api_describe.value_repr({"z": 1, "a": [1, (2,)]}) == "{'a': [1, (2)], 'z': 1}"
    assert api_describe.value_repr(Thing()) == f"<{__name__}.{Thing.__qualname__}>"
    assert " at 0x" not in api_describe.value_repr(Thing)


# ---------------------------------------------------------------------------- comparing


def test_parameter_differences(tmp_path: Path) -> None:
    diffs = diff(
        tmp_path,
        {"mod.py": "def launch(name, retries=3, *, dryrun=False, **kwargs): ...\n"},
        {"mod.py": "def launch(name, retries=5, dryrun=False, *, token, verbose=False): ...\n"},
    )
    f = f"{PKG}.mod.launch"
    assert kinds(diffs) == {
        f"{f}(retries)": "differing",
        f"{f}(dryrun)": "differing",
        f"{f}(**kwargs)": "differing",
        f"{f}(token)": "differing",  # required here: 0.11.1 callers do not pass it
        f"{f}(verbose)": "extra",
    }
    assert diffs[f"{f}(retries)"].message == "default: 0.11.1 3, here 5"
    assert "keyword-only" in diffs[f"{f}(dryrun)"].message
    assert "missing parameter" in diffs[f"{f}(**kwargs)"].message


def test_positional_order(tmp_path: Path) -> None:
    diffs = diff(
        tmp_path,
        {"mod.py": "def f(a, b, c=1): ...\n"},
        {"mod.py": "def f(b, a, c=1): ...\n"},
    )
    assert kinds(diffs) == {f"{PKG}.mod.f[order]": "differing"}


def test_names_missing_extra_changed_and_only_imported(tmp_path: Path) -> None:
    diffs = diff(
        tmp_path,
        {
            "mod.py": """
                import logging
                LIMIT = 3
                log = logging.getLogger("a")
                def helper(): ...
                def get_home(): ...
            """
        },
        {
            "mod.py": """
                import logging
                from os.path import expanduser as get_home
                LIMIT = 4
                log = logging.getLogger("b")
                def extra_fn(): ...
            """
        },
    )
    m = f"{PKG}.mod"
    assert kinds(diffs) == {
        f"{m}.helper": "missing",
        f"{m}.LIMIT": "differing",
        f"{m}.get_home": "differing",
        f"{m}.extra_fn": "extra",
    }
    assert "here only an import from" in diffs[f"{m}.get_home"].message


def test_inherited_gaps_are_reported_once_where_declared(tmp_path: Path) -> None:
    peer = """
        from dataclasses import dataclass, field
        from typing import ClassVar

        @dataclass(kw_only=True)
        class Base:
            env: dict = field(default_factory=dict)
            job_dir: str = field(init=False, default="")
            def info(self) -> str: ...
            def cleanup(self, handle): ...

        @dataclass(kw_only=True)
        class Child(Base):
            image: str
            retries: int = 0
            LIMIT: ClassVar[int] = 5
    """
    ours = """
        from dataclasses import dataclass, field
        from typing import ClassVar

        @dataclass(kw_only=True)
        class Base:
            env: dict = field(default_factory=lambda: {"A": "1"})
            def info(self) -> str: ...

        @dataclass(kw_only=True)
        class Child(Base):
            image: str
            retries: int = 1
            LIMIT: ClassVar[int] = 5
    """
    diffs = diff(tmp_path, {"mod.py": peer}, {"mod.py": ours})
    m = f"{PKG}.mod"
    assert kinds(diffs) == {
        f"{m}.Base.__init__(env)": "differing",
        f"{m}.Base.job_dir": "missing",
        f"{m}.Base.cleanup": "missing",
        f"{m}.Child.__init__(retries)": "differing",
    }
    assert diffs[f"{m}.Base.cleanup"].owner == "Base"
    assert diffs[f"{m}.Base.cleanup"].via == ["Child"]


def test_bases_dataclass_kinds_and_enum_values(tmp_path: Path) -> None:
    peer = """
        import enum
        from dataclasses import dataclass

        class Executor: ...
        class Local(Executor): ...
        class State(str, enum.Enum):
            RUNNING = "running"

        @dataclass
        class Req:
            app: str

        class Sched:
            @classmethod
            def load(cls, app_id): ...
            @property
            def name(self): ...
    """
    ours = """
        import enum

        class Executor: ...
        class Local: ...
        class State(enum.Enum):
            RUNNING = "Running"

        class Req:
            def __init__(self, app: str) -> None: ...

        class Sched:
            def load(self, app_id): ...
            def name(self): ...
    """
    diffs = diff(tmp_path, {"mod.py": peer}, {"mod.py": ours})
    m = f"{PKG}.mod"
    assert kinds(diffs) == {
        f"{m}.Local[bases]": "differing",
        f"{m}.State[bases]": "differing",
        f"{m}.State.RUNNING": "differing",
        f"{m}.Req[dataclass]": "differing",
        f"{m}.Sched.load": "differing",
        f"{m}.Sched.name": "differing",
    }
    assert f"{m}.Executor" in diffs[f"{m}.Local[bases]"].message
    assert "builtins.str" in diffs[f"{m}.State[bases]"].message


def test_modules_all_and_top_level_names(tmp_path: Path) -> None:
    peer = {
        "__init__.py": "from apifix.mod import Thing\nVERSION = '1'\n",
        "mod.py": "__all__ = ['Thing', 'helper']\nclass Thing: ...\ndef helper(): ...\n",
        "broken.py": "X = 1\n",
    }
    ours = {
        "__init__.py": "VERSION = '2'\n",
        "mod.py": "__all__ = ['Thing']\nclass Thing: ...\ndef helper(): ...\n",
        "broken.py": "raise ImportError('not written yet')\n",
    }
    diffs = diff(tmp_path, peer, ours, modules=(f"{PKG}.mod", f"{PKG}.broken"), top=("Thing",))
    assert kinds(diffs) == {
        f"{PKG}.Thing": "missing",  # VERSION is no top-level name of the scope
        f"{PKG}.mod.__all__": "differing",
        f"{PKG}.broken": "missing",
    }
    assert "not written yet" in diffs[f"{PKG}.broken"].message


CALLABLE_MODULE = """
    import inspect
    import sys
    import types

    def launch(task, executor=None, *, dryrun=False): ...

    class _Callable(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return launch(*args, **kwargs)

        @property
        def __signature__(self):
            return inspect.signature(launch)

    sys.modules[__name__].__class__ = _Callable
"""


def test_a_callable_module_is_compared_as_the_function_it_calls(tmp_path: Path) -> None:
    """0.11.1's top-level `run` is a function; here it is the callable `nemo_run.run` package:
    the call's parameters are compared, and the kinds (module, function) are not."""
    peer = {
        "__init__.py": "from apifix.mod import run\n",
        "mod.py": "def run(task, executor=None, *, dryrun=False, detach=False): ...\n",
    }
    ours = {"__init__.py": "from apifix import runner as run\n", "runner.py": CALLABLE_MODULE}
    diffs = diff(tmp_path, peer, ours, modules=(), top=("run",))
    assert kinds(diffs) == {f"{PKG}.mod.run(detach)": "differing"}
    assert "missing parameter detach=False" in diffs[f"{PKG}.mod.run(detach)"].message


def test_exit_parameters_count_by_position_only(tmp_path: Path) -> None:
    """The `with` statement calls `__exit__` positionally, so `*exc` takes 0.11.1's three
    named parameters; an ordinary method with `*args` instead of a named parameter still
    differs (a keyword call would fail)."""
    peer = """
        class Exp:
            def __exit__(self, exc_type, exc_value, tb): ...
            def logs(self, job_id, regex=None): ...
    """
    ours = """
        class Exp:
            def __exit__(self, *exc): ...
            def logs(self, *args, regex=None): ...
    """
    gaps = kinds(diff(tmp_path, {"mod.py": peer}, {"mod.py": ours}))
    exp = f"{PKG}.mod.Exp"
    assert gaps == {
        f"{exp}.__exit__(*args)": "extra",
        f"{exp}.logs(job_id)": "differing",
        f"{exp}.logs(regex)": "differing",  # keyword-only here
        f"{exp}.logs(*args)": "extra",
    }


def test_a_gap_only_on_subclasses_says_where_it_was_found(tmp_path: Path) -> None:
    """The base has the method here; the subclass lacks it because it does not inherit the
    base: the line must not read as if the base lacked it."""
    peer = """
        class Mixin:
            def to_config(self): ...
        class Exp(Mixin): ...
    """
    ours = """
        class Mixin:
            def to_config(self): ...
        class Exp: ...
    """
    diffs = diff(tmp_path, {"mod.py": peer}, {"mod.py": ours})
    gap = diffs[f"{PKG}.mod.Mixin.to_config"]
    assert (gap.category, gap.on_owner, gap.via) == ("missing", False, ["Exp"])
    comparison = api_compare.Comparison(differences=diffs)
    assert "(found on: Exp)" in api_compare.format_report(comparison, ["h"])


def test_identical_packages_have_no_difference(tmp_path: Path) -> None:
    source = {"mod.py": "from dataclasses import dataclass\n@dataclass\nclass A:\n    x: int = 1\n"}
    assert diff(tmp_path, source, source) == {}


# ---------------------------------------------------------------------------- exceptions


EXCEPTIONS_DOC = """
# Differences

## Input checked

| name | difference | why |
|---|---|---|
| `not.this.one` | other table | a table of another section is not read |

## API report exceptions

Text before the table.

| name | difference | why |
|---|---|---|
| `apifix.mod.f(x)` | default 3 here | 0.11.1's default loses data |
| apifix.mod.Gone | removed | unsafe |

## After

| name | difference | why |
|---|---|---|
| `not.this.either` | x | y |
"""


def test_parse_exceptions_reads_only_its_section() -> None:
    rows = api_compare.parse_exceptions(EXCEPTIONS_DOC)
    assert sorted(rows) == ["apifix.mod.Gone", "apifix.mod.f(x)"]
    assert rows["apifix.mod.f(x)"].why == "0.11.1's default loses data"


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ("| `a.b` | only two |", "expected 3 cells"),
        ("| a b | x | y |", "must be one key"),
        ("| `a.b` | x |  |", "needs a why"),
        ("| `a.b` | x | y |\n| `a.b` | x | y |", "listed twice"),
    ],
)
def test_parse_exceptions_refuses_malformed_rows(row: str, error: str) -> None:
    text = f"{api_compare.SECTION}\n\n| name | difference | why |\n|---|---|---|\n{row}\n"
    with pytest.raises(api_compare.ExceptionsError, match=error):
        api_compare.parse_exceptions(text)


def test_exceptions_move_differences_to_intentional() -> None:
    comparison = api_compare.Comparison(compared={"apifix.mod", "apifix.mod.f"})
    for key, category in [("a.f(x)", "differing"), ("a.g", "missing"), ("a.h", "extra")]:
        comparison.differences[key] = api_compare.Difference(key, category, "m", "a")
    text = f"{api_compare.SECTION}\n|name|difference|why|\n|-|-|-|\n"
    text += "| `a.f(x)` | d | because |\n| `a.h` | d | extras are never exceptions |\n"
    text += "| `a.old` | d | fixed since |\n"
    api_compare.apply_exceptions(comparison, api_compare.parse_exceptions(text))
    numbers = api_compare.counts(comparison)
    assert numbers == {"compared": 2, "missing": 1, "differing": 0, "intentional": 1, "extra": 1}
    assert comparison.stale == ["a.h", "a.old"]
    report = api_compare.format_report(comparison, ["header"])
    assert report.splitlines()[-1] == (
        "in scope: 2 names compared; missing: 1; differing: 0; intentional: 1; extra here: 1"
    )
    assert "a.f(x)  -  m  [why: because]" in report
    assert "remove them" in report


def test_rows_outside_the_compared_scope_are_not_stale() -> None:
    """`--scope run` compares no executor: the executors' rows are neither used nor stale."""
    comparison = api_compare.Comparison(
        scope_modules={"nemo_run.config", "nemo_run.run.api"}, scope_names={"nemo_run.run"}
    )
    keys = [
        "nemo_run.config.Gone",  # in a compared module: stale
        "nemo_run.config.Script.__init__(x)",  # keyed under a compared module: stale
        "nemo_run.config[bases]",
        "nemo_run.run",  # a compared top-level name: stale
        "nemo_run.run.experiment.Job",  # under `nemo_run.run`, a name, not a module: not stale
        "nemo_run.configs.X",  # another module whose name starts the same: not stale
        "nemo_run.core.execution.docker.CONSOLE",
    ]
    text = f"{api_compare.SECTION}\n|name|difference|why|\n|-|-|-|\n"
    text += "".join(f"| `{key}` | d | w |\n" for key in keys)
    api_compare.apply_exceptions(comparison, api_compare.parse_exceptions(text))
    assert comparison.stale == sorted(keys[:4])


def test_the_docs_exceptions_table_parses() -> None:
    rows = api_compare.parse_exceptions((REPO / "docs" / "compatibility.md").read_text())
    assert api_compare.SECTION in (REPO / "docs" / "compatibility.md").read_text()
    assert all(key.startswith("nemo_run.") for key in rows)


# ---------------------------------------------------------------------------- the script


def test_report_groups_by_module_then_class(tmp_path: Path) -> None:
    diffs = diff(
        tmp_path,
        {"mod.py": "class A:\n    def run(self, x): ...\ndef top(): ...\n"},
        {"mod.py": "class A:\n    def run(self): ...\n"},
    )
    comparison = api_compare.Comparison(differences=diffs, compared={"x"})
    lines = api_compare.format_report(comparison, ["h"]).splitlines()
    start = lines.index(f"{PKG}.mod")
    assert lines[start + 1].strip().startswith(f"missing   {PKG}.mod.top")
    assert lines[start + 2] == "  A"
    assert lines[start + 3].strip().startswith(f"differing {PKG}.mod.A.run(x)")
    assert SUMMARY.match(lines[-1])


def test_scopes() -> None:
    assert api_diff.pick_scopes("all") == list(api_diff.SCOPES)
    assert api_diff.pick_scopes("packagers, executors") == ["executors", "packagers"]
    with pytest.raises(ValueError, match="unknown scope nope"):
        api_diff.pick_scopes("executors,nope")
    top, modules = api_diff.scope_names(list(api_diff.SCOPES))
    assert "import_executor" in top and "Torchrun" in top
    for backend in ("local", "docker", "skypilot", "dgxcloud", "lepton"):  # the seed docs
        assert f"nemo_run.run.torchx_backend.schedulers.{backend}" in modules
    assert len(modules) == len(set(modules))
    run_top, run_modules = api_diff.scope_names(["run"])
    assert {"run", "Config", "Partial", "Script", "Experiment", "Plugin", "help"} <= set(run_top)
    for module in ("run.api", "config", "api", "run.experiment", "run.plugin"):
        assert f"nemo_run.{module}" in run_modules


def test_describe_env_passes_no_caller_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_WORKSPACE_TOKEN", "tok")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    ours = api_diff.describe_env("/tmp/h", ours=True)
    peer = api_diff.describe_env("/tmp/h", ours=False)
    assert "LEPTON_WORKSPACE_TOKEN" not in ours and "LEPTON_WORKSPACE_TOKEN" not in peer
    assert ours["PYTHONPATH"] == str(REPO) and "PYTHONPATH" not in peer
    assert ours["HOME"] == peer["HOME"] == "/tmp/h"


PEER_PYTHON = BENCH / ".peer-venv" / "bin" / "python"


@pytest.mark.skipif(not PEER_PYTHON.exists(), reason="no peer venv at bench/.peer-venv")
def test_the_script_against_the_peer(tmp_path: Path) -> None:
    out = tmp_path / "diff.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "api_diff.py"), "--strict", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (0, 1), proc.stderr
    last = proc.stdout.splitlines()[-1]
    assert SUMMARY.match(last), last
    raw = json.loads(out.read_text())
    assert api_compare.summary_line(raw["counts"]) == last
    gaps = raw["counts"]["missing"] + raw["counts"]["differing"]
    assert proc.returncode == (1 if gaps else 0)
    assert raw["meta"]["seconds"] < 10
    assert raw["meta"]["peer"]["dist_version"] == "0.11.1"
