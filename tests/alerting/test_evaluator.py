"""Tests for obs.alerting.evaluator: one background thread that evaluates every watched AlertManager.

Passes made by hand (`evaluate_all`) run on a fake clock and are exact; the
thread's own passes are waited for on conditions (an event a notifier sets,
the pass counter), never on a fixed sleep. Webhooks go to a real loopback
HTTP server.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from obs.alerting.evaluator import AlertEvaluator
from obs.alerting.manager import AlertManager, AlertRule, CallbackNotifier, WebhookNotifier
from obs.clock import FakeClock
from obs.metrics.collector import MetricsCollector
from tests.llm.servers import Handler, LoopbackServer, serve

START_MS = 1_700_000_000_000.0
WAIT_S = 30.0


def _error_rule() -> AlertRule:
    return AlertRule("errors", "error_rate", ">", 0.10, 60.0, min_requests=1, cooldown_s=0.0, hysteresis=0.0)


def _until(condition: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """Poll `condition` until it is truthy (returned) or `timeout_s` passes (AssertionError)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {condition}")
        time.sleep(0.02)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ms=START_MS)


@pytest.fixture
def evaluator() -> Iterator[AlertEvaluator]:
    made = AlertEvaluator(interval_s=0.05)
    yield made
    assert made.stop(timeout_s=5.0)


def _failing(collector: MetricsCollector, clock: FakeClock, requests: int = 3) -> None:
    for _ in range(requests):
        collector.record_request(100.0, 10, 20, error=True, timestamp=clock.time_s())


def test_a_pass_evaluates_every_watched_manager(clock: FakeClock) -> None:
    heard: list[tuple[str, str]] = []
    collectors = [MetricsCollector(clock=clock) for _ in range(2)]
    managers = [
        AlertManager(c, [_error_rule()], [CallbackNotifier(lambda e, i=i: heard.append((str(i), e.status)))],
                     clock=clock)
        for i, c in enumerate(collectors)
    ]
    evaluator = AlertEvaluator(clock=clock)
    for manager in managers:
        evaluator.watch(manager)
    evaluator.watch(managers[0])  # twice is once
    _failing(collectors[1], clock)
    assert evaluator.evaluate_all() == 0
    assert [m.state("errors").status for m in managers] == ["ok", "firing"]
    assert heard == [("1", "firing")]
    assert (evaluator.passes, evaluator.evaluations, evaluator.errors) == (1, 2, 0)
    assert evaluator.last_pass_at == START_MS / 1000
    evaluator.unwatch(managers[1])
    assert evaluator.watched() == [managers[0]]


def test_a_manager_nothing_else_holds_is_forgotten(clock: FakeClock) -> None:
    evaluator = AlertEvaluator(clock=clock)
    manager = AlertManager(MetricsCollector(clock=clock), [_error_rule()], clock=clock)
    evaluator.watch(manager)
    assert len(evaluator.watched()) == 1
    del manager
    gc.collect()
    assert evaluator.watched() == []
    assert evaluator.evaluate_all() == 0
    assert evaluator.evaluations == 0


def test_a_manager_that_raises_is_counted_and_the_others_still_evaluate(
    clock: FakeClock, caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def evaluate(self, now: float | None = None) -> None:
            raise RuntimeError("the collector is gone")

    broken = Broken()
    collector = MetricsCollector(clock=clock)
    manager = AlertManager(collector, [_error_rule()], clock=clock)
    evaluator = AlertEvaluator(clock=clock)
    evaluator.watch(broken)
    evaluator.watch(manager)
    _failing(collector, clock)
    assert evaluator.evaluate_all() == 1
    assert evaluator.errors == 1
    assert manager.state("errors").status == "firing"
    assert "the collector is gone" in caplog.text


def test_the_thread_fires_a_rule_and_a_webhook_hears_it_with_nobody_evaluating(
    evaluator: AlertEvaluator,
) -> None:
    def accept(handler: Handler) -> None:
        handler.send_json(200, {})

    server: LoopbackServer
    with serve(accept) as server:
        collector = MetricsCollector()
        hook = WebhookNotifier(server.url, timeout=5.0)
        manager = AlertManager(collector, [_error_rule()], [hook])
        evaluator.watch(manager)
        evaluator.start()
        assert evaluator.running
        for _ in range(3):
            collector.record_request(100.0, 10, 20, error=True)
        posts = _until(lambda: [r.json for r in server.requests if r.method == "POST"])
        hook.close()
    assert posts[0]["rule"] == "errors"
    assert posts[0]["status"] == "firing"
    assert (posts[0]["value"], posts[0]["request_count"]) == (1.0, 3)
    assert manager.state("errors").status == "firing"
    assert evaluator.stop()
    assert not evaluator.running


def test_a_shorter_interval_wakes_a_waiting_thread() -> None:
    fired = threading.Event()
    collector = MetricsCollector()
    manager = AlertManager(collector, [_error_rule()], [CallbackNotifier(lambda e: fired.set())])
    evaluator = AlertEvaluator(interval_s=3600.0)
    evaluator.watch(manager)
    evaluator.start()
    try:
        collector.record_request(100.0, 10, 20, error=True)
        assert not fired.is_set()
        evaluator.interval_s = 0.05  # the hour-long wait ends now, not in an hour
        assert fired.wait(WAIT_S)
        assert evaluator.interval_s == 0.05
    finally:
        assert evaluator.stop()


def _evaluator_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "obs-alert-evaluator" and t.is_alive())


def test_start_is_idempotent_and_stop_ends_the_thread(evaluator: AlertEvaluator) -> None:
    before = _evaluator_threads()
    evaluator.start()
    evaluator.start()
    assert _evaluator_threads() == before + 1
    _until(lambda: evaluator.passes >= 2)
    assert evaluator.stop()
    assert not evaluator.running
    assert _evaluator_threads() == before
    passes = evaluator.passes
    evaluator.start()  # it can be started again
    _until(lambda: evaluator.passes > passes)


@pytest.mark.parametrize("bad", [0, 0.01, -1, 86_401, float("nan"), float("inf"), True, "5"])
def test_a_bad_interval_is_refused_naming_the_range(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"interval_s must be a number of seconds in \[0.05, 86400\]"):
        AlertEvaluator(interval_s=bad)
    evaluator = AlertEvaluator()
    with pytest.raises(ValueError, match="interval_s"):
        evaluator.interval_s = bad
    assert evaluator.interval_s == 5.0


def test_watching_something_that_cannot_be_evaluated_is_refused() -> None:
    evaluator = AlertEvaluator()
    with pytest.raises(ValueError, match="must have evaluate"):
        evaluator.watch(object())  # type: ignore[arg-type]

    class Slotted:
        __slots__ = ()

        def evaluate(self, now: float | None = None) -> None:
            return None

    with pytest.raises(ValueError, match="weak references"):
        evaluator.watch(Slotted())
    with pytest.raises(ValueError, match="clock"):
        AlertEvaluator(clock=object())  # type: ignore[arg-type]


def test_repr_counts() -> None:
    evaluator = AlertEvaluator(interval_s=2)
    assert repr(evaluator) == "AlertEvaluator(interval_s=2, watched=0, passes=0, errors=0)"

