"""Alert notifiers: who hears that an alert rule started firing or resolved.

An `AlertEvent` says that a rule started firing or resolved; a notifier is
anything with `notify(event)` taking one. Three ship: `LoggerNotifier`
writes to an `LLMLogger`, `CallbackNotifier` calls a Python function, and
`WebhookNotifier` POSTs JSON from a background thread with a timeout and
retries. The `AlertManager` catches, logs and counts what a notifier raises;
the webhook raises nothing and counts its own failures.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import httpx

from obs._deadline import CuttableRequest
from obs._validate import is_finite_number, redact_text, redact_url

if TYPE_CHECKING:
    from obs.logs import LLMLogger

__all__ = ["AlertEvent", "CallbackNotifier", "LoggerNotifier", "Notifier", "WebhookNotifier"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """What notifiers receive: a rule started firing or resolved.

    `at` is when this notification was made (epoch s), `since` when the
    firing began; `message` is a one-line summary for people.
    """

    rule: str
    status: Literal["firing", "resolved"]
    metric: str
    op: str
    threshold: float
    value: float | None
    window_s: float
    request_count: int
    at: float
    since: float
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body a webhook receives: every field, `details` last."""
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        body["details"] = dict(self.details)
        return body


@runtime_checkable
class Notifier(Protocol):
    """Receives alert events. May raise: the manager catches, logs and counts it."""

    def notify(self, event: AlertEvent) -> None:
        """Deliver `event` (a rule started firing or resolved)."""
        ...


class LoggerNotifier:
    """Writes each event to an LLMLogger: firing as warn, resolved as info, the event as data."""

    def __init__(self, logger: LLMLogger) -> None:
        """Log to `logger` (anything with `warn(message, data)` and `info(message, data)`)."""
        if not (callable(getattr(logger, "warn", None)) and callable(getattr(logger, "info", None))):
            raise ValueError(
                f"LoggerNotifier: logger must have warn() and info(), e.g. LLMLogger; got {logger!r}"
            )
        self.logger = logger

    def notify(self, event: AlertEvent) -> None:
        """Log the event's message with the event as data."""
        if event.status == "firing":
            self.logger.warn(event.message, event.to_dict())
        else:
            self.logger.info(event.message, event.to_dict())

    def __repr__(self) -> str:
        return f"LoggerNotifier({self.logger!r})"


class CallbackNotifier:
    """Calls a Python function with each event."""

    def __init__(self, callback: Callable[[AlertEvent], Any]) -> None:
        """Call `callback(event)` for every event."""
        if not callable(callback):
            raise ValueError(f"CallbackNotifier: callback must be callable, got {callback!r}")
        self.callback = callback

    def notify(self, event: AlertEvent) -> None:
        """Call the callback with `event`."""
        self.callback(event)

    def __repr__(self) -> str:
        return f"CallbackNotifier({self.callback!r})"


_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class _HttpxLogRedactor(logging.Filter):
    """Masks webhook URL secrets in httpx's own log lines (it logs every request's full URL at INFO)."""

    def __init__(self) -> None:
        super().__init__("")
        self._lock = threading.Lock()
        self._urls: set[str] = set()

    def watch(self, url: str) -> None:
        """Mask the secrets of `url` from now on (kept for the life of the process: a few URLs at most)."""
        with self._lock:
            self._urls.add(url)
        logging.getLogger("httpx").addFilter(self)  # once: addFilter ignores a filter already there

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite `record` without the secrets; never drop it."""
        with self._lock:
            urls = list(self._urls)
        try:
            text = original = record.getMessage()
        except Exception:  # a record that cannot be formatted is the handler's business
            return True
        for url in urls:
            text = redact_text(text, url)
        if text != original:
            record.msg, record.args = text, ()
        return True


_HTTPX_LOG = _HttpxLogRedactor()


class WebhookNotifier:
    """POSTs each event as JSON to a URL, from a background thread, with a deadline and retries.

    `notify` only queues the event, so the application and the alert
    evaluation never wait for the network. Each delivery tries `retries + 1`
    times; an attempt (connect, send, and the answer's status line and
    headers) gets `timeout` seconds in all, however slowly the server
    trickles, so a delivery ends within `(retries + 1) * timeout` plus the
    backoff waits. The answer's body is not read. A connection error, a
    timeout, or HTTP 408/425/429/5xx is retried after `backoff * 2**attempt`
    seconds; any other non-2xx status is not. A delivery that fails for good,
    or an event dropped because `max_queue` events already wait, is logged
    (to `logger` if given, else Python logging) and counted in `failures`;
    nothing is raised. Secrets in the URL (user info, query values, token-like
    path segments) never appear in messages, logs or the repr: `url` is the
    redacted form.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.5,
        headers: Mapping[str, str] | None = None,
        max_queue: int = 100,
        logger: LLMLogger | None = None,
    ) -> None:
        """Send to `url` (http or https); invalid arguments raise ValueError naming them."""
        try:
            parsed = httpx.URL(url) if isinstance(url, str) else None
        except (httpx.InvalidURL, TypeError):
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            shown = redact_url(url) if isinstance(url, str) else repr(url)
            raise ValueError(f"WebhookNotifier: url must be an http:// or https:// URL, got {shown!r}")
        if not is_finite_number(timeout) or timeout <= 0:
            raise ValueError(
                f"WebhookNotifier: timeout must be a finite number of seconds > 0, got {timeout!r}"
            )
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValueError(f"WebhookNotifier: retries must be an integer >= 0, got {retries!r}")
        if not is_finite_number(backoff) or backoff < 0:
            raise ValueError(
                f"WebhookNotifier: backoff must be a finite number of seconds >= 0, got {backoff!r}"
            )
        if not isinstance(max_queue, int) or isinstance(max_queue, bool) or max_queue < 1:
            raise ValueError(f"WebhookNotifier: max_queue must be an integer >= 1, got {max_queue!r}")
        self._url = url
        self._shown_url = redact_url(url)
        if self._shown_url != url:
            _HTTPX_LOG.watch(url)
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.headers = dict(headers or {})
        self.logger = logger
        self._max_queue = max_queue
        self._queue: deque[AlertEvent] = deque()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._abandoned = False  # set when close() gives up: no attempt starts afterwards
        self._client: httpx.Client | None = None
        self._attempts: set[CuttableRequest] = set()
        self.sent = 0
        self.failures = 0
        self.last_error: str | None = None

    @property
    def url(self) -> str:
        """Where events go, as it may be shown: user info, query values and tokens masked."""
        return self._shown_url

    def notify(self, event: AlertEvent) -> None:
        """Queue `event` for delivery and return at once."""
        with self._lock:
            if self._closed.is_set():
                self._fail_locked(event, "the notifier is closed")
                return
            if len(self._queue) >= self._max_queue:
                self._fail_locked(event, f"queue full ({self._max_queue} events waiting)")
                return
            self._queue.append(event)
            self._pending += 1
            self._work.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="obs-alert-webhook", daemon=True)
                self._thread.start()

    def deliver(self, event: AlertEvent) -> bool:
        """POST `event` now, in the calling thread, with the retries; True if it arrived (2xx)."""
        body = event.to_dict()
        error = "not sent"
        for attempt in range(self.retries + 1):
            if attempt and self._closed.wait(self.backoff * 2 ** (attempt - 1)):
                break  # closing: stop waiting to retry
            status, error = self._post(body)
            if status is not None and 200 <= status < 300:
                with self._lock:
                    self.sent += 1
                return True
            if status is not None and status not in _RETRY_STATUSES:
                break
        with self._lock:
            self._fail_locked(event, error)
        return False

    def _post(self, body: dict[str, Any]) -> tuple[int | None, str]:
        """One attempt: (the HTTP status, "") or (the status or None, what went wrong)."""
        attempt = CuttableRequest()
        with self._lock:
            if self._abandoned:
                return None, "the notifier closed before it could be delivered"
            self._attempts.add(attempt)
        try:
            with attempt.deadline(self.timeout), self._http().stream(
                "POST", self._url, json=body, headers=self.headers, extensions={"trace": attempt.trace}
            ) as response:
                status = response.status_code
            return status, "" if response.is_success else f"HTTP {status}"
        except httpx.HTTPError as exc:
            if attempt.cut:
                return None, f"Timeout: no answer in full within {self.timeout:g} s"
            return None, self._redact(f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._attempts.discard(attempt)
                orphan = self._client if self._abandoned and not self._attempts else None
                if orphan is not None:
                    self._client = None
            if orphan is not None:  # close() left it to the last attempt to finish
                orphan.close()

    def _redact(self, text: str) -> str:
        return redact_text(text, self._url)

    def _http(self) -> httpx.Client:
        # One client for every delivery: building one per request costs an SSL context each time.
        # No kept-alive connections: each attempt connects anew, so its socket is known to cut.
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    timeout=self.timeout, limits=httpx.Limits(max_keepalive_connections=0)
                )
            return self._client

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued event has been delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued for at most `timeout_s` seconds in all, then stop.

        Retry waits are cut short at once. At the deadline, a POST still in
        flight is cut off and the events still queued are dropped; both are
        counted in `failures` and logged. Returns within `timeout_s` (plus the
        moment it takes to cut a socket).
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._closed.set()
            self._work.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._abandoned = True
            dropped = list(self._queue)
            self._queue.clear()
            for event in dropped:
                self._fail_locked(event, "the notifier closed before it could be delivered")
            self._pending -= len(dropped)
            self._idle.notify_all()
            attempts = list(self._attempts)
            # With an attempt still unwinding, the last one to end closes the client.
            client = None if attempts else self._client
            if client is not None:
                self._client = None
        for attempt in attempts:
            attempt.stop()  # its delivery fails at once and is counted as it ends
        if client is not None:
            client.close()

    def _fail_locked(self, event: AlertEvent, error: str) -> None:
        self.failures += 1
        self.last_error = error
        message = f"alert webhook {self._shown_url} failed for {event.rule!r} ({event.status}): {error}"
        try:
            if self.logger is not None:
                self.logger.error(message, {"url": self._shown_url, "rule": event.rule, "error": error})
            else:
                _log.warning(message)
        except Exception:  # a broken logger must not break delivery either
            _log.exception("logging a webhook failure failed")

    def _run(self) -> None:
        while True:
            with self._work:
                while not self._queue and not self._closed.is_set():
                    self._work.wait()
                if not self._queue:
                    return  # closed, and nothing left to deliver
                event = self._queue.popleft()
            try:
                self.deliver(event)
            except Exception as exc:  # the thread must survive anything
                with self._lock:
                    self._fail_locked(event, self._redact(f"{type(exc).__name__}: {exc}"))
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def __repr__(self) -> str:
        return f"WebhookNotifier({self._shown_url!r}, sent={self.sent}, failures={self.failures})"
