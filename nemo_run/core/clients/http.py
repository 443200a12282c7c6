"""JSON over HTTP with a timeout on every call and retries only where retrying is safe.

Standard library only (`urllib`), so backends need no HTTP package. Retries use exponential
backoff with full jitter and honour `Retry-After`; they apply to 429, 5xx and connection
errors, and only when the caller marks the call idempotent.
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from nemo_run.exceptions import BackendError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class TransportError(BackendError):
    """No HTTP answer at all (refused, reset, timed out): the request may or may not have run."""


@dataclass
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay * 4)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


@dataclass
class JsonHttp:
    """One base URL; `request` returns (status, parsed JSON or None)."""

    base_url: str
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Any = time.sleep  # replaceable in unit tests

    def url(self, path: str, query: dict[str, Any] | None = None) -> str:
        url = self.base_url.rstrip("/") + "/" + path.lstrip("/")
        if query:
            url += "?" + urllib.parse.urlencode(
                [(k, v) for k, vs in query.items() if vs is not None
                 for v in (vs if isinstance(vs, (list, tuple)) else [vs])])
        return url

    def once(self, method: str, path: str, *, body: Any = None, query: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None, timeout: float | None = None) -> tuple[int, Any, dict[str, str]]:
        """One attempt: (status, JSON body or None, headers); TransportError without an answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url(path, query), data=data, method=method,
                                         headers={"Accept": "application/json", **(headers or {})})
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                raw, status, head = response.read(), response.status, dict(response.headers)
        except urllib.error.HTTPError as e:
            raw, status, head = e.read(), e.code, dict(e.headers or {})
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TransportError(f"{method} {self.url(path)}: no answer ({reason})") from e
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = {"message": raw.decode(errors="replace")[:500]}
        return status, parsed, head

    def request(self, method: str, path: str, *, idempotent: bool, **kwargs: Any) -> tuple[int, Any]:
        """Retry 429/5xx/transport errors for idempotent calls; return the final (status, body)."""
        attempt = 0
        while True:
            try:
                status, parsed, head = self.once(method, path, **kwargs)
            except TransportError:
                if not idempotent or attempt + 1 >= self.retry.attempts:
                    raise
                status, parsed, head = None, None, {}
            if status is not None and (status not in RETRYABLE_STATUS or not idempotent
                                       or attempt + 1 >= self.retry.attempts):
                return status, parsed
            retry_after = _retry_after(head)
            pause = self.retry.delay(attempt, retry_after)
            log.debug("%s %s -> %s; retrying in %.2f s", method, path, status or "no answer", pause)
            self.sleep(pause)
            attempt += 1


def _retry_after(headers: dict[str, str]) -> float | None:
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def error_message(status: int, body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("message") or body.get("details") or body)
    return f"HTTP {status}"
