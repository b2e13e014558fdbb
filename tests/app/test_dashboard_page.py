"""AppTest of the Dashboard page: tiles, charts and the cost of each model from the session's obs objects,
and the compute price set in the sidebar."""

from __future__ import annotations

import plotly.graph_objects as go

from app import charts, state
from app.charts import Threshold
from tests.app.conftest import open_app, plain, record_request
from tests.app.fake_server import FakeLlamaServer
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


def _cost_table(at) -> list[dict]:
    """The Cost by model table, row by row, as the page shows it."""
    tables = [frame.value for frame in at.dataframe if list(frame.value.columns) == charts.COST_COLUMNS]
    assert len(tables) == 1, [list(frame.value.columns) for frame in at.dataframe]
    return tables[0].to_dict("records")


def _captions(at) -> list[str]:
    return [plain(caption.value) for caption in at.caption]


def test_cost_per_model_says_free_for_a_model_priced_at_zero() -> None:
    at = open_app(PAGE)
    assert "Cost by model" in [h.value for h in at.subheader]
    assert "No request priced yet." in [i.value for i in at.info]
    app = at.session_state[state.APP]
    app.collector.set_compute_price(0.0, model="laptop-model")
    app.collector.record_request(400.0, 1000, 200, model="laptop-model", server_ms=380.0)
    record_request(app, latency_ms=120.0)  # test-model: 10 and 20 tokens at $0.001 / $0.002 per 1K
    at.run()
    assert _cost_table(at) == [
        {"model": "test-model", "requests": 1, "cost": "$0.000050", "priced_by": "tokens", "unpriced": 0,
         "server_s": 0.0},
        {"model": "laptop-model", "requests": 1, "cost": "free", "priced_by": "free", "unpriced": 0,
         "server_s": 0.38},
    ]
    assert any(c.startswith("New requests are priced per 1K tokens: $0.0010 prompt, $0.0020 completion")
               for c in _captions(at)), _captions(at)


def test_a_compute_price_in_the_sidebar_prices_answers_by_server_time(fake_server: FakeLlamaServer) -> None:
    at = open_app()  # Chat: the prices are in its sidebar
    box = at.sidebar.number_input(key=state.W_COMPUTE_PRICE)
    assert box.value is None  # off: priced by tokens
    box.set_value(0.9).run()
    app = at.session_state[state.APP]
    assert app.settings.compute_price == 0.9
    at.chat_input[0].set_value("Hello?").run()
    at.switch_page(PAGE).run()
    # The fake server reports prompt_ms 4 + predicted_ms 8: 12 ms at $0.90 per hour.
    assert _cost_table(at) == [
        {"model": "fake-model", "requests": 1, "cost": "$0.000003", "priced_by": "server time", "unpriced": 0,
         "server_s": 0.012},
    ]
    assert any(c.startswith("New requests are priced by server time: $0.9000 per hour")
               for c in _captions(at)), _captions(at)
    at.switch_page(state.CHAT_PAGE).run()
    assert at.sidebar.number_input(key=state.W_COMPUTE_PRICE).value == 0.9  # kept across pages


def test_a_zero_compute_price_makes_answers_free(fake_server: FakeLlamaServer) -> None:
    at = open_app()
    at.sidebar.number_input(key=state.W_COMPUTE_PRICE).set_value(0.0).run()
    at.chat_input[0].set_value("Hello?").run()
    at.switch_page(PAGE).run()
    [row] = _cost_table(at)
    assert (row["model"], row["cost"], row["priced_by"]) == ("fake-model", "free", "free")


def test_a_negative_compute_price_is_refused_and_the_last_good_one_kept() -> None:
    at = open_app()
    at.sidebar.number_input(key=state.W_COMPUTE_PRICE).set_value(1.5).run()
    at.sidebar.number_input(key=state.W_COMPUTE_PRICE).set_value(-2.0).run()
    app = at.session_state[state.APP]
    assert app.settings.compute_price == 1.5
    assert app.collector.price_for().per_hour == 1.5
    [error] = [e.value for e in at.sidebar.error]
    assert "dollars_per_hour must be a number in [0, 1e+06]" in error
    assert "$1.5000 per hour of server time" in plain(error)
    at.sidebar.number_input(key=state.W_COMPUTE_PRICE).set_value(None).run()  # emptied: back to tokens
    assert app.settings.compute_price is None
    assert app.collector.price_for().pricing == "tokens"


def test_the_charts_bucket_follows_the_range_and_the_history_held() -> None:
    from app.pages.dashboard import bucket_for

    now = 1_800_000_000.0
    assert bucket_for(1, now - 900, None, now) == (1, now - 900)
    assert bucket_for(1, now - 86400, None, now) == (60, now - 86400)
    assert bucket_for(60, now - 7 * 86400, None, now) == (3600, now - 7 * 86400)
    # Range "All": from the first stored request, so a short history keeps the chosen buckets.
    assert bucket_for(1, None, now - 120, now) == (1, now - 120)
    assert bucket_for(1, now - 86400, now - 120, now) == (1, now - 120)  # a day's range, two minutes held
    assert bucket_for(1, None, None, now) == (3600, None)


def test_tiles_count_the_history_file_by_scope(history_db) -> None:
    from obs.storage.sqlite import SqliteTraceStore
    from obs.trace.tracer import Tracer

    at = open_app(PAGE)
    app = at.session_state[state.APP]
    record_request(app, latency_ms=200.0)
    at.selectbox(key=state.W_SCOPE).set_value("Everything").run()
    assert _tiles(at)["Total Requests"] == "1"
    other = SqliteTraceStore(history_db)  # another program's request, written to the same file
    with other, Tracer(store=other, service_name="my-script").start_span("chat other", kind="client") as span:
        span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "other-model",
                             "obs.latency_ms": 800.0})
    at.run()
    tiles = _tiles(at)
    assert (tiles["Total Requests"], tiles["P95 Latency"]) == ("2", "800ms")
    at.selectbox(key=state.W_SCOPE).set_value("Service: my-script").run()
    assert _tiles(at)["Total Requests"] == "1"
    at.selectbox(key=state.W_SCOPE).set_value("Model: test-model").run()
    assert (_tiles(at)["Total Requests"], _tiles(at)["P95 Latency"]) == ("1", "200ms")
    at.selectbox(key=state.W_SCOPE).set_value("This browser session").run()
    assert (_tiles(at)["Total Requests"], _tiles(at)["P95 Latency"]) == ("1", "200ms")
