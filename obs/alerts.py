"""Alerting: rules over windowed request metrics, their states, and who hears about them.

An `AlertRule` is data: a metric of `MetricsCollector.window(window_s)`
compared with a threshold (`error_rate > 0.05 over 300 s`), loadable from
TOML or JSON. An `AlertManager` evaluates its rules at a given time and moves
each through its states:

    ok -> pending (breached, waiting `for_s`) -> firing -> resolved -> ok

A pending rule that stops breaching goes back to ok. A firing rule resolves
only once the value is back past the threshold by the `hysteresis` margin
(a fraction of the threshold), so a value hovering on the threshold does not
flap. A rule whose window holds fewer than `min_requests` requests does not
breach (too little data to judge). Every change of state is kept in a
bounded history with the value that caused it.

Entering firing and resolving are sent to the notifiers: the `LLMLogger`
(always, when the manager has one), Python callbacks and webhooks. Firing
notifications of one rule are at least `cooldown_s` apart; a firing held back
by the cooldown is sent when it expires if the rule still fires, and a
resolve is sent only for a firing that was sent. Evaluation and notification
never raise into the application: failures are logged and counted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import httpx

from obs.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from obs.log import LLMLogger
    from obs.metrics import MetricsCollector

__all__ = [
    "ALERT_METRICS",
    "ALERT_OPS",
    "AlertEvent",
    "AlertManager",
    "AlertRule",
    "AlertState",
    "AlertStatus",
    "AlertTransition",
    "CallbackNotifier",
    "LoggerNotifier",
    "Notifier",
    "WebhookNotifier",
    "default_rules",
    "load_rules",
    "parse_rules",
]

_log = logging.getLogger(__name__)

AlertStatus = Literal["ok", "pending", "firing", "resolved"]

# The WindowStats fields a rule may watch.
ALERT_METRICS = (
    "error_rate",
    "avg_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "p95_ttft_ms",
    "cost_per_hour",
    "tokens_per_second",
    "requests_per_minute",
)
ALERT_OPS = (">", ">=", "<", "<=")

_RULE_FIELDS = (
    "name", "metric", "op", "threshold", "window_s", "min_requests", "for_s", "cooldown_s", "hysteresis",
)
_REQUIRED_FIELDS = ("name", "metric", "op", "threshold", "window_s")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


# ---------------------------------------------------------------------------
# Rules


@dataclass(frozen=True, slots=True)
class AlertRule:
    """A condition on one windowed metric: `metric op threshold` over the last `window_s` seconds.

    metric: one of ALERT_METRICS (fields of `MetricsCollector.window`).
    op: one of ">", ">=", "<", "<=". threshold: finite, >= 0.
    window_s: the sliding window in seconds, > 0.
    min_requests: the rule does not breach while the window holds fewer
      requests (an int >= 0; 1 by default, so an empty window never fires).
    for_s: seconds the breach must last before firing (>= 0; 0 fires at once).
    cooldown_s: least seconds between two firing notifications (>= 0).
    hysteresis: fraction of the threshold in [0, 1) the value must move back
      past the threshold before a firing rule resolves.
    Invalid values raise ValueError naming the field, the value and what is allowed.
    """

    name: str
    metric: str
    op: str
    threshold: float
    window_s: float
    min_requests: int = 1
    for_s: float = 0.0
    cooldown_s: float = 300.0
    hysteresis: float = 0.1

    def __post_init__(self) -> None:
        """Validate every field (see the class docstring)."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"AlertRule: name must be a non-empty string, got {self.name!r}")
        where = f"AlertRule {self.name!r}"
        if self.metric not in ALERT_METRICS:
            raise ValueError(
                f"{where}: metric must be one of {', '.join(ALERT_METRICS)}; got {self.metric!r}"
            )
        if self.op not in ALERT_OPS:
            raise ValueError(f"{where}: op must be one of {', '.join(ALERT_OPS)}; got {self.op!r}")
        if not _is_number(self.threshold) or self.threshold < 0:
            raise ValueError(f"{where}: threshold must be a finite number >= 0, got {self.threshold!r}")
        if not _is_number(self.window_s) or self.window_s <= 0:
            raise ValueError(
                f"{where}: window_s must be a finite number of seconds > 0, got {self.window_s!r}"
            )
        min_requests = self.min_requests
        if not isinstance(min_requests, int) or isinstance(min_requests, bool) or min_requests < 0:
            raise ValueError(f"{where}: min_requests must be an integer >= 0, got {self.min_requests!r}")
        if not _is_number(self.for_s) or self.for_s < 0:
            raise ValueError(f"{where}: for_s must be a finite number of seconds >= 0, got {self.for_s!r}")
        if not _is_number(self.cooldown_s) or self.cooldown_s < 0:
            raise ValueError(
                f"{where}: cooldown_s must be a finite number of seconds >= 0, got {self.cooldown_s!r}"
            )
        if not _is_number(self.hysteresis) or not 0 <= self.hysteresis < 1:
            raise ValueError(
                f"{where}: hysteresis must be a fraction of the threshold in [0, 1), got {self.hysteresis!r}"
            )
        # Numbers are stored as floats so equal rules compare and serialize alike.
        for name in ("threshold", "window_s", "for_s", "cooldown_s", "hysteresis"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def clear_threshold(self) -> float:
        """The value a firing rule must get back past to resolve (threshold moved by hysteresis)."""
        factor = 1.0 - self.hysteresis if self.op in (">", ">=") else 1.0 + self.hysteresis
        # Rounded to 12 significant digits so 0.1 * 0.8 is 0.08, not 0.08000000000000002,
        # and a value sitting exactly on the clear point is judged as the user wrote it.
        return float(f"{self.threshold * factor:.12g}")

    @property
    def condition(self) -> str:
        """The rule as a sentence fragment: `error_rate > 0.05 over 300s`."""
        return f"{self.metric} {self.op} {_fmt(self.threshold)} over {_fmt(self.window_s)}s"

    def breached(self, value: float) -> bool:
        """True if `value` meets the condition (`value op threshold`)."""
        op, threshold = self.op, self.threshold
        if op == ">":
            return value > threshold
        if op == ">=":
            return value >= threshold
        if op == "<":
            return value < threshold
        return value <= threshold

    def cleared(self, value: float) -> bool:
        """True if `value` is back past the clear threshold, so a firing rule resolves."""
        clear = self.clear_threshold
        if self.op == ">":
            return value <= clear
        if self.op == ">=":
            return value < clear
        if self.op == "<":
            return value >= clear
        return value > clear

    def to_dict(self) -> dict[str, Any]:
        """A JSON- and TOML-ready dict that `from_dict` reads back."""
        return {name: getattr(self, name) for name in _RULE_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertRule:
        """Build a rule from a mapping; unknown or missing keys raise ValueError naming them."""
        if not isinstance(data, Mapping):
            raise ValueError(f"an alert rule must be a table/object of fields, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_RULE_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(_RULE_FIELDS)}"
            )
        missing = [name for name in _REQUIRED_FIELDS if name not in data]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(map(repr, missing))}")
        return cls(**dict(data))


def default_rules() -> list[AlertRule]:
    """The rules that ship: error rate above 5% and p95 latency above 5 s, both over 5 minutes.

    The error-rate rule needs at least 10 requests in the window, the latency
    rule at least 5, so a single unlucky request does not page anyone.
    """
    return [
        AlertRule("high_error_rate", "error_rate", ">", 0.05, window_s=300.0, min_requests=10),
        AlertRule("slow_p95_latency", "p95_latency_ms", ">", 5000.0, window_s=300.0, min_requests=5),
    ]


def parse_rules(text: str, fmt: Literal["toml", "json"], source: str = "<string>") -> list[AlertRule]:
    """Parse rules from TOML (`[[rules]]` tables) or JSON (`{"rules": [...]}` or a bare list).

    Errors raise ValueError naming `source`, the rule (index and name) and the problem.
    Rule names must be unique.
    """
    if fmt == "toml":
        try:
            document: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{source}: invalid TOML: {exc}") from None
    elif fmt == "json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: invalid JSON: {exc}") from None
    else:
        raise ValueError(f"parse_rules: fmt must be 'toml' or 'json', got {fmt!r}")
    entries = document if isinstance(document, list) else None
    if isinstance(document, dict):
        extra = sorted(set(document) - {"rules"})
        if extra:
            raise ValueError(
                f"{source}: unknown top-level key(s) {', '.join(map(repr, extra))}; expected 'rules'"
            )
        entries = document.get("rules", [])
    if not isinstance(entries, list):
        raise ValueError(f"{source}: 'rules' must be a list of rule tables/objects")
    rules: list[AlertRule] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        label = f"rule {index + 1}" + (f" ({name!r})" if isinstance(name, str) else "")
        try:
            rule = AlertRule.from_dict(entry)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {label}: {exc}") from None
        if rule.name in seen:
            raise ValueError(f"{source}: {label}: duplicate rule name {rule.name!r}")
        seen.add(rule.name)
        rules.append(rule)
    return rules


def load_rules(path: str | Path) -> list[AlertRule]:
    """Read rules from a `.toml` or `.json` file (see `parse_rules` for the layout).

    The format comes from the suffix; errors raise ValueError naming the file
    and the rule. A missing file raises FileNotFoundError.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ValueError(f"{path}: alert rules must be a .toml or .json file, got suffix {path.suffix!r}")
    text = path.read_text(encoding="utf-8")
    return parse_rules(text, "toml" if suffix == ".toml" else "json", source=str(path))


# ---------------------------------------------------------------------------
# States, transitions, events


@dataclass(frozen=True, slots=True)
class AlertState:
    """Where one rule stands after the last evaluation.

    status: ok, pending, firing or resolved; since: when it entered that
    status (epoch s, None if never evaluated); value: the metric at the last
    evaluation (None before the first, or when the window held fewer than
    `min_requests` requests); request_count: requests in that window.
    """

    rule: AlertRule
    status: AlertStatus = "ok"
    since: float | None = None
    value: float | None = None
    request_count: int = 0
    evaluated_at: float | None = None

    @property
    def name(self) -> str:
        """The rule's name."""
        return self.rule.name

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the rule's fields under `rule`, then the state."""
        return {
            "rule": self.rule.to_dict(),
            "status": self.status,
            "since": self.since,
            "value": self.value,
            "request_count": self.request_count,
            "evaluated_at": self.evaluated_at,
        }


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """One change of state, with the numbers that caused it."""

    rule: str
    from_status: AlertStatus
    to_status: AlertStatus
    at: float
    value: float | None
    threshold: float
    metric: str
    op: str
    request_count: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of this transition."""
        return {
            "rule": self.rule,
            "from_status": self.from_status,
            "to_status": self.to_status,
            "at": self.at,
            "value": self.value,
            "threshold": self.threshold,
            "metric": self.metric,
            "op": self.op,
            "request_count": self.request_count,
        }


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
        """The JSON body a webhook receives."""
        return {
            "rule": self.rule,
            "status": self.status,
            "metric": self.metric,
            "op": self.op,
            "threshold": self.threshold,
            "value": self.value,
            "window_s": self.window_s,
            "request_count": self.request_count,
            "at": self.at,
            "since": self.since,
            "message": self.message,
            "details": dict(self.details),
        }


# ---------------------------------------------------------------------------
# Notifiers


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
        if not _is_number(timeout) or timeout <= 0:
            raise ValueError(
                f"WebhookNotifier: timeout must be a finite number of seconds > 0, got {timeout!r}"
            )
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValueError(f"WebhookNotifier: retries must be an integer >= 0, got {retries!r}")
        if not _is_number(backoff) or backoff < 0:
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


# ---------------------------------------------------------------------------
# The manager


class _WindowSource(Protocol):
    def window(self, window_s: float, now: float | None = None) -> Any: ...


@dataclass(slots=True)
class _Track:
    """The mutable side of one rule's state, guarded by the manager's lock."""

    rule: AlertRule
    status: AlertStatus = "ok"
    since: float | None = None
    value: float | None = None
    request_count: int = 0
    evaluated_at: float | None = None
    firing_since: float = 0.0
    notified: bool = False  # a firing notification went out for the current firing
    last_fire_notice: float | None = None

    def snapshot(self) -> AlertState:
        return AlertState(
            self.rule, self.status, self.since, self.value, self.request_count, self.evaluated_at
        )


class AlertManager:
    """Evaluates alert rules against a MetricsCollector and notifies on firing and resolving.

    Thread-safe: evaluations are serialized; notifiers are called outside the
    lock, so a callback may read the manager. Failures (a collector that
    raises, a notifier that raises) are logged and counted in `errors` and
    `notifier_errors`, never raised into the caller.
    """

    def __init__(
        self,
        collector: MetricsCollector | _WindowSource,
        rules: Iterable[AlertRule],
        notifiers: Sequence[Notifier] = (),
        *,
        clock: Clock = SYSTEM_CLOCK,
        logger: LLMLogger | None = None,
        history_size: int = 1000,
    ) -> None:
        """Watch `collector` with `rules`; with a `logger`, a LoggerNotifier comes first.

        Raises ValueError for a collector without `window()`, a rule that is
        not an AlertRule, duplicate rule names, a notifier without `notify()`,
        or a history_size below 1.
        """
        if not callable(getattr(collector, "window", None)):
            raise ValueError(
                f"AlertManager: collector must have window(window_s, now), e.g. MetricsCollector; "
                f"got {collector!r}"
            )
        if not callable(getattr(clock, "time_ms", None)):
            raise ValueError(f"AlertManager: clock must have time_ms(), got {clock!r}")
        if not isinstance(history_size, int) or isinstance(history_size, bool) or history_size < 1:
            raise ValueError(f"AlertManager: history_size must be an integer >= 1, got {history_size!r}")
        notifier_list: list[Notifier] = []
        if logger is not None:
            notifier_list.append(LoggerNotifier(logger))
        for notifier in notifiers:
            if not callable(getattr(notifier, "notify", None)):
                raise ValueError(f"AlertManager: each notifier needs notify(event), got {notifier!r}")
            notifier_list.append(notifier)
        self._collector = collector
        self._clock = clock
        self._logger = logger
        self._notifiers = tuple(notifier_list)
        self._lock = threading.RLock()
        self._history: deque[AlertTransition] = deque(maxlen=history_size)
        self._tracks: dict[str, _Track] = {}
        self.errors = 0
        self.notifier_errors = 0
        self.notifications = 0
        self.set_rules(rules)

    # -- configuration -----------------------------------------------------------------------

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        """The rules, in the order given."""
        with self._lock:
            return tuple(track.rule for track in self._tracks.values())

    @property
    def notifiers(self) -> tuple[Notifier, ...]:
        """The notifiers, the logger's first."""
        return self._notifiers

    def set_rules(self, rules: Iterable[AlertRule]) -> None:
        """Replace the rules. A rule whose name stays keeps its state; new ones start ok.

        Raises ValueError for a non-AlertRule or duplicate names (nothing changes then).
        """
        rules = list(rules)
        names: set[str] = set()
        for rule in rules:
            if not isinstance(rule, AlertRule):
                raise ValueError(f"AlertManager: rules must be AlertRule objects, got {rule!r}")
            if rule.name in names:
                raise ValueError(f"AlertManager: duplicate rule name {rule.name!r}; names must be unique")
            names.add(rule.name)
        with self._lock:
            old = self._tracks
            tracks: dict[str, _Track] = {}
            for rule in rules:
                track = old.get(rule.name) or _Track(rule)
                track.rule = rule
                tracks[rule.name] = track
            self._tracks = tracks

    # -- reading -------------------------------------------------------------------------------

    def states(self) -> list[AlertState]:
        """Every rule's current state, in rule order."""
        with self._lock:
            return [track.snapshot() for track in self._tracks.values()]

    def state(self, name: str) -> AlertState:
        """The state of the rule called `name`; KeyError if there is none."""
        with self._lock:
            if name not in self._tracks:
                raise KeyError(f"no alert rule named {name!r}; rules: {', '.join(self._tracks)}")
            return self._tracks[name].snapshot()

    def firing(self) -> list[AlertState]:
        """The states of the rules firing now."""
        return [state for state in self.states() if state.status == "firing"]

    @property
    def history(self) -> list[AlertTransition]:
        """State changes, oldest first (bounded by `history_size`)."""
        with self._lock:
            return list(self._history)

    # -- evaluating ----------------------------------------------------------------------------

    def evaluate(self, now: float | None = None) -> list[AlertState]:
        """Evaluate every rule at `now` (epoch s; default the clock), notify, return the states.

        Raises ValueError only for a `now` that is not a finite number; other
        failures are logged and counted, and leave the rule's state as it was.
        """
        if now is None:
            now = self._clock.time_ms() / 1000.0
        elif not _is_number(now):
            raise ValueError(f"AlertManager.evaluate: now must be finite epoch seconds, got {now!r}")
        now = float(now)
        events: list[AlertEvent] = []
        with self._lock:
            windows: dict[float, Any] = {}
            for track in self._tracks.values():
                rule = track.rule
                try:
                    if rule.window_s not in windows:
                        windows[rule.window_s] = self._collector.window(rule.window_s, now)
                    stats = windows[rule.window_s]
                    count = int(stats.request_count)
                    value = float(getattr(stats, rule.metric))
                except Exception as exc:
                    self.errors += 1
                    self._report(f"alert rule {rule.name!r}: reading {rule.metric} failed", exc)
                    continue
                self._step(track, now, value, count, events)
            states = [track.snapshot() for track in self._tracks.values()]
        for event in events:
            self._dispatch(event)
        return states

    def _step(self, track: _Track, now: float, value: float, count: int, events: list[AlertEvent]) -> None:
        """Advance one rule's state machine with the value measured at `now`."""
        rule = track.rule
        enough = count >= rule.min_requests and not math.isnan(value)
        track.value = value if enough else None
        track.request_count = count
        track.evaluated_at = now
        breached = enough and rule.breached(value)
        status = track.status
        if status in ("ok", "resolved"):
            if breached:
                if rule.for_s <= 0:
                    self._move(track, "firing", now)
                else:
                    self._move(track, "pending", now)
            elif status == "resolved":
                self._move(track, "ok", now)
        elif status == "pending":
            if not breached:
                self._move(track, "ok", now)
            elif track.since is not None and now - track.since >= rule.for_s:
                self._move(track, "firing", now)
        elif status == "firing" and (not enough or rule.cleared(value)):
            self._move(track, "resolved", now)
            if track.notified:
                events.append(self._event(track, "resolved", now))
            track.notified = False
        if track.status == "firing" and not track.notified and (
            track.last_fire_notice is None or now - track.last_fire_notice >= rule.cooldown_s
        ):
            track.notified = True
            track.last_fire_notice = now
            events.append(self._event(track, "firing", now))

    def _move(self, track: _Track, status: AlertStatus, now: float) -> None:
        rule = track.rule
        self._history.append(
            AlertTransition(
                rule.name, track.status, status, now, track.value, rule.threshold, rule.metric, rule.op,
                track.request_count,
            )
        )
        track.status = status
        track.since = now
        if status == "firing":
            track.firing_since = now
            track.notified = False

    def _event(self, track: _Track, status: Literal["firing", "resolved"], now: float) -> AlertEvent:
        rule = track.rule
        value = track.value
        shown = "n/a" if value is None else _fmt(value)
        if status == "firing":
            message = (
                f"alert {rule.name} firing: {rule.metric} = {shown} {rule.op} {_fmt(rule.threshold)} "
                f"over {_fmt(rule.window_s)}s ({track.request_count} requests)"
            )
        else:
            message = (
                f"alert {rule.name} resolved: {rule.metric} = {shown} "
                f"(fires when {rule.op} {_fmt(rule.threshold)}, clears past {_fmt(rule.clear_threshold)}; "
                f"{track.request_count} requests over {_fmt(rule.window_s)}s)"
            )
        return AlertEvent(
            rule=rule.name,
            status=status,
            metric=rule.metric,
            op=rule.op,
            threshold=rule.threshold,
            value=value,
            window_s=rule.window_s,
            request_count=track.request_count,
            at=now,
            since=track.firing_since,
            message=message,
            details={"condition": rule.condition, "clear_threshold": rule.clear_threshold},
        )

    def _dispatch(self, event: AlertEvent) -> None:
        for notifier in self._notifiers:
            try:
                notifier.notify(event)
            except Exception as exc:
                with self._lock:
                    self.notifier_errors += 1
                self._report(f"alert notifier {notifier!r} failed for {event.rule!r}", exc)
        with self._lock:
            self.notifications += 1

    def _report(self, message: str, exc: BaseException) -> None:
        _log.warning("%s: %s: %s", message, type(exc).__name__, exc)
        if self._logger is not None:
            try:
                self._logger.error(message, {"error": f"{type(exc).__name__}: {exc}"})
            except Exception:  # a broken logger must not break evaluation
                _log.exception("logging an alerting failure failed")

    def __repr__(self) -> str:
        with self._lock:
            firing = [name for name, track in self._tracks.items() if track.status == "firing"]
        return f"AlertManager(rules={len(self._tracks)}, firing={firing})"
