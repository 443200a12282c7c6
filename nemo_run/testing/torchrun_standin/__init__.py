"""A stand-in for `torch.distributed.run` (torchrun), for machines and images without torch.

Put `STANDIN_BIN` first on a job's PATH (its `torchrun`, as launchers render it) or
`STANDIN_PATH` first on its PYTHONPATH (`python -m torch.distributed.run`); either runs
`torch/distributed/run.py` here: it parses torchrun's arguments, makes the nodes meet at
`--rdzv-endpoint` (the node that owns that address hosts the rendezvous; the others connect,
so an endpoint every node reads as its own `localhost` never brings them together) and starts
`--nproc-per-node` workers per node with torchrun's environment (RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR, ...). `rendezvous_check.py` is a worker that proves it: rank 0
listens on MASTER_ADDR:MASTER_PORT, the others connect, and every rank prints the world it saw.
Both files are standalone (they run inside containers where this package is not installed).
"""

from __future__ import annotations

import os

STANDIN_PATH = os.path.dirname(os.path.abspath(__file__))
STANDIN_BIN = os.path.join(STANDIN_PATH, "bin")
CHECK_SCRIPT = os.path.join(STANDIN_PATH, "rendezvous_check.py")
