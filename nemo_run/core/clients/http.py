"""JSON over HTTP with a timeout on every call and retries only where retrying is safe.

Standard library only (`urllib`), so backends need no HTTP package. Retries use exponential
backoff with full jitter and honour `Retry-After`; they apply to 429, 5xx and connection
errors, and only when the caller marks the call idempotent.

A logical call (token, request and its retries) has one total deadline, by default
`DEADLINE_FACTOR` x the timeout: a stalled server makes a call give up in about twice the
timeout rather than retries x timeout, and no attempt waits past the deadline.
"""

from __future__ import annotations

import hashlib
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
DEADLINE_FACTOR = 2.0  # a logical call's total deadline, in timeouts
CREATE_CALLS = 4  # a create (tries and the lookups that settle them) gets this many call deadlines
MIN_ATTEMPT_S = 0.05  # an attempt with less time left than this is not started


class TransportError(BackendError):
    """No HTTP answer at all (refused, reset, timed out): the request may or may not have run."""


class UnconfirmedError(BackendError):
    """A create that may have taken effect but could not be confirmed either way."""


def is_transient(error: BaseException) -> bool:
    """True for an error that says nothing about the job: no answer, 408/429/5xx, or a
    failure without a status. A 4xx (404 included) is an answer and is not transient here."""
    if isinstance(error, TransportError):
        return True
    if not isinstance(error, BackendError):
        return False
    return error.status is None or error.status in (408, 429) or error.status >= 500


def fingerprint(secret: str) -> str:
    """A one-way identity for a secret, for in-memory cache keys only (never written anywhere),
    so a changed secret never reuses what the old one earned."""
    return hashlib.sha256(secret.encode()).hexdigest()


def deadline_after(timeout: float) -> float:
    """The monotonic time by which a logical call with this timeout must be over."""
    return time.monotonic() + DEADLINE_FACTOR * timeout


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
                [
                    (k, v)
                    for k, vs in query.items()
                    if vs is not None
                    for v in (vs if isinstance(vs, (list, tuple)) else [vs])
                ]
            )
        return url

    def deadline(self) -> float:
        return deadline_after(self.timeout)

    def once(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        text: bool = False,
    ) -> tuple[int, Any, dict[str, str]]:
        """One attempt: (status, JSON body or None, headers); TransportError without an answer.
        With `text=True` a successful body is returned as text (e.g. a log), not parsed."""
        data = None if body is None else json.dumps(body).encode()
        accept = "text/plain, application/json" if text else "application/json"
        request = urllib.request.Request(
            self.url(path, query),
            data=data,
            method=method,
            headers={"Accept": accept, **(headers or {})},
        )
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
        if text and status < 400:
            return status, raw.decode(errors="replace"), head
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = {"message": raw.decode(errors="replace")[:500]}
        return status, parsed, head

    def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        deadline: float | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        """Retry 429/5xx/transport errors for idempotent calls while the deadline allows;
        return the final (status, body). Each attempt waits at most min(timeout, time left)."""
        deadline = deadline if deadline is not None else self.deadline()
        per_attempt = timeout or self.timeout
        attempt, failure = 0, None
        while True:
            left = deadline - time.monotonic()
            if left < MIN_ATTEMPT_S:
                raise TransportError(
                    f"{method} {self.url(path)}: no answer within the "
                    f"{DEADLINE_FACTOR * self.timeout:.1f} s deadline"
                    + (f" ({failure})" if failure else "")
                ) from failure
            try:
                status, parsed, head = self.once(
                    method, path, timeout=min(per_attempt, left), **kwargs
                )
                failure = None
            except TransportError as e:
                if not idempotent or attempt + 1 >= self.retry.attempts:
                    raise
                status, parsed, head, failure = None, None, {}, e
            if status is not None and (
                status not in RETRYABLE_STATUS
                or not idempotent
                or attempt + 1 >= self.retry.attempts
            ):
                return status, parsed
            pause = self.retry.delay(attempt, _retry_after(head))
            if time.monotonic() + pause + MIN_ATTEMPT_S >= deadline:
                if status is None:  # no answer, and no time for another try: report the failure
                    raise TransportError(
                        f"{method} {self.url(path)}: no answer within the "
                        f"{DEADLINE_FACTOR * self.timeout:.1f} s deadline ({failure})"
                    ) from failure
                return status, parsed
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
