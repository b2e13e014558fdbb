"""Trace stores: where finished traces are kept so they can be looked up and queried.

`TraceStore` keeps traces in memory, bounded: beyond `max_traces` the oldest
insertion is evicted. `SqliteTraceStore` has the same interface and keeps
traces in a SQLite file, so they survive a restart. Both are thread-safe.

Order is insertion order. Adding a trace whose id is already stored replaces
the old one and counts as a new insertion (it becomes the newest), so a trace
that is updated late is not the first to be evicted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obs.traces import Trace

__all__ = ["SqliteTraceStore", "StoreStats", "TraceStore"]

_log = logging.getLogger(__name__)

TracePredicate = Callable[[Trace], bool]


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters of a store: how many traces it holds and what happened to the others.

    `added` counts every `add` call that stored a trace (replacements included),
    `replaced` those that replaced a trace with the same id, `evicted` traces
    dropped because the store was full, and `write_errors` adds that failed to
    reach storage (only a persistent store can fail this way).
    """

    size: int
    max_traces: int
    added: int
    replaced: int
    evicted: int
    write_errors: int = 0


def _check_max_traces(owner: str, max_traces: object, default: int) -> int:
    if isinstance(max_traces, bool) or not isinstance(max_traces, int) or max_traces < 1:
        raise ValueError(
            f"{owner}: max_traces must be an int >= 1 (for example {default}), got {max_traces!r}"
        )
    return max_traces


def _check_trace(owner: str, trace: object) -> Trace:
    if not isinstance(trace, Trace):
        raise TypeError(f"{owner}.add: expected a Trace, got {type(trace).__name__}")
    return trace


def _check_threshold(threshold_ms: object) -> float:
    if (
        isinstance(threshold_ms, bool)
        or not isinstance(threshold_ms, int | float)
        or not math.isfinite(threshold_ms)
        or threshold_ms < 0
    ):
        raise ValueError(f"get_slow: threshold_ms must be a finite number >= 0, got {threshold_ms!r}")
    return float(threshold_ms)


def _check_n(n: object) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"get_recent: n must be None or an int >= 0, got {n!r}")
    return n


def _is_slow(trace: Trace, threshold_ms: float) -> bool:
    return trace.duration is not None and trace.duration >= threshold_ms


class TraceStore:
    """Finished traces in memory, bounded, in insertion order. Thread-safe.

    >>> from obs import FakeClock, SequentialIdGenerator, create_trace, end_trace
    >>> clock, ids = FakeClock(), SequentialIdGenerator()
    >>> store = TraceStore(max_traces=2)
    >>> for name in ("a", "b", "c"):
    ...     store.add(end_trace(create_trace(name, clock=clock, id_generator=ids), clock=clock))
    >>> [t.name for t in store.get_recent()]
    ['c', 'b']
    >>> store.stats().evicted
    1
    """

    def __init__(self, max_traces: int = 1000) -> None:
        """Keep at most `max_traces` traces (an int >= 1); the oldest go first."""
        self._max = _check_max_traces("TraceStore", max_traces, 1000)
        self._lock = threading.Lock()
        self._traces: OrderedDict[str, Trace] = OrderedDict()
        self._added = 0
        self._replaced = 0
        self._evicted = 0

    @property
    def max_traces(self) -> int:
        """The bound this store was made with."""
        return self._max

    @property
    def evicted(self) -> int:
        """How many traces were dropped because the store was full."""
        with self._lock:
            return self._evicted

    def add(self, trace: Trace) -> None:
        """Store `trace` as the newest; replace a stored trace with the same id; evict the oldest.

        Raises TypeError if `trace` is not a Trace.
        """
        _check_trace("TraceStore", trace)
        with self._lock:
            if trace.id in self._traces:
                del self._traces[trace.id]
                self._replaced += 1
            self._traces[trace.id] = trace
            self._added += 1
            while len(self._traces) > self._max:
                self._traces.popitem(last=False)
                self._evicted += 1

    def get(self, trace_id: str) -> Trace | None:
        """The trace with id `trace_id`, or None if it is not stored."""
        with self._lock:
            return self._traces.get(trace_id)

    def __contains__(self, trace_id: object) -> bool:
        """True if a trace with this id is stored."""
        with self._lock:
            return trace_id in self._traces

    def all(self) -> list[Trace]:
        """Every stored trace, oldest first (a snapshot: later adds do not change it)."""
        with self._lock:
            return list(self._traces.values())

    def get_recent(self, n: int | None = None) -> list[Trace]:
        """The `n` most recently added traces (all if None), newest first.

        Raises ValueError if `n` is not None or an int >= 0.
        """
        n = _check_n(n)
        with self._lock:
            newest = reversed(self._traces.values())
            if n is None:
                return list(newest)
            out: list[Trace] = []
            for trace in newest:
                if len(out) >= n:
                    break
                out.append(trace)
            return out

    def get_errors(self) -> list[Trace]:
        """Traces whose status is "error", oldest first."""
        return [t for t in self.all() if t.status == "error"]

    def get_slow(self, threshold_ms: float) -> list[Trace]:
        """Ended traces whose duration is at least `threshold_ms`, oldest first.

        Running traces (no duration yet) are never slow. Raises ValueError if
        `threshold_ms` is negative or not a finite number.
        """
        threshold = _check_threshold(threshold_ms)
        return [t for t in self.all() if _is_slow(t, threshold)]

    def query(self, predicate: TracePredicate) -> list[Trace]:
        """Traces for which `predicate(trace)` is true, oldest first.

        The predicate runs outside the store's lock, so it may itself read the store.
        """
        return [t for t in self.all() if predicate(t)]

    def __len__(self) -> int:
        """How many traces are stored."""
        with self._lock:
            return len(self._traces)

    def clear(self) -> None:
        """Remove every stored trace (counters are kept)."""
        with self._lock:
            self._traces.clear()

    def stats(self) -> StoreStats:
        """Size, bound and counters of this store, read at one instant."""
        with self._lock:
            return StoreStats(len(self._traces), self._max, self._added, self._replaced, self._evicted)

    def __repr__(self) -> str:
        return f"TraceStore(max_traces={self._max}, size={len(self)})"


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
