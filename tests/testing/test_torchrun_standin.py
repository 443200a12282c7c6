"""The torchrun stand-in brings nodes together only through the endpoint they were given."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

from nemo_run.testing.torchrun_standin import (
    CHECK_SCRIPT,
    HOSTS_ENV,
    NODE_ADDR_ENV,
    STANDIN_BIN,
    STANDIN_PATH,
)


def free_port(address: str = "127.0.0.2") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def start_node(
    node_addr: str,
    args: list[str],
    torchrun: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """One emulated node: its own loopback address, torchrun's exact command line."""
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PET_")},
        "PYTHONPATH": STANDIN_PATH,
        "PATH": f"{STANDIN_BIN}{os.pathsep}{os.environ['PATH']}",
        NODE_ADDR_ENV: node_addr,
        "NEMORUN_STANDIN_TIMEOUT": "3",
        **(env or {}),
    }
    agent = ["torchrun"] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    return subprocess.Popen(
        [*agent, *args, CHECK_SCRIPT],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def c10d(endpoint: str, nnodes: int, nproc: int) -> list[str]:
    return [
        "--nnodes", str(nnodes), "--nproc-per-node", str(nproc),
        "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
    ]  # fmt: skip


def finish(nodes: list[subprocess.Popen]) -> list[tuple[str, str]]:
    return [node.communicate(timeout=30) for node in nodes]


def world_lines(world: str, nproc: int = 2, nnodes: int = 2) -> list[str]:
    size = nproc * nnodes
    return [
        f"rank {r}/{size} local {r % nproc} node {r // nproc} saw world: {world}"
        for r in range(size)
    ]


def test_two_nodes_meet_at_the_head_address_and_every_rank_sees_the_world():
    endpoint = f"127.0.0.2:{free_port()}"
    nodes = [start_node(addr, c10d(endpoint, 2, 2)) for addr in ("127.0.0.3", "127.0.0.2")]
    outputs = finish(nodes)
    assert [node.returncode for node in nodes] == [0, 0], outputs
    seen = [line for out, _ in outputs for line in out.splitlines()]
    # the head's node is node 0
    assert sorted(seen) == world_lines("0@127.0.0.2,1@127.0.0.2,2@127.0.0.3,3@127.0.0.3")


def test_nodes_told_to_meet_at_their_own_localhost_never_meet():
    endpoint = f"localhost:{free_port()}"
    nodes = [start_node(addr, c10d(endpoint, 2, 1)) for addr in ("127.0.0.2", "127.0.0.3")]
    outputs = finish(nodes)
    assert [node.returncode for node in nodes] == [1, 1]
    for _, err in outputs:
        assert re.search(r"could not meet the other 1 node\(s\) at localhost:\d+", err), err


def test_one_node_runs_its_processes_with_torchruns_environment():
    node = start_node("127.0.0.2", c10d("localhost:0", 1, 3), torchrun=True)
    out, err = node.communicate(timeout=30)
    assert node.returncode == 0, err
    assert len(out.splitlines()) == 3 and all("saw world: 0@" in line for line in out.splitlines())


def static(rank: int, master: str, port: int) -> list[str]:
    return [
        "--nnodes", "2", "--nproc-per-node", "2", "--node-rank", str(rank),
        "--master-addr", master, "--master-port", str(port),
    ]  # fmt: skip


def test_static_rendezvous_takes_the_node_rank_from_the_command_line():
    """Lepton's style: node rank 1 is started first and on the lower address, yet it is node 1;
    node 0 hosts at the master address, a name resolved through the emulated cluster's DNS."""
    port = free_port("127.0.0.5")
    hosts = {HOSTS_ENV: "job-0.job-svc=127.0.0.5,job-1.job-svc=127.0.0.4"}
    first = start_node("127.0.0.4", static(1, "job-0.job-svc", port), env=hosts)
    second = start_node("127.0.0.5", static(0, "job-0.job-svc", port), env=hosts)
    outputs = finish([first, second])
    assert [first.returncode, second.returncode] == [0, 0], outputs
    seen = [line for out, _ in outputs for line in out.splitlines()]
    assert sorted(seen) == world_lines("0@127.0.0.5,1@127.0.0.5,2@127.0.0.4,3@127.0.0.4")
    assert "node 1/2 met at job-0.job-svc" in outputs[0][1]


def test_static_rendezvous_at_a_master_address_node_0_does_not_own_never_meets():
    port = free_port("127.0.0.5")
    nodes = [start_node(f"127.0.0.{5 - r}", static(r, "localhost", port)) for r in (0, 1)]
    outputs = finish(nodes)
    assert [node.returncode for node in nodes] == [1, 1]
    assert re.search(r"could not meet the other 1 node\(s\) at localhost:\d+", outputs[1][1])


def test_flags_default_to_torchruns_pet_variables():
    """Kubeflow's PyTorch operator sets PET_NNODES, PET_NODE_RANK (...): torchrun reads them
    as its flags' defaults, and so does the stand-in; a flag given still wins."""
    port = free_port("127.0.0.6")
    env = {
        "PET_NNODES": "2",
        "PET_MASTER_ADDR": "127.0.0.6",
        "PET_MASTER_PORT": str(port),
        "PET_NPROC_PER_NODE": "auto",
    }
    nodes = [
        start_node(
            f"127.0.0.{6 + r}", ["--nproc-per-node", "1"], env={**env, "PET_NODE_RANK": str(r)}
        )
        for r in (1, 0)
    ]
    outputs = finish(nodes)
    assert [node.returncode for node in nodes] == [0, 0], outputs
    seen = sorted(line for out, _ in outputs for line in out.splitlines())
    assert seen == world_lines("0@127.0.0.6,1@127.0.0.7", nproc=1)
