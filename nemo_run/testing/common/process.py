"""An emulator as a process of its own: starting one (``launch``) and serving one (``serve``)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path


def emulator_parser(prog: str, description: str, data_dir_help: str) -> argparse.ArgumentParser:
    """A parser with the options every emulator takes first: ``--host``, ``--port``,
    ``--data-dir``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--data-dir", type=Path, default=None, help=data_dir_help)
    return parser


def add_mode_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--mode auto|docker|subprocess``: how ``what`` (workloads, replicas) run."""
    parser.add_argument(
        "--mode",
        choices=("auto", "docker", "subprocess"),
        default="auto",
        help=f"how {what} run: docker containers, host processes, or auto (docker when an "
        "engine answers and the image is local)",
    )


class ProcessHandle:
    """``pid``, ``stop`` and the context manager of a launched emulator (``self.process``)."""

    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM the emulator (it cleans up what it runs) and wait; SIGKILL as a last resort."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_emulator(
    module: str,
    url_prefix: str,
    args: tuple[str, ...],
    data_dir: Path | str | None,
    env: dict[str, str],
    timeout: float,
    python: str | None,
    stderr,
) -> tuple[str, subprocess.Popen]:
    """Run ``python -m <module> --port 0 [--data-dir D] [args]``; its URL and the process."""
    argv = [python or sys.executable, "-m", module, "--port", "0"]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    argv += list(args)
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, env=env, text=True
    )
    found: list[str] = []
    stdout = proc.stdout
    if stdout is None:  # stdout=PIPE: never
        raise RuntimeError(f"no pipe from {module}")
    reader = threading.Thread(target=lambda: found.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    line = found[0].strip() if found else ""
    if not line.startswith(url_prefix):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the emulator did not print its URL (got {line!r}, argv {argv})")
    return line[len(url_prefix) :], proc


def environ_with(name: str, value: str | None) -> dict[str, str]:
    """``os.environ`` with ``name`` set to ``value`` (left as it is when None)."""
    env = dict(os.environ)
    if value is not None:
        env[name] = value
    return env


def serve(server, url_prefix: str) -> int:
    """Print ``<url_prefix><url>`` and serve until SIGTERM, SIGINT or SIGHUP; then clean up."""

    def stop(signum, frame) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    sys.stdout.write(f"{url_prefix}{server.emulator.url}\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        server.emulator.shutdown()
    return 0
