"""Start-up cost of `python script.py --help` for a `run.cli` entrypoint, here and in 0.11.1.

    python bench/cli_startup.py            # figures on stdout
    python bench/cli_startup.py --runs 9 --json /tmp/cli_startup.json

For each side and each script shape the script runs twice: as written (`--help`) and with
`run.cli.main(...)` replaced by an exit (its own imports and definitions only). The cost of
the CLI is the difference of the fastest runs. The peer (nemo-run 0.11.1, bench/.peer-venv)
runs with cwd=/ so it never imports this checkout; ours with this checkout on PYTHONPATH. The
budget (issue 15): at most 0.3 s over the script's own imports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OURS = REPO / ".venv" / "bin" / "python"
PEER = REPO / "bench" / ".peer-venv" / "bin" / "python"
BUDGET_S = 0.3

# {factory} is the decorator stack of the factory: with `run.autoconvert` (as NeMo recipes
# write it: the script itself loads fiddle) or registered by target (the script loads none)
SCRIPT = '''
from dataclasses import dataclass
import nemo_run as run


@dataclass
class Model:
    hidden: int = 128
    layers: int = 2


{factory}
def small(){returns}:
    return {body}


@run.cli.entrypoint
def train(model: Model, steps: int = 10, name: str = "x"):
    """Train."""


if __name__ == "__main__":
    {main}
'''
SHAPES = {
    "plain": ("@run.cli.factory(target=Model)", "", "run.Config(Model, hidden=1)"),
    "recipe": ("@run.cli.factory\n@run.autoconvert", " -> Model", "Model(hidden=1)"),
}


def write_scripts(folder: Path) -> dict[str, dict[str, Path]]:
    """{shape: {"help": path, "baseline": path}}."""
    out: dict[str, dict[str, Path]] = {}
    for shape, (factory, returns, body) in SHAPES.items():
        out[shape] = {}
        for kind, main in (("help", "run.cli.main(train)"), ("baseline", "raise SystemExit(0)")):
            path = folder / f"{shape}_{kind}.py"
            path.write_text(SCRIPT.format(factory=factory, returns=returns, body=body, main=main))
            out[shape][kind] = path
    return out


def fastest(python: Path, script: Path, ours: bool, runs: int, home: str) -> float:
    """The fastest wall time of `runs` runs of `python script --help`, in seconds."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "NEMORUN_HOME": home}
    if ours:
        env["PYTHONPATH"] = str(REPO)
    cwd = str(REPO) if ours else "/"
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            [str(python), str(script), "--help"], cwd=cwd, env=env, capture_output=True, text=True
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{python} {script} --help failed:\n{done.stderr[-2000:]}")
        best = min(best, elapsed)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    sides = {"ours": OURS}
    if PEER.exists():
        sides["peer"] = PEER
    else:
        print(f"(no peer venv at {PEER}: build it with scripts/test.sh; ours only)")
    figures: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scripts = write_scripts(Path(tmp))
        for side, python in sides.items():
            for shape, paths in scripts.items():
                times = {
                    kind: fastest(python, path, side == "ours", args.runs, tmp)
                    for kind, path in paths.items()
                }
                times["cli_cost"] = times["help"] - times["baseline"]
                figures.setdefault(side, {})[shape] = times
    print(f"python script.py --help, fastest of {args.runs} runs (seconds)")
    print(f"{'side':<6} {'script':<8} {'baseline':>9} {'--help':>9} {'cli cost':>9}")
    for side, shapes in figures.items():
        for shape, t in shapes.items():
            print(
                f"{side:<6} {shape:<8} {t['baseline']:>9.3f} {t['help']:>9.3f} {t['cli_cost']:>9.3f}"
            )
    worst = max(t["cli_cost"] for t in figures["ours"].values())
    verdict = "within" if worst <= BUDGET_S else "OVER"
    print(f"ours: worst cli cost {worst:.3f} s, {verdict} the {BUDGET_S} s budget")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0 if worst <= BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
