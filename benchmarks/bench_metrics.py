"""What MetricsCollector costs: time per record_request, memory after 1,000,000 requests, percentile error.

Three figures, each printed next to its target and a naive baseline measured
in the same run (a lock, a few counters and a list that keeps every latency,
which is what the collector replaces):

- the median time of one `record_request` call over several runs;
- the memory a collector holds after 1,000,000 requests whose timestamps
  spread over the whole per-minute retention (24 h), so every slot of both
  time-series rings is in use (target: under 5 MB). tracemalloc cannot follow
  a million calls in reasonable time, so it measures a deep copy of the
  finished collector (every array and sketch re-allocated while traced); a
  walk of the object graph with `sys.getsizeof`, which also counts the spare
  capacity of grown arrays, is printed beside it;
- the largest relative error of p50/p90/p95/p99 against the exact values of
  nearest rank ceil(q * n) (target: at most 1% for the totals, the series'
  stated bound for a one-hour window).
"""

from __future__ import annotations

import copy
import gc
import random
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

from obs.clock import FakeClock
from obs.metrics.collector import MetricsCollector
from obs.metrics.quantiles import exact_quantile

REQUESTS = 1_000_000
CALLS_PER_RUN = 50_000
RUNS = 7
T0 = 1_700_000_040.0
DAY_S = 86_400
QUANTILES = (0.5, 0.9, 0.95, 0.99)
MEMORY_TARGET = 5_000_000
ERROR_TARGET = 0.01


class _NaiveCollector:
    """The baseline: exact but unbounded (every latency kept in a list)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.prompt = 0
        self.completion = 0
        self.cost = 0.0
        self.latencies: list[float] = []

    def record_request(self, latency_ms: float, prompt: int, completion: int, **_: Any) -> float:
        cost = (prompt * 0.001 + completion * 0.002) / 1000.0
        with self.lock:
            self.count += 1
            self.prompt += prompt
            self.completion += completion
            self.cost += cost
            self.latencies.append(latency_ms)
        return cost


def _median_ns_per_call(make: Callable[[], Any], with_timestamp: bool) -> float:
    """Median over RUNS of the time per record_request call, on a fresh collector each run."""
    rng = random.Random(1)
    latencies = [rng.lognormvariate(6.5, 0.75) for _ in range(CALLS_PER_RUN)]
    ttfts = [rng.lognormvariate(5.0, 0.5) for _ in range(CALLS_PER_RUN)]
    # Ten requests per second: a new second bucket every ten calls, as under real load.
    stamps = [T0 + i / 10 for i in range(CALLS_PER_RUN)]
    runs = []
    for _ in range(RUNS):
        collector = make()
        record = collector.record_request
        gc.collect()
        start = time.perf_counter_ns()
        if with_timestamp:
            for latency, ttft, stamp in zip(latencies, ttfts, stamps, strict=True):
                record(latency, 500, 200, ttft_ms=ttft, timestamp=stamp)
        else:
            for latency, ttft in zip(latencies, ttfts, strict=True):
                record(latency, 500, 200, ttft_ms=ttft)
        runs.append((time.perf_counter_ns() - start) / CALLS_PER_RUN)
    return statistics.median(runs)


def _deep_size(root: object, skip: Sequence[object]) -> int:
    """Bytes of every object reachable from `root` (sys.getsizeof), each counted once."""
    seen = {id(s) for s in skip}
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def _traced_bytes(make: Callable[[], object]) -> tuple[int, object]:
    """Bytes still allocated (tracemalloc) by what `make()` builds, and the thing built."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = make()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, built
    finally:
        tracemalloc.stop()


def _exact(values: list[float], qs: Sequence[float]) -> list[float]:
    """Exact nearest-rank quantiles, with numpy when it is installed."""
    try:
        import numpy as np
    except ImportError:
        ordered = sorted(values)
        return [exact_quantile(ordered, q) for q in qs]
    return [float(v) for v in np.quantile(np.asarray(values), qs, method="inverted_cdf")]


def _max_error(estimates: Sequence[float], exact: Sequence[float]) -> float:
    return max(abs(e - x) / x for e, x in zip(estimates, exact, strict=True))


def main() -> None:
    """Print the time per call, the memory after 1,000,000 requests and the percentile error."""
    print("record_request, median of", RUNS, "runs of", f"{CALLS_PER_RUN:,}", "calls (ns per call):")
    ours = _median_ns_per_call(lambda: MetricsCollector(clock=FakeClock(T0 * 1000)), True)
    ours_clock = _median_ns_per_call(MetricsCollector, False)
    naive = _median_ns_per_call(_NaiveCollector, True)
    print(f"  MetricsCollector, timestamp given      {ours:10.0f}")
    print(f"  MetricsCollector, system clock read    {ours_clock:10.0f}")
    print(f"  naive baseline (list of latencies)     {naive:10.0f}   ratio ours/naive {ours / naive:.2f}")

    rng = random.Random(2)
    latencies = [rng.lognormvariate(6.5, 0.75) for _ in range(REQUESTS)]
    ttfts = [rng.lognormvariate(5.0, 0.5) for _ in range(REQUESTS)]
    stamps = sorted(T0 + rng.random() * DAY_S for _ in range(REQUESTS))
    collector = MetricsCollector(clock=FakeClock(T0 * 1000))
    record = collector.record_request
    started = time.perf_counter()
    for i in range(REQUESTS):
        record(latencies[i], 500, 200, error=i % 50 == 0, ttft_ms=ttfts[i], timestamp=stamps[i])
    spent = time.perf_counter() - started
    print(f"\n{REQUESTS:,} requests spread over 24 h recorded in {spent:.1f} s")

    traced, _twin = _traced_bytes(lambda: copy.deepcopy(collector))
    walked = _deep_size(collector, skip=(collector._clock, collector._lock))
    # x + 0.0 makes a new float object, as a naive collector receiving it would hold.
    naive_bytes, _ = _traced_bytes(lambda: [x + 0.0 for x in latencies])
    used = max(traced, walked)
    print("memory after 1,000,000 requests:")
    print(f"  MetricsCollector (tracemalloc, deep copy)   {traced / 1e6:8.2f} MB")
    print(f"  MetricsCollector (object graph, getsizeof)  {walked / 1e6:8.2f} MB")
    print(f"  target                                      {MEMORY_TARGET / 1e6:8.2f} MB   "
          f"{'met' if used < MEMORY_TARGET else 'MISSED'}")  # fmt: skip
    print(f"  naive baseline, latencies list alone        {naive_bytes / 1e6:8.2f} MB   "
          f"ratio naive/ours {naive_bytes / used:.1f}")  # fmt: skip

    started = time.perf_counter()
    snap = collector.get_metrics()
    read_ours = time.perf_counter() - started
    started = time.perf_counter()
    exact_q = _exact(latencies, QUANTILES)
    read_naive = time.perf_counter() - started
    print(f"reading p50/p90/p95/p99: get_metrics() {read_ours * 1e3:.2f} ms, "
          f"naive sort of 1,000,000 latencies {read_naive * 1e3:.0f} ms")  # fmt: skip
    ours_q = [snap.p50_latency_ms, snap.p90_latency_ms, snap.p95_latency_ms, snap.p99_latency_ms]
    error = _max_error(ours_q, exact_q)
    ttft_error = _max_error([snap.p50_ttft_ms, snap.p95_ttft_ms], _exact(ttfts, (0.5, 0.95)))
    print("percentile error against exact (nearest rank ceil(q*n)):")
    for q, got, want in zip(QUANTILES, ours_q, exact_q, strict=True):
        print(f"  p{round(q * 100):<3} {got:10.2f} ms   exact {want:10.2f} ms   "
              f"error {abs(got - want) / want:.4%}")  # fmt: skip
    print(f"  max error p50/p90/p95/p99 latency   {error:.4%}   target <= {ERROR_TARGET:.0%}   "
          f"{'met' if error <= ERROR_TARGET else 'MISSED'}")  # fmt: skip
    print(f"  max error p50/p95 TTFT              {ttft_error:.4%}")

    # The last hour through window(): per-second buckets at the series accuracy.
    now = stamps[-1]
    last_hour = [lat for lat, stamp in zip(latencies, stamps, strict=True) if int(stamp) > int(now) - 3600]
    stats = collector.window(3600, now=now)
    window_error = _max_error(
        [stats.p95_latency_ms, stats.p99_latency_ms], [exact_quantile(last_hour, q) for q in (0.95, 0.99)]
    )
    bound = collector.series_relative_accuracy
    print(f"  window(3600) p95/p99 over {stats.request_count:,} requests: max error {window_error:.4%}   "
          f"bound {bound:.4%}   {'met' if window_error <= bound else 'MISSED'}")  # fmt: skip
    started = time.perf_counter()
    collector.time_series(60)
    print(f"  time_series(60) of 1,440 minutes read in {(time.perf_counter() - started) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
