"""AppTest of the Dashboard page: tiles and charts from the session's obs objects."""

from __future__ import annotations

import plotly.graph_objects as go

from app import state
from app.charts import Threshold
from tests.app.conftest import open_app, record_request
from tests.app.plotly_spec import figures

PAGE = "app/pages/dashboard.py"
CHART_COUNT = 9


def _tiles(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _charts(at) -> dict[str, go.Figure]:
    """Plotly figures by title text."""
    return {figure.layout.title.text: figure for figure in figures(at)}


def test_empty_dashboard_shows_zero_tiles_and_every_chart() -> None:
    at = open_app(PAGE)
    assert not at.exception
    assert at.title[0].value == "Dashboard"
    tiles = _tiles(at)
    assert list(tiles) == ["Total Requests", "Total Tokens", "Total Cost", "Avg Latency", "P95 Latency",
                           "Error Rate", "Cache Hit Rate", "Throughput",
                           "Traces seen", "Kept by head sampling", "Kept by tail rules", "Dropped"]
    assert tiles["Total Requests"] == "0"
    assert tiles["Traces seen"] == "0"
    charts = _charts(at)
    assert len(charts) == CHART_COUNT
    assert set(charts) == {"Latency per request", "Latency distribution", "Throughput", "Cumulative cost",
                           "Tokens per request", "Time to first token", "Error rate", "Latency breakdown",
                           "Traces kept and dropped"}


def test_recorded_requests_reach_tiles_and_charts() -> None:
    at = open_app(PAGE)
    app = at.session_state[state.APP]
    record_request(app, latency_ms=120.0)
    record_request(app, latency_ms=480.0, completion_tokens=40)
    record_request(app, latency_ms=900.0, error=True)
    at.run()
    assert not at.exception
    tiles = _tiles(at)
    assert tiles["Total Requests"] == "3"
    assert tiles["Error Rate"] == "33.3%"
    assert tiles["Total Tokens"] == str(30 + 50 + 30)
    charts = _charts(at)
    latency = charts["Latency per request"]
    points = sorted(float(y) for trace in latency.data for y in trace.y)
    assert points == [120.0, 480.0, 900.0]
    tokens = charts["Tokens per request"]
    assert [t.name for t in tokens.data] == ["prompt", "completion"]
    assert list(tokens.data[1].y) == [20, 40, 20]
    histogram = charts["Latency distribution"].data[0]
    assert sum(histogram.y) == 3


def test_threshold_lines_from_the_session_are_drawn() -> None:
    at = open_app(PAGE)
    app = at.session_state[state.APP]
    record_request(app, latency_ms=300.0)
    app.thresholds["latency_ms"] = [Threshold(250.0, "p95 alert")]
    app.thresholds["error_rate"] = [Threshold(0.05, "error alert")]
    at.run()
    charts = _charts(at)
    latency = charts["Latency per request"]
    assert 250.0 in [shape.y0 for shape in latency.layout.shapes]
    assert [t.name for t in latency.data] == ["breached"]
    errors = charts["Error rate"]
    assert [shape.y0 for shape in errors.layout.shapes] == [0.05]


def test_refresh_controls_are_kept_in_the_session_settings() -> None:
    at = open_app(PAGE)
    at.selectbox(key=state.W_REFRESH_S).set_value(10)
    at.toggle(key=state.W_PAUSED).set_value(True)
    at.selectbox(key=state.W_BUCKET_S).set_value(60)
    at.run()
    assert not at.exception
    settings = at.session_state[state.APP].settings
    assert (settings.refresh_s, settings.paused, settings.bucket_s) == (10, True, 60)
    assert len(_charts(at)) == CHART_COUNT
