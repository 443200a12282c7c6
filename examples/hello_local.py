"""The main job: a Script and a Partial run as local jobs, their states and logs printed.

Run it with `bash scripts/demo.sh` (installs first) or `python examples/hello_local.py`.
"""

from __future__ import annotations

import nemo_run as run


def train(model: str = "tiny", lr: float = 0.1, steps: int = 3) -> None:
    """A stand-in training loop; it runs in its own process, launched by nemo_run."""
    for step in range(1, steps + 1):
        print(f"[{model}] step {step}/{steps} lr={lr} loss={1.0 / (step * lr * 10):.3f}")


def main() -> None:
    executor = run.LocalExecutor(env_vars={"GREETING": "hello from nemo_run"})
    script = run.Script(
        inline='echo "$GREETING"; echo "args: $*"; uname -sr', args=["--epochs", "2"]
    )
    partial = run.Partial(train, model="demo", lr=0.5, steps=3)

    results = [
        run.run(script, executor=executor, name="hello-script"),
        run.run(partial, executor=executor, name="hello-partial"),
    ]
    from nemo_run.run.torchx_backend.runner import get_runner

    runner = get_runner()
    for result in results:
        print(f"\n== {result.handle}: {result.state.name} (logs in {result.log_dir})")
        for role in result.roles:
            for line in runner.log_lines(result.handle, role, 0):
                print("   ", line, end="")
    nemorun = _cli_command()
    print("\nFollow them later from any shell:")
    print(f"  {nemorun} job status {results[0].handle}")
    print(f"  {nemorun} job logs {results[1].handle}")
    print(f"  {nemorun} experiment status {results[1].experiment_id}")
    print(f"  {nemorun} job list")


def _cli_command() -> str:
    """`nemorun` when the shell finds it, else its full path (e.g. inside an unactivated venv)."""
    import os
    import shutil
    import sys

    beside = os.path.join(os.path.dirname(sys.executable), "nemorun")
    if shutil.which("nemorun") == beside or not os.path.exists(beside):
        return "nemorun"
    return beside


if __name__ == "__main__":
    main()
