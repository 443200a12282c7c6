"""A stand-in for `torch.distributed.run` (torchrun), for machines and images without torch.

Put `STANDIN_BIN` first on a job's PATH (its `torchrun`, as launchers render it) or
`STANDIN_PATH` first on its PYTHONPATH (`python -m torch.distributed.run`); either runs
`torch/distributed/run.py` here: it parses torchrun's arguments (defaults from the `PET_*`
variables, as torchrun's), makes the nodes meet (c10d: at `--rdzv-endpoint`, hosted by the
node that owns that address, so an endpoint every node reads as its own `localhost` never
brings them together; static: node `--node-rank 0` hosts at `--master-addr:--master-port`)
and starts `--nproc-per-node` workers per node with torchrun's environment (RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, ...). `rendezvous_check.py` is a worker that proves it:
rank 0 listens on MASTER_ADDR:MASTER_PORT, the others connect, and every rank prints the
world it saw. Both files are standalone (they run inside containers where this package is
not installed).

Emulated pods that share one machine set `NODE_ADDR_ENV` to their own loopback address
(127.x.y.z) and `HOSTS_ENV` (`name=address,...`) to the cluster names they would resolve.
"""

from __future__ import annotations

import os

STANDIN_PATH = os.path.dirname(os.path.abspath(__file__))
STANDIN_BIN = os.path.join(STANDIN_PATH, "bin")
CHECK_SCRIPT = os.path.join(STANDIN_PATH, "rendezvous_check.py")
NODE_ADDR_ENV = "NEMORUN_STANDIN_NODE_ADDR"  # this node's own address
HOSTS_ENV = "NEMORUN_STANDIN_HOSTS"  # names of the emulated cluster: name=address,...
