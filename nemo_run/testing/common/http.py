"""The HTTP side shared by the emulators: replies, the request handler and ``/_emulator``.

An emulator subclasses ``EmulatorBase`` (counters, fault rules and the control endpoints
``/_emulator/faults``, ``/_emulator/state`` and ``/_emulator/reset``) and ``Handler`` (only
``server_version`` differs); ``EmulatorHTTPServer`` serves one emulator.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from nemo_run.testing.common.faults import FaultRule, parse_fault_rule, take_fault
from nemo_run.testing.common.manager import ManagerBase

MAX_BODY_BYTES = 1_572_864  # 1.5 MiB: larger request bodies get 413
MAX_DRAIN_BYTES = 64 * 1024 * 1024  # past this an oversized body is not even read


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterator[bytes] | None = None  # a text/plain body sent chunked


class EmulatorError(Exception):
    """An error reply in an emulated API's own error shape."""

    def response(self) -> Response:
        raise NotImplementedError


class EmulatorBase:
    """Request counters, fault rules and the ``/_emulator`` control endpoints.

    A subclass sets ``config`` (with ``verbose``) and ``manager`` (with ``reset``), calls
    ``init_common()``, and supplies ``request_key``, ``respond``, ``error`` (an exception
    in its API's error shape, with a ``response()``), ``fault_body`` and ``state``.
    """

    api_error: type[EmulatorError] = EmulatorError
    framing_error_body: dict = {}
    manager: ManagerBase

    def init_common(self) -> None:
        self.lock = threading.RLock()
        self.faults: list[FaultRule] = []
        self._fault_ids = 0
        self.requests: Counter[str] = Counter()
        self.responses: Counter[str] = Counter()

    # -- what a subclass supplies ---------------------------------------------------------------
    def request_key(self, method: str, path: str) -> str:
        """The counter key of a request: ``METHOD <route template or path>``."""
        raise NotImplementedError

    def respond(
        self, method: str, path: str, query: str, headers, body: bytes | None, too_large: bool
    ) -> Response:
        raise NotImplementedError

    def error(self, status: int, message: str, headers: dict[str, str] | None = None):
        """An ``api_error`` to raise, in the API's error shape."""
        raise NotImplementedError

    def fault_body(self, status: int, message: str) -> dict:
        raise NotImplementedError

    def state(self) -> dict:
        raise NotImplementedError

    def fault_paths(self, path: str) -> tuple[str, ...]:
        """The paths a fault rule's ``path_prefix`` is tried against."""
        return (path,)

    def control_extra(self, method: str, path: str, body: bytes | None) -> Response | None:
        """Further control endpoints; None when ``method path`` is not one."""
        return None

    def reset_extra(self) -> None:
        """Forget what else ``/_emulator/reset`` clears (called with ``lock`` held)."""

    # -- counters and faults ----------------------------------------------------------------------
    def count_request(self, key: str) -> None:
        with self.lock:
            self.requests[key] += 1

    def count_response(self, key: str, status: int | str) -> None:
        with self.lock:
            self.responses[f"{key} {status}"] += 1

    def take_fault(self, method: str, path: str) -> FaultRule | None:
        paths = self.fault_paths(path)
        with self.lock:
            return take_fault(self.faults, method, paths)

    def fault_response(self, action: dict) -> Response:
        status = int(action["status"])
        message = action.get("message") or f"injected fault: HTTP {status}"
        response = Response(status, self.fault_body(status, message))
        if "retry_after" in action:
            retry = float(action["retry_after"])
            response.headers["Retry-After"] = str(int(retry) if retry.is_integer() else retry)
        return response

    # -- control endpoints ------------------------------------------------------------------------
    def control(self, method: str, path: str, body: bytes | None) -> Response:
        try:
            return self._control(method, path.rstrip("/"), body)
        except self.api_error as e:
            return e.response()

    def _control(self, method: str, path: str, body: bytes | None) -> Response:
        if path == "/_emulator/faults":
            return self._control_faults(method, body)
        extra = self.control_extra(method, path, body)
        if extra is not None:
            return extra
        if path == "/_emulator/state" and method == "GET":
            return Response(200, self.state())
        if path == "/_emulator/reset" and method == "POST":
            self.manager.reset()
            with self.lock:
                self.requests.clear()
                self.responses.clear()
                self.faults.clear()
                self.reset_extra()
            return Response(200, {"reset": True})
        raise self.error(404, f"no emulator control endpoint {method} {path}")

    def _control_faults(self, method: str, body: bytes | None) -> Response:
        if method == "GET":
            with self.lock:
                return Response(200, {"faults": [r.to_json() for r in self.faults]})
        if method == "DELETE":
            with self.lock:
                cleared = len(self.faults)
                self.faults.clear()
            return Response(200, {"cleared": cleared})
        if method == "POST":
            try:
                raw = json.loads(body or b"null")
            except json.JSONDecodeError as e:
                raise self.error(400, f"fault rules are not JSON: {e}") from e
            with self.lock:
                rules = []
                try:
                    for item in raw if isinstance(raw, list) else [raw]:
                        self._fault_ids += 1
                        rules.append(parse_fault_rule(item, self._fault_ids))
                except ValueError as e:
                    raise self.error(400, f"bad fault rule: {e}") from e
                self.faults.extend(rules)
                return Response(200, {"faults": [r.to_json() for r in self.faults]})
        raise self.error(405, "use GET, POST or DELETE", {"Allow": "GET, POST, DELETE"})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # keep-alive clients (requests) would otherwise wait ~40 ms per reply: Nagle holds the body
    # until the headers are ACKed, and the client delays that ACK
    disable_nagle_algorithm = True
    server_version = "Emulator/1.0"
    timeout = 120  # seconds a connection may sit idle or half-sent before it is closed
    # send a reply's own headers before Content-Type and Content-Length (else after them)
    reply_headers_first = False
    server: EmulatorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        if self.server.emulator.config.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:  # noqa: N802 - http.server names
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET  # noqa: N815

    # -- body -----------------------------------------------------------------------------------
    def _read_body(self) -> tuple[bytes | None, bool]:
        """The request body, and whether it went over the limit (then it is drained, not kept)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if not length:
            return None, False
        size = int(length)
        if size > MAX_BODY_BYTES:
            if size > MAX_DRAIN_BYTES:
                self.close_connection = True
                return None, True
            remaining = size
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
            return None, True
        return self.rfile.read(size), False

    def _read_chunked(self) -> tuple[bytes | None, bool]:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline(65537).strip().split(b";", 1)[0] or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537).strip():  # trailers
                    pass
                break
            data = self.rfile.read(size)
            self.rfile.readline()
            total += size
            if total > MAX_DRAIN_BYTES:
                self.close_connection = True
                return None, True
            if total <= MAX_BODY_BYTES:
                parts.append(data)
        return (None, True) if total > MAX_BODY_BYTES else (b"".join(parts), False)

    # -- replies ----------------------------------------------------------------------------------
    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            if self.reply_headers_first or response.stream is not None:
                for name, value in response.headers.items():
                    self.send_header(name, value)
            if response.stream is not None:
                self._send_stream(response.stream)
                return
            data = b"" if response.body is None else json.dumps(response.body).encode()
            if response.body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if not self.reply_headers_first:
                for name, value in response.headers.items():
                    self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_stream(self, stream: Iterator[bytes]) -> None:
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in stream:
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _dispatch(self) -> None:
        emulator = self.server.emulator
        url = urlsplit(self.path)
        method = self.command.upper()
        try:
            body, too_large = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send(Response(400, dict(emulator.framing_error_body)))
            return
        if url.path == "/_emulator" or url.path.startswith("/_emulator/"):
            self._send(emulator.control(method, url.path, body))
            return
        key = emulator.request_key(method, url.path)
        emulator.count_request(key)
        rule = emulator.take_fault(method, url.path)
        action = rule.action if rule else {}
        if action.get("delay"):
            time.sleep(float(action["delay"]))
        if action.get("drop"):
            emulator.count_response(key, "dropped")
            self._drop()
            return
        if "body" in action:
            response = Response(int(action.get("status", 200)), action["body"])
        elif "status" in action:
            response = emulator.fault_response(action)
        else:
            response = emulator.respond(method, url.path, url.query, self.headers, body, too_large)
        if action.get("delay_after_commit"):
            time.sleep(float(action["delay_after_commit"]))
        if action.get("drop_after_commit"):
            emulator.count_response(key, "dropped")
            self._drop()
            return
        emulator.count_response(key, response.status)
        self._send(response)


class EmulatorHTTPServer(ThreadingHTTPServer):
    """Serves one emulator; tells it its address through ``emulator.bound(host, port)``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: Any, handler: type[Handler]):
        super().__init__(address, handler)
        self.emulator = emulator
        host, port = self.server_address[:2]
        emulator.bound(host, port)
