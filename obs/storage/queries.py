"""The dashboard's queries on a SQLite store: SQL aggregates and pages, never every row.

`DashboardQueries(store)` answers over a time range (`since`, `until`: epoch
seconds, None for unbounded; a request counts where its span started) and a
scope (`service`, `model`, `conversation`: one id or several, or None for
everything):

- `tiles`: request count, errors, tokens, cost, average and exact p50/p95
  latency, cache hit rate, throughput, average TTFT;
- `series`: per-second, per-minute or per-hour buckets (count, errors,
  tokens, cost, average, p50 and p95 latency, p95 TTFT, cache hits);
- `latency_histogram`: request latencies counted between fixed bounds;
- `request_points`: the requests in range, or as many spread evenly over
  its time as fit on a chart;
- `traces` (a page, newest first, filtered), `trace` (one, whole);
- `sessions` (one row per conversation), `session` and `session_traces`
  (one conversation's turns in order);
- `logs` (a page, newest first), `alert_transitions`;
- `services`, `models`: the values the scope can take.

Sums come from the rollups kept per minute and per hour (see
`obs.storage._aggregate`); exact percentiles from the hourly latency
histograms, which say in which bin the ranked latency lies, and the
(request, latency) index, which gives that bin's latencies (see
`obs.storage._percentile`). So a query reads rows per bucket or per page,
and a small share of the requests for an exact percentile, not every row
(`benchmarks/bench_storage.py` measures each query on 100,000 traces,
`benchmarks/bench_dashboard.py` a whole dashboard refresh up to 1,000,000).
Arguments are checked: ValueError names the argument and what it accepts.
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
from collections.abc import Sequence
from typing import Any

from obs._validate import is_finite_number
from obs.alerting.manager import AlertTransition
from obs.clock import SYSTEM_CLOCK, Clock
from obs.logs import LEVELS, LogEntry
from obs.storage._aggregate import Agg, Scope, exact_percentile, plan, sums_of
from obs.storage._checks import check_page, check_range, check_scope, like
from obs.storage._columns import COST_UNITS_PER_USD
from obs.storage._percentile import exact_latencies
from obs.storage._rollup_sql import LATENCY_BOUNDS_MS
from obs.storage._spread import spread_requests
from obs.storage.results import (
    LogPage,
    RequestPoint,
    SessionPage,
    SessionSummary,
    Tiles,
    TracePage,
    TraceSummary,
)
from obs.storage.series import series_buckets
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.traces import Trace

__all__ = ["DEFAULT_LATENCY_BOUNDS_MS", "DashboardQueries"]

DEFAULT_LATENCY_BOUNDS_MS = LATENCY_BOUNDS_MS
_SUMMARY = (
    "id, name, start_time, end_time, duration, status, service, conversation_id, model, span_count, "
    "requests, input_tokens, output_tokens, cost_units, input_preview, output_preview"
)


def _units(value: Any) -> float:
    return (value or 0) / COST_UNITS_PER_USD


def _summary(row: Sequence[Any]) -> TraceSummary:
    (trace_id, name, start, end, duration, status, service, conversation, model, spans, requests,
     inputs, outputs, units, asked, answered) = row  # fmt: skip
    return TraceSummary(
        trace_id, name, start / 1000.0, None if end is None else end / 1000.0, duration, status, service,
        conversation, model, spans, requests, inputs, outputs, _units(units), asked, answered,
    )  # fmt: skip


class DashboardQueries:
    """Read-only queries on one `SqliteTraceStore`, shaped for the dashboard. Thread-safe.

    Every query runs in one read transaction (one snapshot of the file) on a
    connection of its own, so it never waits for a writer. `clock` gives
    "now" for throughput over a range with no `until`.
    """

    def __init__(self, store: SqliteTraceStore, *, clock: Clock = SYSTEM_CLOCK) -> None:
        """Query `store`; ValueError if it is not a SqliteTraceStore."""
        if not isinstance(store, SqliteTraceStore):
            kind = type(store).__name__
            raise ValueError(f"DashboardQueries: store must be a SqliteTraceStore, got {kind}")
        self.store = store
        self._db = store.database()
        self._clock = clock

    # -- tiles ------------------------------------------------------------------------------------

    def tiles(
        self, since: float | None = None, until: float | None = None, *,
        service: str | None = None, model: str | None = None, conversation: str | Sequence[str] | None = None,
    ) -> Tiles:  # fmt: skip
        """The summary of the requests that started in [since, until) within the scope (see `Tiles`)."""
        lo, hi = check_range(since, until)
        scope = check_scope(service, model, conversation)
        with self._db.read() as conn:
            agg = self._sums(conn, lo, hi, scope)
            p50, p95 = exact_latencies(conn, lo, hi, scope, agg.latency_count, (0.5, 0.95))
            first, last = self._first_last(conn, lo, hi, scope) if agg.requests else (None, None)
        n = agg.requests
        start = lo if not math.isinf(lo) else first
        end = hi if not math.isinf(hi) else (self._clock.time_ms() if not math.isinf(lo) else last)
        elapsed = max(1.0, ((end or 0.0) - (start or 0.0)) / 1000.0) if n else 1.0
        tokens = agg.inputs + agg.outputs
        return Tiles(
            request_count=n, error_count=agg.errors, error_rate=agg.errors / n if n else 0.0,
            prompt_tokens=agg.inputs, completion_tokens=agg.outputs, total_tokens=tokens,
            total_cost=_units(agg.cost_units),
            avg_latency_ms=agg.latency_sum / agg.latency_count if agg.latency_count else 0.0,
            p50_latency_ms=p50, p95_latency_ms=p95, cache_hits=agg.cache_hits,
            cache_misses=n - agg.cache_hits, cache_hit_rate=agg.cache_hits / n if n else 0.0,
            requests_per_second=n / elapsed if n else 0.0,
            tokens_per_second=tokens / elapsed if n else 0.0,
            avg_ttft_ms=agg.ttft_sum / agg.ttft_count if agg.ttft_count else 0.0,
            first_request_at=None if first is None else first / 1000.0,
            last_request_at=None if last is None else last / 1000.0,
        )  # fmt: skip

    @staticmethod
    def _sums(conn: sqlite3.Connection, lo: float, hi: float, scope: Scope) -> Agg:
        agg = Agg()
        for piece in plan(lo, hi, scope.conversations is None):
            agg.add_sums(sums_of(conn, piece, scope))
        return agg

    @staticmethod
    def _first_last(conn: sqlite3.Connection, lo: float, hi: float, scope: Scope) -> tuple[float, float]:
        extra, more = scope.spans_sql()
        index = "spans_conversation" if scope.conversations is not None else "spans_request_start"
        found = []
        for order in ("ASC", "DESC"):
            row = conn.execute(
                f"SELECT start_time FROM spans INDEXED BY {index} WHERE request = 1 AND start_time >= ? "
                f"AND start_time < ?{extra} ORDER BY start_time {order} LIMIT 1",
                [lo, hi, *more],
            ).fetchone()
            found.append(row[0] if row else None)
        return found[0], found[1]

    # -- charts -----------------------------------------------------------------------------------

    def series(
        self, bucket_s: int = 60, since: float | None = None, until: float | None = None, *,
        service: str | None = None, model: str | None = None, conversation: str | Sequence[str] | None = None,
        percentiles: bool = True,
    ) -> list:  # fmt: skip
        """`SeriesBucket`s of `bucket_s` = 1, 60 or 3600 seconds holding requests, oldest first.

        1 s and 60 s buckets are read from the spans, percentiles exact (the
        cost grows with the requests in range: use 3600 s buckets for days);
        3600 s buckets whole inside the range come from the hourly rollup,
        their percentiles within 4%. With `percentiles=False` the percentile
        fields are NaN and 60 s and 3600 s buckets are read from the rollups
        alone (a cost that grows with the buckets, not the requests). 1 s
        buckets need a range of at most an hour (`since` given; `until` None
        meaning now). ValueError names a bad argument.
        """
        if isinstance(bucket_s, bool) or bucket_s not in (1, 60, 3600):
            raise ValueError(f"bucket_s must be 1, 60 or 3600 (seconds per bucket), got {bucket_s!r}")
        if not isinstance(percentiles, bool):
            raise ValueError(f"percentiles must be True or False, got {percentiles!r}")
        lo, hi = check_range(since, until)
        scope = check_scope(service, model, conversation)
        if bucket_s == 1:
            end = hi if not math.isinf(hi) else self._clock.time_ms()
            if math.isinf(lo) or end - lo > 3_600_000.0:
                raise ValueError(
                    "bucket_s=1 needs a range of at most 3600 s (give since, and until within an hour "
                    f"of it); got since={since!r}, until={until!r}: use bucket_s=60 for longer ranges"
                )
        with self._db.read() as conn:
            return series_buckets(conn, bucket_s, lo, hi, scope, percentiles)

    def latency_histogram(
        self, since: float | None = None, until: float | None = None, *,
        bounds_ms: Sequence[float] = DEFAULT_LATENCY_BOUNDS_MS,
        service: str | None = None, model: str | None = None, conversation: str | Sequence[str] | None = None,
    ) -> list[int]:  # fmt: skip
        """Request latencies counted between `bounds_ms` (increasing): len(bounds_ms) + 1 counts.

        Count i holds latencies in [bounds[i-1], bounds[i]) (the first from 0,
        the last up to infinity). The default bounds (the dashboard's) are
        counted in the rollups; others scan the latency index.
        """
        bounds = list(bounds_ms)
        if not bounds or not all(is_finite_number(b) for b in bounds) or bounds != sorted(set(bounds)):
            raise ValueError(f"bounds_ms must be increasing finite numbers (ms), got {bounds_ms!r}")
        lo, hi = check_range(since, until)
        scope = check_scope(service, model, conversation)
        if tuple(float(b) for b in bounds) == LATENCY_BOUNDS_MS:
            with self._db.read() as conn:
                return list(self._sums(conn, lo, hi, scope).histogram)
        cases = ["SUM(latency_ms < ?)"]
        cases += ["SUM(latency_ms >= ? AND latency_ms < ?)" for _ in bounds[1:]]
        cases.append("SUM(latency_ms >= ?)")
        params: list[Any] = [bounds[0]]
        for low, high in itertools.pairwise(bounds):
            params += [low, high]
        params.append(bounds[-1])
        extra, more = scope.spans_sql()
        index = "spans_conversation" if scope.conversations is not None else "spans_request_latency"
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT {', '.join(cases)} FROM spans INDEXED BY {index} WHERE request = 1 "
                f"AND latency_ms IS NOT NULL AND start_time >= ? AND start_time < ?{extra}",
                [*params, lo, hi, *more],
            ).fetchone()
        return [int(value or 0) for value in row]

    def request_points(
        self, since: float | None = None, until: float | None = None, *, points: int = 2000,
        service: str | None = None, model: str | None = None, conversation: str | Sequence[str] | None = None,
    ) -> list[RequestPoint]:  # fmt: skip
        """Requests that started in [since, until) within the scope, oldest first, as chart points.

        All of them when there are at most `points` (an int in [1, 100000]);
        otherwise the first request of each of `points` equal slices of time
        between the first and the last request in range, so the points cover
        the range evenly in time whatever the traffic, at a cost that grows
        with `points`, not with the requests. ValueError names a bad argument.
        """
        if isinstance(points, bool) or not isinstance(points, int) or not 1 <= points <= 100_000:
            raise ValueError(f"points must be an int in [1, 100000], got {points!r}")
        lo, hi = check_range(since, until)
        scope = check_scope(service, model, conversation)
        with self._db.read() as conn:
            return spread_requests(conn, lo, hi, scope, points)

    # -- traces -----------------------------------------------------------------------------------

    def traces(
        self, *, limit: int = 50, offset: int = 0, since: float | None = None, until: float | None = None,
        status: str | None = None, text: str | None = None, model: str | None = None,
        service: str | None = None, conversation: str | Sequence[str] | None = None,
        min_duration_ms: float | None = None,
    ) -> TracePage:  # fmt: skip
        """A page of trace summaries, newest first (by start), filtered.

        `status` "success", "error" or "running"; `text` a case-insensitive
        substring of the name, id, conversation id or message previews;
        `min_duration_ms` a duration floor. Scope and range as for `tiles`.
        """
        limit, offset = check_page(limit, offset)
        lo, hi = check_range(since, until)
        scope = check_scope(service, model, conversation)
        if status is not None and status not in ("success", "error", "running"):
            raise ValueError(f"status must be None, 'success', 'error' or 'running', got {status!r}")
        if min_duration_ms is not None and not is_finite_number(min_duration_ms):
            raise ValueError(f"min_duration_ms must be None or a number of ms, got {min_duration_ms!r}")
        where, params = "start_time >= ? AND start_time < ?", [lo, hi]
        extra, more = scope.spans_sql()
        where, params = where + extra, params + more
        if status is not None:
            where += " AND status = ?"
            params.append(status)
        if min_duration_ms is not None:
            where += " AND duration >= ?"
            params.append(float(min_duration_ms))
        pattern = like(text)
        if pattern is not None:
            columns = ("name", "id", "conversation_id", "input_preview", "output_preview")
            where += " AND (" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in columns) + ")"
            params += [pattern] * len(columns)
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_SUMMARY} FROM traces WHERE {where} "
                "ORDER BY start_time DESC, seq DESC LIMIT ? OFFSET ?",
                [*params, limit + 1, offset],
            ).fetchall()
        return TracePage(tuple(_summary(r) for r in rows[:limit]), offset, limit, len(rows) > limit)

    def trace(self, trace_id: str) -> Trace | None:
        """One whole trace with its spans, or None."""
        return self.store.get(trace_id)

    # -- sessions ---------------------------------------------------------------------------------

    def sessions(
        self, *, limit: int = 50, offset: int = 0, since: float | None = None, until: float | None = None,
        text: str | None = None, model: str | None = None, service: str | None = None,
        errors_only: bool = False, conversation: str | Sequence[str] | None = None,
    ) -> SessionPage:  # fmt: skip
        """A page of conversations active in [since, until), most recently active first.

        The numbers of each cover the whole conversation kept in the file.
        `conversation`: only these conversation ids (one or a collection);
        `text`: a case-insensitive substring of the id or the first message;
        `model`: conversations with a turn on that model; `errors_only`:
        those with a failed turn.
        """
        limit, offset = check_page(limit, offset)
        lo, hi = check_range(since, until)
        wanted = check_scope(service, model, conversation).conversations
        where, params = "last_activity >= ? AND first_start < ?", [lo, hi]
        if wanted is not None:
            where += f" AND conversation_id IN ({', '.join('?' * len(wanted))})" if wanted else " AND 0"
            params += list(wanted)
        if service is not None:
            where += " AND service = ?"
            params.append(service)
        if errors_only:
            where += " AND errors > 0"
        pattern = like(text)
        if pattern is not None:
            where += " AND (conversation_id LIKE ? ESCAPE '\\' OR first_message LIKE ? ESCAPE '\\')"
            params += [pattern, pattern]
        if model is not None:
            where += (" AND EXISTS (SELECT 1 FROM traces t "
                      "WHERE t.conversation_id = s.conversation_id AND t.model = ?)")  # fmt: skip
            params.append(model)
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT conversation_id, turns, requests, errors, input_tokens, output_tokens, cost_units, "
                "latency_sum, first_message, first_start, last_activity, service, model FROM sessions s "
                f"WHERE {where} ORDER BY last_activity DESC LIMIT ? OFFSET ?",
                [*params, limit + 1, offset],
            ).fetchall()[: limit + 1]
            durations: dict[str, list[float]] = {}
            ids = [row[0] for row in rows[:limit]]
            if ids:
                for cid, duration in conn.execute(
                    f"SELECT conversation_id, duration FROM traces WHERE conversation_id IN "
                    f"({', '.join('?' * len(ids))}) AND duration IS NOT NULL", ids,
                ):  # fmt: skip
                    durations.setdefault(cid, []).append(duration)
        items = []
        for row in rows[:limit]:
            cid, turns, requests, errors, inputs, outputs, units, latency, message, first, last = row[:11]
            items.append(SessionSummary(
                cid, turns, requests, errors, inputs, outputs, _units(units), latency,
                exact_percentile(durations.get(cid, []), 0.95), message, first / 1000.0, last / 1000.0,
                row[11], row[12],
            ))  # fmt: skip
        return SessionPage(tuple(items), offset, limit, len(rows) > limit)

    def session(self, conversation_id: str) -> list[TraceSummary]:
        """The turns (trace summaries) of one conversation, in start order; [] if none is kept."""
        check_scope(None, None, conversation_id)
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_SUMMARY} FROM traces WHERE conversation_id = ? ORDER BY start_time, seq",
                (conversation_id,),
            ).fetchall()
        return [_summary(row) for row in rows]

    def session_traces(self, conversation_id: str) -> list[Trace]:
        """The whole traces of one conversation, in start order (for its messages and spans)."""
        return self.store.get_many([summary.trace_id for summary in self.session(conversation_id)])

    # -- logs and alerts --------------------------------------------------------------------------

    def logs(
        self, *, limit: int = 100, offset: int = 0, since: float | None = None, until: float | None = None,
        min_level: str | None = None, text: str | None = None, trace_id: str | None = None,
        service: str | None = None,
    ) -> LogPage:  # fmt: skip
        """A page of log entries, newest first: at `min_level` or above, containing `text`, of one trace."""
        limit, offset = check_page(limit, offset)
        lo, hi = check_range(since, until)
        where, params = "timestamp >= ? AND timestamp < ?", [lo, hi]
        if min_level is not None:
            level = "warn" if min_level == "warning" else min_level
            if level not in LEVELS:
                raise ValueError(f"min_level must be None or one of {', '.join(LEVELS)}, got {min_level!r}")
            where += " AND rank >= ?"
            params.append(LEVELS.index(level))
        for name, value in (("trace_id", trace_id), ("service", service)):
            if value is not None:
                if not isinstance(value, str):
                    raise ValueError(f"{name} must be None or a string, got {value!r}")
                where += f" AND {name} = ?"
                params.append(value)
        pattern = like(text)
        if pattern is not None:
            where += " AND (message LIKE ? ESCAPE '\\' OR data LIKE ? ESCAPE '\\')"
            params += [pattern, pattern]
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT timestamp, level, message, data, trace_id, span_id, service FROM logs "
                f"WHERE {where} ORDER BY timestamp DESC, seq DESC LIMIT ? OFFSET ?",
                [*params, limit + 1, offset],
            ).fetchall()
        entries = tuple(LogEntry(r[0], r[1], r[2], _data(r[3]), r[4], r[5]) for r in rows[:limit])
        return LogPage(entries, tuple(row[6] for row in rows[:limit]), offset, limit, len(rows) > limit)

    def alert_transitions(
        self, *, limit: int = 100, offset: int = 0, since: float | None = None, until: float | None = None,
        rule: str | None = None,
    ) -> list[AlertTransition]:  # fmt: skip
        """Alert state changes at [since, until) (epoch s), newest first, of one `rule` if given."""
        limit, offset = check_page(limit, offset)
        lo, hi = check_range(since, until)
        where, params = "at >= ? AND at < ?", [lo / 1000.0, hi / 1000.0]
        if rule is not None:
            where += " AND rule = ?"
            params.append(rule)
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT rule, from_status, to_status, at, value, threshold, metric, op, request_count "
                f"FROM alert_transitions WHERE {where} ORDER BY at DESC, seq DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
        return [AlertTransition(*row) for row in rows]

    # -- what the scope can be --------------------------------------------------------------------

    def services(self) -> list[str]:
        """Every service that wrote a trace kept in the file, sorted."""
        return self._distinct("traces", "service")

    def models(self) -> list[str]:
        """Every model of a request kept in the file, sorted."""
        with self._db.read() as conn:
            rows = conn.execute("SELECT DISTINCT model FROM rollup_hour WHERE model != '' ORDER BY model")
            return [row[0] for row in rows]

    def _distinct(self, table: str, column: str) -> list[str]:
        # A skip scan over the (column, start_time) index: one seek per distinct value.
        found: list[str] = []
        with self._db.read() as conn:
            row = conn.execute(f"SELECT MIN({column}) FROM {table} WHERE {column} IS NOT NULL").fetchone()
            while row is not None and row[0] is not None:
                found.append(row[0])
                row = conn.execute(f"SELECT MIN({column}) FROM {table} WHERE {column} > ?", (row[0],))
                row = row.fetchone()
        return found

    def __repr__(self) -> str:
        return f"DashboardQueries({self.store!r})"


def _data(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {"value": text}
    return value if isinstance(value, dict) else {"value": value}
