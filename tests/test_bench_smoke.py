"""The benchmark harness must not rot: a `--smoke` run of bench/run_bench.py (tiny sizes, ours
only) goes through every case group that needs no Docker engine, so a broken case fails here
rather than on the next full benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# the only group `--smoke` may leave out: it needs an engine the test does not start
MAY_SKIP = {"docker"}


def test_bench_smoke_fills_every_row(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, "bench/run_bench.py", "--smoke", "--skip-peer", "--output", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    groups = report["meta"]["groups"]
    skipped = {name for name, g in groups.items() if g["skipped"]}
    assert skipped <= MAY_SKIP, f"--smoke skipped {sorted(skipped - MAY_SKIP)}: {groups}"

    rows = report["rows"]
    assert {row["group"] for row in rows} == set(groups), "a group declared no rows"
    errors = {row["key"]: row["errors"] for row in rows if row["errors"]}
    assert not errors, f"rows with errors: {errors}\n{proc.stdout}"
    assert "ERROR" not in proc.stdout
    for row in rows:
        if row["group"] in skipped:
            assert row["ours"] == "skipped", row
        else:
            assert row["ours"] not in (None, "skipped"), f"no value for {row['key']}: {row}"
