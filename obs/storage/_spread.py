"""Requests spread over a time range: the points of a per-request chart that fit on a screen.

`spread_requests` gives every request of the range and scope when there are
at most `points`; otherwise the first request of each of `points` equal
slices of time from the first request in range, `points` - 1 of them
reaching the last one (a slice without a request gives none). Each slice is one seek along the
(request, start_time) index, so the cost grows with `points`, not with the
requests in range. A conversation scope reads its requests' start times
through the conversation index (a few rows) and picks the same way.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from obs.storage._aggregate import Scope
from obs.storage.results import RequestPoint

__all__ = ["spread_requests"]

_CHUNK = 500  # ids per statement, well under SQLite's limit on bound parameters


def _width(first: float, last: float, points: int) -> float:
    """The slices' width: `points` - 1 of them reach from the first request to the last (the last one in the
    last slice)."""
    return max((last - first) / (points - 1), 1e-6) if points > 1 else (last - first) + 1.0


def _first_per_slice(times: list[tuple[int, float]], first: float, width: float) -> list[int]:
    """The seq of the first of `times` ((seq, start) in start order) in each slice [first + j * width,
    first + (j + 1) * width), the bounds computed as the SQL of `_slices` computes them."""
    picked: list[int] = []
    j = -1
    for seq, start in times:
        if j >= 0 and start < first + (j + 1) * width:
            continue
        j = max(j, 0)
        while start >= first + (j + 1) * width:
            j += 1
        picked.append(seq)
    return picked


def _slices(
    conn: sqlite3.Connection, lo_ms: float, hi_ms: float, scope: Scope, points: int
) -> list[int]:
    """The seq of the first request of each slice, by one seek per slice (no conversation scope)."""
    extra, more = scope.spans_sql()
    where = f"request = 1 AND start_time >= ? AND start_time < ?{extra}"
    ends = []
    for order in ("ASC", "DESC"):
        ends.append(conn.execute(
            f"SELECT start_time FROM spans INDEXED BY spans_request_start WHERE {where} "
            f"ORDER BY start_time {order} LIMIT 1", [lo_ms, hi_ms, *more],
        ).fetchone()[0])  # fmt: skip
    first, last = ends
    width = _width(first, last, points)
    rows = conn.execute(
        "WITH RECURSIVE slice(j) AS (VALUES (0) UNION ALL SELECT j + 1 FROM slice WHERE j + 1 < ?) "
        "SELECT (SELECT seq FROM spans INDEXED BY spans_request_start WHERE request = 1 "
        f"AND start_time >= ? + j * ? AND start_time < ? + (j + 1) * ? AND start_time < ?{extra} "
        "ORDER BY start_time LIMIT 1) FROM slice",
        [points, first, width, first, width, hi_ms, *more],
    )
    return [seq for (seq,) in rows if seq is not None]


def spread_requests(
    conn: sqlite3.Connection, lo_ms: float, hi_ms: float, scope: Scope, points: int
) -> list[RequestPoint]:
    """Requests that started in [lo_ms, hi_ms) within `scope`, oldest first: all when at most `points`,
    else the first of each of `points` equal slices of time (see the module). Runs inside the caller's
    read transaction."""
    extra, more = scope.spans_sql()
    index = "spans_conversation" if scope.conversations is not None else "spans_request_start"
    where = f"request = 1 AND start_time >= ? AND start_time < ?{extra}"
    limit: list[Any] = [] if scope.conversations is not None else [points + 1]
    times = conn.execute(
        f"SELECT seq, start_time FROM spans INDEXED BY {index} WHERE {where} ORDER BY start_time"
        + (" LIMIT ?" if limit else ""), [lo_ms, hi_ms, *more, *limit],
    ).fetchall()  # fmt: skip
    if len(times) <= points:
        seqs = [seq for seq, _ in times]
    elif scope.conversations is not None:
        first, last = times[0][1], times[-1][1]
        seqs = _first_per_slice(times, first, _width(first, last, points))
    else:
        seqs = _slices(conn, lo_ms, hi_ms, scope, points)
    found = []
    for start in range(0, len(seqs), _CHUNK):
        chunk = seqs[start : start + _CHUNK]
        found += conn.execute(
            "SELECT start_time, seq, trace_id, status, latency_ms, ttft_ms FROM spans "
            f"WHERE seq IN ({', '.join('?' * len(chunk))})", chunk,
        ).fetchall()  # fmt: skip
    found.sort()
    return [RequestPoint(start / 1000.0, trace_id, status, latency, ttft)
            for start, _, trace_id, status, latency, ttft in found]  # fmt: skip
