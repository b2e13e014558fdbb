"""Tests of app.alerting: rules from the sidebar's thresholds, chart lines, the banner line and the tables;
and of the app's background evaluation: rules fire, and the webhook hears of it, with no page drawing."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from app import alerting, state
from app.charts import Threshold
from obs.alerting.manager import AlertManager, AlertRule, AlertState, default_rules
from obs.clock import FakeClock
from obs.llm.errors import LLMServerError
from obs.metrics.collector import MetricsCollector
from tests.app.conftest import open_app, plain
from tests.app.fake_server import FakeLlamaServer
from tests.llm.servers import Handler, serve

T0_S = 1_700_000_000.0


def test_dashboard_rules_are_the_default_rules_with_the_chosen_thresholds() -> None:
    rules = alerting.dashboard_rules(0.2, 750.0)
    defaults = default_rules()
    assert [r.name for r in rules] == [r.name for r in defaults]
    by_metric = {r.metric: r for r in rules}
    assert by_metric["error_rate"].threshold == 0.2
    assert by_metric["p95_latency_ms"].threshold == 750.0
    for rule, default in zip(rules, defaults, strict=True):
        assert (rule.op, rule.window_s, rule.min_requests, rule.for_s, rule.cooldown_s, rule.hysteresis) == (
            default.op, default.window_s, default.min_requests, default.for_s, default.cooldown_s,
            default.hysteresis)


def test_dashboard_rules_replace_every_minimum_of_requests_when_given() -> None:
    assert [r.min_requests for r in alerting.dashboard_rules(0.05, 5000.0, min_requests=1)] == [1, 1]
    assert [r.min_requests for r in alerting.dashboard_rules(0.05, 5000.0)] == [
        r.min_requests for r in default_rules()]


@pytest.mark.parametrize("rate", [-0.01, 1.5, math.nan, math.inf])
def test_an_error_rate_outside_zero_to_one_is_refused_in_percent(rate: float) -> None:
    with pytest.raises(ValueError, match="alert error rate must be between 0% and 100%"):
        alerting.dashboard_rules(rate, 5000.0)


def test_a_bad_latency_threshold_or_minimum_is_refused_by_the_rule() -> None:
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0, got -1"):
        alerting.dashboard_rules(0.05, -1.0)
    with pytest.raises(ValueError, match="min_requests must be an integer >= 0, got -2"):
        alerting.dashboard_rules(0.05, 5000.0, min_requests=-2)


@pytest.mark.parametrize(("metric", "value", "shown"), [
    ("error_rate", 0.125, "12.5%"),
    ("p95_latency_ms", 1234.4, "1,234 ms"),
    ("p95_ttft_ms", 80.0, "80 ms"),
    ("p95_latency_ms", 0.9, "0.9 ms"),
    ("p95_latency_ms", 2.0, "2 ms"),
    ("cost_per_hour", 0.03, "$0.0300/h"),
    ("tokens_per_second", 12.34, "12.3 tok/s"),
    ("requests_per_minute", 4.0, "4.0 req/min"),
    ("error_rate", None, "n/a"),
    ("p95_latency_ms", math.nan, "n/a"),
])
def test_metric_values_are_shown_in_their_unit(metric: str, value: float | None, shown: str) -> None:
    assert alerting.format_metric(metric, value) == shown


def test_chart_thresholds_put_each_rule_on_the_chart_of_its_metric() -> None:
    rules = [
        *alerting.dashboard_rules(0.1, 800.0),
        AlertRule("slow_first_token", "p95_ttft_ms", ">", 300.0, window_s=60.0),
        AlertRule("costly", "cost_per_hour", ">", 1.0, window_s=600.0),
    ]
    lines = alerting.chart_thresholds(rules)
    assert lines == {
        "error_rate": [Threshold(0.1, "high_error_rate > 10.0%")],
        "latency_ms": [Threshold(800.0, "slow_p95_latency > 800 ms")],
        "ttft_ms": [Threshold(300.0, "slow_first_token > 300 ms")],
    }


def _state(status: str, value: float | None, count: int) -> AlertState:
    rule = AlertRule("slow_p95_latency", "p95_latency_ms", ">", 500.0, window_s=300.0, for_s=30.0)
    return AlertState(rule, status, since=T0_S, value=value, request_count=count)  # type: ignore[arg-type]


def test_banner_text_names_the_rule_its_value_and_condition() -> None:
    assert alerting.banner_text(_state("firing", 812.0, 3)) == (
        "Alert firing: slow_p95_latency",
        "p95 latency is 812 ms, > 500 ms over the last 300 s (3 requests).",
    )
    head, detail = alerting.banner_text(_state("pending", 612.0, 1))
    assert head == "Alert pending: slow_p95_latency"
    assert detail == ("p95 latency is 612 ms, > 500 ms over the last 300 s (1 request); "
                      "fires if it lasts 30 s.")


@pytest.fixture
def manager() -> tuple[AlertManager, MetricsCollector, FakeClock]:
    clock = FakeClock(start_ms=T0_S * 1000)
    collector = MetricsCollector(clock=clock)
    alerts = AlertManager(collector, alerting.dashboard_rules(0.5, 500.0, min_requests=1), clock=clock)
    return alerts, collector, clock


def test_rules_frame_lists_every_field_of_each_rule(manager) -> None:
    alerts, _, _ = manager
    frame = alerting.rules_frame(alerts.rules)
    assert list(frame.columns) == ["name", "metric", "op", "threshold", "clears_at", "window_s",
                                   "min_requests", "for_s", "cooldown_s"]
    assert frame.to_dict("records") == [
        {"name": "high_error_rate", "metric": "error_rate", "op": ">", "threshold": "50.0%",
         "clears_at": "45.0%", "window_s": 300.0, "min_requests": 1, "for_s": 0.0, "cooldown_s": 300.0},
        {"name": "slow_p95_latency", "metric": "p95_latency_ms", "op": ">", "threshold": "500 ms",
         "clears_at": "450 ms", "window_s": 300.0, "min_requests": 1, "for_s": 0.0, "cooldown_s": 300.0},
    ]


def test_states_and_history_frames_follow_the_manager(manager) -> None:
    alerts, collector, clock = manager
    empty = alerting.states_frame(alerts.states())
    assert list(empty["status"]) == ["ok", "ok"]
    assert list(empty["value"]) == ["n/a", "n/a"]
    assert empty["since"].isna().all()
    assert alerting.history_frame(alerts.history).empty

    collector.record_request(900.0, 10, 20)
    alerts.evaluate()
    clock.advance(10_000)
    alerts.set_rules(alerting.dashboard_rules(0.5, 1000.0, min_requests=1))
    alerts.evaluate()

    states = alerting.states_frame(alerts.states())
    latency = states.iloc[1]
    assert (latency["name"], latency["status"], latency["value"], latency["requests"]) == (
        "slow_p95_latency", "resolved", "900 ms", 1)
    assert latency["since"] == latency["evaluated_at"] == pd.Timestamp(T0_S + 10, unit="s", tz="UTC")
    history = alerting.history_frame(alerts.history)
    assert history[["rule", "from_status", "to_status", "value", "condition"]].to_dict("records") == [
        {"rule": "slow_p95_latency", "from_status": "firing", "to_status": "resolved", "value": "900 ms",
         "condition": "p95_latency_ms > 1,000 ms"},
        {"rule": "slow_p95_latency", "from_status": "ok", "to_status": "firing", "value": "900 ms",
         "condition": "p95_latency_ms > 500 ms"},
    ]
    assert list(history["time"]) == [pd.Timestamp(T0_S + 10, unit="s", tz="UTC"),
                                     pd.Timestamp(T0_S, unit="s", tz="UTC")]
    assert list(history["requests"]) == [1, 1]


# -- the background evaluator of the app process ----------------------------------------------------

@pytest.mark.parametrize(("raw", "seconds"),
                         [(None, 5.0), ("", 5.0), ("  ", 5.0), ("2.5", 2.5), ("60", 60.0)])
def test_the_evaluation_interval_comes_from_the_environment(raw: str | None, seconds: float) -> None:
    environ = {} if raw is None else {alerting.INTERVAL_ENV: raw}
    assert alerting.interval_from_env(environ) == seconds


@pytest.mark.parametrize("raw", ["0", "-1", "0.01", "86401", "nan", "inf", "five"])
def test_a_bad_evaluation_interval_is_refused_naming_the_variable_and_range(raw: str) -> None:
    with pytest.raises(ValueError, match=r"OBS_ALERT_INTERVAL_S must be a number of seconds from 0.05 to "
                                         r"86,400, got '.*': set it to e.g. 5"):
        alerting.interval_from_env({alerting.INTERVAL_ENV: raw})


def test_the_webhook_url_comes_from_the_environment() -> None:
    assert alerting.webhook_url_from_env({}) is None
    assert alerting.webhook_url_from_env({alerting.WEBHOOK_ENV: "  "}) is None
    assert alerting.webhook_url_from_env({alerting.WEBHOOK_ENV: " http://h/a "}) == "http://h/a"


def test_the_evaluation_and_notification_lines_say_how_often_and_where() -> None:
    assert alerting.evaluation_text(5.0, None, T0_S) == (
        "Rules are evaluated in the background every 5 s, whether a page is open or not. "
        "The first evaluation is due within one interval.")
    assert alerting.evaluation_text(2.5, T0_S, T0_S + 3) == (
        "Rules are evaluated in the background every 2.5 s, whether a page is open or not. "
        "Last evaluated at 22:13:20 UTC (3 s ago).")
    assert alerting.notification_text(None) == (
        "Firing and resolving are written to the Logs page. Set OBS_ALERT_WEBHOOK_URL to have them "
        "POSTed as JSON as well.")
    assert alerting.notification_text(None, problem="OBS_ALERT_WEBHOOK_URL ignored: bad") == (
        "Firing and resolving are written to the Logs page. OBS_ALERT_WEBHOOK_URL ignored: bad.")
    assert alerting.notification_text("http://h/a", 2, 0) == (
        "Firing and resolving are written to the Logs page and POSTed to http://h/a (2 sent, 0 failed).")
    assert alerting.notification_text("http://h/a", 2, 1, "HTTP 500") == (
        "Firing and resolving are written to the Logs page and POSTed to http://h/a (2 sent, 1 failed; "
        "last failure: HTTP 500).")


def _until(condition: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    """Poll `condition` until it is truthy (returned) or `timeout_s` passes (AssertionError)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s")
        time.sleep(0.05)


def _accept(handler: Handler) -> None:
    handler.send_json(200, {})


def test_with_no_page_drawing_failing_requests_fire_the_rule_and_the_webhook_hears_it(
    fake_server: FakeLlamaServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with serve(_accept) as hook:
        monkeypatch.setenv(alerting.WEBHOOK_ENV, f"{hook.url}/alerts")
        at = open_app(state.ALERTS_PAGE)
        at.sidebar.number_input(key=state.W_ALERT_MIN_REQUESTS).set_value(1).run()
        app = at.session_state[state.APP]
        assert [s.status for s in app.alert_states()] == ["ok", "ok"]
        fake_server.fail_status = 500
        for _ in range(2):
            with pytest.raises(LLMServerError):
                app.client.chat([{"role": "user", "content": "Hello?"}])
        # From here on no page draws: only the app's background evaluator can fire the rule.
        posts = _until(lambda: [r for r in hook.requests if r.method == "POST"])
        body = posts[0].json
    assert posts[0].path == "/alerts"
    assert (body["rule"], body["status"], body["value"], body["request_count"]) == (
        "high_error_rate", "firing", 1.0, 2)
    assert [(t.rule, t.from_status, t.to_status) for t in app.alerts.history] == [
        ("high_error_rate", "ok", "firing")]
    firing = app.logger.get_logs(level="warn")
    assert any("alert high_error_rate firing" in entry.message for entry in firing)
    # A page opened now shows what fired while none was drawing.
    at.run()
    _, states, _ = [frame.value for frame in at.dataframe]
    assert list(states["status"]) == ["firing", "ok"]
    assert "1 change(s) of state, newest first." in [c.value for c in at.caption]
    assert any(f"POSTed to {hook.url}/alerts (1 sent, 0 failed)" in plain(c.value) for c in at.caption)
