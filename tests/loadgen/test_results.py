"""The summary of a load run, computed from its per-request results, and the knee of a sweep."""

from __future__ import annotations

import pytest

from obs import semconv
from obs.clock import FakeClock
from obs.llm.errors import ServerTimeout
from obs.loadgen.results import (
    LoadResult,
    LoadSummary,
    Progress,
    RequestResult,
    SweepResult,
    find_knee,
    percentile,
    summarize,
)
from obs.trace.spans import create_span, end_span

TRACE = "0af7651916cd43dd8448eb211c80319c"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0, 3.0, 5.0], 0.5) == 5.0  # rank ceil(1.5) = 2 of the sorted values
    assert percentile([4.0], 0.99) == 4.0
    assert percentile([], 0.5) is None


@pytest.mark.parametrize("q", [0, -0.1, 1.01])
def test_percentile_refuses_a_q_outside_0_to_1(q: float) -> None:
    with pytest.raises(ValueError, match=r"q must be in \(0, 1\]"):
        percentile([1.0], q)


def _result(index: int, latency: float, *, error: str | None = None, ttft: float | None = None,
            output: int = 10, finished: float = 1.0) -> RequestResult:
    return RequestResult(index, latency, finished, error, ttft, input_tokens=5,
                         output_tokens=0 if error else output)


def test_the_summary_counts_answered_requests_their_tokens_and_errors_by_type() -> None:
    results = [_result(i, 100.0 + i, ttft=10.0 + i, output=i) for i in range(1, 21)]
    results += [_result(21, 5.0, error="500"), _result(22, 9.0, error="ServerTimeout"),
                _result(23, 7.0, error="500")]
    summary = summarize(results, 4.0, concurrency=4, cancelled=2)
    assert summary == LoadSummary(
        concurrency=4, elapsed_s=4.0, requests=23, ok=20, errors=3, cancelled=2,
        input_tokens=100, output_tokens=210, requests_per_s=5.0, output_tokens_per_s=52.5,
        latency_p50_ms=110.0, latency_p95_ms=119.0, latency_p99_ms=120.0,
        ttft_p50_ms=20.0, ttft_p95_ms=29.0, errors_by_type={"500": 2, "ServerTimeout": 1},
    )  # fmt: skip
    assert list(summary.errors_by_type) == ["500", "ServerTimeout"]  # most frequent first
    assert summary.to_dict()["errors_by_type"] == {"500": 2, "ServerTimeout": 1}


def test_latency_percentiles_leave_failed_requests_out_and_ttft_needs_streams() -> None:
    summary = summarize([_result(0, 300.0), _result(1, 1.0, error="500")], 1.0, concurrency=1)
    assert (summary.latency_p50_ms, summary.latency_p99_ms) == (300.0, 300.0)
    assert summary.ttft_p50_ms is None and summary.ttft_p95_ms is None


def test_an_empty_run_has_no_percentiles_and_no_rates() -> None:
    summary = summarize([], 0.0, concurrency=8)
    assert (summary.requests, summary.requests_per_s, summary.output_tokens_per_s) == (0, 0.0, 0.0)
    assert summary.latency_p50_ms is None and summary.errors_by_type == {}


def _span(attrs: dict, error: BaseException | None = None):
    clock = FakeClock()
    span = create_span("chat smollm2", TRACE, attributes=attrs, kind="client", clock=clock)
    clock.advance(250.0)
    return end_span(span, error=error, clock=clock)


def test_a_result_is_read_off_the_recorded_span() -> None:
    span = _span({semconv.OBS_LATENCY_MS: 240.5, semconv.OBS_TTFT_MS: 31.0,
                  semconv.GEN_AI_USAGE_INPUT_TOKENS: 12, semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 8})
    assert RequestResult.from_span(3, span, 1.5) == RequestResult(
        index=3, latency_ms=240.5, finished_s=1.5, error_type=None, ttft_ms=31.0, input_tokens=12,
        output_tokens=8, trace_id=TRACE)


def test_a_failed_span_gives_its_error_type_and_a_span_without_latency_its_duration() -> None:
    failed = _span({semconv.ERROR_TYPE: "ServerTimeout"}, ServerTimeout("too slow"))
    result = RequestResult.from_span(0, failed, 0.3)
    assert (result.ok, result.error_type, result.latency_ms, result.output_tokens) == (
        False, "ServerTimeout", 250.0, 0)
    plain = RequestResult.from_span(1, _span({}, RuntimeError("x")), 0.3)
    assert plain.error_type == "RuntimeError"  # end_span's own error.type


def test_load_result_summarizes_its_results() -> None:
    run = LoadResult(2, (_result(0, 10.0), _result(1, 30.0)), 2.0, cancelled=1, stopped=True)
    assert run.summary == summarize(run.results, 2.0, concurrency=2, cancelled=1)


def _point(concurrency: int, rps: float, p95: float | None) -> LoadSummary:
    return LoadSummary(concurrency, 10.0, 10, 10, 0, 0, 0, 0, rps, rps * 50, p95, p95, p95, None, None)


def test_the_knee_is_where_p95_grows_faster_than_throughput() -> None:
    curve = [_point(1, 2.0, 500.0), _point(2, 3.6, 560.0), _point(4, 3.8, 1100.0), _point(8, 3.8, 2200.0)]
    knee = find_knee(curve)
    assert knee is not None
    assert (knee.at, knee.next_level, knee.p95_before_ms, knee.p95_after_ms) == (2, 4, 560.0, 1100.0)
    assert knee.p95_growth == pytest.approx(1100 / 560)
    assert knee.throughput_growth == pytest.approx(3.8 / 3.6)
    assert knee.describe().startswith(
        "knee at concurrency 2: going to 4, p95 latency turns up 560 -> 1100 ms")


def test_no_knee_while_throughput_keeps_up_with_latency() -> None:
    assert find_knee([_point(1, 2.0, 500.0), _point(2, 4.0, 520.0), _point(4, 7.5, 600.0)]) is None
    assert find_knee([_point(1, 2.0, 500.0)]) is None
    assert find_knee([]) is None


def test_levels_without_an_answer_are_skipped_by_the_knee() -> None:
    curve = [_point(1, 2.0, 500.0), _point(2, 0.0, None), _point(4, 2.1, 1500.0)]
    knee = find_knee(curve)
    assert knee is not None and (knee.at, knee.next_level) == (1, 4)


def test_a_sweep_gives_its_curve_and_knee() -> None:
    runs = tuple(LoadResult(c, tuple(_result(i, lat) for i in range(4)), secs)
                 for c, lat, secs in ((1, 100.0, 2.0), (2, 110.0, 1.0), (4, 400.0, 1.0)))
    sweep = SweepResult(runs)
    assert [s.concurrency for s in sweep.summaries] == [1, 2, 4]
    assert [s.requests_per_s for s in sweep.summaries] == [2.0, 4.0, 4.0]
    assert sweep.knee is not None and sweep.knee.at == 2


def test_progress_fraction_is_the_further_of_requests_and_time() -> None:
    assert Progress(8, 50, 0, 8, 10.0, total=200).fraction == 0.25
    assert Progress(8, 50, 0, 8, 30.0, total=200, duration_s=60.0).fraction == 0.5
    assert Progress(8, 0, 0, 0, 90.0, duration_s=60.0).fraction == 1.0
    assert Progress(8, 0, 0, 0, 1.0).fraction == 0.0
