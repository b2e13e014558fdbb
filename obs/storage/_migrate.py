"""Bring a freshly opened database to the current schema: create it, or migrate an older layout.

`prepare` runs once per opened store. An empty file gets the schema of
`obs.storage.schema`; a file of version 0 (the one-table layout: a `traces`
table holding each whole trace as JSON) is migrated in one transaction, each
trace rewritten as a trace row and span rows in its old insertion order
(rows that cannot be decoded are carried over as they are, still readable
by nothing and still counted as unreadable); a file of version 1 keeps its
rows and has the triggers that version 2 defines anew (`REDEFINED`) replaced;
a file of the current version is left as it is. A database holding tables of another program is refused,
never written to. Several processes may open one file at once: the check is
repeated inside the write transaction, so only one of them migrates.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

from obs.storage._columns import EncodedTrace, encode_trace
from obs.storage._rows import decode
from obs.storage._writes import insert_traces, statements
from obs.storage.schema import REDEFINED, SCHEMA, SCHEMA_VERSION, check_ours

__all__ = ["prepare"]

_log = logging.getLogger(__name__)

_V0_INDEXES = ("traces_start_time", "traces_duration", "traces_status", "traces_name")
_COPY_CHUNK = 500  # v0 traces rewritten per batch


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def prepare(conn: sqlite3.Connection, path: Path, owner: str = "SqliteTraceStore") -> str:
    """Make the database on `conn` current; return "opened", "created" or "migrated".

    Raises ValueError (naming the file) for a database of another program,
    sqlite3.Error when the file cannot be read or written (the caller turns
    it into a message).
    """
    if int(conn.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION:
        return "opened"
    conn.execute("BEGIN IMMEDIATE")
    try:
        outcome = _prepare_locked(conn, path, owner)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    if outcome == "migrated":
        _log.warning("%s: %s was migrated to schema version %d", owner, path, SCHEMA_VERSION)
    return outcome


def _prepare_locked(conn: sqlite3.Connection, path: Path, owner: str) -> str:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version == SCHEMA_VERSION:
        return "opened"  # another process made it current while this one waited for the lock
    tables = check_ours(conn, path, owner)
    v0 = version == 0 and "traces" in tables and "spans" not in tables
    older = 0 < version < SCHEMA_VERSION
    leftover = tables - {"sqlite_sequence", "sqlite_stat1", "sqlite_stat4"}
    if leftover and not (v0 or older):
        raise ValueError(
            f"{owner}: {str(path)!r} holds obs tables ({', '.join(sorted(leftover))}) without a schema "
            "version: it was not written by obs; it is left untouched: choose another path"
        )
    if v0 and not {"id", "data", "seq"} <= _columns(conn, "traces"):
        raise ValueError(
            f"{owner}: {str(path)!r} has a traces table obs did not write (no id, seq and data columns); "
            "it is left untouched: choose another path"
        )
    if v0:
        for index in _V0_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {index}")
        conn.execute("ALTER TABLE traces RENAME TO traces_v0")
    for step in range(version + 1, SCHEMA_VERSION + 1):
        for trigger in REDEFINED.get(step, ()):
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    for statement in statements(SCHEMA):
        conn.execute(statement)
    if v0:
        _copy_v0(conn)
        conn.execute("DROP TABLE traces_v0")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return "migrated" if v0 or older else "created"


def _copy_v0(conn: sqlite3.Connection) -> None:
    """Rewrite every row of the old table into the new ones, keeping its place in insertion order."""
    rows = conn.execute(
        "SELECT seq, id, name, start_time, end_time, duration, status, data FROM traces_v0 ORDER BY seq"
    ).fetchall()
    batch: list[EncodedTrace] = []
    seqs: list[int] = []
    for seq, trace_id, name, start, end, duration, status, data in rows:
        try:
            encoded = encode_trace(decode(data))
        except Exception as exc:  # RecursionError too: carried over as it is, skipped by every read
            _log.warning("migration: row %s (trace %r) cannot be decoded and is kept as it is: %s",
                         seq, trace_id, type(exc).__name__)  # fmt: skip
            conn.execute(
                "INSERT INTO traces (seq, id, name, start_time, end_time, duration, status, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, trace_id, name, start, end, duration, status, data),
            )
            continue
        batch.append(encoded)
        seqs.append(seq)
        if len(batch) == _COPY_CHUNK:
            insert_traces(conn, batch, seqs)
            batch, seqs = [], []
    if batch:
        insert_traces(conn, batch, seqs)
