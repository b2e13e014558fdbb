"""Tests for obs.metrics.collector: cost, totals, percentiles, time series, windows, sampling, threads."""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import threading
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obs.clock import FakeClock
from obs.metrics.collector import MetricsCollector, MetricsSnapshot, TimeBucket, WindowStats
from obs.metrics.quantiles import exact_quantile

T0 = 1_700_000_040.0  # a whole minute: 28,333,334 * 60
assert T0 % 60 == 0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ms=T0 * 1000)


@pytest.fixture
def metrics(clock: FakeClock) -> MetricsCollector:
    return MetricsCollector(clock=clock)


def _within(estimate: float, exact: float, accuracy: float) -> bool:
    return abs(estimate - exact) <= accuracy * exact


# -- cost ----------------------------------------------------------------------------------------


def test_cost_of_the_reference_example_is_exact(metrics: MetricsCollector) -> None:
    assert metrics.cost_for(1000, 500) == 0.002
    assert metrics.record_request(120.0, 1000, 500) == 0.002
    assert metrics.get_metrics().total_cost == 0.002


def test_total_cost_does_not_drift(metrics: MetricsCollector) -> None:
    for _ in range(10_000):
        metrics.record_request(1.0, 300, 300)  # 0.0009 each: float sums would drift
    assert metrics.get_metrics().total_cost == 9.0


def test_model_prices_override_the_default() -> None:
    metrics = MetricsCollector(model_prices={"big": (0.01, 0.03)})
    assert metrics.cost_for(1000, 500, model="big") == 0.025
    assert metrics.cost_for(1000, 500, model="other") == 0.002
    assert metrics.record_request(10.0, 1000, 500, model="big") == 0.025
    assert metrics.prices_for("big") == (0.01, 0.03)


def test_set_prices_applies_to_later_requests(metrics: MetricsCollector) -> None:
    metrics.record_request(10.0, 1000, 0)
    metrics.set_prices(0.5, 1.0)
    metrics.set_prices(2.0, 4.0, model="m")
    assert metrics.record_request(10.0, 1000, 0) == 0.5
    assert metrics.record_request(10.0, 0, 1000, model="m") == 4.0
    assert metrics.get_metrics().total_cost == 4.501


def test_free_model_costs_nothing() -> None:
    metrics = MetricsCollector(0.0, 0.0)
    assert metrics.record_request(10.0, 10**6, 10**6) == 0.0


@pytest.mark.parametrize("bad", [-0.001, math.nan, math.inf, 1e7, "0.1", True, None])
@pytest.mark.parametrize("name", ["prompt_token_cost", "completion_token_cost"])
def test_bad_prices_are_refused_by_name(name: str, bad: object) -> None:
    with pytest.raises(ValueError, match=rf"{name} must be a number in \[0, 1e\+06\]"):
        MetricsCollector(**{name: bad})  # type: ignore[arg-type]
    metrics = MetricsCollector()
    args = {"prompt_token_cost": 0.001, "completion_token_cost": 0.002, name: bad}
    with pytest.raises(ValueError, match=name):
        metrics.set_prices(**args)  # type: ignore[arg-type]
    assert metrics.prices_for() == (0.001, 0.002)


def test_bad_model_prices_are_refused() -> None:
    with pytest.raises(ValueError, match=r"model_prices\['m'\]\[1\]"):
        MetricsCollector(model_prices={"m": (0.1, -1.0)})
    with pytest.raises(ValueError, match=r"model_prices\['m'\] must be a \(prompt, completion\) pair"):
        MetricsCollector(model_prices={"m": (0.1,)})  # type: ignore[dict-item]


# -- validation of requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"latency_ms": math.nan}, r"latency_ms must be a finite number of milliseconds in \[0, 86400000\]"),
        ({"latency_ms": -1.0}, "latency_ms"),
        ({"latency_ms": math.inf}, "latency_ms"),
        ({"latency_ms": "5"}, "latency_ms"),
        ({"latency_ms": True}, "latency_ms"),
        ({"prompt_tokens": -1}, r"prompt_tokens must be an int in \[0, 1000000000000\]"),
        ({"prompt_tokens": 1.5}, "prompt_tokens"),
        ({"prompt_tokens": 10.0}, "prompt_tokens"),
        ({"prompt_tokens": True}, "prompt_tokens"),
        ({"prompt_tokens": 10**13}, "prompt_tokens"),
        ({"completion_tokens": math.nan}, "completion_tokens"),
        ({"completion_tokens": "3"}, "completion_tokens"),
        ({"ttft_ms": math.nan}, r"ttft_ms must be a finite number of milliseconds in \[0, 86400000\]"),
        ({"ttft_ms": -0.5}, "ttft_ms"),
        ({"timestamp": math.nan}, r"timestamp must be epoch seconds from 2000-01-01 \(946684800\)"),
        ({"timestamp": -1.0}, "timestamp"),
        ({"timestamp": math.inf}, "timestamp"),
    ],
)
def test_bad_requests_are_refused_and_not_recorded(
    metrics: MetricsCollector, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"latency_ms": 10.0, "prompt_tokens": 1, "completion_tokens": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        metrics.record_request(**args)  # type: ignore[arg-type]
    assert metrics.get_metrics().request_count == 0
    assert metrics.time_series() == []


def test_ints_and_zeros_are_valid_input(metrics: MetricsCollector) -> None:
    metrics.record_request(0, 0, 0, ttft_ms=0, timestamp=int(T0))
    snap = metrics.get_metrics()
    assert (snap.request_count, snap.max_latency_ms, snap.p99_latency_ms, snap.p95_ttft_ms) == (1, 0, 0, 0)
    assert metrics.time_series()[0].p95_latency_ms == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"relative_accuracy": 0.0}, r"relative_accuracy must be a number in \[0.0001, 0.5\]"),
        ({"relative_accuracy": math.nan}, "relative_accuracy"),
        ({"max_bins": 8}, r"max_bins must be an int in \[16, 65536\]"),
        ({"series_coarsening": 0}, r"series_coarsening must be an int in \[1, 16\]"),
        ({"series_max_bins": 2.5}, "series_max_bins"),
        ({"per_second_retention_s": 59}, r"per_second_retention_s must be an int in \[60, 86400\]"),
        ({"per_minute_retention_s": 3630}, r"per_minute_retention_s .* a multiple of 60"),
        ({"per_minute_retention_s": 60}, r"per_minute_retention_s must be an int in \[3600, "),
        ({"clock": object()}, "clock must have time_ms"),
    ],
)
def test_bad_configuration_is_refused_by_name(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MetricsCollector(**kwargs)  # type: ignore[arg-type]


# -- totals --------------------------------------------------------------------------------------


CONTRACT_FIELDS = [
    "request_count", "prompt_tokens", "completion_tokens", "total_tokens", "total_cost",
    "avg_latency_ms", "min_latency_ms", "max_latency_ms", "p50_latency_ms", "p90_latency_ms",
    "p95_latency_ms", "p99_latency_ms", "error_count", "error_rate", "cache_hits", "cache_misses",
    "cache_hit_rate", "requests_per_second", "tokens_per_second", "avg_ttft_ms", "p50_ttft_ms",
    "p95_ttft_ms", "traces_seen", "traces_kept_head", "traces_kept_tail", "traces_dropped",
    "first_request_at", "last_request_at",
]  # fmt: skip


def test_no_requests_means_all_zeros(metrics: MetricsCollector) -> None:
    snap = metrics.get_metrics()
    data = snap.to_dict()
    assert list(data) == CONTRACT_FIELDS
    assert data.pop("first_request_at") is None
    assert data.pop("last_request_at") is None
    assert set(data.values()) == {0}
    assert metrics.time_series() == metrics.time_series(60) == []
    assert metrics.window(300).to_dict() == {
        "window_s": 300.0, "request_count": 0, "error_count": 0, "error_rate": 0.0,
        "avg_latency_ms": 0.0, "p95_latency_ms": 0.0, "p99_latency_ms": 0.0, "p95_ttft_ms": 0.0,
        "cost": 0.0, "cost_per_hour": 0.0, "tokens": 0, "tokens_per_second": 0.0,
        "requests_per_minute": 0.0,
    }  # fmt: skip


def test_snapshot_is_frozen(metrics: MetricsCollector) -> None:
    snap = metrics.get_metrics()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.request_count = 5  # type: ignore[misc]


def test_one_request_is_every_percentile(metrics: MetricsCollector) -> None:
    metrics.record_request(812.5, 10, 20, ttft_ms=95.25)
    snap = metrics.get_metrics()
    assert {
        snap.min_latency_ms, snap.max_latency_ms, snap.avg_latency_ms,
        snap.p50_latency_ms, snap.p90_latency_ms, snap.p95_latency_ms, snap.p99_latency_ms,
    } == {812.5}  # fmt: skip
    assert snap.avg_ttft_ms == snap.p50_ttft_ms == snap.p95_ttft_ms == 95.25


def test_totals_of_a_known_set(metrics: MetricsCollector, clock: FakeClock) -> None:
    for i in range(1, 101):
        metrics.record_request(
            float(i), prompt_tokens=i, completion_tokens=2 * i,
            cached=i % 4 == 0, error=i % 10 == 0, ttft_ms=float(i) / 2 if i <= 50 else None,
        )  # fmt: skip
        clock.advance(100)
    snap = metrics.get_metrics()
    assert snap.request_count == 100
    assert (snap.prompt_tokens, snap.completion_tokens, snap.total_tokens) == (5050, 10100, 15150)
    assert snap.total_cost == pytest.approx((5050 * 0.001 + 10100 * 0.002) / 1000, abs=1e-12)
    assert (snap.error_count, snap.error_rate) == (10, 0.1)
    assert (snap.cache_hits, snap.cache_misses, snap.cache_hit_rate) == (25, 75, 0.25)
    assert (snap.min_latency_ms, snap.max_latency_ms, snap.avg_latency_ms) == (1.0, 100.0, 50.5)
    values = [float(i) for i in range(1, 101)]
    for q, got in ((0.5, snap.p50_latency_ms), (0.9, snap.p90_latency_ms),
                   (0.95, snap.p95_latency_ms), (0.99, snap.p99_latency_ms)):  # fmt: skip
        assert _within(got, exact_quantile(values, q), 0.01)
    assert snap.avg_ttft_ms == 12.75
    assert _within(snap.p50_ttft_ms, 12.5, 0.01)
    # First at T0, last 9.9 s later.
    assert (snap.first_request_at, snap.last_request_at) == (T0, T0 + 9.9)
    assert snap.requests_per_second == pytest.approx(100 / 9.9)
    assert snap.tokens_per_second == pytest.approx(15150 / 9.9)


def test_rates_use_a_one_second_floor(metrics: MetricsCollector) -> None:
    metrics.record_request(1.0, 10, 0, timestamp=T0)
    metrics.record_request(1.0, 10, 0, timestamp=T0 + 0.25)
    metrics.record_request(1.0, 10, 0, timestamp=T0 + 0.5)
    snap = metrics.get_metrics()
    assert (snap.requests_per_second, snap.tokens_per_second) == (3.0, 30.0)


def test_rates_span_out_of_order_timestamps(metrics: MetricsCollector) -> None:
    metrics.record_request(1.0, 0, 10, timestamp=T0 + 20)
    metrics.record_request(1.0, 0, 10, timestamp=T0)
    snap = metrics.get_metrics()
    assert (snap.first_request_at, snap.last_request_at) == (T0, T0 + 20)
    assert snap.requests_per_second == 0.1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.001, max_value=3_600_000.0), min_size=1, max_size=400))
def test_latency_percentiles_are_within_one_percent(latencies: list[float]) -> None:
    metrics = MetricsCollector(clock=FakeClock(T0 * 1000))
    for latency in latencies:
        metrics.record_request(latency, 1, 1, ttft_ms=latency / 10)
    snap = metrics.get_metrics()
    for q, got in ((0.5, snap.p50_latency_ms), (0.9, snap.p90_latency_ms),
                   (0.95, snap.p95_latency_ms), (0.99, snap.p99_latency_ms)):  # fmt: skip
        assert _within(got, exact_quantile(latencies, q), 0.01)
    assert _within(snap.p95_ttft_ms, exact_quantile([x / 10 for x in latencies], 0.95), 0.01)
    assert (snap.min_latency_ms, snap.max_latency_ms) == (min(latencies), max(latencies))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.5, max_value=10_000.0), min_size=1, max_size=400))
def test_bucket_percentiles_are_within_the_series_accuracy(latencies: list[float]) -> None:
    # Series bins (256 by default, each 4% wide) span a 28,000x ratio, so 0.5 ms .. 10 s fits.
    metrics = MetricsCollector(clock=FakeClock(T0 * 1000))
    for latency in latencies:
        metrics.record_request(latency, 1, 1)
    bucket = metrics.time_series()[0]
    accuracy = metrics.series_relative_accuracy
    assert accuracy < 0.02
    assert _within(bucket.p50_latency_ms, exact_quantile(latencies, 0.5), accuracy)
    assert _within(bucket.p95_latency_ms, exact_quantile(latencies, 0.95), accuracy)


# -- sampling counts -----------------------------------------------------------------------------


def test_sampling_decisions_are_counted(metrics: MetricsCollector, clock: FakeClock) -> None:
    for decision in ["head", "head", "tail", "dropped", "dropped", "dropped"]:
        metrics.record_sampling(decision)  # type: ignore[arg-type]
    clock.advance(1000)
    metrics.record_sampling("tail")
    snap = metrics.get_metrics()
    assert (snap.traces_seen, snap.traces_kept_head, snap.traces_kept_tail, snap.traces_dropped) == (
        7, 2, 2, 3,
    )  # fmt: skip
    assert snap.request_count == 0
    series = metrics.time_series()
    assert [(b.start, b.traces_kept_head, b.traces_kept_tail, b.traces_dropped) for b in series] == [
        (T0, 2, 1, 3),
        (T0 + 1, 0, 1, 0),
    ]
    assert series[0].requests == 0


@pytest.mark.parametrize("bad", ["kept", "HEAD", None, 1])
def test_unknown_sampling_decision_is_refused(metrics: MetricsCollector, bad: object) -> None:
    with pytest.raises(ValueError, match="decision must be one of"):
        metrics.record_sampling(bad)  # type: ignore[arg-type]
    assert metrics.get_metrics().traces_seen == 0


# -- time series ---------------------------------------------------------------------------------


def test_per_second_buckets(metrics: MetricsCollector) -> None:
    metrics.record_request(100.0, 1000, 500, timestamp=T0 + 0.1)
    metrics.record_request(300.0, 1000, 500, error=True, cached=True, ttft_ms=40.0, timestamp=T0 + 0.9)
    metrics.record_request(50.0, 10, 5, timestamp=T0 + 3.5)
    series = metrics.time_series(1)
    assert [b.start for b in series] == [T0, T0 + 3]
    first = series[0]
    assert isinstance(first, TimeBucket)
    assert (first.requests, first.errors, first.cache_hits) == (2, 1, 1)
    assert (first.prompt_tokens, first.completion_tokens, first.cost) == (2000, 1000, 0.004)
    assert first.avg_latency_ms == 200.0
    assert first.p50_latency_ms == 100.0  # nearest rank ceil(0.5 * 2) = 1: the exact minimum
    assert first.p95_latency_ms == 300.0  # nearest rank ceil(0.95 * 2) = 2: the exact maximum
    assert first.p95_ttft_ms == 40.0
    assert series[1].to_dict() == {
        "start": T0 + 3, "requests": 1, "errors": 0, "prompt_tokens": 10, "completion_tokens": 5,
        "cost": 0.00002, "avg_latency_ms": 50.0, "p50_latency_ms": 50.0, "p95_latency_ms": 50.0,
        "p95_ttft_ms": 0.0, "cache_hits": 0, "traces_kept_head": 0, "traces_kept_tail": 0,
        "traces_dropped": 0,
    }  # fmt: skip


def test_per_minute_buckets_and_bounds(metrics: MetricsCollector) -> None:
    for i in range(180):  # one request per second over three minutes
        metrics.record_request(float(i + 1), 1, 1, timestamp=T0 + i)
    minutes = metrics.time_series(60)
    assert [(b.start, b.requests, b.avg_latency_ms) for b in minutes] == [
        (T0, 60, 30.5),
        (T0 + 60, 60, 90.5),
        (T0 + 120, 60, 150.5),
    ]
    assert [b.start for b in metrics.time_series(60, since=T0 + 61)] == [T0 + 60, T0 + 120]
    assert [b.start for b in metrics.time_series(60, since=T0 + 60, until=T0 + 60)] == [T0 + 60]
    assert [b.start for b in metrics.time_series(1, since=T0 + 10, until=T0 + 12)] == [
        T0 + 10, T0 + 11, T0 + 12,
    ]  # fmt: skip


@pytest.mark.parametrize("bad", [0, 5, 30, 3600, 1.0, True])
def test_only_one_second_or_one_minute_buckets(metrics: MetricsCollector, bad: object) -> None:
    with pytest.raises(ValueError, match="bucket_s must be 1 or 60"):
        metrics.time_series(bad)  # type: ignore[arg-type]


def test_old_seconds_fold_into_minutes() -> None:
    metrics = MetricsCollector(per_second_retention_s=60, per_minute_retention_s=3600)
    metrics.record_request(10.0, 1, 0, ttft_ms=5.0, timestamp=T0 + 5)
    metrics.record_request(30.0, 1, 0, timestamp=T0 + 65)  # reuses the ring slot of T0 + 5
    assert [b.start for b in metrics.time_series(1)] == [T0 + 65]
    minutes = metrics.time_series(60)
    assert [(b.start, b.requests, b.p50_latency_ms, b.p95_ttft_ms) for b in minutes] == [
        (T0, 1, 10.0, 5.0),
        (T0 + 60, 1, 30.0, 0.0),
    ]
    # A late request older than the per-second retention goes straight to its minute...
    metrics.record_request(20.0, 1, 0, timestamp=T0 + 4)
    assert [(b.start, b.requests) for b in metrics.time_series(60)] == [(T0, 2), (T0 + 60, 1)]
    assert [b.start for b in metrics.time_series(1)] == [T0 + 65]
    # ...while one still inside it gets its second.
    metrics.record_request(20.0, 1, 0, timestamp=T0 + 6)
    assert [b.start for b in metrics.time_series(1)] == [T0 + 6, T0 + 65]
    assert [(b.start, b.requests) for b in metrics.time_series(60)] == [(T0, 3), (T0 + 60, 1)]


def test_retention_counts_back_from_the_newest_timestamp() -> None:
    metrics = MetricsCollector(per_second_retention_s=60, per_minute_retention_s=3600)
    metrics.record_request(10.0, 1, 0, timestamp=T0)
    metrics.record_request(10.0, 1, 0, timestamp=T0 + 100)  # T0 is now older than 60 s
    assert [b.start for b in metrics.time_series(1)] == [T0 + 100]
    assert [b.start for b in metrics.time_series(60)] == [T0, T0 + 60]
    metrics.record_request(10.0, 1, 0, timestamp=T0 + 7200)  # both are now older than an hour
    assert [b.start for b in metrics.time_series(60)] == [T0 + 7200]
    metrics.record_request(10.0, 1, 0, timestamp=T0 + 10)  # too old for any series
    assert [b.start for b in metrics.time_series(60)] == [T0 + 7200]
    assert metrics.get_metrics().request_count == 4  # yet counted in the totals


def test_series_stay_within_their_retention_however_long_it_runs() -> None:
    metrics = MetricsCollector(per_second_retention_s=60, per_minute_retention_s=600)
    for i in range(3000):  # 2 requests per second for 25 minutes
        metrics.record_request(float(i % 97 + 1), 1, 1, timestamp=T0 + i / 2)
    seconds = metrics.time_series(1)
    minutes = metrics.time_series(60)
    assert len(seconds) == 60
    assert len(minutes) == 10
    assert seconds[-1].start == T0 + 1499
    assert minutes[-1].start == T0 + 1440
    assert sum(b.requests for b in minutes[:-1]) == 9 * 120
    assert metrics.get_metrics().request_count == 3000


def test_series_memory_is_bounded() -> None:
    rng = random.Random(7)

    def record(first: int, last: int) -> None:
        for i in range(first, last):  # one request every 12 s: every minute slot in use
            metrics.record_request(rng.lognormvariate(6, 1), 100, 50, ttft_ms=rng.lognormvariate(4, 1),
                                   timestamp=T0 + i * 12.0)  # fmt: skip

    def held() -> int:
        # Only what obs's metrics code allocated and still holds: threads left running by other
        # tests allocate too, and tracemalloc would count that against the collector.
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*obs/metrics/*")])
        return sum(stat.size for stat in snapshot.statistics("filename"))

    tracemalloc.start()
    try:
        before = held()
        metrics = MetricsCollector(per_second_retention_s=60, per_minute_retention_s=3600)
        record(0, 3000)  # ten hours
        after_10h = held() - before
        record(3000, 6000)  # ten more: twice the requests, the same memory
        after_20h = held() - before
    finally:
        tracemalloc.stop()
    assert len(metrics.time_series(60)) == 60
    assert metrics.get_metrics().request_count == 6000
    assert after_10h < 150_000
    assert after_20h < after_10h * 1.1


# -- windows -------------------------------------------------------------------------------------


def test_window_over_seconds(metrics: MetricsCollector, clock: FakeClock) -> None:
    for i in range(120):  # one request per second for two minutes, every tenth an error
        metrics.record_request(float(i + 1), 600, 400, error=i % 10 == 0, ttft_ms=10.0, timestamp=T0 + i)
    now = T0 + 119.5
    stats = metrics.window(60, now=now)
    assert isinstance(stats, WindowStats)
    assert (stats.window_s, stats.request_count, stats.error_count, stats.error_rate) == (60.0, 60, 6, 0.1)
    assert stats.avg_latency_ms == 90.5  # latencies 61..120
    assert _within(stats.p95_latency_ms, exact_quantile(list(range(61, 121)), 0.95), 0.02)
    assert _within(stats.p99_latency_ms, exact_quantile(list(range(61, 121)), 0.99), 0.02)
    assert stats.p95_ttft_ms == 10.0
    assert stats.cost == pytest.approx(60 * 0.0014, abs=1e-12)
    assert stats.cost_per_hour == pytest.approx(60 * 0.0014 * 60, abs=1e-9)
    assert (stats.tokens, stats.tokens_per_second, stats.requests_per_minute) == (60_000, 1000.0, 60.0)
    assert metrics.window(1, now=now).request_count == 1
    assert metrics.window(0.5, now=now).request_count == 1
    assert metrics.window(10, now=T0 + 1000).request_count == 0
    clock.advance(119_000)
    assert metrics.window(60).to_dict() == stats.to_dict()


def test_window_beyond_the_second_retention_uses_minutes() -> None:
    metrics = MetricsCollector(per_second_retention_s=60, per_minute_retention_s=7200)
    for i in range(0, 3600, 10):  # an hour, one request every 10 s
        metrics.record_request(100.0, 1, 1, timestamp=T0 + i)
    assert metrics.window(3600, now=T0 + 3599).request_count == 360
    assert metrics.window(600, now=T0 + 3599).request_count == 60
    assert metrics.window(7200, now=T0 + 3599).requests_per_minute == 3.0


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, 86_401, "60", True])
def test_window_length_is_checked(metrics: MetricsCollector, bad: object) -> None:
    with pytest.raises(ValueError, match=r"window_s must be a number in \(0, 86400\]"):
        metrics.window(bad)  # type: ignore[arg-type]


# -- threads and reset ---------------------------------------------------------------------------


def test_threads_record_exact_counts(metrics: MetricsCollector) -> None:
    threads, per_thread = 8, 2000

    def work(n: int) -> None:
        for i in range(per_thread):
            metrics.record_request(float(n + 1), 3, 7, error=i % 2 == 0, timestamp=T0 + i % 90)
            metrics.record_sampling("head" if i % 3 else "dropped", timestamp=T0 + i % 90)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    total = threads * per_thread
    snap = metrics.get_metrics()
    assert (snap.request_count, snap.error_count) == (total, total // 2)
    assert (snap.prompt_tokens, snap.completion_tokens) == (3 * total, 7 * total)
    assert snap.total_cost == pytest.approx(total * 0.000017, abs=1e-12)
    assert snap.avg_latency_ms == 4.5
    assert snap.traces_seen == total
    assert snap.traces_dropped == threads * len(range(0, per_thread, 3))
    series = metrics.time_series(1)
    assert sum(b.requests for b in series) == total
    assert sum(b.traces_kept_head + b.traces_dropped for b in series) == total
    assert sum(b.requests for b in metrics.time_series(60)) == total


def test_reset_forgets_requests_but_keeps_prices() -> None:
    metrics = MetricsCollector(0.01, 0.02, model_prices={"m": (1.0, 1.0)})
    metrics.record_request(10.0, 1000, 1000, timestamp=T0)
    metrics.record_sampling("tail", timestamp=T0)
    metrics.reset()
    empty = MetricsCollector().get_metrics()
    assert metrics.get_metrics() == empty
    assert metrics.time_series() == []
    assert metrics.record_request(10.0, 1000, 0, model="m") == 1.0
    assert metrics.cost_for(1000, 0) == 0.01


def test_snapshot_type(metrics: MetricsCollector) -> None:
    assert isinstance(metrics.get_metrics(), MetricsSnapshot)
    assert metrics.relative_accuracy == 0.01


def test_deepcopy_is_an_independent_twin(metrics: MetricsCollector) -> None:
    metrics.record_request(10.0, 5, 5, ttft_ms=2.0, timestamp=T0)
    metrics.record_request(30.0, 5, 5, timestamp=T0 + 1)
    twin = copy.deepcopy(metrics)
    assert twin.get_metrics() == metrics.get_metrics()
    assert twin.time_series(60) == metrics.time_series(60)
    twin.record_request(20.0, 1, 1, timestamp=T0 + 1)
    assert (twin.get_metrics().request_count, metrics.get_metrics().request_count) == (3, 2)
    assert metrics.time_series()[1].requests == 1
    assert twin.window(10, now=T0 + 1).request_count == 3
    assert metrics.window(10, now=T0 + 1).request_count == 2


# -- bad numbers at the door ---------------------------------------------------------------------

Y2000 = 946_684_800.0  # 2000-01-01T00:00:00Z, the earliest timestamp accepted
DAY_S = 86_400.0


def _state(metrics: MetricsCollector) -> tuple[object, ...]:
    """Everything a reader can see, to prove that a refused call changed nothing."""
    return (metrics.get_metrics(), metrics.time_series(1), metrics.time_series(60),
            metrics.window(3600, now=T0))  # fmt: skip


@pytest.mark.parametrize(
    ("stamp", "words"),
    [
        (T0 * 1000, ["timestamp", "epoch seconds", "946684800", "looks like epoch milliseconds", "/ 1000"]),
        (T0 * 1_000_000, ["timestamp", "looks like epoch microseconds"]),
        (T0 * 1_000_000_000, ["timestamp", "looks like epoch nanoseconds"]),
        (1e300, ["timestamp", "epoch seconds", "2000-01-01", "now + 1 day"]),
        (1.0, ["timestamp", "2000-01-01"]),
        (Y2000 - 1, ["timestamp"]),
        (T0 + DAY_S + 1, ["timestamp", "now + 1 day"]),
        pytest.param(10**400, ["timestamp"], id="int-beyond-float"),
        ("1700000040", ["timestamp"]),
    ],
)
def test_timestamps_out_of_range_are_refused_with_the_range(
    metrics: MetricsCollector, stamp: object, words: list[str]
) -> None:
    metrics.record_request(5.0, 1, 1, timestamp=T0)
    before = _state(metrics)
    with pytest.raises(ValueError) as caught:
        metrics.record_request(10.0, 1, 1, timestamp=stamp)  # type: ignore[arg-type]
    for word in words:
        assert word in str(caught.value)
    with pytest.raises(ValueError, match="timestamp"):
        metrics.record_sampling("head", timestamp=stamp)  # type: ignore[arg-type]
    assert _state(metrics) == before  # nothing half-recorded


def test_timestamps_at_the_edges_of_the_range_are_accepted(metrics: MetricsCollector) -> None:
    metrics.record_request(1.0, 1, 1, timestamp=Y2000)
    metrics.record_request(1.0, 1, 1, timestamp=int(T0 + DAY_S))
    metrics.record_sampling("tail", timestamp=T0 + DAY_S)
    snap = metrics.get_metrics()
    assert (snap.request_count, snap.first_request_at, snap.last_request_at) == (2, Y2000, T0 + DAY_S)
    assert snap.traces_kept_tail == 1


def test_the_upper_bound_follows_the_clock(metrics: MetricsCollector, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        metrics.record_request(1.0, 1, 1, timestamp=T0 + 2 * DAY_S)
    clock.advance(DAY_S * 1000)
    metrics.record_request(1.0, 1, 1, timestamp=T0 + 2 * DAY_S)
    assert metrics.get_metrics().request_count == 1


def test_a_millisecond_timestamp_can_no_longer_break_the_dashboard(metrics: MetricsCollector) -> None:
    from obs.dashboard import generate_dashboard_data

    metrics.record_request(10.0, 1, 1, timestamp=T0)
    with pytest.raises(ValueError, match="milliseconds"):
        metrics.record_request(10.0, 1, 1, timestamp=T0 * 1000)
    with pytest.raises(ValueError, match="timestamp"):
        metrics.record_request(10.0, 1, 1, timestamp=1e300)
    data = generate_dashboard_data(metrics, [])
    assert len(data.timeline) == 1
    assert metrics.get_metrics().requests_per_second == 1.0


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"error": "no"}, ["error must be True or False", "'no'"]),
        ({"error": None}, ["error must be True or False"]),
        ({"error": 2}, ["error"]),
        ({"cached": "yes"}, ["cached must be True or False"]),
        ({"cached": 0.0}, ["cached"]),
        ({"model": []}, ["model must be None or a model name (a str)", "[]"]),
        ({"model": 7}, ["model must be None or a model name"]),
        ({"latency_ms": 1e300}, ["latency_ms", "86400000", "one day"]),
        ({"ttft_ms": 1e300}, ["ttft_ms", "86400000"]),
    ],
)
def test_bad_flags_models_and_huge_durations_are_refused(
    metrics: MetricsCollector, kwargs: dict[str, object], words: list[str]
) -> None:
    metrics.record_request(5.0, 1, 1, timestamp=T0)
    before = _state(metrics)
    args: dict[str, object] = {"latency_ms": 10.0, "prompt_tokens": 1, "completion_tokens": 1, **kwargs}
    with pytest.raises(ValueError) as caught:
        metrics.record_request(**args)  # type: ignore[arg-type]
    for word in words:
        assert word in str(caught.value)
    assert _state(metrics) == before


def test_ints_zero_and_one_are_accepted_as_flags(metrics: MetricsCollector) -> None:
    metrics.record_request(5.0, 1, 1, error=1, cached=0)  # type: ignore[arg-type]
    snap = metrics.get_metrics()
    assert (snap.error_count, snap.cache_hits) == (1, 0)


@settings(max_examples=300, deadline=None)
@given(
    latency=st.one_of(st.floats(allow_nan=True), st.integers(), st.text(max_size=3), st.none()),
    stamp=st.one_of(st.none(), st.floats(allow_nan=True), st.integers(min_value=-(10**20), max_value=10**20)),
    error=st.one_of(st.booleans(), st.integers(), st.text(max_size=2), st.none()),
    model=st.one_of(st.none(), st.text(max_size=5), st.lists(st.integers(), max_size=2), st.integers()),
)
def test_any_input_is_recorded_whole_or_refused_with_a_value_error(
    latency: object, stamp: object, error: object, model: object
) -> None:
    from obs.dashboard import generate_dashboard_data

    metrics = MetricsCollector(clock=FakeClock(T0 * 1000))
    metrics.record_request(5.0, 1, 1, timestamp=T0)
    before = _state(metrics)
    try:
        metrics.record_request(latency, 1, 1, error=error, model=model, timestamp=stamp)  # type: ignore[arg-type]
    except ValueError:
        assert _state(metrics) == before
    else:
        assert metrics.get_metrics().request_count == 2
    generate_dashboard_data(metrics, [])  # always readable
