"""Stand-in for torchrun's node agent: torchrun's arguments, a TCP rendezvous, its worker env.

The rendezvous: the node whose address is the `--rdzv-endpoint` host (`$NEMORUN_STANDIN_NODE_ADDR`
when set, which emulated pods sharing one machine use to tell themselves apart; else whichever
node can bind that address) hosts it and is node 0; the others connect and get ranks in the
order they join. Once `--nnodes` nodes joined, each learns its node rank, the world size and
the workers' MASTER_ADDR/MASTER_PORT (the host's address and a free port), then starts its
workers. A node that cannot meet the others in `$NEMORUN_STANDIN_TIMEOUT` seconds (60) exits
1, saying how many joined where.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time

JOIN_TIMEOUT_S = float(os.environ.get("NEMORUN_STANDIN_TIMEOUT", "60"))


def parse(argv: list[str]) -> argparse.Namespace:
    """torchrun's command line (both spellings of each flag); unknown flags are an error."""
    p = argparse.ArgumentParser(prog="torchrun (nemo_run stand-in)", allow_abbrev=False)

    def flag(name: str, **kw: object) -> None:
        p.add_argument(f"--{name}", f"--{name.replace('-', '_')}", **kw)  # type: ignore[arg-type]

    flag("nnodes", default="1")
    flag("nproc-per-node", default="1")
    flag("rdzv-backend", default="static")
    flag("rdzv-endpoint", default="")
    flag("rdzv-id", default="none")
    flag("rdzv-conf", default="")
    flag("node-rank", type=int, default=None)
    flag("master-addr", default="127.0.0.1")
    flag("master-port", type=int, default=29500)
    flag("max-restarts", type=int, default=0)
    flag("monitor-interval", type=float, default=0.1)
    flag("start-method", default="spawn")
    flag("role", default="default")
    flag("log-dir", default=None)
    flag("local-addr", default=None)
    flag("redirects", default="0")
    flag("tee", default="0")
    flag("standalone", action="store_true")
    flag("no-python", action="store_true")
    flag("run-path", action="store_true")
    p.add_argument("-m", "--module", action="store_true")
    p.add_argument("training_script")
    p.add_argument("training_script_args", nargs=argparse.REMAINDER)
    return p.parse_args(argv)


def max_nodes(nnodes: str) -> int:
    """`2` or `1:2` (elastic): the stand-in waits for the maximum."""
    return int(nnodes.split(":")[-1])


def procs_per_node(value: str) -> int:
    if value in ("auto", "cpu"):
        return os.cpu_count() or 1
    if value == "gpu":
        raise SystemExit("torchrun stand-in: --nproc-per-node gpu needs GPUs; none here")
    return int(value)


def endpoint(args: argparse.Namespace) -> tuple[str, int]:
    if args.standalone:
        return "127.0.0.1", 29400
    text = args.rdzv_endpoint or f"{args.master_addr}:{args.master_port}"
    host, _, port = text.rpartition(":")
    if not host:
        return text, 29400
    return host.strip("[]"), int(port)


def send(sock: socket.socket, obj: dict) -> None:
    sock.sendall(json.dumps(obj).encode() + b"\n")


def receive(sock: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the rendezvous host closed the connection")
        data += chunk
    return json.loads(data)


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


class Rendezvous(threading.Thread):
    """The store, on the endpoint's node: collects `nnodes` joins, then answers each."""

    def __init__(self, server: socket.socket, address: str, nnodes: int) -> None:
        super().__init__(daemon=True)
        self.server, self.address, self.nnodes = server, address, nnodes

    def run(self) -> None:
        joined: list[tuple[socket.socket, dict]] = []
        self.server.settimeout(JOIN_TIMEOUT_S)
        try:
            while len(joined) < self.nnodes:
                conn, _ = self.server.accept()
                conn.settimeout(JOIN_TIMEOUT_S)
                hello = receive(conn)
                joined.append((conn, hello))
        except OSError:
            return  # the joined nodes time out and say so
        joined.sort(key=lambda item: item[1]["host"] is not True)  # the host's node is 0
        world = sum(int(hello["nproc"]) for _, hello in joined)
        master_port = free_port(self.address)
        offset = 0
        for rank, (conn, hello) in enumerate(joined):
            send(
                conn,
                {
                    "group_rank": rank,
                    "rank_offset": offset,
                    "world_size": world,
                    "nnodes": self.nnodes,
                    "master_addr": self.address,
                    "master_port": master_port,
                    "nodes": [h["addr"] for _, h in joined],
                },
            )
            offset += int(hello["nproc"])
            conn.close()


def host_store(address: str, port: int, nnodes: int) -> bool:
    """Start the store here when this node owns the endpoint's address."""
    own = os.environ.get("NEMORUN_STANDIN_NODE_ADDR")
    if own and socket.gethostbyname(own) != address:
        return False
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind((address, port))
    except OSError:
        server.close()
        return False  # not this node's address, or another node of this machine has it
    server.listen(64)
    Rendezvous(server, address, nnodes).start()
    return True


def join(host: str, port: int, nnodes: int, nproc: int) -> dict:
    """This node's place in the world, from the store at host:port."""
    address = socket.gethostbyname(host)
    hosting = host_store(address, port, nnodes)
    me = os.environ.get("NEMORUN_STANDIN_NODE_ADDR") or socket.gethostname()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while True:
        try:
            with socket.create_connection((address, port), timeout=JOIN_TIMEOUT_S) as sock:
                send(sock, {"addr": me, "nproc": nproc, "host": hosting})
                return receive(sock)
        except OSError as e:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"torchrun stand-in: node {me} could not meet the other {nnodes - 1} "
                    f"node(s) at {host}:{port} ({address}) in {JOIN_TIMEOUT_S:.0f} s: {e}"
                ) from e
            time.sleep(0.2)


def worker_env(args: argparse.Namespace, place: dict, local_rank: int, nproc: int) -> dict:
    env = dict(os.environ)
    env.update(
        {
            "LOCAL_RANK": str(local_rank),
            "RANK": str(place["rank_offset"] + local_rank),
            "GROUP_RANK": str(place["group_rank"]),
            "ROLE_RANK": str(place["rank_offset"] + local_rank),
            "ROLE_NAME": args.role,
            "LOCAL_WORLD_SIZE": str(nproc),
            "WORLD_SIZE": str(place["world_size"]),
            "GROUP_WORLD_SIZE": str(place["nnodes"]),
            "ROLE_WORLD_SIZE": str(place["world_size"]),
            "MASTER_ADDR": place["master_addr"],
            "MASTER_PORT": str(place["master_port"]),
            "TORCHELASTIC_RESTART_COUNT": "0",
            "TORCHELASTIC_MAX_RESTARTS": str(args.max_restarts),
            "TORCHELASTIC_RUN_ID": args.rdzv_id,
        }
    )
    if nproc > 1:
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def command(args: argparse.Namespace) -> list[str]:
    if args.no_python:
        return [args.training_script, *args.training_script_args]
    if args.module:
        return [sys.executable, "-m", args.training_script, *args.training_script_args]
    return [sys.executable, args.training_script, *args.training_script_args]


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    nnodes, nproc = max_nodes(args.nnodes), procs_per_node(args.nproc_per_node)
    host, port = endpoint(args)
    if nnodes == 1:
        place = {
            "group_rank": 0,
            "rank_offset": 0,
            "world_size": nproc,
            "nnodes": 1,
            "master_addr": "127.0.0.1",
            "master_port": free_port("127.0.0.1"),
        }
    else:
        place = join(host, port, nnodes, nproc)
    print(
        f"torchrun stand-in: node {place['group_rank']}/{nnodes} met at {host}:{port}, "
        f"world size {place['world_size']}",
        file=sys.stderr,
        flush=True,
    )
    workers = [
        subprocess.Popen(command(args), env=worker_env(args, place, k, nproc)) for k in range(nproc)
    ]
    codes = [w.wait() for w in workers]
    return next((c for c in codes if c != 0), 0)


if __name__ == "__main__":
    sys.exit(main())
