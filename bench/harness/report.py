"""The table on stdout and the rows of `bench/results/latest.json`."""

from __future__ import annotations

import os
from typing import Any

from harness.checks import is_number
from harness.format import fmt
from harness.registry import Row
from harness.results import SKIPPED, Results

SIDES = ("ours", "peer")
BUSY_LOAD = 0.75  # load average above which the timings are flagged as noisy


def status_of(row: Row, results: Results) -> str:
    """PASS/FAIL against the row's target, SKIP, or "" (no target, no value, no verdict)."""
    if row.check is None:
        return ""
    ours = results.values.get(row.key, {}).get("ours")
    if "ours" in results.errors.get(row.key, {}):
        return "FAIL"
    if ours == SKIPPED:
        return "SKIP"
    if ours is None:
        return ""
    try:
        verdict = row.check(ours, results.values)
    except TypeError:  # e.g. a string where a number was expected
        return "FAIL"
    return "" if verdict is None else ("PASS" if verdict else "FAIL")


def table_rows(rows: list[tuple[str, Row]], results: Results) -> list[dict[str, Any]]:
    """One JSON row per (group, row): both sides' values, the ratio, the verdict."""
    out = []
    for group, row in rows:
        ours = results.values.get(row.key, {}).get("ours")
        peer = results.values.get(row.key, {}).get("peer")
        ratio = None
        if is_number(ours) and is_number(peer) and ours > 0 and peer >= 0:
            ratio = peer / ours
        out.append(
            {
                "key": row.key,
                "group": group,
                "label": row.label,
                "unit": row.unit,
                "ours": ours,
                "peer": peer,
                "ratio_peer_over_ours": ratio,
                "target_ours": row.target,
                "status": status_of(row, results),
                "notes": results.notes.get(row.key, {}),
                "errors": results.errors.get(row.key, {}),
            }
        )
    return out


def print_table(rows: list[dict[str, Any]], title: str, load: float) -> None:
    """The table, then every note and every distinct error message."""

    def cell(row: dict[str, Any], side: str) -> str:
        return "ERROR" if side in row["errors"] else fmt(row[side])

    header = ["measurement", "ours", "peer", "peer/ours", "target (ours)", ""]
    body = [
        [
            r["label"],
            cell(r, "ours"),
            cell(r, "peer"),
            fmt(r["ratio_peer_over_ours"]) + ("x" if r["ratio_peer_over_ours"] is not None else ""),
            r["target_ours"],
            r["status"],
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    right = {1, 2, 3}

    def render(line: list[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(line)
        ).rstrip()

    print()
    print(title)
    if load >= BUSY_LOAD:
        print(f"(machine busy at start: load average {load:.2f} on {os.cpu_count()} cpus)")
    print(render(header))
    print("  ".join("-" * w for w in widths))
    for line in body:
        print(render(line))
    notes = []
    for r in rows:
        parts = [f"{side}: {r['notes'][side]}" for side in SIDES if side in r["notes"]]
        if parts:
            notes.append(f"  {r['key']:<26} " + " | ".join(parts))
    errors = []
    seen = set()
    for r in rows:
        for side, msg in r["errors"].items():
            if (side, msg) not in seen:
                seen.add((side, msg))
                errors.append(f"  {r['key']} [{side}]: {msg}")
    if notes:
        print("\nnotes:")
        print("\n".join(notes))
    if errors:
        print("\nerrors:")
        print("\n".join(errors))
    print()
