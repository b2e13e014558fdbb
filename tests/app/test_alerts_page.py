"""AppTest of the Alerts page: the session's rules, their current states, the history of changes, and how
rules are evaluated and where notifications go."""

from __future__ import annotations

import pytest

from app import alerting, state
from tests.app.conftest import open_app, plain, record_request


def _tables(at) -> list:
    return [frame.value for frame in at.dataframe]


def test_the_page_lists_the_rules_and_their_states_before_any_request() -> None:
    at = open_app(state.ALERTS_PAGE)
    assert not at.exception
    assert at.title[0].value == "Alerts"
    assert [h.value for h in at.subheader if h.value in ("Rules", "Current state", "History")] == [
        "Rules", "Current state", "History"]
    rules, states = _tables(at)
    assert rules[["name", "metric", "op", "threshold", "window_s", "min_requests", "for_s", "cooldown_s"]] \
        .to_dict("records") == [
        {"name": "high_error_rate", "metric": "error_rate", "op": ">", "threshold": "5.0%", "window_s": 300.0,
         "min_requests": 10, "for_s": 0.0, "cooldown_s": 300.0},
        {"name": "slow_p95_latency", "metric": "p95_latency_ms", "op": ">", "threshold": "5,000 ms",
         "window_s": 300.0, "min_requests": 5, "for_s": 0.0, "cooldown_s": 300.0},
    ]
    assert list(states["name"]) == ["high_error_rate", "slow_p95_latency"]
    assert list(states["status"]) == ["ok", "ok"]
    assert list(states["value"]) == ["n/a", "n/a"]  # no requests: too few to judge
    assert [info.value for info in at.info] == ["No rule has changed state yet."]


def test_states_and_history_follow_the_rules_newest_first() -> None:
    at = open_app(state.ALERTS_PAGE)
    app = at.session_state[state.APP]
    at.sidebar.number_input(key=state.W_ALERT_P95_MS).set_value(200.0)
    at.sidebar.number_input(key=state.W_ALERT_MIN_REQUESTS).set_value(1)
    at.run()
    record_request(app, latency_ms=350.0)
    at.run()
    rules, states, history = _tables(at)
    assert list(rules["threshold"]) == ["5.0%", "200 ms"]
    assert list(rules["min_requests"]) == [1, 1]
    latency = states.iloc[1]
    assert (latency["status"], latency["value"], latency["requests"]) == ("firing", "350 ms", 1)
    assert latency["since"] is not None
    assert history[["rule", "from_status", "to_status", "value", "condition"]].to_dict("records") == [
        {"rule": "slow_p95_latency", "from_status": "ok", "to_status": "firing", "value": "350 ms",
         "condition": "p95_latency_ms > 200 ms"},
    ]
    at.sidebar.number_input(key=state.W_ALERT_P95_MS).set_value(1000.0).run()
    # The page reads states, it does not evaluate: two passes of the app's evaluator (as it makes in the
    # background) resolve the rule, then return it to ok; the page shows where they left it.
    evaluator = state.alert_evaluator()
    evaluator.evaluate_all()
    evaluator.evaluate_all()
    at.run()
    _, states, history = _tables(at)
    assert states["status"][1] == "ok"
    assert list(zip(history["from_status"], history["to_status"], strict=True)) == [
        ("resolved", "ok"), ("firing", "resolved"), ("ok", "firing")]
    assert list(history["value"]) == ["350 ms"] * 3
    assert history["time"].is_monotonic_decreasing


def test_the_page_says_how_often_rules_are_evaluated_and_where_notifications_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(alerting.WEBHOOK_ENV, "ftp://example.invalid/hook")
    at = open_app(state.ALERTS_PAGE)
    evaluator = state.alert_evaluator()
    captions = [plain(c.value) for c in at.caption]
    assert any(f"Rules are evaluated in the background every {evaluator.interval_s:g} s, whether a page is "
               "open or not." in c for c in captions), captions
    assert any(c.startswith("Firing and resolving are written to the Logs page. OBS_ALERT_WEBHOOK_URL "
                            "ignored: WebhookNotifier: url must be an http:// or https:// URL")
               for c in captions), captions
    assert at.session_state[state.APP].alerts.notifiers[1:] == ()  # only the session's logger


def test_without_a_webhook_the_page_says_how_to_set_one() -> None:
    at = open_app(state.ALERTS_PAGE)
    assert "Notifications" in [h.value for h in at.subheader]
    assert ("Firing and resolving are written to the Logs page. Set OBS_ALERT_WEBHOOK_URL to have them "
            "POSTed as JSON as well.") in [plain(c.value) for c in at.caption]
