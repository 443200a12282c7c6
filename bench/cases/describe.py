"""Group `describe`: a fresh scheduler's `describe()` of one job, as the store grows."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from harness.checks import at_most
from harness.format import fmt
from harness.procs import BenchError, Scratch, Side, run_worker
from harness.registry import Group, GroupPlan, Measured, Mode, Row, Step, register

TARGET_SIZE = 100_000  # the median target applies at this store size


@dataclass(frozen=True)
class Settings:
    sizes: list[int]
    describe_calls: int
    describe_cap_s: float


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes",
        default="",
        help="describe store sizes, e.g. 100,10000 (default 100,10000,100000; "
        "--quick 100,10000; --smoke 50)",
    )


def measure(side: Side, s: Settings, size: int, median: Row, p95: Row) -> Measured:
    with Scratch(f"describe{size}") as scratch:
        setup = run_worker(
            side, scratch, ["describe-setup", "--n", str(size), "--job-dir", scratch.jobs], 900
        )
        if setup.get("records") != size:
            raise BenchError(
                f"store holds {setup.get('records')} records after setup, wanted {size}"
            )
        args = ["describe-measure", "--app-id", setup["app_id"], "--calls", str(s.describe_calls)]
        args += ["--time-cap", str(s.describe_cap_s)]
        meas = run_worker(side, scratch, args, s.describe_cap_s + 300)
    note = f"n={meas['calls']}" + (" (time-capped)" if meas["capped"] else "")
    note += f"; first call {fmt(meas['first_ms'])} ms"
    if meas.get("state") != "SUCCEEDED":
        note += f", state={meas.get('state')}"
    if setup.get("state") != "SUCCEEDED":
        note += f", job state at setup={setup.get('state')}"
    raw = {"setup": setup, "measure": meas}
    return Measured(raw).put(median, meas["median_ms"], note).put(p95, meas["p95_ms"])


def size_step(s: Settings, size: int, medians: dict[str, dict[int, float]]) -> Step:
    """Median and p95 at one store size; the median is also kept for the growth row."""
    top = size == max(s.sizes) == TARGET_SIZE
    median = Row(
        f"describe_{size}_median_ms",
        f"describe @ {size:,} records, median (ms)",
        "ms",
        "<= 2" if top else "",
        at_most(2.0) if top else None,
    )
    p95 = Row(f"describe_{size}_p95_ms", f"describe @ {size:,} records, p95 (ms)", "ms")

    def run(side: Side) -> Measured:
        out = measure(side, s, size, median, p95)
        medians.setdefault(side.name, {})[size] = out.values[median.key]
        return out

    return Step(f"describe_{size}", (median, p95), run)


def growth_step(s: Settings, medians: dict[str, dict[int, float]]) -> Step:
    """Median at the largest size over median at the smallest, from the steps before it."""
    low, top = min(s.sizes), max(s.sizes)
    growth = Row(
        "describe_growth", f"describe median @ {top:,} / @ {low:,}", "x", "<= 2", at_most(2.0)
    )

    def derive(side: Side) -> Measured:
        got = medians.get(side.name, {})
        a, b = got.get(low), got.get(top)
        return Measured().put(growth, b / a if a and b is not None else None)

    return Step("describe_growth", (growth,), derive, always=True)


def plan(mode: Mode, args: argparse.Namespace) -> GroupPlan:
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else None
    s = Settings(
        sizes=sizes or mode.pick(full=[100, 10_000, 100_000], quick=[100, 10_000], smoke=[50]),
        describe_calls=mode.pick(full=200, quick=50, smoke=10),
        describe_cap_s=mode.pick(full=20.0, quick=10.0, smoke=5.0),
    )
    medians: dict[str, dict[int, float]] = {}
    steps = [size_step(s, n, medians) for n in s.sizes]
    if len(s.sizes) > 1:
        steps.append(growth_step(s, medians))
    return GroupPlan(s, steps)


register(
    Group(
        "describe",
        30,
        "describe() latency at several store sizes",
        plan,
        add_options=add_options,
    )
)
