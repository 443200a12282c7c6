"""Package-level promises: lazy imports, entry points, the callable `run` module."""

from __future__ import annotations

from importlib.metadata import entry_points

from tests.helpers import run_python

HEAVY = ("torchx", "fiddle", "docker", "sky", "leptonai", "requests", "typer", "rich")


def test_import_loads_no_heavy_dependency():
    out = run_python(
        f"import sys, nemo_run; print([m for m in {HEAVY!r} if m in sys.modules])"
    ).stdout
    assert out.strip() == "[]"


def test_script_and_executor_do_not_load_fiddle():
    out = run_python(
        "import sys, nemo_run as run; run.Script(inline='x'); run.LocalExecutor(); "
        "print('fiddle' in sys.modules)"
    ).stdout
    assert out.strip() == "False"


def test_torchx_entry_points_are_registered():
    names = {ep.name for ep in entry_points(group="torchx.schedulers")}
    assert {"local_persistent", "docker_persistent", "skypilot", "dgx_cloud", "lepton"} <= names


def test_run_is_callable_after_importing_the_subpackage():
    out = run_python("""
        import nemo_run as run
        import nemo_run.run.torchx_backend.schedulers.local
        print(callable(run.run), run.run(run.Script(inline='true')).state.name)
    """).stdout
    assert out.split() == ["True", "SUCCEEDED"]
