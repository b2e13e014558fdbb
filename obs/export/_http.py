"""POSTing an export with the OTLP specification's retry rules, within one deadline.

`HttpSender.post(body, headers)` tries until it gets an answer it should
not retry, runs out of attempts, or would pass the deadline:

- retried: HTTP 429, 502, 503, 504 and lost connections (refused, reset,
  closed before the answer); nothing else (400, 401, 413, 500, ... are final);
- the wait before a retry is the answer's `Retry-After` (seconds or an
  HTTP-date) when it has one, else exponential backoff with jitter
  (`initial_backoff_s * 2**retry`, capped at `max_backoff_s`, times a
  factor in [0.8, 1.2) drawn from `random`); a wait that would end past the
  deadline is not waited: the export fails at once;
- the deadline (`timeout_s` from the start of the export) holds for every
  attempt as a whole, connecting, sending and reading the answer, however
  slowly the server trickles: a timer shuts the socket down when it passes.

`sleep`, `random` and `monotonic` (the clock the deadline is kept on) are
injectable so tests are exact; the default sleep returns early when the
sender is closed. Secrets (header values of 4 characters or more, the URL's
user info and query values) are masked in every message this module makes,
whole, escaped, or cut short.
"""

from __future__ import annotations

import contextlib
import email.utils
import random as _random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from obs._deadline import CuttableRequest
from obs._validate import redact_url, url_secrets
from obs.llm._redaction import Redactor

__all__ = ["RETRY_STATUSES", "HttpSender", "PostOutcome", "retry_after_s"]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
_MAX_BODY = 64 * 1024  # of an answer, read for its error message or partial success
_MIN_SECRET = 4


@dataclass(frozen=True, slots=True)
class PostOutcome:
    """How a POST ended: the final answer (or None), its body, how many retries it took, what went wrong."""

    response: httpx.Response | None
    body: bytes
    retries: int
    error: str | None

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return self.response is not None and self.response.is_success


def retry_after_s(value: str | None, now: float) -> float | None:
    """A `Retry-After` header as seconds to wait from `now` (epoch seconds), or None if absent or unreadable.

    Seconds (`120`) or an HTTP-date; a date in the past is 0.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


class HttpSender:
    """POSTs bodies to one URL with retries and a deadline (see the module docstring). Thread-safe."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        timeout_s: float,
        *,
        max_retries: int = 6,
        initial_backoff_s: float = 1.0,
        max_backoff_s: float = 32.0,
        sleep: Callable[[float], Any] | None = None,
        random: Callable[[], float] = _random.random,
        monotonic: Callable[[], float] = time.monotonic,
        user_agent: str = "obs",
    ) -> None:
        """Send to `url` with `headers`; arguments are checked by the exporters that make one."""
        self.url = url
        self.shown_url = redact_url(url)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self._headers = {"user-agent": user_agent, **headers}
        # Values of 1-3 characters are no secret and would mask every "1" or "ok" in a message.
        self.redact = Redactor([v for v in headers.values() if len(v) >= _MIN_SECRET] + url_secrets(url))
        self._closed = threading.Event()
        self._sleep = sleep if sleep is not None else self._closed.wait
        self._random = random
        self._monotonic = monotonic
        # No kept-alive connections: each attempt connects anew, so its socket is known and the
        # deadline can cut it; an export every few seconds pays one connect for that.
        self._client = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), follow_redirects=False)

    def post(self, body: bytes, headers: Mapping[str, str]) -> PostOutcome:
        """POST `body` with these extra headers, retrying as the module docstring says. Never raises."""
        deadline = self._monotonic() + self.timeout_s
        request_headers = {**self._headers, **headers}
        retries = 0
        while True:
            if self._closed.is_set():
                return PostOutcome(None, b"", retries, "the exporter was shut down")
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                error = f"no answer within the export timeout ({self.timeout_s:g} s)"
                return PostOutcome(None, b"", retries, error)
            response, answer, error, retryable = self._attempt(body, request_headers, remaining)
            if response is not None and not retryable:
                return PostOutcome(response, answer, retries, None if response.is_success else error)
            if not retryable:
                return PostOutcome(response, answer, retries, error)
            if retries >= self.max_retries:
                return PostOutcome(response, answer, retries, f"{error}; gave up after {retries} retries")
            wait = None
            if response is not None:
                wait = retry_after_s(response.headers.get("retry-after"), time.time())
            if wait is None:
                base = min(self.max_backoff_s, self.initial_backoff_s * 2**retries)
                wait = base * (0.8 + 0.4 * self._random())
            if self._monotonic() + wait > deadline:
                return PostOutcome(
                    response, answer, retries,
                    f"{error}; a retry in {wait:.3g} s would pass the export timeout ({self.timeout_s:g} s)",
                )
            retries += 1
            self._sleep(wait)

    def _attempt(
        self, body: bytes, headers: Mapping[str, str], remaining: float
    ) -> tuple[httpx.Response | None, bytes, str | None, bool]:
        """One POST: (answer, its body, what went wrong, whether to retry)."""
        attempt = CuttableRequest()
        try:
            with attempt.deadline(remaining), self._client.stream(
                "POST", self.url, content=body, headers=headers, timeout=remaining,
                extensions={"trace": attempt.trace},
            ) as response:
                answer = _read_capped(response.iter_bytes(), _MAX_BODY)
        except httpx.TimeoutException:
            return None, b"", f"no answer within the export timeout ({self.timeout_s:g} s)", False
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            if attempt.cut:
                return None, b"", f"no answer in full within the export timeout ({self.timeout_s:g} s)", False
            return None, b"", self.redact(f"{type(exc).__name__}: {exc}"), True
        except httpx.HTTPError as exc:
            return None, b"", self.redact(f"{type(exc).__name__}: {exc}"), False
        status = response.status_code
        if response.is_success:
            return response, answer, None, False
        return response, answer, f"HTTP {status}", status in RETRY_STATUSES

    def close(self) -> None:
        """Stop: waits end at once, later posts fail, the connection pool is closed."""
        self._closed.set()
        with contextlib.suppress(Exception):
            self._client.close()


def _read_capped(chunks: Iterable[bytes], limit: int) -> bytes:
    out = bytearray()
    for chunk in chunks:
        out += chunk[: limit - len(out)]
        if len(out) >= limit:
            break
    return bytes(out)
