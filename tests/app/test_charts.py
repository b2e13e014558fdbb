"""Tests of app.charts: each builder turns contract-shaped frames into the expected figure."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

from app import charts
from app.charts import Threshold
from obs.clock import FakeClock
from obs.metrics.collector import MetricsCollector
from obs.trace.ids import SequentialIdGenerator
from obs.trace.spans import create_span, end_span
from obs.trace.traces import add_span_to_trace, create_trace, end_trace

REQUEST_COLUMNS = [
    "time", "trace_id", "span_id", "name", "model", "status", "latency_ms", "ttft_ms", "prompt_tokens",
    "completion_tokens", "cached_tokens", "total_tokens", "cost", "tokens_per_second", "prompt_ms",
    "predicted_ms", "non_model_ms", "error_type",
]
TIMELINE_COLUMNS = [
    "time", "start", "requests", "errors", "prompt_tokens", "completion_tokens", "cost", "avg_latency_ms",
    "p50_latency_ms", "p95_latency_ms", "p95_ttft_ms", "cache_hits", "traces_kept_head",
    "traces_kept_tail", "traces_dropped",
]
T0 = 1_700_000_000.0


def _request(i: int, latency: float, status: str = "success", ttft: float | None = 50.0) -> dict:
    return {
        "time": pd.Timestamp(T0 + i, unit="s", tz="UTC"), "trace_id": f"{i + 1:032x}",
        "span_id": f"{i + 1:016x}", "name": "chat smollm2", "model": "smollm2", "status": status,
        "latency_ms": latency, "ttft_ms": ttft, "prompt_tokens": 10 + i, "completion_tokens": 20 + i,
        "cached_tokens": 0, "total_tokens": 30 + 2 * i, "cost": 0.001 * (i + 1), "tokens_per_second": 100.0,
        "prompt_ms": 10.0, "predicted_ms": latency - 30.0, "non_model_ms": 20.0,
        "error_type": None if status == "success" else "ServerError",
    }


def requests_frame(latencies: list[float], statuses: list[str] | None = None) -> pd.DataFrame:
    statuses = statuses or ["success"] * len(latencies)
    rows = [_request(i, lat, st) for i, (lat, st) in enumerate(zip(latencies, statuses, strict=True))]
    return pd.DataFrame(rows, columns=REQUEST_COLUMNS)


def timeline_frame(rows: list[tuple[int, int]]) -> pd.DataFrame:
    """Buckets of one second: (requests, errors) each."""
    data = []
    for i, (n, errors) in enumerate(rows):
        data.append({
            "time": pd.Timestamp(T0 + i, unit="s", tz="UTC"), "start": T0 + i,
            "requests": n, "errors": errors,
            "prompt_tokens": 10 * n, "completion_tokens": 30 * n, "cost": 0.001 * n, "avg_latency_ms": 100.0,
            "p50_latency_ms": 90.0, "p95_latency_ms": 150.0, "p95_ttft_ms": 40.0, "cache_hits": 0,
            "traces_kept_head": n, "traces_kept_tail": 0, "traces_dropped": errors,
        })
    return pd.DataFrame(data, columns=TIMELINE_COLUMNS)


def empty_requests() -> pd.DataFrame:
    return pd.DataFrame(columns=REQUEST_COLUMNS)


def _annotations(fig: go.Figure) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def _hline_values(fig: go.Figure) -> list[float]:
    return [s.y0 for s in fig.layout.shapes if s.y0 == s.y1]


@pytest.mark.parametrize("build", [
    lambda: charts.latency_over_time(empty_requests()),
    lambda: charts.cumulative_cost(empty_requests()),
    lambda: charts.tokens_per_request(empty_requests()),
    lambda: charts.ttft_distribution(empty_requests()),
    lambda: charts.latency_breakdown(empty_requests()),
    lambda: charts.throughput_over_time(pd.DataFrame(columns=TIMELINE_COLUMNS)),
    lambda: charts.error_rate_over_time(pd.DataFrame(columns=TIMELINE_COLUMNS)),
    lambda: charts.sampling_over_time(pd.DataFrame(columns=TIMELINE_COLUMNS)),
    lambda: charts.latency_histogram(pd.DataFrame({"bucket": ["0-100ms"], "count": [0]})),
])
def test_empty_frames_give_a_figure_with_a_message_and_no_data(build) -> None:
    fig = build()
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 0
    assert any(text.startswith("No ") for text in _annotations(fig))


def test_latency_over_time_plots_each_request_by_status_with_percentile_lines() -> None:
    frame = requests_frame([100.0, 200.0, 300.0], ["success", "error", "success"])
    percentiles = {"p50": 200.0, "p90": 280.0, "p95": 290.0, "p99": 298.0}
    fig = charts.latency_over_time(frame, percentiles=percentiles)
    by_name = {trace.name: trace for trace in fig.data}
    assert list(by_name["success"].y) == [100.0, 300.0]
    assert list(by_name["error"].y) == [200.0]
    assert list(by_name["error"].customdata) == [f"{2:032x}"]
    assert _hline_values(fig) == [200.0, 290.0]
    assert "p95 290 ms" in _annotations(fig)


def test_latency_over_time_marks_requests_above_the_lowest_threshold() -> None:
    frame = requests_frame([100.0, 600.0, 900.0])
    fig = charts.latency_over_time(frame, thresholds=[Threshold(800.0, "alert"), Threshold(500.0, "warn")])
    by_name = {trace.name: list(trace.y) for trace in fig.data}
    assert by_name == {"breached": [600.0, 900.0], "success": [100.0]}
    assert sorted(_hline_values(fig)) == [500.0, 800.0]
    assert {"alert", "warn"} <= set(_annotations(fig))


def test_latency_histogram_keeps_bucket_order() -> None:
    hist = pd.DataFrame({"bucket": ["0-100ms", "100-250ms", "250-500ms"], "count": [2, 0, 5]})
    fig = charts.latency_histogram(hist)
    assert list(fig.data[0].x) == ["0-100ms", "100-250ms", "250-500ms"]
    assert list(fig.data[0].y) == [2, 0, 5]


def test_throughput_divides_counts_by_bucket_width() -> None:
    fig = charts.throughput_over_time(timeline_frame([(2, 0), (6, 1)]), bucket_s=2)
    bars, line = fig.data
    assert list(bars.y) == [1.0, 3.0]
    assert list(line.y) == [30.0, 90.0]
    assert line.yaxis == "y2"


def test_throughput_rejects_a_zero_bucket() -> None:
    with pytest.raises(ValueError, match="bucket_s"):
        charts.throughput_over_time(timeline_frame([(1, 0)]), bucket_s=0)


def test_cumulative_cost_is_a_running_total() -> None:
    fig = charts.cumulative_cost(requests_frame([100.0, 100.0, 100.0]))
    assert [round(v, 6) for v in fig.data[0].y] == [0.001, 0.003, 0.006]
    # dollars as plain decimals, not SI suffixes ("$6m" would read as millions)
    assert (fig.layout.yaxis.tickprefix, fig.layout.yaxis.tickformat) == ("$", ",.6f")


def test_cumulative_cost_uses_fewer_decimals_for_larger_sums() -> None:
    frame = requests_frame([100.0, 100.0])
    frame["cost"] = [2.5, 3.0]
    assert charts.cumulative_cost(frame).layout.yaxis.tickformat == ",.4f"


def test_tokens_per_request_stacks_prompt_and_completion() -> None:
    fig = charts.tokens_per_request(requests_frame([100.0, 100.0]))
    assert fig.layout.barmode == "stack"
    assert [(t.name, list(t.x), list(t.y)) for t in fig.data] == [
        ("prompt", [1, 2], [10.0, 11.0]), ("completion", [1, 2], [20.0, 21.0])]


def test_ttft_distribution_skips_requests_without_ttft_and_draws_thresholds() -> None:
    frame = requests_frame([100.0, 100.0, 100.0])
    frame.loc[1, "ttft_ms"] = None
    fig = charts.ttft_distribution(frame, thresholds=[Threshold(75.0, "p95 ttft")])
    assert list(fig.data[0].x) == [50.0, 50.0]
    assert [s.x0 for s in fig.layout.shapes] == [75.0]


def test_error_rate_is_errors_over_requests_and_skips_idle_buckets() -> None:
    fig = charts.error_rate_over_time(timeline_frame([(4, 1), (0, 0), (2, 2)]),
                                      thresholds=[Threshold(0.05, "5% alert")])
    assert list(fig.data[0].y) == [0.25, 1.0]
    assert len(fig.data[0].x) == 2
    assert _hline_values(fig) == [0.05]
    assert fig.layout.yaxis.tickformat == ".0%"


def test_latency_breakdown_stacks_the_three_parts() -> None:
    fig = charts.latency_breakdown(requests_frame([130.0]))
    assert [(t.name, list(t.y)) for t in fig.data] == [
        ("prompt processing", [10.0]), ("generation", [100.0]), ("not in model", [20.0])]
    assert fig.layout.barmode == "stack"


def test_sampling_stacks_kept_and_dropped_traces_under_a_mark_of_traces_seen() -> None:
    fig = charts.sampling_over_time(timeline_frame([(3, 1), (2, 0)]))
    assert [(t.name, list(t.y)) for t in fig.data] == [
        ("kept (head)", [3.0, 2.0]), ("kept (tail)", [0.0, 0.0]), ("dropped", [1.0, 0.0]),
        ("seen", [4.0, 2.0])]
    assert fig.layout.barmode == "stack"
    assert [t.type for t in fig.data] == ["bar", "bar", "bar", "scatter"]
    assert fig.data[3].mode == "markers"


def test_sampling_leaves_out_buckets_without_finished_traces_and_sizes_bars_to_the_bucket() -> None:
    timeline = timeline_frame([(2, 0), (5, 0), (1, 1)])
    # The middle bucket has requests but no trace ended in it.
    timeline.loc[1, ["traces_kept_head", "traces_kept_tail", "traces_dropped"]] = 0
    timeline.loc[2, "traces_kept_tail"] = 3
    fig = charts.sampling_over_time(timeline, bucket_s=60)
    head, tail, dropped, seen = fig.data
    assert list(pd.to_datetime(head.x, utc=True)) == [timeline["time"][0], timeline["time"][2]]
    assert (list(head.y), list(tail.y), list(dropped.y), list(seen.y)) == ([2, 1], [0, 3], [0, 1], [2, 5])
    assert head.width == 60_000.0 and head.offset == 0
    mid_bucket = [t + pd.Timedelta(seconds=30) for t in pd.to_datetime(head.x, utc=True)]
    assert list(pd.to_datetime(seen.x, utc=True)) == mid_bucket


def test_sampling_rejects_a_zero_bucket() -> None:
    with pytest.raises(ValueError, match="bucket_s"):
        charts.sampling_over_time(timeline_frame([(1, 0)]), bucket_s=0)


def test_error_rate_marks_buckets_above_the_lowest_threshold() -> None:
    timeline = timeline_frame([(10, 0), (10, 1), (10, 3)])
    fig = charts.error_rate_over_time(timeline, thresholds=[Threshold(0.2, "alert"), Threshold(0.05, "warn")])
    line, above = fig.data
    assert list(line.y) == [0.0, 0.1, 0.3]
    assert above.name == "above threshold"
    assert list(above.y) == [0.1, 0.3]
    assert list(pd.to_datetime(above.x, utc=True)) == [timeline["time"][1], timeline["time"][2]]
    assert sorted(_hline_values(fig)) == [0.05, 0.2]


def test_error_rate_below_every_threshold_has_no_breach_marks() -> None:
    fig = charts.error_rate_over_time(timeline_frame([(10, 0), (10, 1)]),
                                      thresholds=[Threshold(0.5, "alert")])
    assert [t.name for t in fig.data] == ["error rate"]


def _trace_with_children():
    clock = FakeClock()
    ids = SequentialIdGenerator()
    trace = create_trace("conversation", clock=clock, id_generator=ids)
    root = create_span("turn", trace.id, clock=clock, id_generator=ids)
    clock.advance(10)
    child = create_span("chat smollm2", trace.id, root.id, clock=clock, id_generator=ids, kind="client")
    clock.advance(40)
    child = end_span(child, "error", error="boom", clock=clock)
    clock.advance(5)
    sibling = create_span("parse", trace.id, root.id, clock=clock, id_generator=ids)
    clock.advance(5)
    sibling = end_span(sibling, clock=clock)
    root = end_span(root, clock=clock)
    for span in (root, child, sibling):
        trace = add_span_to_trace(trace, span)
    return end_trace(trace, clock=clock)


def test_waterfall_frame_is_in_tree_order_with_offsets_and_indentation() -> None:
    frame = charts.waterfall_frame(_trace_with_children())
    assert list(frame["name"]) == ["turn", "chat smollm2", "parse"]
    assert list(frame["depth"]) == [0, 1, 1]
    assert list(frame["start_ms"]) == [0.0, 10.0, 55.0]
    assert list(frame["duration_ms"]) == [60.0, 40.0, 5.0]
    assert list(frame["status"]) == ["success", "error", "success"]
    assert frame["label"][1].endswith("chat smollm2") and frame["label"][1] != "chat smollm2"
    assert frame["label"][0] == "turn"


def test_waterfall_colours_by_status_and_keeps_tree_order_top_down() -> None:
    frame = charts.waterfall_frame(_trace_with_children())
    fig = charts.waterfall(frame)
    by_status = {t.name: t for t in fig.data}
    assert by_status["error"].marker.color == charts.STATUS_COLORS["error"]
    assert list(by_status["error"].base) == [10.0]
    assert list(by_status["success"].y) == [f"{1:016x}", f"{3:016x}"]
    assert list(fig.layout.yaxis.categoryarray) == list(frame["span_id"])
    assert fig.layout.yaxis.autorange == "reversed"
    assert list(fig.layout.yaxis.ticktext) == list(frame["label"])


def test_error_rate_without_thresholds_spans_zero_to_one() -> None:
    fig = charts.error_rate_over_time(timeline_frame([(2, 1)]))
    assert list(fig.data[0].y) == [0.5]
    assert list(fig.layout.yaxis.range) == [0, 1.0]
    assert not fig.layout.shapes


# -- cost by model --------------------------------------------------------------------------------

def test_cost_by_model_says_free_for_a_zero_price_and_counts_requests_without_timings() -> None:
    collector = MetricsCollector(model_prices={"gpt-4o-mini": (0.00015, 0.0006)}, compute_price_per_hour=0.9,
                                 model_compute_prices={"laptop-model": 0.0}, clock=FakeClock())
    collector.record_request(400.0, 1000, 200, model="laptop-model", server_ms=380.0)
    collector.record_request(900.0, 1000, 200, model="gpt-4o-mini")
    collector.record_request(850.0, 1000, 200, model="qwen2.5-7b", server_ms=800.0)   # 800 ms at $0.90/h
    collector.record_request(120.0, 1000, 0, model="qwen2.5-7b", error=True)          # no timings
    frame = charts.cost_by_model_frame(collector.cost_by_model())
    assert list(frame.columns) == charts.COST_COLUMNS
    # Most expensive first; the free model last, and said to be free rather than $0.
    assert frame.to_dict("records") == [
        {"model": "gpt-4o-mini", "requests": 1, "cost": "$0.000270", "priced_by": "tokens", "unpriced": 0,
         "server_s": 0.0},
        {"model": "qwen2.5-7b", "requests": 2, "cost": "$0.000200", "priced_by": "server time",
         "unpriced": 1, "server_s": 0.8},
        {"model": "laptop-model", "requests": 1, "cost": "free", "priced_by": "free", "unpriced": 0,
         "server_s": 0.38},
    ]


def test_cost_by_model_never_shows_an_unknown_cost_as_zero_dollars() -> None:
    collector = MetricsCollector(compute_price_per_hour=2.0, clock=FakeClock())
    collector.record_request(120.0, 10, 0, error=True)                        # no model, no timings
    collector.record_request(50.0, 10, 20, model="smollm2", cached=True)      # the response cache
    collector.record_request(0.5, 1, 1, model="tiny", server_ms=0.0001)       # a fraction of a micro-dollar
    frame = charts.cost_by_model_frame(collector.cost_by_model())
    rows = {r["model"]: (r["cost"], r["priced_by"], r["unpriced"]) for r in frame.to_dict("records")}
    assert rows == {
        "(no model)": ("unknown", "server time (no timings)", 1),
        "smollm2": ("$0", "response cache", 0),
        "tiny": ("$5.6e-11", "server time", 0),
    }


def test_cost_by_model_of_no_requests_is_an_empty_frame_with_the_columns() -> None:
    frame = charts.cost_by_model_frame({})
    assert frame.empty and list(frame.columns) == charts.COST_COLUMNS
