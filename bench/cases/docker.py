"""Group `docker`: describe of a RUNNING container, schedule() against a bare containers.run,
and containers left behind. Every engine call is made by the worker through docker-py under
the side's interpreter, so the harness itself needs no docker-py."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from harness.checks import at_most, equals
from harness.format import fmt
from harness.procs import BenchError, Scratch, Side, log, run_worker, short
from harness.registry import Group, GroupPlan, Measured, Mode, Prepared, Row, Step, register

DOCKER_IMAGE = "localhost/nemorun-python:bookworm-1"  # local only: the benchmark never pulls

DESCRIBE_MEDIAN = Row(
    "docker_describe_median_ms",
    "docker describe, RUNNING container, median (ms)",
    "ms",
    "<= 30",
    at_most(30),
)
DESCRIBE_P95 = Row("docker_describe_p95_ms", "docker describe, RUNNING container, p95 (ms)", "ms")
SCHEDULE = Row("docker_schedule_ms", "docker schedule() of a `true` container (ms)", "ms")
RUN = Row("docker_run_ms", "  docker-py containers.run(`true`) alone (ms)", "ms")
OVERHEAD = Row(
    "docker_overhead_ms",
    "  schedule overhead beyond containers.run (ms)",
    "ms",
    "<= 100",
    at_most(100),
)
LEFT = Row("docker_left", "docker containers left after the runs", "", "= 0", equals(0))


@dataclass(frozen=True)
class Settings:
    docker_calls: int
    docker_reps: int
    docker_image: str


@dataclass
class Engine:
    """The engine as probed before the group, and the containers present before each side."""

    helper: Side | None = None  # the side whose interpreter lists and removes containers
    before: dict[str, set[str]] = field(default_factory=dict)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--docker-image",
        default=DOCKER_IMAGE,
        help="image for the docker group; it must already be on the engine (never pulled)",
    )


def probe(sides: list[Side], image: str, engine: Engine) -> Prepared:
    """Does an engine answer, with `image` on it? Asked through the first usable side."""
    usable = [s for s in sides if not s.unavailable]
    why = "no side available to reach the engine" if not usable else ""
    for side in usable:
        with Scratch("docker-probe") as s:
            try:
                res = run_worker(side, s, ["docker-probe", "--image", image], 60)
            except BenchError as exc:
                why = str(exc)
                continue
        if res.get("ok"):
            engine.helper = side
            log(f"[docker] engine {res.get('engine_version')} at {res.get('host')}")
            return Prepared(meta={"ok": True, "why": "", "via": side.name, "engine": res})
        why = res.get("why", "")
        if "docker-py is not installed" not in why:
            break
    log(f"[docker] skipped: {why}")
    return Prepared(skip=why, meta={"ok": False, "why": why, "via": None, "engine": {}})


def containers(engine: Engine) -> list[dict[str, Any]]:
    assert engine.helper is not None
    with Scratch("docker-ps") as s:
        return run_worker(engine.helper, s, ["docker-ps"], 60)["containers"]


def note_before(side: Side, engine: Engine) -> Measured:
    """Remember the containers present before this side's runs (fills no row)."""
    try:
        engine.before[side.name] = {c["id"] for c in containers(engine)}
    except BenchError as exc:
        engine.before[side.name] = set()
        log(f"[docker] listing containers failed: {exc}")
    return Measured()


def measure_describe(side: Side, s: Settings) -> Measured:
    with Scratch("docker-describe") as scratch:
        args = ["docker-describe", "--image", s.docker_image, "--job-dir", scratch.jobs]
        res = run_worker(side, scratch, [*args, "--calls", str(s.docker_calls)], 300)
    note = f"n={res['calls']}; first call {fmt(res['first_ms'])} ms"
    if res.get("states") != {"RUNNING": res["calls"]}:
        note += f"; states seen: {res.get('states')}"
    cancel = (
        f"cancel() {res['cancel_s']:.2f} s -> {res.get('state_after_cancel')}"
        if "cancel_s" in res
        else f"cancel() raised {res.get('cancel_error')}"
    )
    if res.get("left_after_cancel"):
        cancel += f", containers left after it: {res['left_after_cancel']}"
    if res.get("force_removed"):
        cancel += f", the worker force-removed {res['force_removed']}"
    return (
        Measured(res)
        .put(DESCRIBE_MEDIAN, res["median_ms"], note)
        .put(DESCRIBE_P95, res["p95_ms"], cancel)
    )


def measure_schedule(side: Side, s: Settings) -> Measured:
    with Scratch("docker-schedule") as scratch:
        args = ["docker-schedule", "--image", s.docker_image, "--job-dir", scratch.jobs]
        res = run_worker(side, scratch, [*args, "--reps", str(s.docker_reps)], 600)
    note = f"n={res['reps']} each, interleaved; warm-up schedule {res['warmup_schedule_s']:.2f} s"
    if res.get("warnings_logged"):
        first = short(res["first_warning"], 160)
        note += f"; {res['warnings_logged']} warnings logged, first: {first}"
    if res.get("left_after_remove"):
        note += f"; containers still there after removal: {res['left_after_remove']}"
    on_network = res.get("containers_run_on_network_ms")
    network_note = ""
    if on_network is not None:
        network_note = (
            f"for reference, containers.run on network {res['network']}: {on_network:.0f} ms "
            f"(+{on_network - res['containers_run_ms']:.0f} ms engine-side)"
        )
    return (
        Measured(res)
        .put(SCHEDULE, res["schedule_ms"], note)
        .put(RUN, res["containers_run_ms"])
        .put(OVERHEAD, res["overhead_ms"], network_note)
    )


def measure_leftovers(side: Side, engine: Engine) -> Measured:
    """Containers that appeared during this side's runs and are still there; removes them."""
    before = engine.before.get(side.name, set())
    new = [c for c in containers(engine) if c["id"] not in before]
    removed = 0
    note = ""
    if new:
        assert engine.helper is not None
        with Scratch("docker-remove") as s:
            ids = ",".join(c["id"] for c in new)
            removed = run_worker(engine.helper, s, ["docker-remove", "--ids", ids], 120)["removed"]
        shown = ", ".join(f"{c['name']} ({c['state']})" for c in new[:5])
        note = f"the harness removed {removed}: {shown}"
    return Measured({"left": new, "removed": removed}).put(LEFT, len(new), note)


def plan(mode: Mode, args: argparse.Namespace) -> GroupPlan:
    s = Settings(
        docker_calls=mode.pick(full=50, quick=20, smoke=5),
        docker_reps=mode.pick(full=10, quick=5, smoke=1),
        docker_image=args.docker_image,
    )
    engine = Engine()
    steps = [
        Step("docker_before", (), lambda side: note_before(side, engine), always=True),
        Step(
            "docker_describe",
            (DESCRIBE_MEDIAN, DESCRIBE_P95),
            lambda side: measure_describe(side, s),
        ),
        Step("docker_schedule", (SCHEDULE, RUN, OVERHEAD), lambda side: measure_schedule(side, s)),
        # runs even when the side is unavailable: it only lists what appeared
        Step("docker_left", (LEFT,), lambda side: measure_leftovers(side, engine), always=True),
    ]
    return GroupPlan(s, steps, prepare=lambda sides: probe(sides, s.docker_image, engine))


register(
    Group(
        "docker",
        70,
        "Docker scheduler against a live engine (skipped without one)",
        plan,
        add_options=add_options,
        smoke_skip="needs a Docker engine",
    )
)
