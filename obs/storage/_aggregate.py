"""Sums of request spans over a time range, from the rollups and the spans, and the scope of a query.

A range rarely starts and ends on an hour. `plan` splits it into the whole
hours inside it (read from `rollup_hour`: a row per hour, service and model,
whatever the traffic), the whole minutes left at its ends (`rollup`), and the
partial minutes at its very ends (the spans themselves, through the
(request, start_time) index). Every side classifies a span by the same
`minute` column, so none is counted twice. A conversation scope reads the
spans alone (a conversation is a few rows through its index).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from obs.storage._columns import bin_of, bin_value
from obs.storage._rollup_sql import LATENCY_BOUNDS_MS, ROLLUP_TOTALS, SPAN_TOTALS

__all__ = ["Agg", "Piece", "Scope", "exact_percentile", "percentile_of_bins", "plan", "rank", "sums_of"]

FAR = 60 * 2**56  # a minute (on an hour) beyond any time: the end of an unbounded range
MINUTE_MS = 60_000.0
_HISTOGRAM = len(LATENCY_BOUNDS_MS) + 1


@dataclass(frozen=True, slots=True)
class Scope:
    """Which requests count: one service, one model, some conversations, or all (None)."""

    service: str | None = None
    model: str | None = None
    conversations: tuple[str, ...] | None = None

    def spans_sql(self) -> tuple[str, list[Any]]:
        """The extra WHERE terms on `spans` (or `traces`) for this scope, and their parameters."""
        terms, params = self.rollup_sql()
        if self.conversations is not None:
            terms += f" AND conversation_id IN ({', '.join('?' * len(self.conversations))})"
            params += list(self.conversations)
        return terms, params

    def rollup_sql(self) -> tuple[str, list[Any]]:
        """The extra WHERE terms on a rollup table (which has no conversation)."""
        terms, params = "", []
        if self.service is not None:
            terms += " AND service = ?"
            params.append(self.service)
        if self.model is not None:
            terms += " AND model = ?"
            params.append(self.model)
        return terms, params


@dataclass(slots=True)
class Agg:
    """Running sums of requests: what a tile or a bucket is made of."""

    requests: int = 0
    errors: int = 0
    inputs: int = 0
    outputs: int = 0
    cost_units: int = 0
    latency_count: int = 0
    latency_sum: float = 0.0
    cache_hits: int = 0
    ttft_count: int = 0
    ttft_sum: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * _HISTOGRAM)
    latency_bins: dict[int, int] = field(default_factory=dict)
    ttft_bins: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)

    def add_sums(self, row: Sequence[Any]) -> None:
        """Add one row of the sums in `SUM_COLUMNS` order; NULL sums count as 0."""
        v = [0 if x is None else x for x in row]
        self.requests += int(v[0])
        self.errors += int(v[1])
        self.inputs += int(v[2])
        self.outputs += int(v[3])
        self.cost_units += int(v[4])
        self.latency_count += int(v[5])
        self.latency_sum += float(v[6])
        self.cache_hits += int(v[7])
        self.ttft_count += int(v[8])
        self.ttft_sum += float(v[9])
        for i in range(_HISTOGRAM):
            self.histogram[i] += int(v[10 + i])

    def add_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        """Add request spans read as (start_time, minute, hour, error, input_tokens, output_tokens,
        cost_units, latency_ms, cache_hit, ttft_ms), their latency and TTFT kept for percentiles."""
        if not rows:
            return
        _, _, _, errors, inputs, outputs, units, latencies, hits, ttfts = zip(*rows, strict=True)
        self.requests += len(rows)
        self.errors += sum(errors)
        self.inputs += sum(filter(None, inputs))
        self.outputs += sum(filter(None, outputs))
        self.cost_units += sum(filter(None, units))
        self.cache_hits += sum(hits)
        kept = [v for v in latencies if v is not None]
        self.latency_count += len(kept)
        self.latency_sum += sum(kept)
        self.latencies += kept
        kept = [v for v in ttfts if v is not None]
        self.ttft_count += len(kept)
        self.ttft_sum += sum(kept)
        self.ttfts += kept

    def add_bin(self, metric: int, index: int, n: int) -> None:
        """Add `n` values of histogram bin `index` (metric 0: latency, 1: TTFT)."""
        bins = self.latency_bins if metric == 0 else self.ttft_bins
        bins[index] = bins.get(index, 0) + n

    def percentiles(self, exact: bool) -> tuple[float, float, float]:
        """p50 and p95 latency and p95 TTFT: from the values kept (exact) or from the bins."""
        if exact:
            return (exact_percentile(self.latencies, 0.5), exact_percentile(self.latencies, 0.95),
                    exact_percentile(self.ttfts, 0.95))  # fmt: skip
        for latency in self.latencies:  # spans of partial minutes join the bins
            self.add_bin(0, bin_of(latency), 1)  # type: ignore[arg-type]
        for ttft in self.ttfts:
            self.add_bin(1, bin_of(ttft), 1)  # type: ignore[arg-type]
        return (percentile_of_bins(self.latency_bins, 0.5), percentile_of_bins(self.latency_bins, 0.95),
                percentile_of_bins(self.ttft_bins, 0.95))  # fmt: skip


def rank(q: float, n: int) -> int:
    """The 1-based nearest rank of the q-quantile of n values: ceil(q * n), at least 1."""
    return max(1, math.ceil(q * n - 1e-9))


def percentile_of_bins(bins: dict[int, int], q: float) -> float:
    """The q-quantile read from histogram bins (within their accuracy of the exact value); 0.0 when empty."""
    total = sum(bins.values())
    if total <= 0:
        return 0.0
    wanted = rank(q, total)
    seen = 0
    for index in sorted(bins):
        seen += bins[index]
        if seen >= wanted:
            return bin_value(index)
    return bin_value(max(bins))


def exact_percentile(values: list[float], q: float) -> float:
    """The exact nearest-rank q-quantile of `values` (sorted in place); 0.0 when empty."""
    if not values:
        return 0.0
    values.sort()
    return float(values[rank(q, len(values)) - 1])


@dataclass(frozen=True, slots=True)
class Piece:
    """Part of a range: whole hours or minutes [first, end) of a rollup (in minutes), or spans.

    A spans piece covers [lo_ms, hi_ms), and only the one partial `minute` if given.
    """

    table: str  # "rollup_hour", "rollup" or "spans"
    first: int = -FAR
    end: int = FAR
    lo_ms: float = -math.inf
    hi_ms: float = math.inf
    minute: int | None = None

    def spans_sql(self) -> tuple[str, list[Any]]:
        """WHERE terms selecting this piece's request spans."""
        terms = "request = 1 AND start_time >= ? AND start_time < ?"
        if self.minute is None:
            return terms, [self.lo_ms, self.hi_ms]
        # One partial minute, classified by its column as the rollup is; the times narrow the index scan.
        lo = max(self.lo_ms, self.minute * MINUTE_MS - 1.0)
        hi = min(self.hi_ms, (self.minute + 1) * MINUTE_MS + 1.0)
        return terms + " AND minute = ?", [lo, hi, self.minute]


def _whole_minutes(first: int, end: int) -> list[Piece]:
    """[first, end) in minutes as whole hours from `rollup_hour` and the minutes around them from `rollup`."""
    if end <= first:
        return []
    hour_first = first if first == -FAR else -(-first // 60) * 60
    hour_end = end if end == FAR else end // 60 * 60
    if hour_end <= hour_first:
        return [Piece("rollup", first, end)]
    pieces = [Piece("rollup", first, hour_first)] if first < hour_first else []
    pieces.append(Piece("rollup_hour", hour_first, hour_end))
    if hour_end < end:
        pieces.append(Piece("rollup", hour_end, end))
    return pieces


def plan(lo_ms: float, hi_ms: float, rollup: bool) -> list[Piece]:
    """The pieces of [lo_ms, hi_ms); without `rollup` (a conversation scope) one spans piece."""
    if hi_ms <= lo_ms:
        return []
    if not rollup:
        return [Piece("spans", lo_ms=lo_ms, hi_ms=hi_ms)]
    pieces: list[Piece] = []
    first = -FAR
    if not math.isinf(lo_ms):
        first = math.floor(lo_ms / MINUTE_MS)
        if first * MINUTE_MS < lo_ms:  # lo falls inside minute `first`: that part comes from the spans
            pieces.append(Piece("spans", lo_ms=lo_ms, hi_ms=hi_ms, minute=first))
            first += 1
    end = FAR if math.isinf(hi_ms) else math.floor(hi_ms / MINUTE_MS)
    if end < first:  # the whole range lies inside one minute: the piece above covers it
        return pieces
    pieces += _whole_minutes(first, end)
    if end != FAR and end * MINUTE_MS < hi_ms:
        pieces.append(Piece("spans", lo_ms=lo_ms, hi_ms=hi_ms, minute=end))
    return pieces


def sums_of(conn: sqlite3.Connection, piece: Piece, scope: Scope) -> Sequence[Any]:
    """The sums (`SUM_COLUMNS` order) of the requests of one piece in `scope`."""
    if piece.table == "spans":
        terms, params = piece.spans_sql()
        extra, more = scope.spans_sql()
        index = "INDEXED BY spans_conversation" if scope.conversations else "INDEXED BY spans_request_start"
        sql = f"SELECT {SPAN_TOTALS} FROM spans {index} WHERE {terms}{extra}"
        return conn.execute(sql, [*params, *more]).fetchone()  # type: ignore[no-any-return]
    key = "minute" if piece.table == "rollup" else "hour"
    extra, more = scope.rollup_sql()
    sql = f"SELECT {ROLLUP_TOTALS} FROM {piece.table} WHERE {key} >= ? AND {key} < ?{extra}"
    return conn.execute(sql, [piece.first, piece.end, *more]).fetchone()  # type: ignore[no-any-return]
