"""The SQL that writes and removes traces, shared by the store, retention and the migration.

Each function runs inside a transaction its caller holds (`BEGIN IMMEDIATE`
... `COMMIT`), so a trace is all there or absent. The triggers of
`obs.storage.schema` keep the rollups, sessions and counters in step with
every insert and delete made here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

from obs.storage._columns import SPAN_COLUMNS, TRACE_COLUMNS, EncodedTrace

__all__ = ["delete_traces", "insert_trace", "statements"]



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
