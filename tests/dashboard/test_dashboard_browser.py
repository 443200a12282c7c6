"""`nemorun dashboard` in a real browser: Debian's headless Chromium driven through
chromedriver's WebDriver HTTP API (a few calls, no client library), against the server
running as a separate process on a home with real local, Docker and DGX (emulator) jobs."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import nemo_run as run
from nemo_run.core.store import get_store
from tests.helpers import REPO, wait_for

DOCS = Path(REPO) / "docs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser_or_skip() -> tuple[str, str]:
    reason = os.environ.get("NEMORUN_TEST_BROWSER_SKIP")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not reason and not (chromium and driver):
        reason = "no chromium/chromedriver: run scripts/browser-up.sh (scripts/test.sh does)"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires the browser tests to run: {reason}")
        pytest.skip(reason)
    return chromium, driver  # type: ignore[return-value]


class Browser:
    """The few WebDriver calls the tests need."""

    def __init__(self, driver_url: str, chromium: str) -> None:
        self.url = driver_url
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--window-size=1280,860",
                ],
            },
        }
        self.sid = self.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})[
            "sessionId"
        ]

    def call(self, method: str, path: str, body: object = None) -> object:
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"webdriver {method} {path}: {e.read()[:500]!r}") from e

    def session(self, method: str, path: str, body: object = None) -> object:
        return self.call(method, f"/session/{self.sid}{path}", body)

    def get(self, url: str) -> None:
        self.session("POST", "/url", {"url": url})

    def js(self, script: str, *args: object) -> object:
        return self.session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def text(self, selector: str) -> str:
        return self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            selector,
        )  # type: ignore[return-value]

    def click(self, selector: str) -> None:
        found = self.session("POST", "/element", {"using": "css selector", "value": selector})
        assert isinstance(found, dict), found
        element = next(iter(found.values()))  # the one key of a W3C element reference
        self.session("POST", f"/element/{element}/click")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.session("GET", "/screenshot")))  # type: ignore[arg-type]

    def quit(self) -> None:
        self.session("DELETE", "")


@pytest.fixture(scope="module")
def browser():
    chromium, driver = browser_or_skip()
    port = free_port()
    proc = subprocess.Popen(
        [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url + "/status", timeout=2) as r:
                return json.loads(r.read())["value"]["ready"]
        except OSError:
            return False

    wait_for(ready, timeout=20, what="chromedriver")
    b = Browser(url, chromium)
    yield b
    b.quit()
    proc.terminate()
    proc.wait(timeout=20)


def start_dashboard(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """`nemorun dashboard ARGS` as a process; (process, the URL it printed)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nemo_run.cli.nemorun", "dashboard", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    found = re.search(r"(http://\S+)", line)
    if not found:
        proc.kill()
        raise AssertionError(f"dashboard did not start: {line!r}{proc.stdout.read()}")  # type: ignore[union-attr]
    return proc, found.group(1)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=20)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=10
        ) as r:
            return r.status, r.read(200).decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def launch_jobs(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, object]:
    """Local jobs (a DAG with a failure, a job waiting on a file), a Docker job, a DGX job."""
    dag = run.Experiment("dag", executor=run.LocalExecutor())
    dag.add(run.Script(inline="echo first"), name="prepare")
    dag.add(run.Script(inline="echo training; exit 3"), name="train", dependencies=["prepare"])
    dag.add(run.Script(inline="echo eval"), name="evaluate", dependencies=["prepare"])
    dag.run(detach=True)
    gate, hold = tmp_path / "gate", tmp_path / "hold"
    script = (
        f"echo 'line one'; while [ ! -e {gate} ]; do sleep 0.05; done; echo 'line two'; "
        f"while [ ! -e {hold} ]; do sleep 0.05; done"
    )
    follow = run.Experiment("follow", executor=run.LocalExecutor())
    follow.add(run.Script(inline=script), name="printer")
    follow.run(detach=True)
    out: dict[str, object] = {"dag": dag, "follow": follow, "gate": gate, "experiments": 2}
    try:
        image = request.getfixturevalue("docker_image")
    except pytest.skip.Exception:
        image = None
    if image:
        docker = run.Experiment(
            "in-docker", executor=run.DockerExecutor(container_image=image, packager=run.Packager())
        )
        docker.add(run.Script(inline="echo from docker"), name="boxed")
        docker.run(detach=True)
        out["docker"], out["experiments"] = docker, int(out["experiments"]) + 1  # type: ignore[call-overload]
    return out


@pytest.fixture
def dgx(tmp_path, monkeypatch):
    """The Run:ai emulator (subprocess mode) and credentials for it in this environment."""
    from tests.run.torchx_backend.schedulers.test_dgxcloud import CLIENT, SECRET, Emulator

    data_dir = tmp_path / "runai"
    data_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nemo_run.testing.dgxcloud", "--port", "0", "--data-dir", str(data_dir),
         "--mode", "subprocess", "--client-id", CLIENT, "--project", "nemo-project"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
        env={**os.environ, "RUNAI_EMULATOR_CLIENT_SECRET": SECRET},
    )  # fmt: skip
    line = proc.stdout.readline().strip()  # type: ignore[union-attr]
    assert line.startswith("RUNAI_EMULATOR_URL="), line
    emulator = Emulator(line.split("=", 1)[1], str(data_dir), proc, "subprocess")
    monkeypatch.setenv("DGX_CLOUD_BASE_URL", emulator.api)
    monkeypatch.setenv("DGX_CLOUD_CLIENT_ID", CLIENT)
    monkeypatch.setenv("DGX_CLOUD_CLIENT_SECRET", SECRET)
    yield emulator
    proc.terminate()
    proc.wait(timeout=30)


def test_pages_logs_and_cancel_in_a_browser(browser, dgx, tmp_path, request):
    from tests.run.torchx_backend.schedulers.test_dgxcloud import local_pvc_executor

    jobs = launch_jobs(tmp_path, request)
    remote = run.Experiment("on-dgx", executor=local_pvc_executor(dgx))
    remote.add(run.Script(inline="echo from dgx"), name="remote")
    remote.run(detach=True)
    total = int(jobs["experiments"]) + 1  # type: ignore[call-overload]
    proc, url = start_dashboard("--port", str(free_port()))
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        dag = jobs["dag"]
        dag.wait(timeout=60)  # type: ignore[attr-defined]
        # the list: every experiment, with the DAG's counts by state
        browser.get(url)
        wait_for(lambda: browser.text("#total") == str(total), timeout=15, what="experiment count")
        row = f'tr[data-id="{dag.id}"] .counts'  # type: ignore[attr-defined]
        wait_for(
            lambda: browser.text(row) == "FAILED 1SUCCEEDED 2", timeout=15, what=browser.text(row)
        )
        for exp in (remote, jobs.get("docker")):
            if exp is not None:  # remote and Docker jobs refresh to their end by themselves
                cell = f'tr[data-id="{exp.id}"] .counts'
                wait_for(
                    lambda cell=cell: browser.text(cell) == "SUCCEEDED 1", timeout=60, what=cell
                )
        browser.screenshot(shots / "dashboard-list.png")
        # one experiment: DAG boxes and arrows, task table, timeline
        browser.get(f"{url}experiment/{dag.id}")  # type: ignore[attr-defined]
        assert browser.js("return document.querySelectorAll('svg.dag .node').length") == 3
        assert browser.js("return document.querySelectorAll('svg.dag .edge').length") == 2
        assert browser.js("return document.querySelectorAll('svg.timeline rect.run').length") == 3
        assert "3" in browser.text('tr[data-task="train"]')  # its exit code
        browser.screenshot(shots / "dashboard-experiment.png")
        # one job: lines appear as they are printed, then cancel it from the page
        follow = jobs["follow"]
        handle = follow.status(return_dict=True)["printer"]["handle"]  # type: ignore[attr-defined]
        browser.get(f"{url}job?handle={handle}")
        wait_for(lambda: "line one" in browser.text("#log"), timeout=20, what="the first line")
        assert "line two" not in browser.text("#log")
        Path(jobs["gate"]).touch()  # type: ignore[arg-type]
        wait_for(lambda: "line two" in browser.text("#log"), timeout=20, what="the second line")
        browser.screenshot(shots / "dashboard-job.png")
        browser.click("button[data-confirm]")
        browser.click("dialog[open] button[type=submit]")
        backend, _, app_id = handle.partition("://")
        app_id = app_id.rsplit("/", 1)[-1]
        wait_for(
            lambda: get_store().get(backend, app_id).state == "CANCELLED",
            timeout=20,
            what="cancelled",
        )
        wait_for(
            lambda: "CANCELLED" in browser.text("[data-live]"), timeout=20, what="the page's state"
        )
        wait_for(
            lambda: browser.text("#logstate") == "ended: CANCELLED",
            timeout=20,
            what="the log stream's end",
        )
    finally:
        stop(proc)
    if os.environ.get("NEMORUN_UPDATE_SCREENSHOTS") == "1":  # refresh the README's pictures
        for shot in shots.iterdir():
            shutil.copy(shot, DOCS / shot.name)
    assert all(
        (shots / f"dashboard-{p}.png").stat().st_size > 10_000
        for p in ("list", "experiment", "job")
    )


def test_read_only_mode_has_no_cancel(browser, tmp_path):
    follow = run.Experiment("ro", executor=run.LocalExecutor())
    follow.add(
        run.Script(inline=f"while [ ! -e {tmp_path / 'stop'} ]; do sleep 0.05; done"), name="wait"
    )
    follow.run(detach=True)
    proc, url = start_dashboard("--port", str(free_port()), "--read-only")
    try:
        browser.get(f"{url}experiment/{follow.id}")
        wait_for(lambda: "RUNNING" in browser.text("[data-live]"), timeout=15, what="RUNNING")
        assert browser.js("return document.querySelectorAll('button[data-confirm]').length") == 0
        handle = follow.status(return_dict=True)["wait"]["handle"]
        request = urllib.request.Request(
            f"{url}cancel", data=f"handle={handle}".encode(), method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
        assert follow.status(return_dict=True)["wait"]["state"] == "RUNNING"
    finally:
        stop(proc)
        (tmp_path / "stop").touch()


def test_beyond_loopback_every_request_needs_the_token():
    port = free_port()
    proc, url = start_dashboard("--host", "0.0.0.0", "--port", str(port))
    try:
        token = url.split("?token=", 1)[1]
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: fetch(f"{base}/healthz?token={token}")[0] == 200, timeout=10, what="up")
        for path in (
            "/",
            "/healthz",
            "/logs?handle=local_persistent://nemo_run/x",
            "/static/dashboard.js",
        ):
            status, body = fetch(base + path)
            assert status == 401 and "token" in body, (path, status)
        assert fetch(f"{base}/?token=wrong")[0] == 401
        assert fetch(base + "/", {"Authorization": f"Bearer {token}"})[0] == 200
        assert fetch(base + "/", {"Cookie": f"nemorun_dashboard_token={token}"})[0] == 200
    finally:
        stop(proc)


def test_loopback_refuses_a_foreign_host_header():
    proc, url = start_dashboard("--port", str(free_port()))
    try:
        assert fetch(url + "healthz")[0] == 200
        assert fetch(url + "healthz", {"Host": "attacker.example"})[0] == 403
    finally:
        stop(proc)
