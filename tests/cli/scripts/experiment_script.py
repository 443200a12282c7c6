"""An experiment entrypoint with two tasks, driven by tests/cli/test_run_cli.py."""

from __future__ import annotations

import nemo_run as run


def work(x: int = 1) -> None:
    print(f"WORK {x}", flush=True)


@run.cli.entrypoint(type="experiment")
def two_tasks(ctx: run.cli.RunContext, x: int = 5, executor: run.Executor = run.LocalExecutor()):  # noqa: B008
    """Run work(x) and work(x + 1) one after the other."""
    with run.Experiment("two", executor=executor) as exp:
        exp.add(run.Partial(work, x=x), name="a")
        exp.add(run.Partial(work, x=x + 1), name="b")
        ctx.launch(exp, sequential=True)
        print("EXPERIMENT " + exp.id, flush=True)


if __name__ == "__main__":
    run.cli.main(two_tasks)
