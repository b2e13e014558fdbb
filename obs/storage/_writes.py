"""The SQL that writes and removes traces (and log and alert rows), shared by store, retention, migration.

Each function runs inside a transaction its caller holds (`BEGIN IMMEDIATE`
... `COMMIT`), so a trace is all there or absent. The triggers of
`obs.storage.schema` keep the rollups, sessions and counters in step with
every insert and delete made here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from obs._validate import json_safe
from obs.alerting.manager import AlertTransition
from obs.logs import LEVELS, LogEntry
from obs.storage._columns import SPAN_COLUMNS, TRACE_COLUMNS, EncodedTrace
from obs.storage._rows import column

__all__ = [
    "INSERT_ALERT", "INSERT_LOG", "alert_rows", "delete_traces", "insert_trace", "log_rows", "statements",
]

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



def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


_INSERT_TRACE = _insert("traces", TRACE_COLUMNS)
_INSERT_TRACE_SEQ = _insert("traces", ("seq", *TRACE_COLUMNS))
_INSERT_SPAN = _insert("spans", SPAN_COLUMNS)
_CHUNK = 500  # ids per statement, well under SQLite's limit on bound parameters


def insert_trace(conn: sqlite3.Connection, encoded: EncodedTrace, seq: int | None = None) -> int:
    """Store `encoded` as the newest trace (or at `seq`), replacing one with the same id.

    Returns how many traces were replaced (0 or 1).
    """
    replaced = delete_traces(conn, (encoded.trace_id,))
    if seq is None:
        conn.execute(_INSERT_TRACE, encoded.trace_row)
    else:
        conn.execute(_INSERT_TRACE_SEQ, (seq, *encoded.trace_row))
    if encoded.span_rows:
        conn.executemany(_INSERT_SPAN, encoded.span_rows)
    return replaced


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
