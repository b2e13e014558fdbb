"""Exact latency percentiles over a time range, read without walking every request in it.

Nearest rank (`rank`): the q-quantile of n latencies is the one of 1-based
rank ceil(q * n) in ascending order. Two ways to find it:

- Through the hourly histograms (any range holding a whole hour, scoped by
  service and model or not): the bins counted per hour (`hour_bins`,
  `hour_bins_all`) and those of the spans in the partial hours at the ends
  of the range say which bin the ranked latency lies in and how many lie
  below that bin; the latencies of that one bin in range are then read
  along the (request, latency) index, which holds their start, service and
  model too, and the ranked one is picked among them. A bin spans about 8%
  of its values, so this reads a few hours' bins and a small share of the
  requests, not all of them. If the counts and the latencies read disagree
  (they never should), the other way answers.
- Along an index: the (request, latency) index walked from the nearer end
  by OFFSET, or the requests in range sorted (a conversation scope, a range
  without a whole hour).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence

from obs.storage._aggregate import FAR, Scope, rank
from obs.storage._columns import ZERO_BIN, bin_of
from obs.storage._rollup_sql import HOUR_BINS

__all__ = ["exact_latencies", "through_bins"]

_HOUR_MS = 3_600_000.0
_MARGIN = 1e-9  # read a bin's latencies a hair beyond its bounds; `bin_of` then says which are in it


def _by_index(conn: sqlite3.Connection, lo: float, hi: float, scope: Scope, n: int, q: float) -> float:
    """The q-quantile by OFFSET along an ordered index.

    The (request, latency) index is walked from the nearer end, skipping the
    entries out of range and scope, down to the rank: about
    min(rank, n - rank) * (all requests / n) entries. When that is more than
    reading the n requests through the time index and sorting them, that is
    done instead.
    """
    k = rank(q, n)
    extra, more = scope.spans_sql()
    index, order, offset = "spans_request_start", "ASC", k - 1
    if scope.conversations is not None:
        index = "spans_conversation"
    else:
        total = conn.execute("SELECT n FROM counters WHERE name = 'requests'").fetchone()[0]
        walked = (min(k - 1, n - k) + 1) * max(total, n) / n
        if walked < 4 * n:
            index = "spans_request_latency"
            order, offset = ("ASC", k - 1) if k - 1 <= n - k else ("DESC", n - k)
    row = conn.execute(
        f"SELECT latency_ms FROM spans INDEXED BY {index} WHERE request = 1 AND latency_ms IS NOT NULL "
        f"AND start_time >= ? AND start_time < ?{extra} ORDER BY latency_ms {order} LIMIT 1 OFFSET ?",
        [lo, hi, *more, offset],
    ).fetchone()
    return 0.0 if row is None else float(row[0])


def _bin_counts(
    conn: sqlite3.Connection, lo: float, hi: float, scope: Scope, first: int, end: int
) -> dict[int, int]:
    """Latencies in [lo, hi) within `scope` counted per hourly bin: whole hours [first, end) (in minutes)
    from the hourly histograms, the partial hours at the ends from their spans."""
    counts: dict[int, int] = {}
    if scope.service is None and scope.model is None:
        rows = conn.execute(
            "SELECT bin, SUM(n) FROM hour_bins_all WHERE hour >= ? AND hour < ? AND metric = 0 GROUP BY bin",
            (first, end),
        )
    else:
        extra, more = scope.rollup_sql()
        rows = conn.execute(
            f"SELECT bin, SUM(n) FROM hour_bins WHERE hour >= ? AND hour < ? AND metric = 0{extra} "
            "GROUP BY bin",
            [first, end, *more],
        )
    for index, n in rows:
        counts[index] = counts.get(index, 0) + n
    extra, more = scope.spans_sql()
    # Each span is on one side by its `hour` column, as the histograms count it; the times narrow the scan.
    ends = []
    if first != -FAR:
        ends.append(("start_time >= ? AND start_time < ? AND hour < ?", [lo, first * 60_000.0 + 1.0, first]))
    if end != FAR:
        ends.append(("start_time >= ? AND start_time < ? AND hour >= ?", [end * 60_000.0 - 1.0, hi, end]))
    for terms, params in ends:
        for (latency,) in conn.execute(
            f"SELECT latency_ms FROM spans INDEXED BY spans_request_start WHERE request = 1 AND {terms} "
            f"AND latency_ms IS NOT NULL{extra}", [*params, *more],
        ):  # fmt: skip
            index = bin_of(latency)
            counts[index] = counts.get(index, 0) + 1  # type: ignore[index]
    return counts


def _in_bin(conn: sqlite3.Connection, lo: float, hi: float, scope: Scope, index: int) -> list[float]:
    """The latencies of bin `index` in [lo, hi) within `scope`, ascending, read along the latency index."""
    if index == ZERO_BIN:
        low, high = -math.inf, 0.0
    else:
        low = HOUR_BINS.gamma ** (index - 1) * (1.0 - _MARGIN)
        high = HOUR_BINS.gamma**index * (1.0 + _MARGIN)
    extra, more = scope.spans_sql()
    rows = conn.execute(
        "SELECT latency_ms FROM spans INDEXED BY spans_request_latency WHERE request = 1 AND latency_ms >= ? "
        f"AND latency_ms <= ? AND start_time >= ? AND start_time < ?{extra} ORDER BY latency_ms",
        [low, high, lo, hi, *more],
    )
    return [value for (value,) in rows if bin_of(value) == index]


def through_bins(
    conn: sqlite3.Connection, lo: float, hi: float, scope: Scope, n: int, qs: Sequence[float]
) -> list[float] | None:
    """The quantiles through the hourly bins (see the module); None for a conversation scope, a range
    without a whole hour, or counts that disagree with the `n` latencies or with the latencies read."""
    first = -FAR if math.isinf(lo) else math.ceil(lo / _HOUR_MS) * 60  # whole hours, as minutes
    end = FAR if math.isinf(hi) else math.floor(hi / _HOUR_MS) * 60
    if scope.conversations is not None or end <= first or n <= 0:
        return None
    counts = _bin_counts(conn, lo, hi, scope, first, end)
    total = sum(counts.values())
    if total != n:
        return None
    found: list[float] = []
    read: dict[int, list[float]] = {}
    for q in qs:
        k = rank(q, total)
        below = 0
        for index in sorted(counts):
            if below + counts[index] >= k:
                break
            below += counts[index]
        values = read.get(index)
        if values is None:
            values = read[index] = _in_bin(conn, lo, hi, scope, index)
        if len(values) != counts[index]:
            return None
        found.append(float(values[k - below - 1]))
    return found


def exact_latencies(
    conn: sqlite3.Connection, lo: float, hi: float, scope: Scope, n: int, qs: Sequence[float]
) -> list[float]:
    """The exact nearest-rank q-quantiles (one per `qs`) of the `n` latencies of the requests that started in
    [lo, hi) (epoch ms) within `scope`; 0.0 each when n is 0. Runs inside the caller's read transaction."""
    if n <= 0:
        return [0.0 for _ in qs]
    found = through_bins(conn, lo, hi, scope, n, qs)
    return found if found is not None else [_by_index(conn, lo, hi, scope, n, q) for q in qs]
