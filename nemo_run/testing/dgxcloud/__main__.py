"""Run the Run:ai API emulator: ``python -m nemo_run.testing.dgxcloud --port 0``.

Prints exactly one line, ``RUNAI_EMULATOR_URL=http://127.0.0.1:<port>``, then serves until
SIGTERM (or SIGINT / SIGHUP), when it kills every workload's processes and removes its containers.
The client secret comes from ``RUNAI_EMULATOR_CLIENT_SECRET`` (default ``emulator-secret``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from nemo_run.testing.common.process import add_mode_argument, emulator_parser, serve
from nemo_run.testing.dgxcloud.server import Config, make_server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = emulator_parser(
        "python -m nemo_run.testing.dgxcloud",
        "HTTP emulator of the NVIDIA Run:ai REST API (DGX Cloud).",
        "folder for PVCs (pvcs/<claim>), replica logs (logs/<id>/<rank>.log) and work dirs "
        "(default: a new temporary folder)",
    )
    parser.add_argument("--client-id", default="emulator-client", help="accepted client id")
    add_mode_argument(parser, "workloads")
    parser.add_argument(
        "--token-ttl", type=float, default=3600.0, help="access token lifetime in seconds"
    )
    parser.add_argument(
        "--project",
        action="append",
        dest="projects",
        metavar="NAME",
        help="a project to offer (repeatable; default: nemo-project)",
    )
    parser.add_argument("--cluster-id", default=None, help="the cluster UUID (default: random)")
    parser.add_argument(
        "--phase-delay",
        type=float,
        default=0.04,
        help="seconds spent in each of Creating, Pending and Initializing (default 0.04)",
    )
    parser.add_argument(
        "--stop-grace",
        type=float,
        default=2.0,
        help="seconds between SIGTERM and SIGKILL when a workload is stopped (default 2)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument(
        "--lenient-token-keys",
        action="store_true",
        help="also take clientId/appId in token requests, as a server reading JSON keys "
        "case-insensitively would (nemo-run 0.11.1 sends clientId; the spec says clientID)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="runai-emulator-"))
    config = Config(
        client_id=args.client_id,
        client_secret=os.environ.get("RUNAI_EMULATOR_CLIENT_SECRET", "emulator-secret"),
        token_ttl=args.token_ttl,
        projects=args.projects or ["nemo-project"],
        data_dir=data_dir.resolve(),
        mode=args.mode,
        phase_delay=args.phase_delay,
        stop_grace=args.stop_grace,
        cluster_id=args.cluster_id,
        verbose=args.verbose,
        lenient_token_keys=args.lenient_token_keys,
    )
    return serve(make_server(config, args.host, args.port), "RUNAI_EMULATOR_URL=")


if __name__ == "__main__":
    sys.exit(main())
