"""Stand-in for torchrun's node agent: torchrun's arguments, a TCP rendezvous, its worker env.

Every flag reads its default from `PET_<FLAG>` as torchrun's do (`PET_NNODES`,
`PET_NODE_RANK`, `PET_MASTER_ADDR`, ...; a switch such as `--standalone` from `PET_STANDALONE`
set to 1 or 0), so platforms that set those (Kubeflow's PyTorch operator) work without flags.

The rendezvous, as `--rdzv-backend` asks:
* c10d (and any other dynamic backend): the node whose address is the `--rdzv-endpoint` host
  hosts the store and is node 0 (`$NEMORUN_STANDIN_NODE_ADDR`, when set, is this node's own
  address, which emulated pods sharing one machine use to tell themselves apart; else the
  node that can bind that address hosts); the others join and get ranks in the order they
  come.
* static (the default; `--master-addr`/`--master-port` when no endpoint is given): node rank
  `--node-rank` comes from the command line; node 0 hosts the store on its own address and
  the others connect to the endpoint.
Once `--nnodes` nodes joined, each learns its node rank, the world size and the workers'
MASTER_ADDR/MASTER_PORT (the host's address and a free port there), then starts its workers.
A node that cannot meet the others in `$NEMORUN_STANDIN_TIMEOUT` seconds (60) exits 1, saying
how many it waited for and where.

`$NEMORUN_STANDIN_HOSTS` (`name=address,...`) stands in for a cluster's DNS where emulated pods
share one machine: names there resolve to those addresses before the system is asked.
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
NODE_ADDR_ENV = "NEMORUN_STANDIN_NODE_ADDR"
HOSTS_ENV = "NEMORUN_STANDIN_HOSTS"


def pet_default(dest: str, default: object) -> object:
    """torchrun's default for a flag: `$PET_<DEST>` when set, else its own."""
    return os.environ.get(f"PET_{dest.upper()}", default)


def pet_switch(dest: str) -> bool:
    """torchrun's default for a switch: `$PET_<DEST>` read as 1 or 0 (unset: off)."""
    value = os.environ.get(f"PET_{dest.upper()}", "0")
    try:
        return bool(int(value))
    except ValueError:
        raise SystemExit(f"torchrun stand-in: PET_{dest.upper()}={value!r} is not 0 or 1") from None


def parse(argv: list[str]) -> argparse.Namespace:
    """torchrun's command line (both spellings of each flag, defaults from PET_*); unknown
    flags are an error."""
    p = argparse.ArgumentParser(prog="torchrun (nemo_run stand-in)", allow_abbrev=False)

    def flag(name: str, default: object, **kw: object) -> None:
        dest = name.replace("-", "_")
        p.add_argument(f"--{name}", f"--{dest}", default=pet_default(dest, default), **kw)  # type: ignore[arg-type]

    def switch(name: str, *short: str) -> None:
        dest = name.replace("-", "_")
        spellings = [*short, f"--{name}"] + ([f"--{dest}"] if dest != name else [])
        p.add_argument(*spellings, action="store_true", default=pet_switch(dest))

    flag("nnodes", "1")
    flag("nproc-per-node", "1")
    flag("rdzv-backend", "static")
    flag("rdzv-endpoint", "")
    flag("rdzv-id", "none")
    flag("rdzv-conf", "")
    flag("node-rank", 0, type=int)
    flag("master-addr", "127.0.0.1")
    flag("master-port", 29500, type=int)
    flag("max-restarts", 0, type=int)
    flag("monitor-interval", 0.1, type=float)
    flag("start-method", "spawn")
    flag("role", "default")
    flag("log-dir", None)
    flag("local-addr", None)
    flag("redirects", "0")
    flag("tee", "0")
    switch("standalone")
    switch("no-python")
    switch("run-path")
    switch("module", "-m")
    p.add_argument("training_script")
    p.add_argument("training_script_args", nargs=argparse.REMAINDER)
    return p.parse_args(argv)


def max_nodes(nnodes: str) -> int:
    """`2` or `1:2` (elastic): the stand-in waits for the maximum."""
    return int(str(nnodes).split(":")[-1])


def procs_per_node(value: str) -> int:
    if value in ("auto", "cpu"):
        return os.cpu_count() or 1
    if value == "gpu":
        raise SystemExit("torchrun stand-in: --nproc-per-node gpu needs GPUs; none here")
    return int(value)


def endpoint(args: argparse.Namespace) -> tuple[str, int]:
    """Where the nodes meet: the rendezvous endpoint, else master address and port."""
    if args.standalone:
        return "127.0.0.1", 29400
    text = args.rdzv_endpoint or f"{args.master_addr}:{args.master_port}"
    host, _, port = text.rpartition(":")
    if not host:
        return text, 29400
    return host.strip("[]"), int(port)


def resolve(host: str) -> str:
    """The address of `host`: from `$NEMORUN_STANDIN_HOSTS` first (an emulated cluster's
    DNS), else the system's resolver."""
    for entry in os.environ.get(HOSTS_ENV, "").split(","):
        name, _, address = entry.strip().partition("=")
        if name and name == host:
            return address
    return socket.gethostbyname(host)


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
    """The store, on the host node: collects `nnodes` joins, then answers each. Nodes are
    ordered by the rank they bring (static), else the host first, then in joining order; the
    workers meet at `address` (their MASTER_ADDR) on a port free there."""

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
                joined.append((conn, receive(conn)))
        except OSError:
            return  # the joined nodes time out and say so
        joined.sort(key=lambda item: (item[1].get("rank") or 0, item[1]["host"] is not True))
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


def serve(address: str, port: int, nnodes: int, master_addr: str) -> bool:
    """Start the store on address:port (the workers' MASTER_ADDR is `master_addr`); False when
    this node cannot bind it (not its address, or in use)."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind((address, port))
    except OSError:
        server.close()
        return False
    server.listen(64)
    Rendezvous(server, master_addr, nnodes).start()
    return True


def own_address() -> str | None:
    """This node's address when emulated pods share a machine ($NEMORUN_STANDIN_NODE_ADDR)."""
    own = os.environ.get(NODE_ADDR_ENV)
    return resolve(own) if own else None


def connect(address: str, port: int, hello: dict, what: str) -> dict:
    """This node's place in the world, from the store at address:port (retried until the
    deadline: the host may start later)."""
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while True:
        try:
            with socket.create_connection((address, port), timeout=JOIN_TIMEOUT_S) as sock:
                send(sock, hello)
                return receive(sock)
        except OSError as e:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"torchrun stand-in: node {hello['addr']} could not meet {what}: {e}"
                ) from e
            time.sleep(0.2)


def join_dynamic(host: str, port: int, nnodes: int, nproc: int) -> dict:
    """c10d: the node owning the endpoint's address hosts; ranks in joining order."""
    address = resolve(host)
    own = own_address()
    hosting = (own is None or own == address) and serve(address, port, nnodes, address)
    me = os.environ.get(NODE_ADDR_ENV) or socket.gethostname()
    what = f"the other {nnodes - 1} node(s) at {host}:{port} ({address}) in {JOIN_TIMEOUT_S:.0f} s"
    return connect(address, port, {"addr": me, "nproc": nproc, "host": hosting}, what)


def join_static(host: str, port: int, nnodes: int, nproc: int, node_rank: int) -> dict:
    """static: node rank 0 hosts on its own address; the others connect to the endpoint."""
    me = os.environ.get(NODE_ADDR_ENV) or socket.gethostname()
    hello = {"addr": me, "nproc": nproc, "host": node_rank == 0, "rank": node_rank}
    what = f"the other {nnodes - 1} node(s) at {host}:{port}"
    if node_rank != 0:
        address = resolve(host)
        return connect(address, port, hello, f"{what} ({address}) in {JOIN_TIMEOUT_S:.0f} s")
    own = own_address()
    bind = own or "0.0.0.0"  # a real node 0 listens on all its addresses
    if not serve(bind, port, nnodes, own or host):
        raise SystemExit(f"torchrun stand-in: node 0 ({me}) cannot listen on {bind}:{port}")
    return connect(own or "127.0.0.1", port, hello, f"{what} in {JOIN_TIMEOUT_S:.0f} s")


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


def place_of(args: argparse.Namespace, nnodes: int, nproc: int) -> dict:
    """This node's place: alone, or met with the others as `--rdzv-backend` says."""
    host, port = endpoint(args)
    if nnodes == 1:
        return {
            "group_rank": 0,
            "rank_offset": 0,
            "world_size": nproc,
            "nnodes": 1,
            "master_addr": "127.0.0.1",
            "master_port": free_port("127.0.0.1"),
        }
    if args.rdzv_backend == "static" and not args.standalone:
        if not 0 <= args.node_rank < nnodes:
            raise SystemExit(
                f"torchrun stand-in: --node-rank {args.node_rank} is not in 0..{nnodes - 1}"
            )
        return join_static(host, port, nnodes, nproc, args.node_rank)
    return join_dynamic(host, port, nnodes, nproc)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    nnodes, nproc = max_nodes(args.nnodes), procs_per_node(args.nproc_per_node)
    place = place_of(args, nnodes, nproc)
    host, port = endpoint(args)
    print(
        f"torchrun stand-in: node {place['group_rank']}/{nnodes} met at {host}:{port} "
        f"({args.rdzv_backend}), world size {place['world_size']}",
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
