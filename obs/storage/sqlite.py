"""The SQLite trace store: finished traces in a file, kept across restarts.

`SqliteTraceStore` has the shape of `obs.storage.base.TraceStoreProtocol`.
Each trace is one row; a failed write is logged and counted, never raised.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from obs.storage.base import (
    StoreStats,
    TracePredicate,
    _check_max_traces,
    _check_n,
    _check_threshold,
    _check_trace,
)
from obs.trace.traces import Trace

__all__ = ["SqliteTraceStore"]

_log = logging.getLogger(__name__)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL,
    duration REAL,
    status TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_start_time ON traces (start_time);
CREATE INDEX IF NOT EXISTS traces_duration ON traces (duration);
CREATE INDEX IF NOT EXISTS traces_status ON traces (status);
CREATE INDEX IF NOT EXISTS traces_name ON traces (name);
"""


def _encode(trace: Trace) -> str:
    # default=str: an attribute value JSON cannot hold is stored as its text rather than lost.
    return json.dumps(trace.to_dict(), default=str, separators=(",", ":"))


def _decode(rows: list[tuple[str]]) -> list[Trace]:
    return [Trace.from_dict(json.loads(row[0])) for row in rows]


class SqliteTraceStore:
    """Finished traces in a SQLite file: the `TraceStore` interface, kept across restarts.

    Each trace is one row: its `Trace.to_dict()` as JSON plus indexed columns
    (id, start_time, duration, status, name) that the queries filter on.
    Reopening the same file finds the traces stored before. One connection
    shared behind a lock makes it thread-safe. A failed write is logged and
    counted in `write_errors`, never raised, so a full disk cannot break the
    application that is being traced. Call `close()` (or use `with`) when done.

    `max_traces` bounds the rows; opening a file that holds more than the bound
    evicts the oldest at once. The row count is read inside each write's
    transaction, so several stores on one file still keep the bound.
    """

    def __init__(
        self, path: str | os.PathLike[str], max_traces: int = 10000, *, timeout_s: float = 5.0
    ) -> None:
        """Open (or create) the SQLite database at `path`, keeping at most `max_traces` traces.

        `timeout_s` is how long a write waits for another connection's lock on
        the file before it gives up (and is counted in `write_errors`).
        Raises ValueError if `max_traces` is not an int >= 1, `timeout_s` not a
        finite number > 0, the directory of `path` does not exist, or the file at
        `path` is not a SQLite database.
        """
        self._max = _check_max_traces("SqliteTraceStore", max_traces, 10000)
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, int | float)
            or not math.isfinite(timeout_s)
            or timeout_s <= 0
        ):
            raise ValueError(f"SqliteTraceStore: timeout_s must be a finite number > 0, got {timeout_s!r}")
        self._path = Path(path)
        directory = self._path.parent
        if not directory.is_dir():
            raise ValueError(
                f"SqliteTraceStore: path {str(self._path)!r} is in directory {str(directory)!r}, "
                "which does not exist: create the directory or choose another path"
            )
        if self._path.is_dir():
            raise ValueError(f"SqliteTraceStore: path {str(self._path)!r} is a directory: give a file path")
        self._lock = threading.Lock()
        self._added = 0
        self._replaced = 0
        self._evicted = 0
        self._write_errors = 0
        try:
            # isolation_level=None: transactions are begun and ended explicitly in _write.
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self._path, timeout=float(timeout_s), check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise ValueError(f"SqliteTraceStore: cannot open {str(self._path)!r}: {exc}") from exc
        try:
            self._conn.executescript(_SCHEMA)
            # WAL with synchronous=NORMAL: a commit does not wait for fsync, yet the file stays
            # consistent after a crash (the last few traces may be lost, never the database).
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._write(lambda conn: 0)  # trims a file written under a larger bound
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            self._conn = None
            raise ValueError(
                f"SqliteTraceStore: {str(self._path)!r} is not a SQLite database: "
                f"choose another path or delete it ({exc})"
            ) from exc

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def max_traces(self) -> int:
        """The bound this store was made with."""
        return self._max

    @property
    def evicted(self) -> int:
        """How many traces this store object dropped because the file was full."""
        with self._lock:
            return self._evicted

    @property
    def write_errors(self) -> int:
        """How many `add` calls failed to write (logged, not raised)."""
        with self._lock:
            return self._write_errors

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"SqliteTraceStore({str(self._path)!r}) is closed")
        return self._conn

    def _count_locked(self) -> int:
        return int(self._connection().execute("SELECT COUNT(*) FROM traces").fetchone()[0])

    def _write(self, change: Callable[[sqlite3.Connection], int]) -> int:
        """Run `change`, then evict beyond the bound, in one transaction; return `change`'s result.

        Rolls back and re-raises on failure. Call with the lock held (or from __init__).
        """
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = change(conn)
            excess = self._count_locked() - self._max
            if excess > 0:
                conn.execute(
                    "DELETE FROM traces WHERE seq IN (SELECT seq FROM traces ORDER BY seq LIMIT ?)",
                    (excess,),
                )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._evicted += max(0, excess)
        return result

    def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[Trace]:
        with self._lock:
            rows = self._connection().execute(sql, params).fetchall()
        return _decode(rows)

    def add(self, trace: Trace) -> None:
        """Store `trace` as the newest; replace a stored trace with the same id; evict the oldest.

        Raises TypeError if `trace` is not a Trace, ValueError if the store is
        closed. A storage failure is logged and counted in `write_errors` instead.
        """
        _check_trace("SqliteTraceStore", trace)
        try:
            data = _encode(trace)
        except (TypeError, ValueError) as exc:  # e.g. an attribute that contains itself
            with self._lock:
                self._write_errors += 1
            _log.warning("SqliteTraceStore: could not encode trace %s: %s", trace.id, exc)
            return
        row = (trace.id, trace.name, trace.start_time, trace.end_time, trace.duration, trace.status, data)

        def insert(conn: sqlite3.Connection) -> int:
            removed = conn.execute("DELETE FROM traces WHERE id = ?", (trace.id,)).rowcount
            conn.execute(
                "INSERT INTO traces (id, name, start_time, end_time, duration, status, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return removed

        with self._lock:
            try:
                removed = self._write(insert)  # a closed store raises ValueError here, not counted
            except sqlite3.Error as exc:
                self._write_errors += 1
                _log.warning("SqliteTraceStore: could not store trace %s: %s", trace.id, exc)
                return
            self._added += 1
            self._replaced += removed

    def get(self, trace_id: str) -> Trace | None:
        """The trace with id `trace_id`, or None if it is not stored."""
        found = self._fetch("SELECT data FROM traces WHERE id = ?", (trace_id,))
        return found[0] if found else None

    def __contains__(self, trace_id: object) -> bool:
        """True if a trace with this id is stored."""
        if not isinstance(trace_id, str):
            return False
        with self._lock:
            row = self._connection().execute("SELECT 1 FROM traces WHERE id = ?", (trace_id,)).fetchone()
        return row is not None

    def all(self) -> list[Trace]:
        """Every stored trace, oldest first."""
        return self._fetch("SELECT data FROM traces ORDER BY seq")

    def get_recent(self, n: int | None = None) -> list[Trace]:
        """The `n` most recently added traces (all if None), newest first.

        Raises ValueError if `n` is not None or an int >= 0.
        """
        n = _check_n(n)
        return self._fetch("SELECT data FROM traces ORDER BY seq DESC LIMIT ?", (-1 if n is None else n,))

    def get_errors(self) -> list[Trace]:
        """Traces whose status is "error", oldest first."""
        return self._fetch("SELECT data FROM traces WHERE status = 'error' ORDER BY seq")

    def get_slow(self, threshold_ms: float) -> list[Trace]:
        """Ended traces whose duration is at least `threshold_ms`, oldest first.

        Raises ValueError if `threshold_ms` is negative or not a finite number.
        """
        threshold = _check_threshold(threshold_ms)
        return self._fetch(
            "SELECT data FROM traces WHERE duration IS NOT NULL AND duration >= ? ORDER BY seq",
            (threshold,),
        )

    def query(self, predicate: TracePredicate) -> list[Trace]:
        """Traces for which `predicate(trace)` is true, oldest first (runs outside the lock)."""
        return [t for t in self.all() if predicate(t)]

    def __len__(self) -> int:
        """How many traces are stored in the file."""
        with self._lock:
            return self._count_locked()

    def clear(self) -> None:
        """Remove every stored trace from the file (counters are kept)."""
        with self._lock:
            self._connection().execute("DELETE FROM traces")

    def stats(self) -> StoreStats:
        """Size of the file and counters of this store object, read at one instant."""
        with self._lock:
            return StoreStats(
                self._count_locked(), self._max, self._added, self._replaced, self._evicted,
                self._write_errors,
            )

    def close(self) -> None:
        """Close the database; any later call other than `close` raises ValueError."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SqliteTraceStore:
        """Use the store in a `with` block that closes it."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the store."""
        self.close()

    def __repr__(self) -> str:
        return f"SqliteTraceStore({str(self._path)!r}, max_traces={self._max})"
