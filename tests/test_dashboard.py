"""Tests for obs.dashboard: generate_dashboard_data and its histogram."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pandas as pd
import pytest

from obs import semconv
from obs.clock import FakeClock
from obs.dashboard import (
    LATENCY_BUCKETS,
    REQUEST_COLUMNS,
    TIMELINE_COLUMNS,
    TRACE_COLUMNS,
    generate_dashboard_data,
    is_llm_span,
    latency_histogram,
    requests_frame,
    traces_frame,
)
from obs.metrics.collector import MetricsCollector, TimeBucket
from obs.trace.ids import SequentialIdGenerator
from obs.trace.spans import Span, create_span, end_span
from obs.trace.traces import Trace, add_span_to_trace, create_trace, end_trace

T0 = 1_700_000_000_000.0  # epoch ms, on a whole second
BUCKET_LABELS = ["0-100ms", "100-250ms", "250-500ms", "500ms-1s", "1-2.5s", "2.5-5s", "5-10s", "10s+"]


class _Scene:
    """Builds traces with LLM spans as the instrumented client writes them, on a fake clock."""

    def __init__(self) -> None:
        self.clock = FakeClock(start_ms=T0)
        self.ids = SequentialIdGenerator()
        self.collector = MetricsCollector(clock=self.clock)

    def span(self, trace: Trace, name: str, parent: Span | None = None, **attrs: Any) -> Span:
        return create_span(
            name, trace.id, None if parent is None else parent.id, attributes=attrs or None,
            clock=self.clock, id_generator=self.ids,
        )

    def llm(
        self,
        trace: Trace,
        parent: Span | None,
        latency_ms: float,
        prompt: int,
        completion: int,
        *,
        cached: int = 0,
        error: BaseException | None = None,
    ) -> Span:
        cost = self.collector.cost_for(prompt, completion)
        attrs: dict[str, Any] = {
            semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_CHAT,
            semconv.GEN_AI_REQUEST_MODEL: "smollm2",
            semconv.OBS_LATENCY_MS: latency_ms,
            semconv.OBS_COST_USD: cost,
        }
        if error is None:
            attrs.update({
                semconv.GEN_AI_RESPONSE_MODEL: "smollm2-135m",
                semconv.GEN_AI_USAGE_INPUT_TOKENS: prompt,
                semconv.GEN_AI_USAGE_OUTPUT_TOKENS: completion,
                semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: cached,
                semconv.OBS_TTFT_MS: latency_ms / 4,
                semconv.OBS_TOKENS_PER_SECOND: completion / (latency_ms / 1000),
                semconv.LLAMA_CPP_TIMINGS_PROMPT_MS: latency_ms / 8,
                semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS: latency_ms / 2,
                semconv.OBS_NON_MODEL_MS: latency_ms * 3 / 8,
            })
        span = create_span(
            "chat smollm2", trace.id, None if parent is None else parent.id, attributes=attrs,
            kind="client", clock=self.clock, id_generator=self.ids,
        )
        self.clock.advance(latency_ms)
        self.collector.record_request(
            latency_ms, prompt, completion, cached=cached > 0, error=error is not None,
            ttft_ms=None if error else latency_ms / 4, timestamp=self.clock.time_s(),
        )
        return end_span(span, error=error, clock=self.clock)

    def finish(self, trace: Trace, *spans: Span) -> Trace:
        for span in spans:
            trace = add_span_to_trace(trace, span)
        self.collector.record_sampling("head", timestamp=self.clock.time_s())
        return end_trace(trace, clock=self.clock)

    def trace(self, name: str) -> Trace:
        return create_trace(name, clock=self.clock, id_generator=self.ids)


@pytest.fixture
def scene() -> _Scene:
    return _Scene()


def _four_traces(scene: _Scene) -> list[Trace]:
    """A RAG trace, a cached chat, a failed chat and a 12 s chat, over 16 s in all."""
    clock = scene.clock
    rag = scene.trace("rag")  # starts at T0
    root = scene.span(rag, "rag")
    retrieve = scene.span(rag, "retrieve", root)
    clock.advance(20)
    retrieve = end_span(retrieve, clock=clock)
    answer = scene.llm(rag, root, 80, 1000, 500)
    root = end_span(root, clock=clock)
    traces = [scene.finish(rag, root, retrieve, answer)]  # ends at T0 + 100
    clock.advance(900)
    chat = scene.trace("chat")  # T0 + 1000
    traces.append(scene.finish(chat, scene.llm(chat, None, 200, 2000, 1000, cached=512)))
    clock.advance(800)
    failed = scene.trace("chat")  # T0 + 2000
    traces.append(scene.finish(failed, scene.llm(failed, None, 1500, 0, 0, error=TimeoutError("slow"))))
    clock.advance(500)
    long = scene.trace("chat")  # T0 + 4000, ends at T0 + 16000
    traces.append(scene.finish(long, scene.llm(long, None, 12000, 1000, 1000)))
    return traces


def _counts(histogram: list[dict[str, str | int]]) -> dict[str, int]:
    return {str(row["bucket"]): int(row["count"]) for row in histogram}


def test_full_scene_summary_and_numbers(scene: _Scene) -> None:
    data = generate_dashboard_data(scene.collector, _four_traces(scene))
    snapshot = scene.collector.get_metrics()
    assert list(data.summary) == [
        "Total Requests", "Total Tokens", "Total Cost", "Avg Latency", "P95 Latency",
        "Error Rate", "Cache Hit Rate", "Throughput",
    ]
    assert data.summary["Total Requests"] == 4
    assert data.summary["Total Tokens"] == 6500
    assert data.summary["Total Cost"] == "$0.0090"  # 0.002 + 0.004 + 0 + 0.003
    assert data.summary["Avg Latency"] == "3445ms"  # (80 + 200 + 1500 + 12000) / 4
    assert data.summary["P95 Latency"] == f"{snapshot.p95_latency_ms:.0f}ms"
    assert snapshot.p95_latency_ms == 12000.0  # nearest rank ceil(0.95 * 4) = 4: the exact maximum
    assert data.summary["Error Rate"] == "25.0%"
    assert data.summary["Cache Hit Rate"] == "25.0%"
    assert data.summary["Throughput"] == "0.25 req/s"  # 4 traces over 16 s
    assert data.throughput == 0.25
    assert data.error_rate == 0.25
    assert data.percentiles == {
        "p50": snapshot.p50_latency_ms,
        "p90": snapshot.p90_latency_ms,
        "p95": snapshot.p95_latency_ms,
        "p99": snapshot.p99_latency_ms,
    }
    assert data.snapshot == snapshot


def test_full_scene_histogram_counts_request_latencies(scene: _Scene) -> None:
    data = generate_dashboard_data(scene.collector, _four_traces(scene))
    assert data.histogram_source == "requests"
    assert [row["bucket"] for row in data.latency_histogram] == BUCKET_LABELS
    assert _counts(data.latency_histogram) == {
        "0-100ms": 1, "100-250ms": 1, "250-500ms": 0, "500ms-1s": 0,
        "1-2.5s": 1, "2.5-5s": 0, "5-10s": 0, "10s+": 1,
    }


def test_full_scene_request_rows(scene: _Scene) -> None:
    traces = _four_traces(scene)
    requests = generate_dashboard_data(scene.collector, traces).requests
    assert tuple(requests.columns) == REQUEST_COLUMNS
    assert len(requests) == 4
    first = requests.iloc[0]
    assert first["time"] == pd.Timestamp(T0 + 20, unit="ms", tz="UTC")
    assert first["trace_id"] == traces[0].id
    assert first["span_id"] == traces[0].spans[2].id
    assert first["name"] == "chat smollm2"
    assert first["model"] == "smollm2-135m"  # the response model wins over the request model
    assert first["status"] == "success"
    assert (first["latency_ms"], first["ttft_ms"]) == (80.0, 20.0)
    assert (first["prompt_tokens"], first["completion_tokens"], first["total_tokens"]) == (1000, 500, 1500)
    assert first["cached_tokens"] == 0
    assert first["cost"] == pytest.approx(0.002)
    assert first["tokens_per_second"] == 500 / 0.08
    assert (first["prompt_ms"], first["predicted_ms"], first["non_model_ms"]) == (10.0, 40.0, 30.0)
    assert first["error_type"] is None
    assert requests["cached_tokens"].tolist() == [0, 512, 0, 0]
    failed = requests.iloc[2]
    assert failed["status"] == "error"
    assert failed["error_type"] == "TimeoutError"
    assert failed["model"] == "smollm2"  # no response: the request model
    assert (failed["prompt_tokens"], failed["completion_tokens"], failed["cost"]) == (0, 0, 0.0)
    assert math.isnan(failed["ttft_ms"]) and math.isnan(failed["prompt_ms"])
    assert requests["latency_ms"].tolist() == [80.0, 200.0, 1500.0, 12000.0]
    assert requests["time"].is_monotonic_increasing
    assert str(requests["time"].dtype) == "datetime64[ns, UTC]"
    assert requests["prompt_tokens"].dtype == "int64"


def test_full_scene_trace_rows(scene: _Scene) -> None:
    traces = _four_traces(scene)
    frame = generate_dashboard_data(scene.collector, traces).traces
    assert tuple(frame.columns) == TRACE_COLUMNS
    assert frame["trace_id"].tolist() == [t.id for t in traces]
    assert frame["name"].tolist() == ["rag", "chat", "chat", "chat"]
    assert frame["duration_ms"].tolist() == [100.0, 200.0, 1500.0, 12000.0]
    assert frame["status"].tolist() == ["success", "success", "error", "success"]
    assert frame["spans"].tolist() == [3, 1, 1, 1]
    assert frame["prompt_tokens"].tolist() == [1000, 2000, 0, 1000]
    assert frame["completion_tokens"].tolist() == [500, 1000, 0, 1000]
    assert frame["cost"].tolist() == pytest.approx([0.002, 0.004, 0.0, 0.003])
    assert frame["time"].iloc[1] == pd.Timestamp(T0 + 1000, unit="ms", tz="UTC")


def test_full_scene_timeline_per_second_and_per_minute(scene: _Scene) -> None:
    traces = _four_traces(scene)
    timeline = generate_dashboard_data(scene.collector, traces).timeline
    assert tuple(timeline.columns) == TIMELINE_COLUMNS
    # Requests ended at T0 + 0.1 s, + 1.2 s, + 3.5 s and + 16 s: four one-second buckets.
    assert timeline["start"].tolist() == [T0 / 1000 + s for s in (0, 1, 3, 16)]
    expected_times = [pd.Timestamp(T0 + s * 1000, unit="ms", tz="UTC") for s in (0, 1, 3, 16)]
    assert timeline["time"].tolist() == expected_times
    assert timeline["requests"].tolist() == [1, 1, 1, 1]
    assert timeline["errors"].tolist() == [0, 0, 1, 0]
    assert timeline["cache_hits"].tolist() == [0, 1, 0, 0]
    assert timeline["traces_kept_head"].tolist() == [1, 1, 1, 1]
    minute = generate_dashboard_data(scene.collector, traces, bucket_s=60).timeline
    assert minute["requests"].sum() == 4
    assert minute["start"].tolist() == [(T0 // 60_000) * 60]


def test_frames_alone_equal_those_of_the_full_data(scene: _Scene) -> None:
    traces = _four_traces(scene)
    data = generate_dashboard_data(scene.collector, traces)
    pd.testing.assert_frame_equal(requests_frame(traces), data.requests)
    pd.testing.assert_frame_equal(traces_frame(iter(traces)), data.traces)
    assert tuple(traces_frame([]).columns) == TRACE_COLUMNS


def test_timeline_since_limits_the_buckets(scene: _Scene) -> None:
    traces = _four_traces(scene)
    timeline = generate_dashboard_data(scene.collector, traces, since=T0 / 1000 + 2).timeline
    assert timeline["start"].tolist() == [T0 / 1000 + 3, T0 / 1000 + 16]
    assert len(generate_dashboard_data(scene.collector, traces).timeline) == 4


@dataclasses.dataclass(frozen=True)
class _WiderBucket:
    """A time bucket with one field more than today's TimeBucket."""

    start: float
    requests: int
    queue_depth: int


class _WiderCollector:
    def get_metrics(self) -> Any:
        return MetricsCollector().get_metrics()

    def time_series(self, bucket_s: int = 1, since: float | None = None) -> list[_WiderBucket]:
        return [_WiderBucket(T0 / 1000, 2, 5)]


def test_timeline_keeps_fields_it_does_not_know() -> None:
    timeline = generate_dashboard_data(_WiderCollector(), []).timeline  # type: ignore[arg-type]
    assert tuple(timeline.columns) == (*TIMELINE_COLUMNS, "queue_depth")
    assert timeline["queue_depth"].tolist() == [5]
    assert timeline["requests"].tolist() == [2]
    assert timeline["errors"].tolist() == [0]  # absent from this bucket: 0


def test_timeline_columns_are_the_time_bucket_fields() -> None:
    fields = tuple(f.name for f in dataclasses.fields(TimeBucket))
    assert tuple(TIMELINE_COLUMNS) == ("time", *fields)


def test_empty_collector_and_no_traces() -> None:
    data = generate_dashboard_data(MetricsCollector(clock=FakeClock(start_ms=T0)), [])
    assert data.summary == {
        "Total Requests": 0,
        "Total Tokens": 0,
        "Total Cost": "$0.0000",
        "Avg Latency": "0ms",
        "P95 Latency": "0ms",
        "Error Rate": "0.0%",
        "Cache Hit Rate": "0.0%",
        "Throughput": "0.00 req/s",
    }
    assert data.histogram_source == "none"
    assert _counts(data.latency_histogram) == dict.fromkeys(BUCKET_LABELS, 0)
    assert (data.error_rate, data.throughput) == (0.0, 0.0)
    assert data.percentiles == {"p50": 0.0, "p90": 0.0, "p95": 0.0, "p99": 0.0}
    for frame, columns in (
        (data.requests, REQUEST_COLUMNS), (data.timeline, TIMELINE_COLUMNS), (data.traces, TRACE_COLUMNS),
    ):
        assert tuple(frame.columns) == columns
        assert len(frame) == 0
        assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert data.requests["latency_ms"].dtype == "float64"
    assert data.traces["spans"].dtype == "int64"


def test_snapshot_alone_gives_an_empty_timeline(scene: _Scene) -> None:
    traces = _four_traces(scene)
    data = generate_dashboard_data(scene.collector.get_metrics(), traces)
    assert data.summary["Total Requests"] == 4
    assert len(data.requests) == 4
    assert tuple(data.timeline.columns) == TIMELINE_COLUMNS
    assert len(data.timeline) == 0


def test_summary_display_formats() -> None:
    empty = MetricsCollector(clock=FakeClock(start_ms=T0)).get_metrics()
    snapshot = dataclasses.replace(
        empty, request_count=100, total_tokens=12345, total_cost=0.05, avg_latency_ms=123.4,
        p95_latency_ms=456.6, error_rate=0.02, cache_hit_rate=0.5,
    )
    clock, ids = FakeClock(start_ms=T0), SequentialIdGenerator()
    first = end_trace(create_trace("a", clock=clock, id_generator=ids), clock=clock)
    clock.advance(2000)
    second = end_trace(create_trace("b", clock=clock, id_generator=ids), clock=clock)
    data = generate_dashboard_data(snapshot, [first, second])
    assert data.summary == {
        "Total Requests": 100,
        "Total Tokens": 12345,
        "Total Cost": "$0.0500",
        "Avg Latency": "123ms",
        "P95 Latency": "457ms",
        "Error Rate": "2.0%",
        "Cache Hit Rate": "50.0%",
        "Throughput": "1.00 req/s",  # 2 traces over 2 s
    }


def test_histogram_falls_back_to_trace_durations_without_llm_spans() -> None:
    clock, ids = FakeClock(start_ms=T0), SequentialIdGenerator()
    traces = []
    for duration in (50, 300, 7000, 7000):
        trace = create_trace("job", clock=clock, id_generator=ids)
        span = create_span("step", trace.id, clock=clock, id_generator=ids)
        clock.advance(duration)
        traces.append(end_trace(add_span_to_trace(trace, end_span(span, clock=clock)), clock=clock))
    data = generate_dashboard_data(MetricsCollector(clock=clock), traces)
    assert data.histogram_source == "traces"
    assert _counts(data.latency_histogram) == {
        "0-100ms": 1, "100-250ms": 0, "250-500ms": 1, "500ms-1s": 0,
        "1-2.5s": 0, "2.5-5s": 0, "5-10s": 2, "10s+": 0,
    }
    assert len(data.requests) == 0
    assert tuple(data.requests.columns) == REQUEST_COLUMNS
    assert data.traces["prompt_tokens"].tolist() == [0, 0, 0, 0]
    assert data.throughput == pytest.approx(4 / 14.35)


def test_latency_histogram_bucket_edges() -> None:
    values = [0, 99.999, 100, 249.9, 250, 500, 999, 1000, 2500, 5000, 9999, 10000, 1e9, -5,
              math.nan, None, math.inf]
    counts = _counts(latency_histogram(values))  # type: ignore[arg-type]
    assert counts == {
        "0-100ms": 3, "100-250ms": 2, "250-500ms": 1, "500ms-1s": 2,
        "1-2.5s": 1, "2.5-5s": 1, "5-10s": 2, "10s+": 2,
    }
    assert [label for label, _, _ in LATENCY_BUCKETS] == BUCKET_LABELS
    assert latency_histogram([]) == [{"bucket": label, "count": 0} for label in BUCKET_LABELS]


def test_throughput_edges() -> None:
    clock, ids = FakeClock(start_ms=T0), SequentialIdGenerator()
    collector = MetricsCollector(clock=clock)
    instant = end_trace(create_trace("a", clock=clock, id_generator=ids), clock=clock)
    assert generate_dashboard_data(collector, [instant]).throughput == 0.0  # zero span of time
    long = create_trace("b", clock=clock, id_generator=ids)
    clock.advance(2000)
    long = end_trace(long, clock=clock)
    assert generate_dashboard_data(collector, [long]).throughput == 0.5  # one trace over 2 s
    running = create_trace("c", clock=clock, id_generator=ids)  # counts at its start: T0 + 2 s
    assert generate_dashboard_data(collector, [instant, running]).throughput == 1.0


def test_odd_attribute_values_do_not_crash() -> None:
    clock, ids = FakeClock(start_ms=T0), SequentialIdGenerator()
    trace = create_trace("odd", clock=clock, id_generator=ids)
    span = create_span(
        "chat", trace.id,
        attributes={
            semconv.GEN_AI_OPERATION_NAME: "chat",
            semconv.GEN_AI_USAGE_INPUT_TOKENS: "12",  # a number as text is read
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS: "many",  # not a number: 0
            semconv.OBS_TTFT_MS: None,
            semconv.OBS_COST_USD: True,  # a bool is not a cost: 0
            semconv.LLAMA_CPP_TIMINGS_CACHE_N: 7,  # cache count from llama.cpp timings
            semconv.OBS_TOKENS_PER_SECOND: math.inf,
        },
        clock=clock, id_generator=ids,
    )
    clock.advance(30)
    trace = end_trace(add_span_to_trace(trace, end_span(span, clock=clock)), clock=clock)
    requests = generate_dashboard_data(MetricsCollector(clock=clock), [trace]).requests
    row = requests.iloc[0]
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (12, 0, 7)
    assert row["cost"] == 0.0
    assert row["latency_ms"] == 30.0  # no obs.latency_ms: the span's duration
    assert math.isnan(row["ttft_ms"]) and math.isnan(row["tokens_per_second"])
    assert row["model"] is None


def test_is_llm_span() -> None:
    clock, ids = FakeClock(start_ms=T0), SequentialIdGenerator()
    trace_id = ids.trace_id()
    llm = create_span("x", trace_id, attributes={semconv.GEN_AI_OPERATION_NAME: "chat"},
                      clock=clock, id_generator=ids)
    assert is_llm_span(llm)
    assert not is_llm_span(create_span("y", trace_id, clock=clock, id_generator=ids))


@pytest.mark.parametrize("bad", [0, -1, 1.5, "1", True])
def test_bucket_s_is_validated(bad: object) -> None:
    with pytest.raises(ValueError, match=r"bucket_s must be an int >= 1") as info:
        generate_dashboard_data(MetricsCollector(), [], bucket_s=bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)


def test_metrics_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(TypeError, match=r"metrics must be a MetricsCollector or a MetricsSnapshot, got dict"):
        generate_dashboard_data({"request_count": 1}, [])  # type: ignore[arg-type]


def test_inputs_are_left_unchanged(scene: _Scene) -> None:
    traces = _four_traces(scene)
    before = [t.to_dict() for t in traces]
    metrics_before = scene.collector.get_metrics()
    generate_dashboard_data(scene.collector, traces)
    assert [t.to_dict() for t in traces] == before
    assert scene.collector.get_metrics() == metrics_before


def test_throughput_counts_requests_of_a_running_conversation() -> None:
    scene = _Scene()
    conversation = create_trace("conversation", clock=scene.clock, id_generator=scene.ids)
    first = scene.llm(conversation, None, 1000.0, 10, 5)
    scene.clock.advance(9000)
    second = scene.llm(conversation, None, 1000.0, 10, 5)
    conversation = add_span_to_trace(add_span_to_trace(conversation, first), second)
    data = generate_dashboard_data(scene.collector, [conversation])
    # two requests from the trace's start to the end of its last span: 11 s
    assert data.throughput == pytest.approx(2 / 11)
    assert data.summary["Throughput"] == "0.18 req/s"
