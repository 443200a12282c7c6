"""One benchmark step, run under either implementation's interpreter.

The harness (`run_bench.py`) runs `python bench/worker.py COMMAND [options]` with our
interpreter and with the peer venv's. The commands live in `bench/workers/`, one module per
case group (`python bench/worker.py --help` lists them). Every command ends by printing one
line `@@RESULT <json>` on stdout; the harness ignores anything else the package prints.
`$NEMORUN_HOME` must be set by the caller (the peer reads it at import time).
"""

from __future__ import annotations

import argparse
import sys
import traceback

from workers import commands  # `bench/` is on sys.path: it holds the script
from workers.common import emit


def main(argv: list[str] | None = None) -> int:
    found = commands()
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("command", choices=sorted(found))
    # the options every command draws from (each command's docstring says which it reads)
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--job-dir", default="")
    parser.add_argument("--app-id", default="")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--time-cap", type=float, default=20.0)
    parser.add_argument("--ids-file", default="")
    parser.add_argument("--image", default="")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--ids", default="")
    args = parser.parse_args(argv)
    try:
        result = found[args.command](args)
    except BaseException as exc:
        tb = traceback.format_exc().strip().splitlines()
        emit({"error": f"{type(exc).__name__}: {exc}"[:500], "traceback": tb[-12:]})
        return 1
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
