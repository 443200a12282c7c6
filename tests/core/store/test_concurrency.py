"""Several processes share one store: no lost writes, and kill -9 never loses an acked record."""

from __future__ import annotations

import random
import signal
import sqlite3

from nemo_run.core.store import STORE_FILENAME, JobRecord, get_store
from tests.core.store._helpers import CHILD_TIMEOUT, run_child, run_together, start_child

BACKEND = "local_persistent"


def test_concurrent_puts_from_many_processes(nemorun_home, tmp_path):
    writers, per_writer = 8, 25
    run_together(nemorun_home, tmp_path / "go",
                 [["put", f"w{i}", str(per_writer)] for i in range(writers)])

    records = get_store().list()
    expected = {f"w{i}-{k}" for i in range(writers) for k in range(per_writer)}
    assert len(records) == writers * per_writer
    assert {r.app_id for r in records} == expected
    assert all(r.data == {"writer": r.app_id.rsplit("-", 1)[0], "k": int(r.app_id.rsplit("-", 1)[1])}
               for r in records)


def test_concurrent_updates_of_one_record_lose_nothing(nemorun_home, tmp_path):
    workers, per_worker = 4, 25
    get_store().put(JobRecord(BACKEND, "shared", data={"initial": True}))
    run_together(nemorun_home, tmp_path / "go",
                 [["update", "shared", str(i), str(per_worker)] for i in range(workers)])

    data = get_store().get(BACKEND, "shared").data
    expected = {f"p{i}_{j}": 1 for i in range(workers) for j in range(per_worker)}
    missing = set(expected) - set(data)
    assert not missing, f"{len(missing)} updates lost, e.g. {sorted(missing)[:5]}"
    assert data == {"initial": True, **expected}


def _integrity(db) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_kill_9_never_loses_an_acknowledged_record(nemorun_home):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    acked: set[str] = set()
    for round_ in range(5):
        proc = start_child(nemorun_home, "-", "put_forever", f"r{round_}")
        try:
            target = rng.randint(1, 40)
            for _ in range(target):
                line = proc.stdout.readline()
                assert line.endswith("\n"), (
                    f"child stopped early (seed {seed}): {proc.stderr.read() if proc.poll() is not None else ''}"
                )
                acked.add(line.strip())
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=CHILD_TIMEOUT)
            # acks the child printed before dying count too; a torn last line does not
            rest = proc.stdout.read()
            acked.update(line for line in rest.split("\n")[:-1] if line)
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL

        stored = {r.app_id for r in get_store().list()}
        lost = acked - stored
        assert not lost, f"round {round_} (seed {seed}): acknowledged but lost: {sorted(lost)}"
        assert _integrity(nemorun_home / STORE_FILENAME) == "ok"

    # a brand-new process sees everything too
    in_child = set(run_child(nemorun_home, "-", "ids").split())
    assert acked <= in_child
    assert _integrity(nemorun_home / STORE_FILENAME) == "ok"
