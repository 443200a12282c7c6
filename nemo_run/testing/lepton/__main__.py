"""Run the Lepton API emulator: ``python -m nemo_run.testing.lepton --port 0``.

Prints exactly one line, ``LEPTON_EMULATOR_URL=http://127.0.0.1:<port>/api/v2/workspaces/<ws>``
(the value for ``LEPTON_WORKSPACE_URL``), then serves until SIGTERM (or SIGINT / SIGHUP), when
it kills every job's replicas and removes its containers. The accepted workspace token comes
from ``LEPTON_EMULATOR_TOKEN`` (default ``emulator-token``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from nemo_run.testing.common.process import add_mode_argument, emulator_parser, serve


def node_group(text: str) -> tuple[str, int]:
    name, _, count = text.partition(":")
    try:
        nodes = int(count) if count else 2
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME or NAME:NODES, got {text!r}") from None
    if not name or nodes < 1:
        raise argparse.ArgumentTypeError(f"expected NAME or NAME:NODES (NODES >= 1), got {text!r}")
    return name, nodes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = emulator_parser(
        "python -m nemo_run.testing.lepton",
        "HTTP emulator of the NVIDIA DGX Cloud Lepton workspace API.",
        "folder for storage (storage/<from>/<path>), replica logs (logs/<job>/<replica>.log) "
        "and work dirs (default: a new temporary folder)",
    )
    parser.add_argument("--workspace-id", default="emuws", help="the workspace id (default emuws)")
    add_mode_argument(parser, "replicas")
    parser.add_argument(
        "--node-group",
        action="append",
        dest="node_groups",
        type=node_group,
        metavar="NAME[:NODES]",
        help="a dedicated node group to offer (repeatable; NODES defaults to 2; "
        "default: nemo-nodes with 2 nodes)",
    )
    parser.add_argument(
        "--phase-delay",
        type=float,
        default=0.05,
        help="seconds a job spends in Starting, Stopping and Deleting (default 0.05)",
    )
    parser.add_argument(
        "--stop-grace",
        type=float,
        default=2.0,
        help="seconds between SIGTERM and SIGKILL when replicas are stopped (default 2)",
    )
    torch_env = parser.add_mutually_exclusive_group()
    torch_env.add_argument(
        "--torch-env",
        dest="torch_env",
        action="store_true",
        help="also set MASTER_ADDR, MASTER_PORT, WORLD_SIZE and NODE_RANK in every replica "
        "(Lepton itself sets only the LEPTON_* variables: off by default)",
    )
    torch_env.add_argument(
        "--no-torch-env",
        dest="torch_env",
        action="store_false",
        help="set only the LEPTON_* variables, as Lepton does (the default)",
    )
    parser.set_defaults(torch_env=False)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # needs leptonai (an optional extra): argument errors and --help come without it
    from nemo_run.testing.lepton.server import Config, make_server  # noqa: PLC0415

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="lepton-emulator-"))
    config = Config(
        token=os.environ.get("LEPTON_EMULATOR_TOKEN", "emulator-token"),
        workspace_id=args.workspace_id,
        data_dir=data_dir.resolve(),
        mode=args.mode,
        node_groups=args.node_groups or [("nemo-nodes", 2)],
        phase_delay=args.phase_delay,
        stop_grace=args.stop_grace,
        torch_env=args.torch_env,
        verbose=args.verbose,
    )
    return serve(make_server(config, args.host, args.port), "LEPTON_EMULATOR_URL=")


if __name__ == "__main__":
    sys.exit(main())
