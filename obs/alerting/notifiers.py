"""Alert notifiers: who hears that an alert rule started firing or resolved.

An `AlertEvent` says that a rule started firing or resolved; a notifier is
anything with `notify(event)` taking one. Three ship: `LoggerNotifier`
writes to an `LLMLogger`, `CallbackNotifier` calls a Python function, and
`WebhookNotifier` POSTs JSON from a background thread with a timeout and
retries. The `AlertManager` catches, logs and counts what a notifier raises;
the webhook raises nothing and counts its own failures.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import httpx

from obs._validate import is_finite_number

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


class WebhookNotifier:
    """POSTs each event as JSON to a URL, from a background thread, with timeout and retries.

    `notify` only queues the event, so the application and the alert
    evaluation never wait for the network. Each delivery tries `retries + 1`
    times: a connection error, a timeout, or HTTP 408/425/429/5xx is retried
    after `backoff * 2**attempt` seconds; any other non-2xx status is not.
    A delivery that fails for good, or an event dropped because `max_queue`
    events already wait, is logged (to `logger` if given, else Python
    logging) and counted in `failures`; nothing is raised.
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
            raise ValueError(f"WebhookNotifier: url must be an http:// or https:// URL, got {url!r}")
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
        self.url = url
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.headers = dict(headers or {})
        self.logger = logger
        self._queue: queue.Queue[AlertEvent | None] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._client: httpx.Client | None = None
        self.sent = 0
        self.failures = 0
        self.last_error: str | None = None

    def notify(self, event: AlertEvent) -> None:
        """Queue `event` for delivery and return at once."""
        with self._lock:
            if self._closed.is_set():
                self._fail_locked(event, "the notifier is closed")
                return
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                self._fail_locked(event, f"queue full ({self._queue.maxsize} events waiting)")
                return
            self._pending += 1
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
            try:
                response = self._http().post(self.url, json=body, headers=self.headers)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            if response.is_success:
                with self._lock:
                    self.sent += 1
                return True
            error = f"HTTP {response.status_code}"
            if response.status_code not in _RETRY_STATUSES:
                break
        with self._lock:
            self._fail_locked(event, error)
        return False

    def _http(self) -> httpx.Client:
        # One client for every delivery: building one per request costs an SSL context each time.
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout)
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
        """Stop the delivery thread after what is queued (retry waits are cut short)."""
        self._closed.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=timeout_s)
            thread.join(timeout_s)
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _fail_locked(self, event: AlertEvent, error: str) -> None:
        self.failures += 1
        self.last_error = error
        message = f"alert webhook {self.url} failed for {event.rule!r} ({event.status}): {error}"
        try:
            if self.logger is not None:
                self.logger.error(message, {"url": self.url, "rule": event.rule, "error": error})
            else:
                _log.warning(message)
        except Exception:  # a broken logger must not break delivery either
            _log.exception("logging a webhook failure failed")

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            try:
                self.deliver(event)
            except Exception as exc:  # the thread must survive anything
                with self._lock:
                    self._fail_locked(event, f"{type(exc).__name__}: {exc}")
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.url!r}, sent={self.sent}, failures={self.failures})"
