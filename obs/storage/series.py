"""Time series of requests from the SQLite file: the buckets the dashboard's charts draw.

`series_buckets` sums per bucket of 1, 60 or 3600 seconds. Whole minutes
come from the rollup and its histograms (so a day of per-minute buckets reads
one row per minute, service and model, not one per request); the partial
minutes at the range's ends, 1 s buckets and conversation scopes come from
the spans themselves, with exact percentiles. `DashboardQueries.series` is
the checked entry point.
"""

from __future__ import annotations

import math
import sqlite3

from obs.storage._aggregate import (
    Agg,
    Scope,
    exact_percentile,
    percentile_of_bins,
    plan,
    rollup_bins,
    rollup_rows,
    span_rows,
)
from obs.storage._columns import COST_UNITS_PER_USD
from obs.storage.results import SeriesBucket

__all__ = ["series_buckets"]


def series_buckets(
    conn: sqlite3.Connection, bucket_s: int, lo_ms: float, hi_ms: float, scope: Scope
) -> list[SeriesBucket]:
    """The buckets of `bucket_s` (1, 60 or 3600) seconds with requests in [lo_ms, hi_ms), oldest first.

    Runs on `conn` inside the caller's read transaction.
    """
    exact = bucket_s == 1 or scope.conversations is not None
    minutes = bucket_s // 60  # minutes per bucket (60 s and 3600 s buckets)
    aggs: dict[int, Agg] = {}

    def agg(key_ms: int) -> Agg:
        found = aggs.get(key_ms)
        if found is None:
            found = aggs[key_ms] = Agg()
        return found

    for piece in plan(lo_ms, hi_ms, not exact):
        if piece.rollup:
            for bucket, *sums in rollup_rows(conn, piece, scope, minutes):
                agg(bucket * 60_000).add_sums(sums)
            for bucket, metric, index, n in rollup_bins(conn, piece, scope, minutes):
                agg(bucket * 60_000).add_bin(metric, index, n)
            continue
        for start, minute, error, inputs, outputs, units, latency, hit, ttft in span_rows(conn, piece, scope):
            # Minute buckets by the minute column, as the rollup's: a span is never in two buckets.
            key = math.floor(start / 1000.0) * 1000 if bucket_s == 1 else (minute - minute % minutes) * 60_000
            agg(key).add_span(error, inputs, outputs, units, latency, hit, ttft)
    out = []
    for key in sorted(aggs):
        a = aggs[key]
        if a.requests <= 0:
            continue
        if exact:
            p50, p95 = exact_percentile(a.latencies, 0.5), exact_percentile(a.latencies, 0.95)
            ttft95 = exact_percentile(a.ttfts, 0.95)
        else:
            p50, p95 = percentile_of_bins(a.latency_bins, 0.5), percentile_of_bins(a.latency_bins, 0.95)
            ttft95 = percentile_of_bins(a.ttft_bins, 0.95)
        out.append(
            SeriesBucket(
                start=key / 1000.0, requests=a.requests, errors=a.errors, prompt_tokens=a.inputs,
                completion_tokens=a.outputs, cost=a.cost_units / COST_UNITS_PER_USD,
                avg_latency_ms=a.latency_sum / a.latency_count if a.latency_count else 0.0,
                p50_latency_ms=p50, p95_latency_ms=p95, p95_ttft_ms=ttft95, cache_hits=a.cache_hits,
            )
        )
    return out
