"""Alerting: alert states and the manager that moves each rule through them.

An `AlertManager` evaluates its rules (`obs.alerting.rules`: a metric of
`MetricsCollector.window(window_s)` compared with a threshold, loadable from
TOML or JSON) at a given time and moves each through its states:

    ok -> pending (breached, waiting `for_s`) -> firing -> resolved -> ok

A pending rule that stops breaching goes back to ok. A firing rule resolves
only once the value is back past the threshold by the `hysteresis` margin
(a fraction of the threshold), so a value hovering on the threshold does not
flap. A rule whose window holds fewer than `min_requests` requests does not
breach (too little data to judge). Every change of state is kept in a
bounded history with the value that caused it.

Entering firing and resolving are sent to the notifiers (`obs.alerting.notifiers`):
the `LLMLogger` (always, when the manager has one), Python callbacks and
webhooks. Firing notifications of one rule are at least `cooldown_s` apart; a
firing held back by the cooldown is sent when it expires if the rule still
fires, and a resolve is sent only for a firing that was sent. Evaluation and
notification never raise into the application: failures are logged and
counted. The rule, event and notifier names are importable from here too.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from obs._validate import is_finite_number
from obs.alerting.notifiers import AlertEvent, CallbackNotifier, LoggerNotifier, Notifier, WebhookNotifier
from obs.alerting.rules import (
    ALERT_METRICS,
    ALERT_OPS,
    AlertRule,
    _fmt,
    default_rules,
    load_rules,
    parse_rules,
)
from obs.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from obs.logs import LLMLogger
    from obs.metrics.collector import MetricsCollector

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

# ---------------------------------------------------------------------------
# States and transitions


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
        return asdict(self)


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
        elif not is_finite_number(now):
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
