"""API compatibility report: this checkout's `nemo_run` against the peer `nemo-run==0.11.1`.

    python bench/api_diff.py                    # report on stdout, exit 0
    python bench/api_diff.py --strict           # exit 1 when an unexplained difference is left
    python bench/api_diff.py --scope executors --json /tmp/api_diff.json

The same describing code (`harness.api_describe`) runs under each side's interpreter: this
script starts itself with `--describe` twice, at once, in a scrubbed environment (a temporary
HOME and NEMORUN_HOME, no PYTHONPATH but the repo root for ours) with cwd=/tmp, so the peer
never imports this checkout. The comparison, the exceptions read from docs/compatibility.md
("## API report exceptions") and the report are in `harness.api_compare`. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.api_compare import (
    ExceptionRow,
    ExceptionsError,
    apply_exceptions,
    as_json,
    compare,
    counts,
    format_report,
    parse_exceptions,
)
from harness.api_describe import describe_scope
from harness.peer import PEER_VERSION, ensure_peer_venv
from harness.procs import REPO_ROOT, RESULT_TAG, BenchError, parse_result, short

EXCEPTIONS_DOC = REPO_ROOT / "docs" / "compatibility.md"
DESCRIBE_TIMEOUT = 120.0
EXEC = "nemo_run.core.execution"
PACK = "nemo_run.core.packaging"
SCHED = "nemo_run.run.torchx_backend.schedulers"


@dataclass(frozen=True)
class Scope:
    """One named group of the API: top-level `nemo_run` names and modules compared in full."""

    about: str
    top_level: tuple[str, ...]
    modules: tuple[str, ...]


# Issue 12: executors, launchers, packagers and their schedulers; issue 13: `run`. Later groups
# (the CLI) are added here as new entries.
SCOPES: dict[str, Scope] = {
    "executors": Scope(
        "executors and their base",
        (
            "Executor",
            "ExecutorMacros",
            "LocalExecutor",
            "DockerExecutor",
            "SkypilotExecutor",
            "DGXCloudExecutor",
            "LeptonExecutor",
            "SlurmExecutor",
            "import_executor",
        ),
        tuple(
            f"{EXEC}.{m}"
            for m in ("base", "local", "docker", "skypilot", "dgxcloud", "lepton", "slurm")
        ),
    ),
    "launchers": Scope("launchers", ("Torchrun", "FaultTolerance"), (f"{EXEC}.launcher",)),
    "packagers": Scope(
        "packagers",
        ("Packager", "GitArchivePackager", "PatternPackager", "HybridPackager"),
        (PACK, *(f"{PACK}.{m}" for m in ("base", "git", "pattern", "hybrid"))),
    ),
    "schedulers": Scope(
        "the torchx schedulers of the executors",
        (),
        tuple(
            f"{SCHED}.{m}" for m in ("local", "docker", "skypilot", "dgxcloud", "lepton", "slurm")
        ),
    ),
    "run": Scope(
        "run.run, tasks and configs (Config, Partial, Script), Experiment and plugins",
        (
            "run",
            "Config",
            "ConfigurableMixin",
            "Partial",
            "Script",
            "Experiment",
            "Plugin",
            "autoconvert",
            "dryrun_fn",
            "help",
        ),
        (
            "nemo_run.run.api",
            "nemo_run.config",
            "nemo_run.api",
            "nemo_run.run.experiment",
            "nemo_run.run.plugin",
        ),
    ),
    "cli": Scope(
        "run.cli: entrypoints, factories and the override parser",
        (),
        ("nemo_run.cli", "nemo_run.cli.api", "nemo_run.cli.cli_parser", "nemo_run.help"),
    ),
}


def pick_scopes(spec: str) -> list[str]:
    """`all` or a comma list of SCOPES names, in SCOPES order."""
    wanted = {s.strip() for s in spec.split(",") if s.strip()}
    if not wanted or "all" in wanted:
        return list(SCOPES)
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ValueError(
            f"unknown scope {', '.join(unknown)}: choose from all, {', '.join(SCOPES)}"
        )
    return [name for name in SCOPES if name in wanted]


def scope_names(scopes: list[str]) -> tuple[list[str], list[str]]:
    """The top-level names and the modules of the chosen scopes, without repeats."""
    top = [n for s in scopes for n in SCOPES[s].top_level]
    modules = [m for s in scopes for m in SCOPES[s].modules]
    return list(dict.fromkeys(top)), list(dict.fromkeys(modules))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog="scopes: " + "; ".join(f"{k}: {v.about}" for k, v in SCOPES.items()),
    )
    parser.add_argument(
        "--scope", default="all", help=f"all, or a comma list of: {', '.join(SCOPES)}"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 if anything unexplained differs"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the raw diff as JSON")
    parser.add_argument(
        "--exceptions", default=str(EXCEPTIONS_DOC), help="markdown file with the exceptions table"
    )
    parser.add_argument("--ours-python", default=sys.executable)
    parser.add_argument(
        "--peer-python", default="", help="default: bench/.peer-venv (created if missing)"
    )
    parser.add_argument("--describe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.scopes = pick_scopes(args.scope)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def describe_env(home: str, ours: bool) -> dict[str, str]:
    """A bare environment: defaults read from env vars or ~ come out the same on both sides,
    and no credential of the caller's can end up in a description."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
    env.update(HOME=home, NEMORUN_HOME=os.path.join(home, "nemorun"), PYTHONDONTWRITEBYTECODE="1")
    if ours:
        env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def start_describe(
    python: str, scopes: list[str], home: str, out: Path, ours: bool
) -> subprocess.Popen[bytes]:
    """This script with `--describe` under `python`, cwd=/tmp, stdout and stderr to files
    (`out` and `out.err`: no pipe can fill up while the other side is awaited)."""
    if os.sep in python:  # a path given relative to the caller's directory, not to /tmp
        python = os.path.abspath(python)
    argv = [python, str(Path(__file__).resolve()), "--describe", "--scope", ",".join(scopes)]
    with open(out, "wb") as stdout, open(f"{out}.err", "wb") as stderr:
        try:
            return subprocess.Popen(
                argv,
                cwd=tempfile.gettempdir(),
                env=describe_env(home, ours),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        except OSError as exc:
            raise BenchError(f"cannot run {python}: {exc}") from exc


def finish_describe(side: str, proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    """Wait for one describing process and return its description."""
    try:
        proc.wait(timeout=DESCRIBE_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"describing {side} timed out after {DESCRIBE_TIMEOUT:.0f} s") from exc
    result = parse_result(out.read_text(errors="replace"))
    if result is None:
        tail = Path(f"{out}.err").read_text(errors="replace")[-2000:]
        raise BenchError(
            f"describing {side} exited {proc.returncode} without a result: {short(tail)}"
        )
    return result


def describe_sides(
    ours_python: str, peer_python: str, scopes: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both descriptions, made at the same time (one HOME: paths in defaults match)."""
    with tempfile.TemporaryDirectory(prefix="nemo-api-diff-") as tmp:
        home = os.path.join(tmp, "home")
        os.makedirs(home)
        outs = {side: Path(tmp, f"{side}.out") for side in ("peer", "ours")}
        procs = {
            "peer": start_describe(peer_python, scopes, home, outs["peer"], ours=False),
            "ours": start_describe(ours_python, scopes, home, outs["ours"], ours=True),
        }
        try:
            peer = finish_describe("the peer", procs["peer"], outs["peer"])
            ours = finish_describe("ours", procs["ours"], outs["ours"])
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    check_sides(peer, ours)
    return peer, ours


def check_sides(peer: dict[str, Any], ours: dict[str, Any]) -> None:
    """Refuse a comparison of the wrong packages: the peer must be 0.11.1 from its venv, ours
    this checkout; both must at least import `nemo_run`."""
    for side, desc in (("the peer", peer), ("ours", ours)):
        top = desc["modules"].get("nemo_run", {})
        if "error" in top:
            raise BenchError(f"{side} cannot import nemo_run: {top['error']}")
    checkout = str(REPO_ROOT / "nemo_run" / "__init__.py")
    if peer["info"]["file"] == checkout or peer["info"]["dist_version"] != PEER_VERSION:
        raise BenchError(f"the peer is not nemo-run {PEER_VERSION} from its venv: {peer['info']}")
    if ours["info"]["file"] != checkout:
        raise BenchError(f"ours was imported from {ours['info']['file']}, not from {checkout}")


def header(scopes: list[str], peer: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    return [
        f"nemo_run API here vs nemo-run {PEER_VERSION} (scopes: {', '.join(scopes)})",
        f"  {PEER_VERSION}: {peer['info']['file']} (python {peer['info']['python']})",
        f"  here:   {ours['info']['file']} (python {ours['info']['python']})",
        "  keys and the exceptions table: see bench/README.md, 'API compatibility report'",
    ]


def read_exceptions(path: Path) -> dict[str, ExceptionRow]:
    """The rows of the exceptions table; a file that cannot be read is an error, not "none"."""
    try:
        return parse_exceptions(path.read_text())
    except OSError as exc:
        raise ExceptionsError(f"cannot read the exceptions table {path}: {exc}") from exc


def report(args: argparse.Namespace) -> int:
    """Describe both sides, compare, print; the exit status follows `--strict`."""
    started = time.perf_counter()
    rows = read_exceptions(Path(args.exceptions))
    peer_python = args.peer_python or ensure_peer_venv()
    peer, ours = describe_sides(args.ours_python, peer_python, args.scopes)
    top, modules = scope_names(args.scopes)
    comparison = compare(peer, ours, modules, top)
    apply_exceptions(comparison, rows)
    print(format_report(comparison, header(args.scopes, peer, ours)), end="")
    numbers = counts(comparison)
    if args.json:
        meta = {"scopes": args.scopes, "peer": peer["info"], "ours": ours["info"]}
        meta["seconds"] = round(time.perf_counter() - started, 2)
        Path(args.json).write_text(json.dumps(as_json(comparison, meta), indent=1) + "\n")
    return 1 if args.strict and numbers["missing"] + numbers["differing"] else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.describe:
        top, modules = scope_names(args.scopes)
        print(RESULT_TAG + json.dumps(describe_scope(top, modules)), flush=True)
        return 0
    try:
        return report(args)
    except (BenchError, ExceptionsError) as exc:
        print(f"api_diff: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
