"""Child process for the job store tests (not a test module).

    python _child.py GO_FILE put PREFIX N          put N records, one transaction each
    python _child.py GO_FILE update APP_ID WORKER N  N read-modify-write updates of one record
    python _child.py GO_FILE open                  open the store (legacy import), log to stdout;
                                                   print "lock-wait" before each write transaction
    python _child.py - put_forever PREFIX          put records until killed, printing each ack
    python _child.py - ids                         print the app id of every record, one a line

With a GO_FILE other than "-", the child prints "ready" and polls for GO_FILE to exist before
it starts, so the parent can release many children at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

from nemo_run.core.store import JobRecord, get_store
from nemo_run.core.store.sqlite import SqliteJobStore

BACKEND = "local_persistent"


def _wait_for(path: str, timeout: float = 30.0) -> None:
    print("ready", flush=True)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {path}")
        time.sleep(0.001)


def _announce_write_transactions() -> None:
    """Print "lock-wait" whenever the store is about to ask for SQLite's write lock."""
    original = SqliteJobStore.transaction

    @contextlib.contextmanager
    def announced(self, conn=None):
        print("lock-wait", flush=True)
        with original(self, conn) as c:
            yield c

    SqliteJobStore.transaction = announced


def main(go_file: str, command: str, *args: str) -> None:
    if command == "open":
        logging.basicConfig(
            level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s"
        )
        _announce_write_transactions()
    if go_file != "-":
        _wait_for(go_file)
    store = get_store()
    if command == "put":
        prefix, n = args[0], int(args[1])
        for k in range(n):
            store.put(JobRecord(BACKEND, f"{prefix}-{k}", data={"writer": prefix, "k": k}))
    elif command == "update":
        app_id, worker, n = args[0], args[1], int(args[2])
        for j in range(n):
            store.update(BACKEND, app_id, data={f"p{worker}_{j}": 1})
    elif command == "open":
        store.list()
    elif command == "put_forever":
        prefix = args[0]
        k = 0
        while True:
            app_id = f"{prefix}-{k}"
            store.put(JobRecord(BACKEND, app_id, data={"k": k, "pad": "x" * (k % 700)}))
            sys.stdout.write(app_id + "\n")
            sys.stdout.flush()
            k += 1
    elif command == "ids":
        for record in store.list():
            print(record.app_id)
    else:
        sys.exit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
