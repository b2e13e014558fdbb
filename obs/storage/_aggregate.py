"""Sums and percentiles of request spans over a time range, from the rollup and the spans.

A range rarely starts and ends on a minute. `plan` splits it into the whole
minutes inside it, read from `rollup` / `rollup_bins` (a few rows per
minute, whatever the traffic), and the partial minutes at its ends, read from
`spans` through the (request, start_time) index. Both sides classify a span
by the same `minute` column, so none is counted twice. A conversation scope
reads `spans` alone (a conversation is a few rows through its index).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from obs.storage._columns import bin_of, bin_value

__all__ = ["Agg", "Piece", "Scope", "percentile_of_bins", "plan", "rank"]

_FAR = 2**62  # a minute beyond any time: the end of an unbounded range
_MINUTE_MS = 60_000.0


@dataclass(frozen=True, slots=True)
class Scope:
    """Which requests count: one service, one model, some conversations, or all (None)."""

    service: str | None = None
    model: str | None = None
    conversations: tuple[str, ...] | None = None

    def spans_sql(self) -> tuple[str, list[Any]]:
        """The extra WHERE terms on `spans` for this scope, and their parameters."""
        terms, params = self._common()
        if self.conversations is not None:
            terms += f" AND conversation_id IN ({', '.join('?' * len(self.conversations))})"
            params += list(self.conversations)
        return terms, params

    def rollup_sql(self) -> tuple[str, list[Any]]:
        """The extra WHERE terms on `rollup` / `rollup_bins` (no conversation scope there)."""
        return self._common()

    def _common(self) -> tuple[str, list[Any]]:
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
    latency_bins: dict[int, int] = field(default_factory=dict)
    ttft_bins: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)

    def add_sums(self, row: Sequence[Any]) -> None:
        """Add one row of (requests, errors, inputs, outputs, cost_units, latency count and sum,
        cache hits, ttft count and sum); NULL sums count as 0."""
        values = [0 if v is None else v for v in row]
        self.requests += int(values[0])
        self.errors += int(values[1])
        self.inputs += int(values[2])
        self.outputs += int(values[3])
        self.cost_units += int(values[4])
        self.latency_count += int(values[5])
        self.latency_sum += float(values[6])
        self.cache_hits += int(values[7])
        self.ttft_count += int(values[8])
        self.ttft_sum += float(values[9])

    def add_span(
        self, error: int, inputs: Any, outputs: Any, units: Any, latency: Any, hit: int, ttft: Any
    ) -> None:
        """Add one request span (a row of `SPAN_FIELDS`), its values kept for exact percentiles."""
        has_latency, has_ttft = latency is not None, ttft is not None
        self.add_sums((1, error, inputs, outputs, units, has_latency, latency, hit, has_ttft, ttft))
        if latency is not None:
            self.latencies.append(latency)
            index = bin_of(latency)
            self.latency_bins[index] = self.latency_bins.get(index, 0) + 1  # type: ignore[index]
        if ttft is not None:
            self.ttfts.append(ttft)
            index = bin_of(ttft)
            self.ttft_bins[index] = self.ttft_bins.get(index, 0) + 1  # type: ignore[index]

    def add_bin(self, metric: int, index: int, n: int) -> None:
        """Add `n` values of histogram bin `index` (metric 0: latency, 1: TTFT)."""
        bins = self.latency_bins if metric == 0 else self.ttft_bins
        bins[index] = bins.get(index, 0) + n


def rank(q: float, n: int) -> int:
    """The 1-based nearest rank of the q-quantile of n values: ceil(q * n), at least 1."""
    return max(1, math.ceil(q * n - 1e-9))


def percentile_of_bins(bins: dict[int, int], q: float) -> float:
    """The q-quantile read from histogram bins (within 2% of the exact value); 0.0 when empty."""
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


# The columns of one request span that a bucket needs, and the sums of `rollup`, in `Agg.add_sums` order.
SPAN_FIELDS = (
    "start_time, minute, error, input_tokens, output_tokens, cost_units, latency_ms, cache_hit, ttft_ms"
)
RAW_SUMS = (
    "COUNT(*), SUM(error), SUM(input_tokens), SUM(output_tokens), SUM(cost_units), COUNT(latency_ms), "
    "SUM(latency_ms), SUM(cache_hit), COUNT(ttft_ms), SUM(ttft_ms)"
)
ROLLUP_SUMS = (
    "SUM(requests), SUM(errors), SUM(input_tokens), SUM(output_tokens), SUM(cost_units), "
    "SUM(latency_count), SUM(latency_sum), SUM(cache_hits), SUM(ttft_count), SUM(ttft_sum)"
)


@dataclass(frozen=True, slots=True)
class Piece:
    """A part of a range: whole minutes [first, end) from the rollup, or spans of one partial minute."""

    rollup: bool
    first: int  # minute
    end: int  # minute (exclusive) for the rollup; the partial minute again for spans
    lo_ms: float = -math.inf
    hi_ms: float = math.inf

    def spans_sql(self) -> tuple[str, list[Any]]:
        """WHERE terms selecting this piece's request spans (a partial minute, or any span in range)."""
        terms = "request = 1 AND start_time >= ? AND start_time < ?"
        if self.first == self.end and abs(self.first) < _FAR:  # one partial minute: classified by its column
            lo = max(self.lo_ms, self.first * _MINUTE_MS - 1.0)
            hi = min(self.hi_ms, (self.first + 1) * _MINUTE_MS + 1.0)
            return terms + " AND minute = ?", [lo, hi, self.first]
        return terms, [self.lo_ms, self.hi_ms]


def plan(lo_ms: float, hi_ms: float, rollup: bool) -> list[Piece]:
    """The pieces of [lo_ms, hi_ms): whole minutes from the rollup and the partial ones from spans.

    Without `rollup` (a conversation scope) the whole range is one spans piece.
    """
    if hi_ms <= lo_ms:
        return []
    if not rollup:
        return [Piece(False, -_FAR, _FAR, lo_ms, hi_ms)]
    pieces: list[Piece] = []
    if math.isinf(lo_ms):
        first = -_FAR
    else:
        first = math.floor(lo_ms / _MINUTE_MS)
        if first * _MINUTE_MS < lo_ms:  # lo falls inside minute `first`: its part comes from spans
            pieces.append(Piece(False, first, first, lo_ms, hi_ms))
            first += 1
    end = _FAR if math.isinf(hi_ms) else math.floor(hi_ms / _MINUTE_MS)
    if end < first:  # the whole range lies inside one minute
        return pieces
    if end > first:
        pieces.append(Piece(True, first, end))
    if not math.isinf(hi_ms) and end * _MINUTE_MS < hi_ms:
        pieces.append(Piece(False, end, end, lo_ms, hi_ms))
    return pieces


def rollup_rows(
    conn: sqlite3.Connection, piece: Piece, scope: Scope, bucket_minutes: int | None
) -> Iterable[Sequence[Any]]:
    """Rows (bucket minute or None, *sums) of the rollup over `piece`, per bucket if `bucket_minutes`."""
    terms, params = scope.rollup_sql()
    where = f"minute >= ? AND minute < ?{terms}"
    bounds = [piece.first, piece.end, *params]
    if bucket_minutes is None:
        return conn.execute(f"SELECT NULL, {ROLLUP_SUMS} FROM rollup WHERE {where}", bounds)
    key = f"minute - (minute % {int(bucket_minutes)})"
    return conn.execute(f"SELECT {key} AS b, {ROLLUP_SUMS} FROM rollup WHERE {where} GROUP BY b", bounds)


def rollup_bins(
    conn: sqlite3.Connection, piece: Piece, scope: Scope, bucket_minutes: int | None
) -> Iterable[Sequence[Any]]:
    """Rows (bucket minute or None, metric, bin, count) of the histograms over `piece`."""
    terms, params = scope.rollup_sql()
    where = f"minute >= ? AND minute < ?{terms}"
    key = "NULL" if bucket_minutes is None else f"minute - (minute % {int(bucket_minutes)})"
    return conn.execute(
        f"SELECT {key} AS b, metric, bin, SUM(n) FROM rollup_bins WHERE {where} GROUP BY b, metric, bin",
        [piece.first, piece.end, *params],
    )


def span_rows(conn: sqlite3.Connection, piece: Piece, scope: Scope) -> Iterable[Sequence[Any]]:
    """The request spans (`SPAN_FIELDS`) of a spans piece in `scope`."""
    terms, params = piece.spans_sql()
    extra, more = scope.spans_sql()
    return conn.execute(f"SELECT {SPAN_FIELDS} FROM spans WHERE {terms}{extra}", [*params, *more])
