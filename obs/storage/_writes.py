"""The SQL that writes and removes traces (and log and alert rows), shared by store, retention, migration.

Each function runs inside a transaction its caller holds (`BEGIN IMMEDIATE`
... `COMMIT`), so a trace is all there or absent. The triggers of
`obs.storage.schema` keep the rollups, sessions and counters in step with
every delete made here and every insert but one kind: `insert_traces` adds
a batch's request spans to the rollups itself, summed per minute, hour,
service and model, in the same transaction (see `obs.storage._rollup_sql`).
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from typing import Any

from obs._validate import json_safe
from obs.alerting.manager import AlertTransition
from obs.logs import LEVELS, LogEntry
from obs.storage._columns import SPAN_COLUMNS, TRACE_COLUMNS, EncodedTrace
from obs.storage._rollup_sql import (
    BINS_ALL_UPSERT,
    BINS_UPSERT,
    ROLLUP_HOUR_UPSERT,
    ROLLUP_UPSERT,
    WRITER_SUMS,
    request_sums,
)
from obs.storage._rows import column

__all__ = [
    "INSERT_ALERT", "INSERT_LOG", "add_request_sums", "alert_rows", "delete_traces", "insert_traces",
    "log_rows", "statements",
]  # fmt: skip

INSERT_LOG = (
    "INSERT INTO logs (timestamp, level, rank, message, data, trace_id, span_id, service) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_ALERT = (
    "INSERT INTO alert_transitions (at, rule, from_status, to_status, value, threshold, metric, op, "
    "request_count, service) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        safe, _ = json_safe(value)
        return json.dumps(safe, separators=(",", ":"))


def _text_or_none(value: Any) -> str | None:
    return None if value is None else column(value)


def log_rows(entries: Iterable[LogEntry], service: str | None) -> list[tuple[Any, ...]]:
    """The `logs` rows of `entries` (INSERT_LOG's parameters); data JSON cannot hold becomes marked text."""
    rows = []
    for entry in entries:
        level = entry.level if entry.level in LEVELS else "info"
        rows.append((
            float(entry.timestamp), level, LEVELS.index(level), column(entry.message),
            _json_text(dict(entry.data)), _text_or_none(entry.trace_id), _text_or_none(entry.span_id),
            _text_or_none(service),
        ))  # fmt: skip
    return rows


def alert_rows(transitions: Iterable[AlertTransition], service: str | None) -> list[tuple[Any, ...]]:
    """The `alert_transitions` rows of `transitions` (INSERT_ALERT's parameters)."""
    return [
        (float(t.at), column(t.rule), t.from_status, t.to_status, t.value, float(t.threshold),
         column(t.metric), t.op, int(t.request_count), _text_or_none(service))
        for t in transitions
    ]  # fmt: skip


_ROWS_PER_STATEMENT = (256, 32, 4, 1)  # few distinct statements, each prepared once and cached


@functools.cache
def _insert(table: str, columns: tuple[str, ...], rows: int = 1) -> str:
    """An INSERT of `rows` rows into `table` in one statement."""
    one = f"({', '.join('?' * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * rows)}"


def _insert_rows(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: list[Any]) -> None:
    """Insert `rows` (tuples of `columns`), many rows per statement.

    One statement for many rows, not one per row: inside a transaction, every
    statement that fires a trigger keeps a journal of the pages it changes so
    it can be undone alone, and one statement per row would copy the pages of
    the table and each of its indexes once per row.
    """
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(columns)
    at = 0
    for size in _ROWS_PER_STATEMENT:
        if size > limit and size > 1:
            continue
        sql = _insert(table, columns, size)
        while len(rows) - at >= size:
            conn.execute(sql, list(chain.from_iterable(rows[at : at + size])))
            at += size


_TRACE_SEQ_COLUMNS = ("seq", *TRACE_COLUMNS)
_CHUNK = 500  # ids per statement, well under SQLite's limit on bound parameters
# Where the columns the rollups sum sit in a `spans` row.
_SPAN_AT = {name: SPAN_COLUMNS.index(name) for name in (
    "service", "model", "request", "error", "input_tokens", "output_tokens", "cost_units", "latency_ms",
    "cache_hit", "ttft_ms", "minute", "hour", "latency_bin", "ttft_bin",
)}  # fmt: skip
_INT64 = range(-(2**63), 2**63)
_SET_WRITER_SUMS = f"UPDATE counters SET n = ? WHERE name = '{WRITER_SUMS}'"


def insert_traces(
    conn: sqlite3.Connection, encoded: Sequence[EncodedTrace], seqs: Sequence[int] | None = None
) -> int:
    """Store `encoded` as the newest traces, in order (or at `seqs`), replacing stored ones with the same id.

    A trace id given twice keeps the later copy, in the later place. The
    request spans are added to the rollups and counters here, once per key
    for the whole batch. Returns how many traces were replaced: stored ones,
    and earlier copies in `encoded`.
    """
    last = {item.trace_id: index for index, item in enumerate(encoded)}
    kept = [index for index, item in enumerate(encoded) if last[item.trace_id] == index]
    replaced = len(encoded) - len(kept) + delete_traces(conn, list(last))
    if not kept:
        return replaced
    conn.execute(_SET_WRITER_SUMS, (1,))
    try:
        if seqs is None:
            _insert_rows(conn, "traces", TRACE_COLUMNS, [encoded[index].trace_row for index in kept])
        else:
            rows = [(seqs[index], *encoded[index].trace_row) for index in kept]
            _insert_rows(conn, "traces", _TRACE_SEQ_COLUMNS, rows)
        span_rows = [row for index in kept for row in encoded[index].span_rows]
        if span_rows:
            _insert_rows(conn, "spans", SPAN_COLUMNS, span_rows)
            add_request_sums(conn, span_rows)
    finally:
        conn.execute(_SET_WRITER_SUMS, (0,))
    return replaced


def _bindable(value: int | float) -> int | float:
    """A sum SQLite can bind: an int past 64 bits becomes a float, as SQLite's own `+` makes it."""
    return value if type(value) is float or value in _INT64 else float(value)


def _summed(groups: dict[tuple[Any, ...], list[list[Any]]]) -> list[tuple[Any, ...]]:
    """(*key, *column sums) of each group of `request_sums` lists, ready to bind."""
    return [(*key, *(_bindable(sum(c)) for c in zip(*rows, strict=True))) for key, rows in groups.items()]


def add_request_sums(conn: sqlite3.Connection, span_rows: Sequence[Sequence[Any]]) -> int:
    """Add the request spans among `span_rows` (just inserted) to the rollups and counters; return how many.

    What the trigger `request_added` does per span, summed per minute (and
    hour), service and model first, so each key is written once.
    """
    at = _SPAN_AT
    request, service_at, model_at, minute_at, hour_at = (
        at["request"], at["service"], at["model"], at["minute"], at["hour"])  # fmt: skip
    minutes: dict[tuple[Any, ...], list[list[Any]]] = {}
    hours: dict[tuple[Any, ...], list[list[Any]]] = {}
    bins: dict[tuple[Any, ...], int] = {}
    everything: dict[tuple[Any, ...], int] = {}
    count = 0
    for row in span_rows:
        if row[request] != 1:
            continue
        count += 1
        service, model, hour = row[service_at] or "", row[model_at] or "", row[hour_at]
        sums = request_sums(
            row[at["error"]], row[at["input_tokens"]], row[at["output_tokens"]], row[at["cost_units"]],
            row[at["latency_ms"]], row[at["cache_hit"]], row[at["ttft_ms"]],
        )  # fmt: skip
        minutes.setdefault((row[minute_at], service, model), []).append(sums)
        hours.setdefault((hour, service, model), []).append(sums)
        for metric, bin_at in ((0, at["latency_bin"]), (1, at["ttft_bin"])):
            index = row[bin_at]
            if index is not None:
                key = (hour, service, model, metric, index)
                bins[key] = bins.get(key, 0) + 1
                key = (hour, metric, index)
                everything[key] = everything.get(key, 0) + 1
    if count:
        conn.executemany(ROLLUP_UPSERT, _summed(minutes))
        conn.executemany(ROLLUP_HOUR_UPSERT, _summed(hours))
        conn.executemany(BINS_UPSERT, [(*key, n) for key, n in bins.items()])
        conn.executemany(BINS_ALL_UPSERT, [(*key, n) for key, n in everything.items()])
        conn.execute("UPDATE counters SET n = n + ? WHERE name = 'requests'", (count,))
    return count


def delete_traces(conn: sqlite3.Connection, trace_ids: Sequence[str]) -> int:
    """Remove the traces with these ids and their spans; return how many traces were removed."""
    removed = 0
    for start in range(0, len(trace_ids), _CHUNK):
        chunk = tuple(trace_ids[start : start + _CHUNK])
        marks = ", ".join("?" * len(chunk))
        conn.execute(f"DELETE FROM spans WHERE trace_id IN ({marks})", chunk)
        removed += conn.execute(f"DELETE FROM traces WHERE id IN ({marks})", chunk).rowcount
    return removed


def statements(script: str) -> Iterator[str]:
    """The SQL statements of `script` one by one (triggers whole), to run inside a transaction.

    `executescript` would commit first; this lets a schema change be one transaction.
    """
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            buffer = ""
            if statement != ";":
                yield statement
