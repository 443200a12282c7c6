"""A worker that proves its ranks met: rank 0 listens on MASTER_ADDR:MASTER_PORT, every other
rank connects and says who it is, and rank 0 sends the whole world back to each. Every rank
prints one line: `rank R/W local L node N saw world: 0@a,1@a,2@b,...` (rank@node address),
or exits 1 saying why it could not meet the others in $NEMORUN_STANDIN_TIMEOUT seconds (60).
Standalone: it runs where this package is not installed."""

from __future__ import annotations

import json
import os
import socket
import sys
import time

TIMEOUT_S = float(os.environ.get("NEMORUN_STANDIN_TIMEOUT", "60"))


def me() -> dict:
    # a Slurm node is its slurmd's name (several slurmd may share one host, as in the tests)
    node = (
        os.environ.get("NEMORUN_STANDIN_NODE_ADDR")
        or os.environ.get("SLURMD_NODENAME")
        or socket.gethostname()
    )
    return {"rank": int(os.environ["RANK"]), "node": node}


def lines(sock: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return json.loads(data)


def serve(addr: str, port: int, world_size: int) -> list[dict]:
    """Rank 0: gather every other rank at MASTER_ADDR:MASTER_PORT (on its node's own address:
    emulated nodes may share one machine), then tell each the world."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((addr, port))
    server.listen(world_size)
    server.settimeout(TIMEOUT_S)
    peers: list[socket.socket] = []
    world = [me()]
    while len(peers) < world_size - 1:
        conn, _ = server.accept()
        peers.append(conn)
        world.append(lines(conn))
    world.sort(key=lambda m: m["rank"])
    for conn in peers:
        conn.sendall(json.dumps(world).encode() + b"\n")
        conn.close()
    server.close()
    return world


def connect(addr: str, port: int) -> list[dict]:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            with socket.create_connection((addr, port), timeout=TIMEOUT_S) as sock:
                sock.sendall(json.dumps(me()).encode() + b"\n")
                return lines(sock)  # type: ignore[return-value]
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def say(line: str) -> None:
    """One write per line: ranks share their node's stdout."""
    os.write(1, f"{line}\n".encode())


def main() -> int:
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    try:
        world = serve(addr, port, world_size) if rank == 0 else connect(addr, port)
    except OSError as e:
        say(f"rank {rank}/{world_size} could not meet at {addr}:{port}: {e}")
        return 1
    seen = ",".join(f"{m['rank']}@{m['node']}" for m in world)
    local = os.environ.get("LOCAL_RANK", "?")
    node = os.environ.get("GROUP_RANK", "?")
    say(f"rank {rank}/{world_size} local {local} node {node} saw world: {seen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
