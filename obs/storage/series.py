"""Time series of requests from the SQLite file: the buckets the dashboard's charts draw.

`series_buckets` sums per bucket of 1, 60 or 3600 seconds. Hourly buckets
that lie whole inside the range come from `rollup_hour` and the hourly
histograms (one row per hour, service and model, and a few dozen bins: a
week is a few thousand rows, whatever the traffic), their percentiles within
4%. Minute buckets take their sums from the per-minute rollup and their exact
percentiles from the latencies alone, read through a covering index.
Everything else (per-second buckets, the partial hours at the ends of a
range, conversation scopes) is read from the spans through the
(request, start_time) index, with exact percentiles. The cost of exact
percentiles grows with the requests in the range; without percentiles
(`percentiles=False`), minute and hour buckets are sums of the rollups alone
(and of the spans of the partial minutes at the ends of the range), so their
cost grows with the buckets, not the requests. `DashboardQueries.series` is
the checked entry point.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

from obs.storage._aggregate import FAR, Agg, Scope, plan, sums_of
from obs.storage._columns import COST_UNITS_PER_USD, hour_of
from obs.storage._rollup_sql import ROLLUP_TOTALS
from obs.storage.results import SeriesBucket

__all__ = ["series_buckets"]

_HOUR_MS = 3_600_000.0
_SPAN_FIELDS = (
    "start_time, minute, hour, error, input_tokens, output_tokens, cost_units, latency_ms, cache_hit, ttft_ms"
)


class _Buckets(dict[int, Agg]):
    """Aggregates by bucket start (epoch ms); `from_bins` holds those read from the hourly rollup."""

    def __init__(self) -> None:
        super().__init__()
        self.from_bins: set[int] = set()

    def at(self, key_ms: int) -> Agg:
        found = self.get(key_ms)
        if found is None:
            found = self[key_ms] = Agg()
        return found


def _spans(
    conn: sqlite3.Connection, buckets: _Buckets, bucket_s: int, scope: Scope, terms: str, params: list[Any]
) -> None:
    extra, more = scope.spans_sql()
    index = "spans_conversation" if scope.conversations else "spans_request_start"
    sql = f"SELECT {_SPAN_FIELDS} FROM spans INDEXED BY {index} WHERE request = 1 AND {terms}{extra}"
    groups: dict[int, list[Any]] = {}
    rows = conn.execute(sql, [*params, *more])
    if bucket_s == 1:
        for row in rows:
            groups.setdefault(math.floor(row[0] / 1000.0) * 1000, []).append(row)
    else:  # by the minute and hour columns, as the rollups: a span is never in two buckets
        column = 1 if bucket_s == 60 else 2
        for row in rows:
            groups.setdefault(row[column] * 60_000, []).append(row)
    for key, group in groups.items():
        buckets.at(key).add_rows(group)


def _whole_hours(conn: sqlite3.Connection, buckets: _Buckets, first: int, end: int, scope: Scope) -> None:
    extra, more = scope.rollup_sql()
    where = f"hour >= ? AND hour < ?{extra}"
    for hour, *sums in conn.execute(
        f"SELECT hour, {ROLLUP_TOTALS} FROM rollup_hour WHERE {where} GROUP BY hour", [first, end, *more]
    ):
        buckets.at(hour * 60_000).add_sums(sums)
        buckets.from_bins.add(hour * 60_000)
    if scope.service is None and scope.model is None:
        rows = conn.execute("SELECT hour, metric, bin, n FROM hour_bins_all WHERE hour >= ? AND hour < ?",
                            (first, end))  # fmt: skip
    else:
        rows = conn.execute(
            f"SELECT hour, metric, bin, SUM(n) FROM hour_bins WHERE {where} GROUP BY hour, metric, bin",
            [first, end, *more],
        )
    for hour, metric, index, n in rows:
        buckets.at(hour * 60_000).add_bin(metric, index, n)


def _rollup_sums(
    conn: sqlite3.Connection, buckets: _Buckets, bucket_s: int, lo_ms: float, hi_ms: float, scope: Scope
) -> None:
    """Sums per bucket of 60 or 3600 s from the rollups; the partial minutes at the ends from the spans."""
    extra, more = scope.rollup_sql()
    for piece in plan(lo_ms, hi_ms, True):
        if piece.table == "spans":
            minute: int = piece.minute  # type: ignore[assignment]
            key = minute if bucket_s == 60 else hour_of(minute)
            buckets.at(key * 60_000).add_sums(sums_of(conn, piece, scope))
            continue
        # Whole hours from the hourly rollup for hourly buckets; minutes (whole hours too) from the other.
        table, column = ("rollup_hour", "hour") if piece.table == "rollup_hour" and bucket_s == 3600 else (
            "rollup", "minute")  # fmt: skip
        rows = conn.execute(
            f"SELECT {column}, {ROLLUP_TOTALS} FROM {table} WHERE {column} >= ? AND {column} < ?{extra} "
            f"GROUP BY {column}", [piece.first, piece.end, *more],
        )  # fmt: skip
        for key, *sums in rows:
            buckets.at((key if bucket_s == 60 else hour_of(key)) * 60_000).add_sums(sums)


def _minutes(
    conn: sqlite3.Connection, buckets: _Buckets, lo_ms: float, hi_ms: float, scope: Scope
) -> None:
    """Minute buckets: sums from `rollup` (the partial minutes at the ends from the spans), and exact
    percentiles from the latencies and TTFTs alone, read through a covering index."""
    _rollup_sums(conn, buckets, 60, lo_ms, hi_ms, scope)
    extra, more = scope.spans_sql()
    for minute, latency, ttft in conn.execute(
        "SELECT minute, latency_ms, ttft_ms FROM spans INDEXED BY spans_request_start "
        f"WHERE request = 1 AND start_time >= ? AND start_time < ?{extra}", [lo_ms, hi_ms, *more],
    ):  # fmt: skip
        agg = buckets.at(minute * 60_000)
        if latency is not None:
            agg.latencies.append(latency)
        if ttft is not None:
            agg.ttfts.append(ttft)


def series_buckets(
    conn: sqlite3.Connection, bucket_s: int, lo_ms: float, hi_ms: float, scope: Scope,
    percentiles: bool = True,
) -> list[SeriesBucket]:  # fmt: skip
    """The buckets of `bucket_s` (1, 60 or 3600) seconds with requests in [lo_ms, hi_ms), oldest first.

    Without `percentiles`, their percentile fields are NaN. Runs on `conn`
    inside the caller's read transaction.
    """
    buckets = _Buckets()
    if hi_ms <= lo_ms:
        return []
    first = end = 0
    if not percentiles and bucket_s != 1 and scope.conversations is None:
        _rollup_sums(conn, buckets, bucket_s, lo_ms, hi_ms, scope)
        return _finished(buckets, percentiles)
    if bucket_s == 3600 and scope.conversations is None:
        first = -FAR if math.isinf(lo_ms) else math.ceil(lo_ms / _HOUR_MS) * 60  # hours, as minutes
        end = FAR if math.isinf(hi_ms) else math.floor(hi_ms / _HOUR_MS) * 60
    if bucket_s == 60 and scope.conversations is None:
        _minutes(conn, buckets, lo_ms, hi_ms, scope)
    elif end > first:
        _whole_hours(conn, buckets, first, end, scope)
        if first != -FAR:  # the partial hour before
            _spans(conn, buckets, bucket_s, scope, "start_time >= ? AND start_time < ? AND hour < ?",
                   [lo_ms, first * 60_000.0 + 1.0, first])  # fmt: skip
        if end != FAR:  # and after
            _spans(conn, buckets, bucket_s, scope, "start_time >= ? AND start_time < ? AND hour >= ?",
                   [end * 60_000.0 - 1.0, hi_ms, end])  # fmt: skip
    else:
        _spans(conn, buckets, bucket_s, scope, "start_time >= ? AND start_time < ?", [lo_ms, hi_ms])
    return _finished(buckets, percentiles)


def _finished(buckets: _Buckets, percentiles: bool) -> list[SeriesBucket]:
    out = []
    for key in sorted(buckets):
        a = buckets[key]
        if a.requests <= 0:
            continue
        if percentiles:
            p50, p95, ttft95 = a.percentiles(exact=key not in buckets.from_bins)
        else:
            p50 = p95 = ttft95 = math.nan
        out.append(
            SeriesBucket(
                start=key / 1000.0, requests=a.requests, errors=a.errors, prompt_tokens=a.inputs,
                completion_tokens=a.outputs, cost=a.cost_units / COST_UNITS_PER_USD,
                avg_latency_ms=a.latency_sum / a.latency_count if a.latency_count else 0.0,
                p50_latency_ms=p50, p95_latency_ms=p95, p95_ttft_ms=ttft95, cache_hits=a.cache_hits,
            )
        )
    return out
