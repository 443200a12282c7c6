"""The torchrun stand-in brings nodes together only through the endpoint they were given."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

from nemo_run.testing.torchrun_standin import CHECK_SCRIPT, STANDIN_BIN, STANDIN_PATH


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        return s.getsockname()[1]


def start_node(
    node_addr: str, endpoint: str, nnodes: int, nproc: int, torchrun: bool = False
) -> subprocess.Popen:
    """One emulated node: its own loopback address, torchrun's exact command line."""
    env = {
        **os.environ,
        "PYTHONPATH": STANDIN_PATH,
        "PATH": f"{STANDIN_BIN}{os.pathsep}{os.environ['PATH']}",
        "NEMORUN_STANDIN_NODE_ADDR": node_addr,
        "NEMORUN_STANDIN_TIMEOUT": "3",
    }
    agent = ["torchrun"] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    args = [
        *agent,
        "--nnodes", str(nnodes), "--nproc-per-node", str(nproc),
        "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
        CHECK_SCRIPT,
    ]  # fmt: skip
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_nodes_meet_at_the_head_address_and_every_rank_sees_the_world():
    endpoint = f"127.0.0.2:{free_port()}"
    nodes = [start_node(addr, endpoint, 2, 2) for addr in ("127.0.0.3", "127.0.0.2")]
    outputs = [node.communicate(timeout=30) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    seen = [line for out, _ in outputs for line in out.splitlines()]
    world = "0@127.0.0.2,1@127.0.0.2,2@127.0.0.3,3@127.0.0.3"  # the head's node is node 0
    assert sorted(seen) == [
        f"rank {r}/4 local {r % 2} node {r // 2} saw world: {world}" for r in range(4)
    ]


def test_nodes_told_to_meet_at_their_own_localhost_never_meet():
    endpoint = f"localhost:{free_port()}"
    nodes = [start_node(addr, endpoint, 2, 1) for addr in ("127.0.0.2", "127.0.0.3")]
    outputs = [node.communicate(timeout=30) for node in nodes]
    assert [node.returncode for node in nodes] == [1, 1]
    for _, err in outputs:
        assert re.search(r"could not meet the other 1 node\(s\) at localhost:\d+", err), err


def test_one_node_runs_its_processes_with_torchruns_environment():
    node = start_node("127.0.0.2", "localhost:0", 1, 3, torchrun=True)
    out, err = node.communicate(timeout=30)
    assert node.returncode == 0, err
    assert len(out.splitlines()) == 3 and all("saw world: 0@" in line for line in out.splitlines())
