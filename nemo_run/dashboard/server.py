"""`nemorun dashboard`: the web server (Starlette on uvicorn, the `dashboard` extra).

Security: bound to loopback by default, where only a loopback Host header is served (no DNS
rebinding). Any other address needs the token printed once at start, checked on every request
(the log stream included) from a header, `?token=` (which sets an HttpOnly cookie) or that
cookie. Cancelling is a POST carrying the page's CSRF value from the same origin, and is
refused in `--read-only` mode.

Data: pages read the experiment index and the job store only. One `Refresher` thread keeps the
index current and polls the unfinished jobs some page showed lately through the shared poller
(one watcher per backend, batched), which records their states in the store: a browser
request never calls a backend, except opening a log stream.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import secrets
import socket
import threading
import time
import webbrowser
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlparse

from torchx.schedulers.api import Stream

from nemo_run.config import get_nemorun_home
from nemo_run.core.redact import redact_text
from nemo_run.core.states import FINAL_JOB_STATES
from nemo_run.core.store import get_store
from nemo_run.dashboard import pages
from nemo_run.dashboard.index import ExperimentIndex
from nemo_run.dashboard.views import Interest, Views
from nemo_run.exceptions import (
    ConfigError,
    MissingDependencyError,
    NemoRunError,
    UnknownExperimentError,
    UnknownJobError,
)
from nemo_run.run.experiment import Experiment
from nemo_run.run.job import job_log_lines, parse_handle
from nemo_run.run.torchx_backend.poller import poll_handles
from nemo_run.run.torchx_backend.runner import get_runner

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import (
        HTMLResponse,
        PlainTextResponse,
        RedirectResponse,
        Response,
        StreamingResponse,
    )
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ImportError as e:  # pragma: no cover - exercised without the extra installed
    raise MissingDependencyError(
        f"`nemorun dashboard` needs the dashboard extra ({e.name} is missing): "
        "pip install 'nemo_run[dashboard]'"
    ) from e

log = logging.getLogger(__name__)

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
TOKEN_COOKIE = "nemorun_dashboard_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
REFRESH_S = 1.0
KEEPALIVE_S = 15.0
Scope = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server reachable from this machine only."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Refresher(threading.Thread):
    """Keeps the index current and job states fresh in the store (through the poller)."""

    def __init__(self, index: ExperimentIndex, interest: Interest) -> None:
        super().__init__(daemon=True, name="dashboard-refresher")
        self.index, self.interest = index, interest
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(REFRESH_S):
            try:
                self.index.refresh()
                handles = self.interest.current()
                if handles:
                    poll_handles(handles)
            except Exception as e:  # noqa: BLE001 - a bad round must not stop later ones
                log.warning("dashboard refresh failed: %s", e)


class Guard:
    """ASGI middleware: the Host check on loopback, the token elsewhere."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.token is None:
            host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
            if host and not is_loopback(host) and host != "localhost":
                await PlainTextResponse("unknown Host header", status_code=403)(
                    scope, receive, send
                )
                return
            await self.app(scope, receive, send)
            return
        supplied, from_query = self._supplied(request)
        if supplied is None or not hmac.compare_digest(supplied.encode(), self.token.encode()):
            message = "token required: open the URL printed by `nemorun dashboard` (it ends in ?token=...)"
            await PlainTextResponse(message, status_code=401)(scope, receive, send)
            return
        if not from_query:
            await self.app(scope, receive, send)
            return

        async def with_cookie(message: Any) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, with_cookie)

    @staticmethod
    def _supplied(request: Request) -> tuple[str | None, bool]:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        if "x-nemorun-token" in request.headers:
            return request.headers["x-nemorun-token"], False
        if "token" in request.query_params:
            return request.query_params["token"], True
        return request.cookies.get(TOKEN_COOKIE), False


class Dashboard:
    """The routes, over one home folder's index and store."""

    def __init__(self, home: str, *, read_only: bool = False, token: str | None = None) -> None:
        self.home = home
        self.read_only = read_only
        self.token = token
        self.csrf = secrets.token_urlsafe(24)
        self.index = ExperimentIndex(home)
        self.interest = Interest()
        self.views = Views(self.index, self.interest)
        self.refresher = Refresher(self.index, self.interest)

    def app(self) -> ASGIApp:
        routes = [
            Route("/", self.list_page),
            Route("/experiment/{exp_id:path}", self.experiment_page),
            Route("/job", self.job_page),
            Route("/logs", self.logs),
            Route("/cancel", self.cancel, methods=["POST"]),
            Route("/healthz", self.healthz),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]
        return Guard(Starlette(routes=routes), self.token)

    def _html(self, title: str, body: str, status: int = 200) -> HTMLResponse:
        response = HTMLResponse(
            pages.layout(title, body, self.csrf, self.read_only), status_code=status
        )
        response.headers["cache-control"] = "no-store"
        response.headers["content-security-policy"] = (
            "default-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
        )
        response.headers["x-content-type-options"] = "nosniff"
        return response

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Store and file reads off the event loop, so a slow disk never stalls log streams."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- pages --------------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def list_page(self, request: Request) -> Response:
        q = request.query_params
        try:
            page = int(q.get("page") or 1)
            data = await self._run(
                self.views.experiments,
                q.get("title", ""),
                q.get("backend", ""),
                q.get("state", ""),
                page,
            )
        except (ConfigError, ValueError) as e:
            return self._html("Experiments", pages.error_page(str(e)), 400)
        return self._html("Experiments", pages.list_page(data))

    async def experiment_page(self, request: Request) -> Response:
        exp_id = request.path_params["exp_id"]
        try:
            record, rows = await self._run(self.views.experiment, exp_id)
        except UnknownExperimentError as e:
            return self._html("Experiment", pages.error_page(str(e).strip("'\"")), 404)
        body = pages.experiment_page(record, rows, self.csrf, self.read_only)
        return self._html(record.title, body)

    async def job_page(self, request: Request) -> Response:
        handle = request.query_params.get("handle", "")
        try:
            job = await self._run(self.views.job, handle)
        except (UnknownJobError, ConfigError) as e:
            return self._html("Job", pages.error_page(str(e).strip("'\"")), 404)
        return self._html("Job", pages.job_page(job, self.csrf, self.read_only))

    # -- logs ---------------------------------------------------------------------------
    async def logs(self, request: Request) -> Response:
        """Server-sent events: `data:` per line, then `event: end` with the job's state."""
        q = request.query_params
        handle = q.get("handle", "")
        try:
            scheduler, _, app_id = parse_handle(handle)
        except (UnknownJobError, ConfigError) as e:
            return PlainTextResponse(str(e), status_code=404)
        try:
            lines = _line_source(handle, q.get("replica", ""), q.get("stream", ""))
        except ConfigError as e:
            return PlainTextResponse(str(e), status_code=400)
        return StreamingResponse(
            self._events(lines, scheduler, app_id),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def _events(
        self, lines: Callable[[], Iterator[str]], scheduler: str, app_id: str
    ) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        stop = threading.Event()

        def pump() -> None:
            try:
                for line in lines():
                    if stop.is_set():
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, ("line", line))
            except (NemoRunError, OSError, ValueError) as e:
                loop.call_soon_threadsafe(queue.put_nowait, ("error", str(e)))
            except Exception as e:  # noqa: BLE001 - shown to the reader, never a dead stream
                loop.call_soon_threadsafe(queue.put_nowait, ("error", f"{type(e).__name__}: {e}"))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, ("end", ""))

        threading.Thread(target=pump, daemon=True, name=f"dashboard-logs-{app_id}").start()
        try:
            yield ": stream open\n\n"
            while True:
                try:
                    kind, text = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if kind == "line":
                    yield (
                        "".join(
                            f"data: {part}\n" for part in redact_text(text.rstrip("\n")).split("\n")
                        )
                        + "\n"
                    )
                elif kind == "error":
                    yield f"event: problem\ndata: {redact_text(text)}\n\n"
                else:
                    record = await self._run(get_store().get, scheduler, app_id)
                    state = record.state if record else "UNKNOWN"
                    yield f"event: end\ndata: {state}\n\n"
                    return
        finally:
            stop.set()  # the browser went away: the reader ends at its next line

    # -- cancel -------------------------------------------------------------------------
    async def cancel(self, request: Request) -> Response:
        """Cancel a job (`handle`) or every task of an experiment (`experiment`)."""
        if self.read_only:
            return PlainTextResponse("read-only dashboard: cancelling is off", status_code=403)
        origin = request.headers.get("origin") or request.headers.get("referer")
        host = request.headers.get("host", "")
        if origin and urlparse(origin).netloc != host:
            return PlainTextResponse("cross-origin request refused", status_code=403)
        form = {
            k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()
        }
        if not hmac.compare_digest(form.get("csrf", "").encode(), self.csrf.encode()):
            return PlainTextResponse(
                "stale or missing form value: reload the page", status_code=403
            )
        try:
            if "handle" in form:
                await self._run(_cancel_job, form["handle"])
                return RedirectResponse(pages.job_href(form["handle"]), status_code=303)
            if "experiment" in form:
                await self._run(
                    lambda: Experiment.from_id(form["experiment"], base_dir=self.home).cancel()
                )
                return RedirectResponse(pages.exp_href(form["experiment"]), status_code=303)
        except (NemoRunError, ValueError) as e:
            return PlainTextResponse(f"cancel failed: {e}", status_code=400)
        return PlainTextResponse("name a handle or an experiment to cancel", status_code=400)


def _cancel_job(handle: str) -> None:
    scheduler, _, app_id = parse_handle(handle)
    record = get_store().get(scheduler, app_id)
    if record is None:
        raise UnknownJobError(f"no record of {handle} in the job store")
    if record.state not in FINAL_JOB_STATES:
        get_runner().cancel(handle)


def _line_source(handle: str, replica: str, stream: str) -> Callable[[], Iterator[str]]:
    """What the log pump reads: every replica (job_log_lines), or one replica and stream."""
    if stream and stream not in ("stdout", "stderr"):
        raise ConfigError(f"stream {stream!r}: use stdout or stderr")
    if not replica and not stream:
        return lambda: job_log_lines(handle, follow=True)

    def one() -> Iterator[str]:
        runner = get_runner()
        role, k = replica.rsplit(":", 1) if replica else ("", "0")
        if not role:
            app = runner.describe(handle)
            if app is None or not app.roles:
                raise UnknownJobError(f"no record of {handle}")
            role = app.roles[0].name
        streams = {"stdout": Stream.STDOUT, "stderr": Stream.STDERR}.get(stream, Stream.COMBINED)
        yield from runner.log_lines(handle, role, int(k), should_tail=True, streams=streams)

    return one


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket (bound here so `--port 0` can print the port it got)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"--host {host} --port {port}: cannot listen there ({e.strerror}); pick another --port"
        ) from e
    sock.listen(128)
    return sock


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    open_browser: bool = False,
    read_only: bool = False,
    home: str | None = None,
) -> None:
    """Index the home folder, print the URL (with the token beyond loopback), serve."""
    if not (0 <= port <= 65535):
        raise ConfigError(f"--port {port}: use 0 (any free port) to 65535")
    home = os.path.abspath(home or get_nemorun_home())
    token = None if is_loopback(host) else secrets.token_urlsafe(24)
    sock = _bind(host, port)
    dashboard = Dashboard(home, read_only=read_only, token=token)
    started = time.monotonic()
    read = dashboard.index.refresh()
    dashboard.refresher.start()
    shown_host = socket.gethostname() if host in ("0.0.0.0", "::") else host
    bound = sock.getsockname()[1]
    url = f"http://{'[' + shown_host + ']' if ':' in shown_host else shown_host}:{bound}/"
    if token:
        url += f"?token={token}"
    print(
        f"nemorun dashboard: {url}  (home {home}, {read} experiment files indexed in "
        f"{time.monotonic() - started:.1f} s{', read-only' if read_only else ''}; Ctrl-C stops)",
        flush=True,
    )
    if open_browser:
        webbrowser.open(url)
    config = uvicorn.Config(
        dashboard.app(),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,  # open log streams never hold a stop up
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        dashboard.refresher.stop.set()
        sock.close()
