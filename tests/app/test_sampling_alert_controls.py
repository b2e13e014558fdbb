"""AppTest of the sidebar's sampling and alert controls, the threshold lines and the alert banner."""

from __future__ import annotations

import pytest

from app import state
from tests.app.conftest import open_app, plain, record_request
from tests.app.plotly_spec import figures

PAGES = [state.CHAT_PAGE, state.DASHBOARD_PAGE, state.TRACES_PAGE, state.LOGS_PAGE, state.ALERTS_PAGE]


def _errors(at) -> list[str]:
    return [plain(element.value) for element in at.error]


def _charts(at) -> dict:
    return {figure.layout.title.text: figure for figure in figures(at)}


def _hlines(figure) -> list[float]:
    return [shape.y0 for shape in figure.layout.shapes if shape.y0 == shape.y1]


def test_the_sampling_slider_sets_the_tracers_head_sampler_and_stays_across_pages() -> None:
    at = open_app(state.DASHBOARD_PAGE)
    app = at.session_state[state.APP]
    assert at.sidebar.slider(key=state.W_SAMPLE_PCT).value == 100
    at.sidebar.slider(key=state.W_SAMPLE_PCT).set_value(25).run()
    assert not at.exception
    assert app.tracer.head_sampler.root.rate == 0.25
    assert app.settings.sample_rate == 0.25
    at.switch_page(state.CHAT_PAGE).run()
    assert at.sidebar.slider(key=state.W_SAMPLE_PCT).value == 25
    assert app.tracer.head_sampler.root.rate == 0.25


def test_the_tail_toggles_and_slow_threshold_set_the_tail_sampler() -> None:
    at = open_app(state.DASHBOARD_PAGE)
    app = at.session_state[state.APP]
    assert [rule.name for rule in app.tracer.tail_sampler.rules] == ["errors"]
    at.sidebar.toggle(key=state.W_KEEP_ERRORS).set_value(False)
    at.sidebar.toggle(key=state.W_KEEP_SLOW).set_value(True)
    at.sidebar.number_input(key=state.W_SLOW_MS).set_value(1500.0)
    at.run()
    assert [(rule.name, rule.threshold_ms) for rule in app.tracer.tail_sampler.rules] == [("slow", 1500.0)]


def test_a_bad_slow_threshold_shows_an_error_and_the_last_good_value_stays() -> None:
    at = open_app(state.DASHBOARD_PAGE)
    app = at.session_state[state.APP]
    at.sidebar.number_input(key=state.W_SLOW_MS).set_value(-10.0).run()
    assert any("threshold_ms must be a finite number >= 0, got -10" in e and "Still using 2,000 ms" in e
               for e in _errors(at))
    assert app.settings.slow_ms == 2000.0


def test_sampling_tiles_and_chart_count_what_the_rate_kept_and_dropped() -> None:
    at = open_app(state.DASHBOARD_PAGE)
    app = at.session_state[state.APP]
    at.sidebar.slider(key=state.W_SAMPLE_PCT).set_value(0).run()
    record_request(app, latency_ms=100.0)
    record_request(app, latency_ms=100.0, error=True)  # kept by the tail: errors
    at.run()
    tiles = {m.label: m.value for m in at.metric}
    # The tiles count the stored requests: the dropped trace's request never reached the history file.
    assert (tiles["Total Requests"], tiles["Traces seen"], tiles["Kept by head sampling"],
            tiles["Kept by tail rules"], tiles["Dropped"]) == ("1", "2", "0", "1", "1")
    sampling = _charts(at)["Traces kept and dropped"]
    totals = {trace.name: sum(trace.y) for trace in sampling.data}
    assert totals == {"kept (head)": 0, "kept (tail)": 1, "dropped": 1, "seen": 2}
    caption = next(c.value for c in at.caption if "Head sampling keeps" in c.value)
    assert "keeps 0% of new traces" in caption and "1 of 2 finished traces kept (50%)" in caption


def test_alert_thresholds_change_the_rules_and_the_chart_lines() -> None:
    at = open_app(state.DASHBOARD_PAGE)
    app = at.session_state[state.APP]
    record_request(app, latency_ms=400.0)
    at.run()
    charts = _charts(at)
    assert _hlines(charts["Latency per request"])[-1] == 5000.0
    assert _hlines(charts["Error rate"]) == [0.05]
    at.sidebar.number_input(key=state.W_ALERT_ERROR_PCT).set_value(20.0)
    at.sidebar.number_input(key=state.W_ALERT_P95_MS).set_value(300.0)
    at.sidebar.number_input(key=state.W_ALERT_MIN_REQUESTS).set_value(2)
    at.run()
    assert not at.exception
    assert [(r.name, r.threshold, r.min_requests) for r in app.alerts.rules] == [
        ("high_error_rate", 0.2, 2), ("slow_p95_latency", 300.0, 2)]
    charts = _charts(at)
    latency = charts["Latency per request"]
    assert 300.0 in _hlines(latency) and 5000.0 not in _hlines(latency)
    assert [trace.name for trace in latency.data] == ["breached"]  # 400 ms is above the 300 ms line
    assert "slow_p95_latency > 300 ms" in [a.text for a in latency.layout.annotations]
    assert _hlines(charts["Error rate"]) == [0.2]


@pytest.mark.parametrize(("key", "value", "message"), [
    (state.W_ALERT_ERROR_PCT, 150.0, "alert error rate must be between 0% and 100%, got 150%"),
    (state.W_ALERT_P95_MS, -1.0, "threshold must be a finite number >= 0, got -1"),
    (state.W_ALERT_MIN_REQUESTS, -3, "min_requests must be an integer >= 0, got -3"),
])
def test_a_bad_alert_setting_shows_an_error_and_the_rules_stay(key: str, value: float, message: str) -> None:
    at = open_app(state.DASHBOARD_PAGE)
    app = at.session_state[state.APP]
    rules = app.alerts.rules
    at.sidebar.number_input(key=key).set_value(value).run()
    assert any(message in e and "Still alerting above 5.0% errors / 5,000 ms p95" in e for e in _errors(at))
    assert app.alerts.rules == rules


def test_a_firing_rule_shows_a_banner_on_every_page_until_it_resolves() -> None:
    at = open_app(state.DASHBOARD_PAGE)
    app = at.session_state[state.APP]
    at.sidebar.number_input(key=state.W_ALERT_P95_MS).set_value(100.0)
    at.sidebar.number_input(key=state.W_ALERT_MIN_REQUESTS).set_value(1)
    at.run()
    assert not any("Alert firing" in e for e in _errors(at))
    record_request(app, latency_ms=400.0)
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, page
        banners = [e for e in _errors(at) if "Alert firing" in e]
        assert banners == ["**Alert firing: slow_p95_latency** — p95 latency is 400 ms, > 100 ms over "
                           "the last 300 s (1 request)."], page
        links = [link.proto for link in at.get("page_link") if link.proto.label == "Open the Alerts page"]
        expected = [] if page == state.ALERTS_PAGE else [
            ("alerts", f"{state.QUERY_SESSION}={at.session_state[state.SESSION_ID]}")]
        assert [(link.page, link.query_string) for link in links] == expected, page
    at.sidebar.number_input(key=state.W_ALERT_P95_MS).set_value(1000.0).run()
    assert not any("Alert" in e for e in _errors(at))
