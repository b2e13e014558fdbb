"""Tests for obs.alerting.manager: rules, their state machine on a fake clock, loading, and notifiers.

Webhooks are exercised against real HTTP servers on loopback: one that
answers, one that fails first, one that hangs, and a closed port.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from obs.alerting.manager import (
    ALERT_METRICS,
    AlertEvent,
    AlertManager,
    AlertRule,
    CallbackNotifier,
    LoggerNotifier,
    Notifier,
    WebhookNotifier,
    default_rules,
    load_rules,
    parse_rules,
)
from obs.clock import FakeClock
from obs.logs import LLMLogger
from obs.metrics.collector import MetricsCollector

START_MS = 1_700_000_000_000.0
STEP_MS = 20_000.0  # longer than the test rules' 10 s window, so each step sees only its own requests


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ms=START_MS)


@pytest.fixture
def collector(clock: FakeClock) -> MetricsCollector:
    return MetricsCollector(clock=clock)


def _record(collector: MetricsCollector, clock: FakeClock, requests: int, errors: int = 0,
            latency_ms: float = 100.0) -> None:
    for index in range(requests):
        collector.record_request(latency_ms, 10, 20, error=index < errors, timestamp=clock.time_s())


class _Events:
    """A callback notifier that remembers (status, at) of each event."""

    def __init__(self) -> None:
        self.events: list[AlertEvent] = []

    def __call__(self, event: AlertEvent) -> None:
        self.events.append(event)

    @property
    def seen(self) -> list[tuple[str, float]]:
        return [(e.status, e.at - START_MS / 1000) for e in self.events]


def _error_rule(**overrides: Any) -> AlertRule:
    fields: dict[str, Any] = {"name": "errors", "metric": "error_rate", "op": ">", "threshold": 0.10,
                              "window_s": 10.0, "min_requests": 1, "cooldown_s": 0.0, "hysteresis": 0.0}
    fields.update(overrides)
    return AlertRule(**fields)


def _steps(manager: AlertManager, collector: MetricsCollector, clock: FakeClock,
           error_counts: list[int], per_step: int = 100) -> list[str]:
    """One evaluation per entry: `per_step` requests of which that many fail; the statuses seen."""
    statuses = []
    for errors in error_counts:
        clock.advance(STEP_MS)
        _record(collector, clock, per_step, errors)
        [state] = manager.evaluate()
        statuses.append(state.status)
    return statuses


# ---------------------------------------------------------------------------
# Rules


def test_rule_defaults_and_condition() -> None:
    rule = AlertRule("r", "p95_latency_ms", ">=", 5000, 300)
    assert (rule.min_requests, rule.for_s, rule.cooldown_s, rule.hysteresis) == (1, 0.0, 300.0, 0.1)
    assert rule.threshold == 5000.0 and isinstance(rule.threshold, float)
    assert rule.condition == "p95_latency_ms >= 5000 over 300s"


@pytest.mark.parametrize(
    ("op", "below", "at", "above"),
    [
        (">", False, False, True),
        (">=", False, True, True),
        ("<", True, False, False),
        ("<=", True, True, False),
    ],
)
def test_breached_for_each_op(op: str, below: bool, at: bool, above: bool) -> None:
    rule = AlertRule("r", "error_rate", op, 0.5, 60)
    assert (rule.breached(0.4), rule.breached(0.5), rule.breached(0.6)) == (below, at, above)


@pytest.mark.parametrize(
    ("op", "clear", "cleared_at", "kept_at"),
    [
        (">", 0.08, 0.08, 0.0801),
        (">=", 0.08, 0.0799, 0.08),
        ("<", 0.12, 0.12, 0.1199),
        ("<=", 0.12, 0.1201, 0.12),
    ],
)
def test_hysteresis_moves_the_clear_point_past_the_threshold(
    op: str, clear: float, cleared_at: float, kept_at: float
) -> None:
    rule = AlertRule("r", "error_rate", op, 0.10, 60, hysteresis=0.2)
    assert rule.clear_threshold == pytest.approx(clear)
    assert rule.cleared(cleared_at) is True
    assert rule.cleared(kept_at) is False


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"name": ""}, ["name", "''"]),
        ({"metric": "latency"}, ["metric", "'latency'", "error_rate", "requests_per_minute"]),
        ({"op": "=>"}, ["op", "'=>'", ">="]),
        ({"threshold": -1}, ["threshold", "-1", ">= 0"]),
        ({"threshold": math.nan}, ["threshold", "nan"]),
        ({"threshold": "5"}, ["threshold", "'5'"]),
        ({"window_s": 0}, ["window_s", "0", "> 0"]),
        ({"window_s": math.inf}, ["window_s", "inf"]),
        ({"min_requests": 2.5}, ["min_requests", "2.5"]),
        ({"min_requests": -1}, ["min_requests", "-1"]),
        ({"min_requests": True}, ["min_requests", "True"]),
        ({"for_s": -5}, ["for_s", "-5"]),
        ({"cooldown_s": math.nan}, ["cooldown_s", "nan"]),
        ({"hysteresis": 1.0}, ["hysteresis", "1.0", "[0, 1)"]),
        ({"hysteresis": -0.1}, ["hysteresis", "-0.1"]),
    ],
)
def test_rule_validation_names_field_value_and_allowed(overrides: dict[str, Any], words: list[str]) -> None:
    fields: dict[str, Any] = {
        "name": "r", "metric": "error_rate", "op": ">", "threshold": 0.1, "window_s": 60,
    }
    fields.update(overrides)
    with pytest.raises(ValueError) as excinfo:
        AlertRule(**fields)
    for word in words:
        assert word in str(excinfo.value)


def test_every_alert_metric_is_a_window_stats_field(collector: MetricsCollector) -> None:
    stats = collector.window(60)
    for metric in ALERT_METRICS:
        assert isinstance(getattr(stats, metric), float | int)


def test_rule_dict_round_trip() -> None:
    rule = AlertRule("r", "cost_per_hour", "<", 2.5, 600, min_requests=3, for_s=30, cooldown_s=60,
                     hysteresis=0.25)
    assert AlertRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule


def test_default_rules() -> None:
    errors, latency = default_rules()
    assert (errors.metric, errors.op, errors.threshold, errors.window_s, errors.min_requests) == (
        "error_rate", ">", 0.05, 300.0, 10)
    assert (latency.metric, latency.op, latency.threshold, latency.window_s) == (
        "p95_latency_ms", ">", 5000.0, 300.0)


def test_default_rules_need_ten_requests_before_the_error_rate_counts(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    manager = AlertManager(collector, default_rules(), clock=clock)
    _record(collector, clock, 9, errors=9)
    states = {s.name: s for s in manager.evaluate()}
    assert states["high_error_rate"].status == "ok" and states["high_error_rate"].value is None
    _record(collector, clock, 1)
    states = {s.name: s for s in manager.evaluate()}
    assert states["high_error_rate"].status == "firing"
    assert states["high_error_rate"].value == pytest.approx(0.9)
    assert states["slow_p95_latency"].status == "ok"
    _record(collector, clock, 10, latency_ms=8000.0)
    assert {s.name for s in manager.evaluate() if s.status == "firing"} == {
        "high_error_rate", "slow_p95_latency"}


# ---------------------------------------------------------------------------
# Loading


TOML_RULES = """
[[rules]]
name = "errors"
metric = "error_rate"
op = ">"
threshold = 0.05
window_s = 300
min_requests = 10

[[rules]]
name = "slow"
metric = "p95_latency_ms"
op = ">="
threshold = 5000
window_s = 60
for_s = 30
"""


def test_load_rules_from_toml_and_json_files(tmp_path: Path) -> None:
    toml_path = tmp_path / "alerts.toml"
    toml_path.write_text(TOML_RULES)
    rules = load_rules(toml_path)
    assert [r.name for r in rules] == ["errors", "slow"]
    assert rules[1] == AlertRule("slow", "p95_latency_ms", ">=", 5000, 60, for_s=30)
    json_path = tmp_path / "alerts.json"
    json_path.write_text(json.dumps({"rules": [r.to_dict() for r in rules]}))
    assert load_rules(json_path) == rules
    json_path.write_text(json.dumps([r.to_dict() for r in rules]))
    assert load_rules(str(json_path)) == rules


def test_parse_rules_from_strings() -> None:
    assert [r.name for r in parse_rules(TOML_RULES, "toml")] == ["errors", "slow"]
    assert parse_rules("[]", "json") == []
    assert parse_rules("", "toml") == []


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[[rules]]\nname = "a"\nmetric = "error_rate"\nop = "=>"\nthreshold = 1\nwindow_s = 60\n',
         ["alerts.toml", "rule 1 ('a')", "op", "'=>'"]),
        (TOML_RULES + '\n[[rules]]\nname = "b"\nmetric = "error_rate"\nop = ">"\nthreshold = 1\n',
         ["alerts.toml", "rule 3 ('b')", "missing", "'window_s'"]),
        ('[[rules]]\nname = "c"\nmetric = "error_rate"\nop = ">"\nthreshold = 1\nwindow_s = 60\nfor = 5\n',
         ["alerts.toml", "rule 1 ('c')", "unknown", "'for'", "for_s"]),
        (TOML_RULES + TOML_RULES, ["alerts.toml", "rule 3 ('errors')", "duplicate"]),
        ("[[rules]\n", ["alerts.toml", "invalid TOML"]),
        ('rule = "x"\n', ["alerts.toml", "unknown top-level", "'rule'"]),
        ('rules = ["x"]\n', ["alerts.toml", "rule 1", "table"]),
    ],
)
def test_load_rules_errors_name_the_file_and_the_rule(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as excinfo:
        load_rules(path)
    for word in words:
        assert word in str(excinfo.value)


def test_load_rules_rejects_other_suffixes_and_bad_json(tmp_path: Path) -> None:
    yaml_path = tmp_path / "alerts.yaml"
    yaml_path.write_text("rules: []")
    with pytest.raises(ValueError, match=r"alerts\.yaml.*\.toml or \.json"):
        load_rules(yaml_path)
    json_path = tmp_path / "alerts.json"
    json_path.write_text("{not json")
    with pytest.raises(ValueError, match=r"alerts\.json: invalid JSON"):
        load_rules(json_path)
    with pytest.raises(FileNotFoundError):
        load_rules(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="fmt"):
        parse_rules("", "yaml")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# The state machine


def test_ok_to_firing_at_once_when_for_s_is_zero(collector: MetricsCollector, clock: FakeClock) -> None:
    events = _Events()
    manager = AlertManager(collector, [_error_rule()], [CallbackNotifier(events)], clock=clock)
    assert _steps(manager, collector, clock, [5, 20]) == ["ok", "firing"]
    [transition] = manager.history
    assert (transition.from_status, transition.to_status) == ("ok", "firing")
    assert transition.value == pytest.approx(0.20) and transition.request_count == 100
    assert transition.at == START_MS / 1000 + 2 * STEP_MS / 1000
    assert events.seen == [("firing", 40.0)]
    event = events.events[0]
    assert event.value == pytest.approx(0.20) and event.threshold == 0.10 and event.since == event.at
    assert "errors firing" in event.message and "error_rate = 0.2 > 0.1" in event.message


def test_pending_waits_for_s_then_fires(collector: MetricsCollector, clock: FakeClock) -> None:
    events = _Events()
    manager = AlertManager(collector, [_error_rule(for_s=40)], [CallbackNotifier(events)], clock=clock)
    assert _steps(manager, collector, clock, [20, 20]) == ["pending", "pending"]
    assert events.events == []
    assert _steps(manager, collector, clock, [20]) == ["firing"]  # 40 s after the breach began
    assert [(t.from_status, t.to_status) for t in manager.history] == [
        ("ok", "pending"), ("pending", "firing")]
    assert events.seen == [("firing", 60.0)]
    assert manager.state("errors").since == START_MS / 1000 + 60.0


def test_pending_back_to_ok_when_the_breach_ends_early(collector: MetricsCollector, clock: FakeClock) -> None:
    events = _Events()
    manager = AlertManager(collector, [_error_rule(for_s=60)], [CallbackNotifier(events)], clock=clock)
    assert _steps(manager, collector, clock, [20, 20, 5, 20]) == ["pending", "pending", "ok", "pending"]
    assert [t.to_status for t in manager.history] == ["pending", "ok", "pending"]
    assert manager.history[1].value == pytest.approx(0.05)
    assert events.events == []


def test_firing_resolves_then_returns_to_ok(collector: MetricsCollector, clock: FakeClock) -> None:
    events = _Events()
    manager = AlertManager(collector, [_error_rule()], [CallbackNotifier(events)], clock=clock)
    assert _steps(manager, collector, clock, [20, 15, 2, 2]) == ["firing", "firing", "resolved", "ok"]
    assert [(t.from_status, t.to_status) for t in manager.history] == [
        ("ok", "firing"), ("firing", "resolved"), ("resolved", "ok")]
    assert manager.history[1].value == pytest.approx(0.02)
    assert events.seen == [("firing", 20.0), ("resolved", 60.0)]
    resolved = events.events[1]
    assert resolved.since == START_MS / 1000 + 20.0 and "errors resolved" in resolved.message


def test_resolved_can_fire_again_directly(collector: MetricsCollector, clock: FakeClock) -> None:
    manager = AlertManager(collector, [_error_rule()], clock=clock)
    assert _steps(manager, collector, clock, [20, 2, 20]) == ["firing", "resolved", "firing"]


HOVERING = [11, 9, 11, 9, 10, 11, 9, 5]  # errors per 100 requests around a 10% threshold


def test_without_hysteresis_a_hovering_value_flaps(collector: MetricsCollector, clock: FakeClock) -> None:
    events = _Events()
    manager = AlertManager(collector, [_error_rule(hysteresis=0.0)], [CallbackNotifier(events)], clock=clock)
    statuses = _steps(manager, collector, clock, HOVERING)
    assert statuses == ["firing", "resolved", "firing", "resolved", "ok", "firing", "resolved", "ok"]
    assert len(events.events) == 6


def test_hysteresis_stops_the_flapping(collector: MetricsCollector, clock: FakeClock) -> None:
    events = _Events()
    manager = AlertManager(collector, [_error_rule(hysteresis=0.2)], [CallbackNotifier(events)], clock=clock)
    statuses = _steps(manager, collector, clock, HOVERING)
    # Fires once at 11%, holds through 9-11% (clears only at <= 8%), resolves at 5%.
    assert statuses == ["firing"] * 7 + ["resolved"]
    assert [e.status for e in events.events] == ["firing", "resolved"]
    assert [t.to_status for t in manager.history] == ["firing", "resolved"]


def test_cooldown_holds_back_a_refire_and_sends_it_when_it_expires(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    events = _Events()
    rule = _error_rule(cooldown_s=100.0)
    manager = AlertManager(collector, [rule], [CallbackNotifier(events)], clock=clock)
    # t = 20, 40, 60, 80, 100, 120
    statuses = _steps(manager, collector, clock, [20, 2, 20, 2, 20, 20])
    assert statuses == ["firing", "resolved", "firing", "resolved", "firing", "firing"]
    # The firings at 60 and 100 fall within 100 s of the one sent at 20; the one at 60
    # resolved unsent (so no resolve is sent either); at 120 the cooldown has passed
    # and the rule still fires, so it is sent then.
    assert events.seen == [("firing", 20.0), ("resolved", 40.0), ("firing", 120.0)]
    assert events.events[-1].since == START_MS / 1000 + 100.0
    assert _steps(manager, collector, clock, [20, 2]) == ["firing", "resolved"]
    assert events.seen[-1] == ("resolved", 160.0)


def test_cooldown_zero_sends_every_firing(collector: MetricsCollector, clock: FakeClock) -> None:
    events = _Events()
    manager = AlertManager(collector, [_error_rule(cooldown_s=0.0)], [CallbackNotifier(events)], clock=clock)
    _steps(manager, collector, clock, [20, 2, 20, 2])
    assert [e.status for e in events.events] == ["firing", "resolved", "firing", "resolved"]


def test_a_firing_rule_notifies_once_while_it_stays_firing(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    events = _Events()
    manager = AlertManager(collector, [_error_rule(cooldown_s=10.0)], [CallbackNotifier(events)], clock=clock)
    assert _steps(manager, collector, clock, [20] * 6) == ["firing"] * 6
    assert len(events.events) == 1


def test_too_few_requests_do_not_breach_and_resolve_a_firing_rule(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    manager = AlertManager(collector, [_error_rule(min_requests=10)], clock=clock)
    assert _steps(manager, collector, clock, [9], per_step=9) == ["ok"]
    assert manager.state("errors").value is None and manager.state("errors").request_count == 9
    assert _steps(manager, collector, clock, [10], per_step=10) == ["firing"]
    assert _steps(manager, collector, clock, [5], per_step=5) == ["resolved"]
    assert manager.history[-1].value is None


def test_an_empty_window_resolves_and_a_less_than_rule_waits_for_data(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    slow_throughput = AlertRule("quiet", "requests_per_minute", "<", 100, 10, min_requests=1, cooldown_s=0)
    manager = AlertManager(collector, [slow_throughput], clock=clock)
    clock.advance(STEP_MS)
    assert manager.evaluate()[0].status == "ok"  # no requests: nothing to judge
    _record(collector, clock, 5)  # 5 requests in 10 s = 30 per minute
    [state] = manager.evaluate()
    assert state.status == "firing" and state.value == pytest.approx(30.0)


def test_states_firing_state_and_history_bound(collector: MetricsCollector, clock: FakeClock) -> None:
    rules = [_error_rule(), _error_rule(name="never", threshold=0.99)]
    manager = AlertManager(collector, rules, clock=clock, history_size=3)
    assert [s.status for s in manager.states()] == ["ok", "ok"]
    assert manager.states()[0].since is None and manager.states()[0].evaluated_at is None
    _steps_all = []
    for errors in [20, 2, 2, 20, 2]:
        clock.advance(STEP_MS)
        _record(collector, clock, 100, errors)
        _steps_all.append([s.status for s in manager.evaluate()])
        if errors == 20:
            assert [s.name for s in manager.firing()] == ["errors"]
    assert _steps_all[-1] == ["resolved", "ok"]
    assert manager.firing() == []
    history = manager.history
    assert len(history) == 3
    assert [(t.from_status, t.to_status) for t in history] == [
        ("resolved", "ok"), ("ok", "firing"), ("firing", "resolved")]
    assert manager.state("never").evaluated_at == clock.time_s()
    with pytest.raises(KeyError, match="nope"):
        manager.state("nope")


def test_evaluate_at_an_explicit_time(collector: MetricsCollector, clock: FakeClock) -> None:
    manager = AlertManager(collector, [_error_rule()], clock=clock)
    _record(collector, clock, 10, 5)
    clock.advance(STEP_MS)
    assert manager.evaluate()[0].status == "ok"  # the clock's now: the window is empty
    assert manager.evaluate(now=START_MS / 1000)[0].status == "firing"
    with pytest.raises(ValueError, match="now"):
        manager.evaluate(now=math.nan)


def test_set_rules_keeps_state_by_name(collector: MetricsCollector, clock: FakeClock) -> None:
    manager = AlertManager(collector, [_error_rule()], clock=clock)
    _steps(manager, collector, clock, [20])
    manager.set_rules([_error_rule(threshold=0.5), _error_rule(name="other")])
    assert [r.threshold for r in manager.rules] == [0.5, 0.10]
    assert [s.status for s in manager.states()] == ["firing", "ok"]
    assert _steps_statuses(manager, collector, clock, 20) == ["resolved", "firing"]
    with pytest.raises(ValueError, match="duplicate"):
        manager.set_rules([_error_rule(), _error_rule()])
    assert len(manager.rules) == 2


def _steps_statuses(
    manager: AlertManager, collector: MetricsCollector, clock: FakeClock, errors: int
) -> list[str]:
    clock.advance(STEP_MS)
    _record(collector, clock, 100, errors)
    return [s.status for s in manager.evaluate()]


def test_manager_validates_its_arguments(collector: MetricsCollector) -> None:
    with pytest.raises(ValueError, match="collector"):
        AlertManager(object(), [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="AlertRule"):
        AlertManager(collector, [{"name": "x"}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="notify"):
        AlertManager(collector, [], [print])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="history_size"):
        AlertManager(collector, [], history_size=0)


# ---------------------------------------------------------------------------
# Failures never reach the application


class _BrokenCollector:
    def __init__(self) -> None:
        self.calls = 0

    def window(self, window_s: float, now: float | None = None) -> Any:
        self.calls += 1
        raise RuntimeError("collector down")


def test_a_failing_collector_is_counted_and_logged(clock: FakeClock) -> None:
    logger = LLMLogger(clock=clock)
    broken = _BrokenCollector()
    manager = AlertManager(broken, [_error_rule()], clock=clock, logger=logger)
    [state] = manager.evaluate()
    assert state.status == "ok" and state.evaluated_at is None
    assert manager.errors == 1 and broken.calls == 1
    [entry] = logger.get_logs(level="error")
    assert "errors" in entry.message and "collector down" in entry.data["error"]


def test_rules_sharing_a_window_read_it_once(collector: MetricsCollector, clock: FakeClock) -> None:
    calls: list[float] = []

    class Counting:
        def window(self, window_s: float, now: float | None = None) -> Any:
            calls.append(window_s)
            return collector.window(window_s, now)

    rules = [_error_rule(), _error_rule(name="b"), _error_rule(name="c", window_s=60)]
    AlertManager(Counting(), rules, clock=clock).evaluate()
    assert sorted(calls) == [10.0, 60.0]


def test_a_raising_notifier_is_counted_and_the_others_still_hear(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    def explode(event: AlertEvent) -> None:
        raise RuntimeError("notifier down")

    events = _Events()
    logger = LLMLogger(clock=clock)
    manager = AlertManager(collector, [_error_rule()], [CallbackNotifier(explode), CallbackNotifier(events)],
                           clock=clock, logger=logger)
    assert _steps(manager, collector, clock, [20]) == ["firing"]
    assert manager.notifier_errors == 1 and manager.notifications == 1
    assert len(events.events) == 1
    assert any("notifier down" in e.data.get("error", "") for e in logger.get_logs(level="error"))


def test_logger_notifier_is_added_first_and_logs_firing_and_resolved(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    logger = LLMLogger(clock=clock)
    manager = AlertManager(collector, [_error_rule()], clock=clock, logger=logger)
    assert isinstance(manager.notifiers[0], LoggerNotifier)
    _steps(manager, collector, clock, [20, 2])
    warn, info = logger.get_logs(level="warn")[0], logger.get_logs(level="info")[0]
    assert warn.message.startswith("alert errors firing") and warn.data["status"] == "firing"
    assert info.message.startswith("alert errors resolved") and info.data["rule"] == "errors"


def test_notifier_classes_satisfy_the_protocol(clock: FakeClock) -> None:
    for notifier in (LoggerNotifier(LLMLogger(clock=clock)), CallbackNotifier(print),
                     WebhookNotifier("http://127.0.0.1:9/hook")):
        assert isinstance(notifier, Notifier)
    with pytest.raises(ValueError, match="logger"):
        LoggerNotifier(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="callback"):
        CallbackNotifier(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Webhooks on loopback


class _Receiver:
    """A real HTTP server on 127.0.0.1 that records POSTs and answers as told."""

    def __init__(self, statuses: list[int] | None = None, hang: threading.Event | None = None) -> None:
        self.bodies: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.statuses = list(statuses or [])
        self.hang = hang
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.bodies.append(json.loads(body))
                receiver.headers.append(dict(self.headers))
                if receiver.hang is not None:
                    receiver.hang.wait(10)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        if self.hang is not None:
            self.hang.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., _Receiver]]:
    made: list[_Receiver] = []

    def make(**kwargs: Any) -> _Receiver:
        made.append(_Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_webhook_receives_the_alert_json(
    collector: MetricsCollector, clock: FakeClock, receiver_factory: Callable[..., _Receiver]
) -> None:
    receiver = receiver_factory()
    hook = WebhookNotifier(receiver.url, headers={"X-Token": "t0ken"})
    manager = AlertManager(collector, [_error_rule()], [hook], clock=clock)
    _steps(manager, collector, clock, [20, 2])
    assert hook.flush(10)
    assert hook.sent == 2 and hook.failures == 0
    firing, resolved = receiver.bodies
    assert firing["rule"] == "errors" and firing["status"] == "firing"
    assert firing["metric"] == "error_rate" and firing["op"] == ">" and firing["threshold"] == 0.1
    assert firing["value"] == pytest.approx(0.2) and firing["request_count"] == 100
    assert firing["window_s"] == 10.0 and firing["at"] == START_MS / 1000 + 20.0
    assert firing["details"]["condition"] == "error_rate > 0.1 over 10s"
    assert resolved["status"] == "resolved" and resolved["since"] == firing["at"]
    assert receiver.headers[0]["X-Token"] == "t0ken"
    assert receiver.headers[0]["Content-Type"] == "application/json"
    hook.close()


def test_webhook_retries_a_503_then_delivers(receiver_factory: Callable[..., _Receiver]) -> None:
    receiver = receiver_factory(statuses=[503, 502])
    hook = WebhookNotifier(receiver.url, retries=2, backoff=0.0)
    assert hook.deliver(_event()) is True
    assert len(receiver.bodies) == 3 and hook.sent == 1 and hook.failures == 0
    hook.close()


def test_webhook_does_not_retry_a_400_and_counts_it(receiver_factory: Callable[..., _Receiver]) -> None:
    receiver = receiver_factory(statuses=[400])
    hook = WebhookNotifier(receiver.url, retries=3, backoff=0.0)
    assert hook.deliver(_event()) is False
    assert len(receiver.bodies) == 1 and hook.failures == 1 and hook.last_error == "HTTP 400"
    hook.close()


def test_webhook_gives_up_after_the_retries(receiver_factory: Callable[..., _Receiver]) -> None:
    receiver = receiver_factory(statuses=[500, 500, 500])
    hook = WebhookNotifier(receiver.url, retries=2, backoff=0.0)
    assert hook.deliver(_event()) is False
    assert len(receiver.bodies) == 3 and hook.failures == 1 and hook.last_error == "HTTP 500"
    hook.close()


def test_a_dead_webhook_is_logged_and_counted_and_disturbs_nothing(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    logger = LLMLogger(clock=clock)
    events = _Events()
    hook = WebhookNotifier(_closed_port_url(), retries=1, backoff=0.0, logger=logger)
    manager = AlertManager(collector, [_error_rule()], [hook, CallbackNotifier(events)], clock=clock)
    assert _steps(manager, collector, clock, [20, 2]) == ["firing", "resolved"]
    assert [e.status for e in events.events] == ["firing", "resolved"]
    assert hook.flush(10)
    assert hook.failures == 2 and hook.sent == 0 and "ConnectError" in (hook.last_error or "")
    assert manager.notifier_errors == 0 and manager.errors == 0
    logged = logger.get_logs(level="error")
    assert len(logged) == 2 and all(hook.url in entry.message for entry in logged)
    hook.close()


def test_a_hanging_webhook_times_out_without_holding_up_evaluation(
    collector: MetricsCollector, clock: FakeClock, receiver_factory: Callable[..., _Receiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hang = threading.Event()
    receiver = receiver_factory(hang=hang)
    hook = WebhookNotifier(receiver.url, timeout=0.2, retries=0)
    manager = AlertManager(collector, [_error_rule()], [hook], clock=clock)
    with caplog.at_level(logging.WARNING, logger="obs.alerting.manager"):
        assert _steps(manager, collector, clock, [20]) == ["firing"]
        # evaluate() has returned while the receiver still holds the request open.
        assert not hang.is_set() and hook.sent == 0
        assert hook.flush(10)
    assert hook.failures == 1 and "Timeout" in (hook.last_error or "")
    assert "alert webhook" in caplog.text
    hang.set()
    hook.close()


def test_a_full_queue_drops_and_counts(receiver_factory: Callable[..., _Receiver]) -> None:
    hang = threading.Event()
    receiver = receiver_factory(hang=hang)
    hook = WebhookNotifier(receiver.url, timeout=5.0, retries=0, max_queue=1)
    for _ in range(5):
        hook.notify(_event())
    # At most one event in flight and one queued: at least three were dropped at once.
    assert hook.failures >= 3 and "queue full" in (hook.last_error or "")
    hang.set()
    assert hook.flush(10)
    assert hook.sent + hook.failures == 5
    hook.close()
    hook.notify(_event())
    assert hook.last_error == "the notifier is closed"


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "http://127.0.0.1/x", "timeout": 0}, "timeout"),
        ({"url": "http://127.0.0.1/x", "retries": -1}, "retries"),
        ({"url": "http://127.0.0.1/x", "backoff": math.inf}, "backoff"),
        ({"url": "http://127.0.0.1/x", "max_queue": 0}, "max_queue"),
    ],
)
def test_webhook_validates_its_arguments(kwargs: dict[str, Any], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        WebhookNotifier(**kwargs)


def _event() -> AlertEvent:
    return AlertEvent(rule="r", status="firing", metric="error_rate", op=">", threshold=0.1, value=0.5,
                      window_s=60.0, request_count=10, at=1.0, since=1.0, message="r firing")
