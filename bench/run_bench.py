"""Side-by-side benchmark: this checkout's `nemo_run` versus the peer `nemo-run==0.11.1`.

Run from the repo root with the interpreter that has our package installed:

    python bench/run_bench.py            # full run (a few minutes on 2 cores)
    python bench/run_bench.py --quick    # smoke test: fewer repetitions, sizes 100 and 10,000

The peer lives in its own venv, `bench/.peer-venv`, created on first use. Every measurement
runs `bench/worker.py` (or a `python -c` one-liner) as a separate process under each
interpreter, in a fresh temporary `$NEMORUN_HOME` and a temporary working directory. The
table goes to stdout; the same results, with raw figures, go to `bench/results/latest.json`.
See bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WORKER = BENCH_DIR / "worker.py"
PEER_VENV = BENCH_DIR / ".peer-venv"
RESULTS_DIR = BENCH_DIR / "results"
PEER_REQUIREMENTS = ["nemo-run==0.11.1", "leptonai==0.27.3"]  # newer leptonai breaks the peer
RESULT_TAG = "@@RESULT "
DOCKER_IMAGE = "localhost/nemorun-python:bookworm-1"  # local only: the benchmark never pulls
SKIPPED = "skipped"

HELLO_CODE = (
    "import nemo_run as run\nrun.run(run.Script(inline='echo hi'), executor=run.LocalExecutor())\n"
)


class BenchError(Exception):
    """A measurement failed; the message ends up in the table's error list."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def short(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------- sides


@dataclass
class Side:
    name: str  # "ours" or "peer"
    python: str
    extra_env: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    unavailable: str | None = None

    def env(self, home: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NEMORUN_HOME")}
        env.update(self.extra_env)
        env["NEMORUN_HOME"] = home
        return env


class Scratch:
    """A fresh NEMORUN_HOME plus a working directory and a job dir, removed afterwards."""

    def __init__(self, tag: str) -> None:
        self.root = tempfile.mkdtemp(prefix=f"nemo-bench-{tag}-")
        self.home = os.path.join(self.root, "home")
        self.cwd = os.path.join(self.root, "cwd")
        self.jobs = os.path.join(self.root, "jobs")
        for d in (self.home, self.cwd, self.jobs):
            os.makedirs(d)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def parse_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    return None


def run_worker(side: Side, scratch: Scratch, args: list[str], timeout: float) -> dict[str, Any]:
    """Run one worker command under `side`'s interpreter and return its JSON result."""
    cmd = [side.python, str(WORKER), *args]
    try:
        proc = subprocess.run(
            cmd,
            cwd=scratch.cwd,
            env=side.env(scratch.home),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"worker {args[0]} timed out after {timeout:.0f} s") from exc
    result = parse_result(proc.stdout)
    if result is None:
        raise BenchError(
            f"worker {args[0]} exited {proc.returncode} without a result: "
            + short(proc.stderr[-2000:] or proc.stdout[-2000:])
        )
    if "error" in result:
        raise BenchError(f"worker {args[0]}: {result['error']}")
    return result


def timed_run(
    side: Side, scratch: Scratch, code: str, stdout: Any, timeout: float
) -> tuple[float, str]:
    """Wall time of `python -c code` as a whole process, and its stdout when `stdout` is
    subprocess.PIPE; raises if the process fails."""
    err_path = os.path.join(scratch.root, "stderr.txt")
    with open(err_path, "w") as err:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [side.python, "-c", code],
                cwd=scratch.cwd,
                env=side.env(scratch.home),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=err,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"`python -c {code!r}` timed out after {timeout:.0f} s") from exc
        elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        with open(err_path, errors="replace") as f:
            tail = f.read()[-2000:]
        raise BenchError(f"`python -c {code!r}` exited {proc.returncode}: {short(tail)}")
    return elapsed, proc.stdout or ""


class LineReader(threading.Thread):
    """Collects a child's stdout lines without blocking the harness."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []

    def run(self) -> None:
        for line in iter(self.stream.readline, ""):
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, marker: str, timeout: float) -> bool:
        """Wait for a line equal to `marker`; False on EOF or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                return False
            if line is None:
                self.lines.put(None)
                return False
            self.seen.append(line)
            if line.rstrip("\n") == marker:
                return True

    def drain(self) -> list[str]:
        """All remaining lines (call after the child has exited)."""
        self.join(timeout=30)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return self.seen


def stderr_tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return short(f.read()[-2000:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------- measurements
# Each returns {row_key: value} (plus optional "_notes": {row_key: str}) and may raise.


@dataclass
class Plan:
    import_reps: int
    hello_reps: int
    sizes: list[int]
    describe_calls: int
    describe_cap_s: float
    tp_procs: int
    tp_each: int
    dur_rounds: int
    dur_max_delay_s: float
    cli_reps: int
    cli_jobs: int
    cli_tasks: int
    cli_cap_s: float
    docker_calls: int
    docker_reps: int
    docker_image: str
    seed: int
    log_mb: int = 500


# Both one-liners import the builtin `time` and print one number, so their difference is
# exactly the cost of `import nemo_run`; the printed number is that import timed in-process.
BARE_CODE = "import time; t = time.perf_counter(); print(0.0)"
IMPORT_CODE = (
    "import time; t = time.perf_counter(); import nemo_run; print((time.perf_counter() - t) * 1e3)"
)


def measure_import(side: Side, plan: Plan) -> dict[str, Any]:
    pipe = subprocess.PIPE
    with Scratch("import") as s:
        # warm-up: writes bytecode caches and fails fast if the import is broken
        timed_run(side, s, BARE_CODE, pipe, 60)
        timed_run(side, s, IMPORT_CODE, pipe, 120)
        base, full, inproc = [], [], []
        for _ in range(plan.import_reps):
            base.append(timed_run(side, s, BARE_CODE, pipe, 60)[0])
            elapsed, out = timed_run(side, s, IMPORT_CODE, pipe, 120)
            full.append(elapsed)
            inproc.append(float(out.strip().splitlines()[-1]))
    bare = statistics.median(base) * 1e3
    with_import = statistics.median(full) * 1e3
    note = f"n={len(full)}; bare python {bare:.0f} ms"
    return {
        "import_ms": with_import - bare,
        "import_inproc_ms": statistics.median(inproc),
        "_raw": {
            "bare_python_ms": bare,
            "python_with_import_ms": with_import,
            "inprocess_ms": inproc,
            "reps": len(full),
        },
        "_notes": {"import_ms": note, "import_inproc_ms": f"n={len(full)}"},
    }


def _says_hi(path: str) -> bool:
    try:
        with open(path, errors="replace") as f:
            return any(line.strip() == "hi" or line.rstrip().endswith(" hi") for line in f)
    except OSError:
        return False


def measure_hello(side: Side, plan: Plan) -> dict[str, Any]:
    times = []
    saw_hi = []
    with Scratch("hello") as s:
        out_path = os.path.join(s.root, "stdout.txt")
        for _ in range(plan.hello_reps):
            with open(out_path, "w") as out:
                times.append(timed_run(side, s, HELLO_CODE, out, 300)[0])
            saw_hi.append(_says_hi(out_path))
        # the job's own output, wherever the package keeps it (one log file per run at least)
        logs_with_hi = sum(
            _says_hi(os.path.join(d, name))
            for d, _, names in os.walk(s.home)
            for name in names
            if name.endswith(".log")
        )
    if all(saw_hi):
        where = "job output shown on stdout"
    elif logs_with_hi >= len(times):
        where = "job output in log files only, not on stdout"
    else:
        where = f"'hi' found on stdout in {sum(saw_hi)} and in {logs_with_hi} log files"
    return {
        "hello_s": statistics.median(times),
        "_raw": {"runs_s": times, "hi_on_stdout": saw_hi, "log_files_with_hi": logs_with_hi},
        "_notes": {"hello_s": f"n={len(times)}; {where}"},
    }


def measure_describe(side: Side, plan: Plan, size: int) -> dict[str, Any]:
    with Scratch(f"describe{size}") as s:
        setup = run_worker(side, s, ["describe-setup", "--n", str(size), "--job-dir", s.jobs], 900)
        if setup.get("records") != size:
            raise BenchError(
                f"store holds {setup.get('records')} records after setup, wanted {size}"
            )
        meas = run_worker(
            side,
            s,
            [
                "describe-measure",
                "--app-id",
                setup["app_id"],
                "--calls",
                str(plan.describe_calls),
                "--time-cap",
                str(plan.describe_cap_s),
            ],
            plan.describe_cap_s + 300,
        )
    note = f"n={meas['calls']}" + (" (time-capped)" if meas["capped"] else "")
    note += f"; first call {fmt(meas['first_ms'])} ms"
    if meas.get("state") != "SUCCEEDED":
        note += f", state={meas.get('state')}"
    if setup.get("state") != "SUCCEEDED":
        note += f", job state at setup={setup.get('state')}"
    return {
        f"describe_{size}_median_ms": meas["median_ms"],
        f"describe_{size}_p95_ms": meas["p95_ms"],
        "_raw": {"setup": setup, "measure": meas},
        "_notes": {f"describe_{size}_median_ms": note},
    }


def measure_throughput(side: Side, plan: Plan) -> dict[str, Any]:
    total = plan.tp_procs * plan.tp_each
    with Scratch("throughput") as s:
        procs: list[tuple[subprocess.Popen[str], LineReader, str]] = []
        try:
            launched = time.time()
            for i in range(plan.tp_procs):
                err_path = os.path.join(s.root, f"child{i}.err")
                with open(err_path, "w") as err:
                    p = subprocess.Popen(
                        [
                            side.python,
                            str(WORKER),
                            "throughput-child",
                            "--n",
                            str(plan.tp_each),
                            "--job-dir",
                            s.jobs,
                        ],
                        cwd=s.cwd,
                        env=side.env(s.home),
                        text=True,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=err,
                    )
                reader = LineReader(p.stdout)
                reader.start()
                procs.append((p, reader, err_path))
            for p, reader, err_path in procs:
                if not reader.wait_for("READY", 300):
                    raise BenchError(
                        f"throughput child did not get ready (rc={p.poll()}): "
                        + stderr_tail(err_path)
                    )
            ready = time.time()
            go = time.time()
            for p, _, _ in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            results = []
            for p, reader, err_path in procs:
                try:
                    p.wait(timeout=600)
                except subprocess.TimeoutExpired as exc:
                    raise BenchError("throughput child did not finish in 600 s") from exc
                res = parse_result("".join(reader.drain()))
                if res is None or "error" in res:
                    why = res["error"] if res else stderr_tail(err_path)
                    raise BenchError(f"throughput child failed (rc={p.returncode}): {why}")
                results.append(res)
        finally:
            for p, _, _ in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        end = max(r["end"] for r in results)
        ok = sum(len(r["ids"]) for r in results)
        errors = [e for r in results for e in r["errors"]]
        wall = end - go
        try:
            kept: Any = run_worker(side, s, ["count"], 300)["count"]
            kept_note = f"of {total} scheduled"
        except BenchError as exc:
            kept, kept_note = None, f"store unreadable: {exc}"
    out: dict[str, Any] = {
        "tp_wall_s": wall,
        "tp_rate": ok / wall if wall > 0 else None,
        "tp_kept": kept,
        "tp_errors": len(errors),
        "_raw": {
            "startup_s": ready - launched,
            "acknowledged": ok,
            "errors_sample": errors[:5],
            "per_process_s": [r["end"] - r["start"] for r in results],
        },
        "_notes": {
            "tp_wall_s": f"{plan.tp_procs} procs x {plan.tp_each}",
            "tp_rate": f"{ok}/{total} acknowledged",
            "tp_kept": kept_note,
        },
    }
    if errors:
        out["_notes"]["tp_errors"] = short(errors[0], 120)
    return out


def measure_durability(side: Side, plan: Plan) -> dict[str, Any]:
    rng = random.Random(plan.seed)
    rounds = []
    with Scratch("durability") as s:
        ids_file = os.path.join(s.root, "acked.txt")
        open(ids_file, "w").close()
        for rnd in range(plan.dur_rounds):
            err_path = os.path.join(s.root, f"round{rnd}.err")
            with open(err_path, "w") as err:
                p = subprocess.Popen(
                    [side.python, str(WORKER), "durability-child", "--job-dir", s.jobs],
                    cwd=s.cwd,
                    env=side.env(s.home),
                    text=True,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=err,
                )
            reader = LineReader(p.stdout)
            reader.start()
            try:
                ready = reader.wait_for("READY", 300)
                delay = rng.uniform(0.05, plan.dur_max_delay_s)
                if ready:
                    time.sleep(delay)
                exited_early = p.poll()
                if exited_early is None:
                    os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=60)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            lines = reader.drain()
            # only complete lines count as acknowledged: a torn last line was never seen
            acked = [ln[3:].strip() for ln in lines if ln.startswith("ID ") and ln.endswith("\n")]
            with open(ids_file, "a") as f:
                f.writelines(a + "\n" for a in acked)
            info: dict[str, Any] = {"kill_after_s": round(delay, 3), "acked": len(acked)}
            if not ready or exited_early is not None:
                info["child_failed"] = f"rc={p.returncode}: {stderr_tail(err_path)}"
            rounds.append(info)
        check = run_worker(side, s, ["durability-check", "--ids-file", ids_file], 300)
    acked_total = sum(r["acked"] for r in rounds)
    failed = [r["child_failed"] for r in rounds if "child_failed" in r]
    if acked_total == 0:
        raise BenchError("no schedule was acknowledged in any round: " + "; ".join(failed)[:400])
    readable = bool(check.get("readable"))
    notes = {
        "dur_lost": f"of {acked_total} acked, {plan.dur_rounds} kills",
        "dur_readable": "" if readable else short(str(check.get("error", "")), 160),
    }
    if failed:
        notes["dur_lost"] += f"; {len(failed)} child(ren) failed: {short(failed[0], 160)}"
    return {
        "dur_lost": check.get("lost"),
        "dur_readable": readable,
        "_raw": {"rounds": rounds, "check": check},
        "_notes": notes,
    }


# ---------------------------------------------------------------------------- cli group


def cli_script(side: Side) -> str:
    """The side's console script, next to its interpreter: `nemorun` (ours) or `nemo` (peer)."""
    name = "nemorun" if side.name == "ours" else "nemo"
    path = os.path.join(os.path.dirname(side.python), name)
    if not os.access(path, os.X_OK):
        raise BenchError(f"no console script {path}")
    return path


def timed_cmd(
    side: Side, scratch: Scratch, argv: list[str], out_path: str, timeout: float
) -> tuple[float, int, str]:
    """Wall time of `argv` as a whole process (stdout to `out_path`), its exit status and the
    tail of its stderr."""
    err_path = os.path.join(scratch.root, "cmd-stderr.txt")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                argv,
                cwd=scratch.cwd,
                env=side.env(scratch.home),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"`{' '.join(argv[1:])}` timed out after {timeout:.0f} s") from exc
        elapsed = time.perf_counter() - t0
    return elapsed, proc.returncode, stderr_tail(err_path)


def _cmd_text(argv: list[str]) -> str:
    return " ".join([os.path.basename(argv[0]), *argv[1:]])


def time_cmd_reps(
    side: Side, scratch: Scratch, argv: list[str], out_path: str, reps: int, timeout: float
) -> list[float]:
    """One warm-up run, then `reps` timed runs of `argv`; every run must exit 0."""
    times = []
    for i in range(reps + 1):
        elapsed, rc, err = timed_cmd(side, scratch, argv, out_path, timeout)
        if rc != 0:
            raise BenchError(f"`{_cmd_text(argv)}` exited {rc}: {err}")
        if i:
            times.append(elapsed)
    return times


def measure_logs(side: Side, plan: Plan) -> dict[str, Any]:
    """Peak memory of reading a big log to its end, as `job logs` does."""
    with Scratch("logs") as s:
        setup = run_worker(
            side, s, ["logs-setup", "--n", str(plan.log_mb), "--job-dir", s.jobs], 900
        )
        if setup.get("state") != "SUCCEEDED":
            raise BenchError(f"the log-writing job ended {setup.get('state')}")
        meas = run_worker(side, s, ["logs-measure", "--app-id", setup["app_id"]], 900)
    expected = plan.log_mb * 1_000_000
    if meas["bytes"] != expected:
        raise BenchError(f"read {meas['bytes']:,} bytes of a {expected:,}-byte log")
    return {
        "logs_peak_rss_mb": meas["rss_peak_mb"],
        "logs_read_s": meas["seconds"],
        "_raw": {"setup": setup, "measure": meas},
        "_notes": {
            "logs_peak_rss_mb": f"{meas['lines']:,} lines; "
            f"{meas['rss_before_mb']:.0f} MB before reading"
        },
    }


def measure_cli_joblist(side: Side, plan: Plan) -> dict[str, Any]:
    keys = ["cli_joblist_s", "cli_joblist_all_s"]
    cli = cli_script(side)
    with Scratch("joblist") as s:
        out_path = os.path.join(s.root, "stdout.txt")
        _, rc, err = timed_cmd(side, s, [cli, "job", "list", "--help"], out_path, 120)
        if rc != 0 and "no such command" in err.lower():
            why = f"`{_cmd_text([cli, 'job', 'list'])}` exits {rc}: no such command"
            return {
                **{k: "n/a (no such command)" for k in keys},
                "_raw": {"probe": err},
                "_notes": {keys[0]: why},
            }
        if rc != 0:
            raise BenchError(f"`{_cmd_text([cli, 'job', 'list', '--help'])}` exited {rc}: {err}")
        setup = run_worker(side, s, ["fill-jobs", "--n", str(plan.cli_jobs)], 900)
        if setup.get("records") != plan.cli_jobs:
            raise BenchError(
                f"store holds {setup.get('records')} records after setup, wanted {plan.cli_jobs}"
            )
        out: dict[str, Any] = {"_raw": {"setup": setup}, "_notes": {}}
        for key, extra in ((keys[0], []), (keys[1], ["--limit", "0"])):
            argv = [cli, "job", "list", "--json", *extra]
            times = time_cmd_reps(side, s, argv, out_path, plan.cli_reps, 300)
            size = os.path.getsize(out_path)
            with open(out_path) as f:
                try:
                    rows = json.load(f)
                except ValueError as exc:
                    raise BenchError(f"`{_cmd_text(argv)}` printed invalid JSON: {exc}") from exc
            if not isinstance(rows, list):
                raise BenchError(f"`{_cmd_text(argv)}` printed a {type(rows).__name__}, not a list")
            if extra and len(rows) != plan.cli_jobs:
                raise BenchError(
                    f"`{_cmd_text(argv)}` listed {len(rows)} jobs, the store holds {plan.cli_jobs}"
                )
            out[key] = statistics.median(times)
            out["_raw"][key] = {"runs_s": times, "rows": len(rows), "stdout_bytes": size}
            out["_notes"][key] = f"n={len(times)}; {len(rows):,} rows, {size / 1e3:,.0f} kB of JSON"
    return out


def measure_cli_status(side: Side, plan: Plan) -> dict[str, Any]:
    cli = cli_script(side)
    with Scratch("status") as s:
        created = run_worker(side, s, ["exp-create"], 300)
        argv = [cli, "experiment", "status", created["exp_id"]]
        out_path = os.path.join(s.root, "stdout.txt")
        times = time_cmd_reps(side, s, argv, out_path, plan.cli_reps, 120)
        with open(out_path, errors="replace") as f:
            shown = f.read()
    note = f"n={len(times)}"
    if created.get("states") != {"SUCCEEDED": 1}:
        note += f"; task states after the run: {created.get('states')}"
    if "SUCCEEDED" not in shown:
        note += f"; output does not show SUCCEEDED: {short(shown, 160)}"
    return {
        "cli_status_s": statistics.median(times),
        "_raw": {"create": created, "runs_s": times, "stdout": shown[-2000:]},
        "_notes": {"cli_status_s": note},
    }


def measure_cli_many(side: Side, plan: Plan) -> dict[str, Any]:
    n = plan.cli_tasks
    with Scratch("exp-many") as s:
        t0 = time.perf_counter()
        res = run_worker(
            side,
            s,
            ["exp-many", "--n", str(n), "--time-cap", str(plan.cli_cap_s)],
            plan.cli_cap_s + 300,
        )
        whole = time.perf_counter() - t0
    wall_note = f"whole process {whole:.1f} s; 1-task warm-up {res['warmup_s']:.2f} s"
    if res.get("states") != {"SUCCEEDED": n}:
        wall_note += f"; task states: {res.get('states')}"
    return {
        "cli_many_wall_s": res["wall_s"],
        "cli_many_overhead_ms": res["overhead_ms"],
        "_raw": {**res, "whole_process_s": whole},
        "_notes": {
            "cli_many_wall_s": wall_note,
            "cli_many_overhead_ms": f"baseline: {n} `true` via subprocess "
            f"{res['baseline_s'] * 1e3:.0f} ms",
        },
    }


# ---------------------------------------------------------------------------- docker group
# Every engine call is made by worker.py through docker-py, so the harness needs no docker-py.


@dataclass
class DockerEngine:
    ok: bool
    why: str  # why the group is skipped, when not ok
    helper: Side | None  # the side whose interpreter lists and removes containers
    info: dict[str, Any] = field(default_factory=dict)


def probe_docker(sides: list[Side], image: str) -> DockerEngine:
    """Does an engine answer, with `image` on it? Asked through the first usable side."""
    usable = [s for s in sides if not s.unavailable]
    if not usable:
        return DockerEngine(False, "no side available to reach the engine", None)
    why = ""
    for side in usable:
        with Scratch("docker-probe") as s:
            try:
                res = run_worker(side, s, ["docker-probe", "--image", image], 60)
            except BenchError as exc:
                why = str(exc)
                continue
        if res.get("ok"):
            return DockerEngine(True, "", side, res)
        why = res.get("why", "")
        if "docker-py is not installed" not in why:
            break
    return DockerEngine(False, why, None)


def docker_containers(engine: DockerEngine) -> list[dict[str, Any]]:
    assert engine.helper is not None
    with Scratch("docker-ps") as s:
        return run_worker(engine.helper, s, ["docker-ps"], 60)["containers"]


def measure_docker_describe(side: Side, plan: Plan) -> dict[str, Any]:
    with Scratch("docker-describe") as s:
        res = run_worker(
            side,
            s,
            [
                "docker-describe",
                "--image",
                plan.docker_image,
                "--job-dir",
                s.jobs,
                "--calls",
                str(plan.docker_calls),
            ],
            300,
        )
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
    return {
        "docker_describe_median_ms": res["median_ms"],
        "docker_describe_p95_ms": res["p95_ms"],
        "_raw": res,
        "_notes": {"docker_describe_median_ms": note, "docker_describe_p95_ms": cancel},
    }


def measure_docker_schedule(side: Side, plan: Plan) -> dict[str, Any]:
    with Scratch("docker-schedule") as s:
        res = run_worker(
            side,
            s,
            [
                "docker-schedule",
                "--image",
                plan.docker_image,
                "--job-dir",
                s.jobs,
                "--reps",
                str(plan.docker_reps),
            ],
            600,
        )
    note = f"n={res['reps']} each, interleaved; warm-up schedule {res['warmup_schedule_s']:.2f} s"
    if res.get("warnings_logged"):
        first = short(res["first_warning"], 160)
        note += f"; {res['warnings_logged']} warnings logged, first: {first}"
    if res.get("left_after_remove"):
        note += f"; containers still there after removal: {res['left_after_remove']}"
    out: dict[str, Any] = {
        "docker_schedule_ms": res["schedule_ms"],
        "docker_run_ms": res["containers_run_ms"],
        "docker_overhead_ms": res["overhead_ms"],
        "_raw": res,
        "_notes": {"docker_schedule_ms": note},
    }
    on_network = res.get("containers_run_on_network_ms")
    if on_network is not None:
        out["_notes"]["docker_overhead_ms"] = (
            f"for reference, containers.run on network {res['network']}: {on_network:.0f} ms "
            f"(+{on_network - res['containers_run_ms']:.0f} ms engine-side)"
        )
    return out


def measure_docker_leftovers(engine: DockerEngine, before: set[str]) -> dict[str, Any]:
    """Containers that appeared during this side's runs and are still there; removes them."""
    new = [c for c in docker_containers(engine) if c["id"] not in before]
    removed = 0
    if new:
        assert engine.helper is not None
        with Scratch("docker-remove") as s:
            ids = ",".join(c["id"] for c in new)
            removed = run_worker(engine.helper, s, ["docker-remove", "--ids", ids], 120)["removed"]
    note = ""
    if new:
        shown = ", ".join(f"{c['name']} ({c['state']})" for c in new[:5])
        note = f"the harness removed {removed}: {shown}"
    return {
        "docker_left": len(new),
        "_raw": {"left": new, "removed": removed},
        "_notes": {"docker_left": note},
    }


def skipped(keys: list[str], why: str, say_why: bool) -> dict[str, Any]:
    return {
        **{k: SKIPPED for k in keys},
        "_raw": {"skipped": why},
        "_notes": {keys[0]: f"skipped: {why}"} if say_why else {},
    }


# ---------------------------------------------------------------------------- rows


@dataclass
class Row:
    key: str
    label: str
    unit: str
    target: str = ""
    check: Callable[[Any, dict[str, Any]], bool] | None = None


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        a = abs(value)
        if a >= 100:
            return f"{value:.0f}"
        if a >= 10:
            return f"{value:.1f}"
        if a >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def build_rows(plan: Plan) -> list[Row]:
    rows = [
        Row(
            "import_ms",
            "import nemo_run (ms, minus bare python)",
            "ms",
            "<= 150",
            lambda v, _: v <= 150,
        ),
        Row("import_inproc_ms", "import nemo_run, timed in-process (ms)", "ms"),
        Row(
            "hello_s",
            "hello world run.run, whole process (s)",
            "s",
            "<= 0.35",
            lambda v, _: v <= 0.35,
        ),
    ]
    for n in plan.sizes:
        rows.append(Row(f"describe_{n}_median_ms", f"describe @ {n:,} records, median (ms)", "ms"))
        rows.append(Row(f"describe_{n}_p95_ms", f"describe @ {n:,} records, p95 (ms)", "ms"))
    top = max(plan.sizes)
    if top == 100_000:
        rows[-2].target = "<= 2"
        rows[-2].check = lambda v, _: v <= 2.0
    if len(plan.sizes) > 1:
        low = min(plan.sizes)
        rows.append(
            Row(
                "describe_growth",
                f"describe median @ {top:,} / @ {low:,}",
                "x",
                "<= 2",
                lambda v, _: v <= 2.0,
            )
        )
    total = plan.tp_procs * plan.tp_each
    rows += [
        Row("tp_wall_s", f"schedule {plan.tp_procs}x{plan.tp_each} concurrent, wall (s)", "s"),
        Row("tp_rate", "schedule throughput (schedules/s, higher=better)", "/s"),
        Row(
            "tp_kept",
            f"records kept (of {total}, higher=better)",
            "",
            f"= {total}",
            lambda v, _: v == total,
        ),
        Row("tp_errors", "schedule calls that raised", "", "= 0", lambda v, _: v == 0),
        Row("dur_lost", "kill -9: acknowledged ids lost", "", "= 0", lambda v, _: v == 0),
        Row(
            "dur_readable", "kill -9: store readable afterwards", "", "yes", lambda v, _: v is True
        ),
        Row(
            "cli_joblist_s",
            f"job list --json @ {plan.cli_jobs:,} jobs, whole process (s)",
            "s",
            "<= 0.5",
            lambda v, _: v <= 0.5,
        ),
        Row("cli_joblist_all_s", f"job list --json --limit 0 @ {plan.cli_jobs:,} jobs (s)", "s"),
        Row(
            "cli_status_s",
            "experiment status (1 finished task), whole process (s)",
            "s",
            "<= 0.3",
            lambda v, _: v <= 0.3,
        ),
        Row(
            "cli_many_wall_s",
            f"experiment of {plan.cli_tasks} parallel `true` tasks, launch+wait (s)",
            "s",
        ),
        Row(
            "cli_many_overhead_ms",
            "  overhead per task beyond process start (ms)",
            "ms",
            "<= 15",
            lambda v, _: v <= 15,
        ),
        Row(
            "docker_describe_median_ms",
            "docker describe, RUNNING container, median (ms)",
            "ms",
            "<= 30",
            lambda v, _: v <= 30,
        ),
        Row("docker_describe_p95_ms", "docker describe, RUNNING container, p95 (ms)", "ms"),
        Row("docker_schedule_ms", "docker schedule() of a `true` container (ms)", "ms"),
        Row("docker_run_ms", "  docker-py containers.run(`true`) alone (ms)", "ms"),
        Row(
            "docker_overhead_ms",
            "  schedule overhead beyond containers.run (ms)",
            "ms",
            "<= 100",
            lambda v, _: v <= 100,
        ),
        Row(
            "logs_peak_rss_mb",
            f"read a {plan.log_mb} MB log to its end, peak RSS (MB)",
            "MB",
            "<= 100",
            lambda v, _: v <= 100,
        ),
        Row("logs_read_s", f"  time to read the {plan.log_mb} MB log (s)", "s"),
        Row(
            "docker_left",
            "docker containers left after the runs",
            "",
            "= 0",
            lambda v, _: v == 0,
        ),
    ]
    return rows


# ---------------------------------------------------------------------------- peer venv


def peer_version(python: str) -> str | None:
    try:
        proc = subprocess.run(
            [python, "-c", "import importlib.metadata as m; print(m.version('nemo-run'))"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tempfile.gettempdir(),
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_peer_venv() -> str:
    python = PEER_VENV / "bin" / "python"
    if python.exists() and peer_version(str(python)) == "0.11.1":
        return str(python)
    RESULTS_DIR.mkdir(exist_ok=True)
    install_log = RESULTS_DIR / "peer-venv-install.log"
    log(f"creating the peer venv at {PEER_VENV} (log: {install_log}); this takes a while ...")
    with open(install_log, "w") as out:
        if not python.exists():
            creator = shutil.which("python3") or sys.executable
            subprocess.run(
                [creator, "-m", "venv", str(PEER_VENV)],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = subprocess.run(
            [str(PEER_VENV / "bin" / "pip"), "install", *PEER_REQUIREMENTS],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    version = peer_version(str(python))
    if proc.returncode != 0 or version != "0.11.1":
        raise BenchError(f"peer venv install failed (pip rc={proc.returncode}); see {install_log}")
    return str(python)


# ---------------------------------------------------------------------------- main


GROUPS = ["import", "hello", "describe", "throughput", "durability", "cli", "docker", "logs"]


def make_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    sizes = (
        [int(x) for x in args.sizes.split(",")]
        if args.sizes
        else ([100, 10_000] if quick else [100, 10_000, 100_000])
    )
    return Plan(
        import_reps=3 if quick else 10,
        hello_reps=2 if quick else 5,
        sizes=sizes,
        describe_calls=50 if quick else 200,
        describe_cap_s=10.0 if quick else 20.0,
        tp_procs=8,
        tp_each=10 if quick else 25,
        dur_rounds=3 if quick else 8,
        dur_max_delay_s=1.5 if quick else 2.5,
        cli_reps=3 if quick else 5,
        cli_jobs=10_000 if quick else 100_000,
        cli_tasks=50 if quick else 200,
        cli_cap_s=60.0 if quick else 120.0,
        docker_calls=20 if quick else 50,
        docker_reps=5 if quick else 10,
        docker_image=args.docker_image,
        seed=args.seed,
        log_mb=50 if quick else 500,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions, sizes 100 and 10,000"
    )
    parser.add_argument("--only", default="", help=f"comma list of groups: {','.join(GROUPS)}")
    parser.add_argument("--sizes", default="", help="describe store sizes, e.g. 100,10000")
    parser.add_argument("--ours-python", default=sys.executable)
    parser.add_argument("--peer-python", default="", help="use this interpreter for the peer")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--skip-ours", action="store_true")
    parser.add_argument("--seed", type=int, default=12345, help="seed for the kill instants")
    parser.add_argument("--output", default=str(RESULTS_DIR / "latest.json"))
    parser.add_argument(
        "--docker-image",
        default=DOCKER_IMAGE,
        help="image for the docker group; it must already be on the engine (never pulled)",
    )
    args = parser.parse_args(argv)

    groups = [g.strip() for g in args.only.split(",") if g.strip()] or GROUPS
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {unknown}; choose from {GROUPS}")
    plan = make_plan(args)
    started = time.time()
    load_start = os.getloadavg()
    if load_start[0] >= 0.75:
        log(
            f"warning: the machine is busy before the run (load average {load_start[0]:.2f}); "
            "timings will be noisy"
        )

    # Ours runs from this checkout: the repo root goes first on PYTHONPATH, so the package
    # measured is the one next to this script whatever state its editable install is in.
    ours = Side("ours", args.ours_python, {"PYTHONPATH": str(REPO_ROOT)})
    peer = Side("peer", args.peer_python or str(PEER_VENV / "bin" / "python"))
    sides = []
    if not args.skip_ours:
        sides.append(ours)
    if not args.skip_peer:
        sides.append(peer)
        if not args.peer_python:
            try:
                peer.python = ensure_peer_venv()
            except (BenchError, OSError, subprocess.CalledProcessError) as exc:
                peer.unavailable = f"peer venv unavailable: {exc}"

    for side in sides:
        if side.unavailable:
            continue
        with Scratch("info") as s:
            try:
                side.info = run_worker(side, s, ["info"], 300)
            except BenchError as exc:
                side.info = {"error": str(exc)}
        impl = side.info.get("implementation")
        if impl and impl != side.name:
            side.unavailable = (
                f"{side.name} interpreter imports the {impl} implementation "
                f"({side.info.get('nemo_run_file')})"
            )
        log(f"[{side.name}] {side.python}: {side.info}")

    engine: DockerEngine | None = None
    if "docker" in groups:
        engine = probe_docker(sides, plan.docker_image)
        if engine.ok:
            log(f"[docker] engine {engine.info.get('engine_version')} at {engine.info.get('host')}")
        else:
            log(f"[docker] skipped: {engine.why}")

    values: dict[str, dict[str, Any]] = {}
    notes: dict[str, dict[str, str]] = {}
    errors: dict[str, dict[str, str]] = {}
    raw: dict[str, dict[str, Any]] = {}

    def record(
        group: str, row_keys: list[str], side: Side, fn: Callable[[], dict[str, Any]]
    ) -> None:
        t0 = time.perf_counter()
        try:
            if side.unavailable:
                raise BenchError(side.unavailable)
            out = fn()
        except Exception as exc:  # a failing row must not stop the others
            msg = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
            for key in row_keys:
                errors.setdefault(key, {})[side.name] = msg
            raw.setdefault(group, {})[side.name] = {"error": msg}
            log(f"[{group}] {side.name}: ERROR {short(msg, 300)}")
            return
        raw.setdefault(group, {})[side.name] = out.get("_raw")
        for key, value in out.items():
            if key.startswith("_"):
                continue
            values.setdefault(key, {})[side.name] = value
        for key, note in out.get("_notes", {}).items():
            if note:
                notes.setdefault(key, {})[side.name] = note
        shown = ", ".join(f"{k}={fmt(v)}" for k, v in out.items() if not k.startswith("_"))
        log(f"[{group}] {side.name}: {shown}  ({time.perf_counter() - t0:.1f} s)")

    for group in groups:
        for side in sides:
            if group == "import":
                record(
                    group,
                    ["import_ms", "import_inproc_ms"],
                    side,
                    lambda side=side: measure_import(side, plan),
                )
            elif group == "hello":
                record(group, ["hello_s"], side, lambda side=side: measure_hello(side, plan))
            elif group == "describe":
                for n in plan.sizes:
                    keys = [f"describe_{n}_median_ms", f"describe_{n}_p95_ms"]
                    record(
                        f"describe_{n}",
                        keys,
                        side,
                        lambda side=side, n=n: measure_describe(side, plan, n),
                    )
            elif group == "throughput":
                record(
                    group,
                    ["tp_wall_s", "tp_rate", "tp_kept", "tp_errors"],
                    side,
                    lambda side=side: measure_throughput(side, plan),
                )
            elif group == "durability":
                record(
                    group,
                    ["dur_lost", "dur_readable"],
                    side,
                    lambda side=side: measure_durability(side, plan),
                )
            elif group == "cli":
                record(
                    "cli_joblist",
                    ["cli_joblist_s", "cli_joblist_all_s"],
                    side,
                    lambda side=side: measure_cli_joblist(side, plan),
                )
                record(
                    "cli_status",
                    ["cli_status_s"],
                    side,
                    lambda side=side: measure_cli_status(side, plan),
                )
                record(
                    "cli_many",
                    ["cli_many_wall_s", "cli_many_overhead_ms"],
                    side,
                    lambda side=side: measure_cli_many(side, plan),
                )
            elif group == "logs":
                record(
                    group,
                    ["logs_peak_rss_mb", "logs_read_s"],
                    side,
                    lambda side=side: measure_logs(side, plan),
                )
            elif group == "docker":
                assert engine is not None
                describe_keys = ["docker_describe_median_ms", "docker_describe_p95_ms"]
                schedule_keys = ["docker_schedule_ms", "docker_run_ms", "docker_overhead_ms"]
                if not engine.ok:
                    # the reason is given once, in the first row's notes
                    for name, keys, say_why in (
                        ("docker_describe", describe_keys, True),
                        ("docker_schedule", schedule_keys, False),
                        ("docker_left", ["docker_left"], False),
                    ):
                        record(
                            name,
                            keys,
                            side,
                            lambda keys=keys, say_why=say_why: skipped(keys, engine.why, say_why),
                        )
                    continue
                try:
                    before = {c["id"] for c in docker_containers(engine)}
                except BenchError as exc:
                    before = set()
                    log(f"[docker] listing containers failed: {exc}")
                record(
                    "docker_describe",
                    describe_keys,
                    side,
                    lambda side=side: measure_docker_describe(side, plan),
                )
                record(
                    "docker_schedule",
                    schedule_keys,
                    side,
                    lambda side=side: measure_docker_schedule(side, plan),
                )
                # runs even when the side is unavailable: it only lists what appeared
                record(
                    "docker_left",
                    ["docker_left"],
                    Side(side.name, side.python),
                    lambda before=before: measure_docker_leftovers(engine, before),
                )

    if "describe" in groups and len(plan.sizes) > 1:
        lo, hi = min(plan.sizes), max(plan.sizes)
        for side in sides:
            a = values.get(f"describe_{lo}_median_ms", {}).get(side.name)
            b = values.get(f"describe_{hi}_median_ms", {}).get(side.name)
            if a and b is not None:
                values.setdefault("describe_growth", {})[side.name] = b / a

    rows = [r for r in build_rows(plan) if _row_group(r.key) in groups]
    table_rows = []
    for row in rows:
        ours_v = values.get(row.key, {}).get("ours")
        peer_v = values.get(row.key, {}).get("peer")
        ratio = None
        if (
            isinstance(ours_v, (int, float))
            and isinstance(peer_v, (int, float))
            and not isinstance(ours_v, bool)
            and ours_v > 0
            and peer_v >= 0
        ):
            ratio = peer_v / ours_v
        status = ""
        if row.check is not None:
            if "ours" in errors.get(row.key, {}):
                status = "FAIL"
            elif ours_v == SKIPPED:
                status = "SKIP"
            elif ours_v is not None:
                try:
                    status = "PASS" if row.check(ours_v, values) else "FAIL"
                except TypeError:
                    status = "FAIL"
        table_rows.append(
            {
                "key": row.key,
                "label": row.label,
                "unit": row.unit,
                "ours": ours_v,
                "peer": peer_v,
                "ratio_peer_over_ours": ratio,
                "target_ours": row.target,
                "status": status,
                "notes": notes.get(row.key, {}),
                "errors": errors.get(row.key, {}),
            }
        )

    print_table(table_rows, plan, args.quick, load_start[0])

    report = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "duration_s": round(time.time() - started, 1),
            "quick": args.quick,
            "plan": plan.__dict__,
            "host": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "loadavg_start": load_start,
                "loadavg_end": os.getloadavg(),
            },
            "docker": {
                "ok": engine.ok,
                "why": engine.why,
                "via": engine.helper.name if engine.helper else None,
                "engine": engine.info,
            }
            if engine
            else None,
            "sides": {
                s.name: {"python": s.python, "info": s.info, "unavailable": s.unavailable}
                for s in sides
            },
        },
        "rows": table_rows,
        "raw": raw,
    }
    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(f"results written to {out_path} ({report['meta']['duration_s']} s)")
    return 0


def _row_group(key: str) -> str:
    if key.startswith("import"):
        return "import"
    if key.startswith("hello"):
        return "hello"
    if key.startswith("describe"):
        return "describe"
    if key.startswith("tp_"):
        return "throughput"
    if key.startswith("cli_"):
        return "cli"
    if key.startswith("docker_"):
        return "docker"
    if key.startswith("logs_"):
        return "logs"
    return "durability"


def print_table(rows: list[dict[str, Any]], plan: Plan, quick: bool, load: float) -> None:
    def cell(row: dict[str, Any], side: str) -> str:
        if side in row["errors"]:
            return "ERROR"
        return fmt(row[side])

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

    title = "nemo_run benchmark: ours vs nemo-run 0.11.1" + ("  [--quick]" if quick else "")
    print()
    print(title)
    if load >= 0.75:
        print(f"(machine busy at start: load average {load:.2f} on {os.cpu_count()} cpus)")
    print(render(header))
    print("  ".join("-" * w for w in widths))
    for line in body:
        print(render(line))
    extra = []
    for r in rows:
        parts = [f"{side}: {r['notes'][side]}" for side in ("ours", "peer") if side in r["notes"]]
        if parts:
            extra.append(f"  {r['key']:<26} " + " | ".join(parts))
    errs = []
    seen = set()
    for r in rows:
        for side, msg in r["errors"].items():
            if (side, msg) not in seen:
                seen.add((side, msg))
                errs.append(f"  {r['key']} [{side}]: {msg}")
    if extra:
        print("\nnotes:")
        print("\n".join(extra))
    if errs:
        print("\nerrors:")
        print("\n".join(errs))
    print()


if __name__ == "__main__":
    sys.exit(main())
