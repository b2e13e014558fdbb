"""Tests for obs.metrics.histograms and the collector's genai_histograms(): exact GenAI buckets."""

from __future__ import annotations

import bisect
import copy
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obs.clock import FakeClock
from obs.export import to_prometheus
from obs.metrics.collector import MetricsCollector
from obs.metrics.histograms import DURATION_BUCKETS_S, TOKEN_BUCKETS, GenAIHistograms, Histogram

T0 = 1_700_000_040.0


@pytest.fixture
def metrics() -> MetricsCollector:
    return MetricsCollector(clock=FakeClock(start_ms=T0 * 1000))


def _exact(values: list[float], bounds: tuple[float, ...]) -> tuple[int, ...]:
    return tuple(sum(1 for v in values if v <= b) for b in bounds)


def test_an_empty_collector_has_four_empty_histograms(metrics: MetricsCollector) -> None:
    found = metrics.genai_histograms()
    assert set(found) == {"duration", "ttft", "input_tokens", "output_tokens"}
    assert found["duration"] == Histogram(DURATION_BUCKETS_S, (0,) * 14, 0, 0.0)
    assert found["input_tokens"] == Histogram(TOKEN_BUCKETS, (0,) * 14, 0, 0.0)


def test_a_value_on_a_boundary_counts_in_that_boundary_bucket(metrics: MetricsCollector) -> None:
    # 10 ms is exactly le="0.01"; 20.000001 ms is just above le="0.02"; 4 tokens is le="4".
    metrics.record_request(10.0, 4, 5, ttft_ms=20.0)
    metrics.record_request(20.000001, 0, 67108864, ttft_ms=None)
    found = metrics.genai_histograms()
    assert found["duration"].cumulative[:3] == (1, 1, 2)
    assert found["duration"].count == 2
    assert found["duration"].sum == pytest.approx(0.030000001)
    assert found["ttft"].cumulative[:2] == (0, 1) and found["ttft"].count == 1
    assert found["input_tokens"].cumulative[:2] == (1, 2)
    assert found["output_tokens"].cumulative[1:3] == (0, 1)
    assert found["output_tokens"].cumulative[-1] == 2  # 67,108,864 is the last boundary itself
    assert found["output_tokens"].sum == 67108869.0


def test_values_above_every_boundary_count_only_in_inf(metrics: MetricsCollector) -> None:
    metrics.record_request(90_000.0, 70_000_000, 1, ttft_ms=86_400_000.0)
    found = metrics.genai_histograms()
    assert found["duration"].cumulative[-1] == 0 and found["duration"].count == 1
    assert found["ttft"].cumulative[-1] == 0 and found["ttft"].count == 1
    assert found["input_tokens"].cumulative[-1] == 0 and found["input_tokens"].count == 1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 200_000.0), st.integers(0, 10**8), st.integers(0, 10**8),
                          st.none() | st.floats(0.0, 200_000.0)), max_size=40))
def test_counts_equal_an_exact_count_of_every_value(requests: list[tuple[float, int, int, float | None]]
                                                    ) -> None:
    metrics = MetricsCollector(clock=FakeClock(start_ms=T0 * 1000))
    for latency, prompt, completion, ttft in requests:
        metrics.record_request(latency, prompt, completion, ttft_ms=ttft)
    found = metrics.genai_histograms()
    bounds_ms = tuple(b * 1000.0 for b in DURATION_BUCKETS_S)  # the collector records milliseconds
    assert found["duration"].cumulative == _exact([r[0] for r in requests], bounds_ms)
    ttfts = [r[3] for r in requests if r[3] is not None]
    assert found["ttft"].cumulative == _exact(ttfts, bounds_ms) and found["ttft"].count == len(ttfts)
    assert found["input_tokens"].cumulative == _exact([float(r[1]) for r in requests], TOKEN_BUCKETS)
    assert found["output_tokens"].sum == sum(r[2] for r in requests)


def test_refused_requests_are_not_counted_and_reset_clears(metrics: MetricsCollector) -> None:
    with pytest.raises(ValueError):
        metrics.record_request(-1.0, 1, 1)
    assert metrics.genai_histograms()["duration"].count == 0
    metrics.record_request(5.0, 1, 1)
    metrics.reset()
    assert metrics.genai_histograms()["input_tokens"].count == 0


def test_a_deep_copy_has_its_own_counts(metrics: MetricsCollector) -> None:
    metrics.record_request(5.0, 1, 1)
    twin = copy.deepcopy(metrics)
    twin.record_request(5.0, 1, 1)
    assert metrics.genai_histograms()["duration"].count == 1
    assert twin.genai_histograms()["duration"].count == 2


def test_prometheus_token_usage_has_exact_genai_buckets(metrics: MetricsCollector) -> None:
    metrics.record_request(812.0, 1000, 3)
    metrics.record_request(15.0, 17, 300)
    text = to_prometheus(metrics)
    assert 'gen_ai_client_token_usage_bucket{gen_ai_token_type="input",le="16"} 0' in text
    assert 'gen_ai_client_token_usage_bucket{gen_ai_token_type="input",le="64"} 1' in text
    assert 'gen_ai_client_token_usage_bucket{gen_ai_token_type="input",le="1024"} 2' in text
    assert 'gen_ai_client_token_usage_bucket{gen_ai_token_type="output",le="4"} 1' in text
    assert 'gen_ai_client_token_usage_bucket{gen_ai_token_type="output",le="+Inf"} 2' in text
    # A duration within the quantile sketch's 1% of a boundary is still counted exactly.
    metrics.record_request(1280.0 * 1.004, 1, 1)
    assert 'gen_ai_client_operation_duration_seconds_bucket{le="1.28"} 2' in to_prometheus(metrics)


def test_genai_histograms_add_matches_bisect_on_random_values() -> None:
    rng = random.Random(7)
    histograms = GenAIHistograms()
    latencies = [rng.lognormvariate(6, 2) for _ in range(2000)]
    for latency in latencies:
        histograms.add(latency, None, 3, 3)
    duration = histograms.snapshot()["duration"]
    bounds_ms = [b * 1000 for b in DURATION_BUCKETS_S]
    for i, bound in enumerate(bounds_ms):
        assert duration.cumulative[i] == sum(1 for v in latencies if v <= bound)
    assert duration.count - duration.cumulative[-1] == len(latencies) - bisect.bisect_right(
        sorted(latencies), bounds_ms[-1])
