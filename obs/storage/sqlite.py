"""The SQLite trace store: finished traces in a file, kept across restarts.

`SqliteTraceStore` has the shape of `obs.storage.base.TraceStoreProtocol`.
Each trace is one row; a failed write is logged and counted, never raised.
A trace is made storable before it is written (`_rows.encode`), so every row
can be read back; a row that cannot be decoded anyway (written by something
else) is skipped and counted when read, never fatal to the read.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from obs._validate import short_repr
from obs.storage._rows import REPLACED_KEY, column, decode, encode
from obs.storage.base import (
    StoreStats,
    TracePredicate,
    _check_max_traces,
    _check_n,
    _check_threshold,
    _check_trace,
)
from obs.trace.traces import Trace

__all__ = ["REPLACED_KEY", "SqliteTraceStore"]

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

# Primary SQLite result codes (the low byte of an extended code) and what to tell the user.
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 10, 11, 13, 14, 26
_SQLITE_READONLY_DIRECTORY = 1544


def _open_error(path: Path, exc: sqlite3.Error, timeout_s: float) -> ValueError:
    """A ValueError that names the cause of `exc` for the file at `path`, with what to do about it."""
    return _refusal(path, getattr(exc, "sqlite_errorcode", None) or 0, str(exc), timeout_s)


def _refusal(path: Path, extended: int, detail: str, timeout_s: float) -> ValueError:
    code = extended & 0xFF
    directory = path.parent
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        advice = (f"is locked by another connection or program (still locked after waiting "
                  f"timeout_s={timeout_s:g} s): close what holds it, or pass a larger timeout_s")  # fmt: skip
    elif extended == _SQLITE_READONLY_DIRECTORY or (
        code in (_SQLITE_READONLY, _SQLITE_CANTOPEN) and not os.access(directory, os.W_OK)
    ):
        advice = (f"is in directory {str(directory)!r}, which is read-only: SQLite creates its "
                  "journal files (-wal, -shm) beside the database; choose a writable directory "
                  "or make this one writable")  # fmt: skip
    elif code == _SQLITE_READONLY:
        advice = "is read-only: make it writable (chmod u+w) or choose another path"
    elif code == _SQLITE_PERM or (
        code == _SQLITE_CANTOPEN and path.exists() and not os.access(path, os.R_OK)
    ):
        advice = "cannot be read (permission denied): fix its permissions or choose another path"
    elif code == _SQLITE_NOTADB:
        advice = "is not a SQLite database: choose another path or delete it"
    elif code == _SQLITE_CORRUPT:
        advice = ("is damaged (a corrupt SQLite database): move it aside to keep it for inspection, "
                  "or choose another path")  # fmt: skip
    elif code == _SQLITE_FULL:
        advice = "cannot grow: the disk is full; free some space or choose another path"
    elif code == _SQLITE_IOERR:
        advice = "cannot be read or written (an I/O error): check the disk, or choose another path"
    else:
        advice = "cannot be opened: check the path and its permissions, or choose another path"
    return ValueError(f"SqliteTraceStore: {str(path)!r} {advice} ({detail})")


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
        self._sanitized = 0
        self._unreadable: set[int] = set()  # seq of the rows found undecodable
        try:
            # isolation_level=None: transactions are begun and ended explicitly in _write.
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self._path, timeout=float(timeout_s), check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise _open_error(self._path, exc, timeout_s) from exc
        try:
            self._conn.executescript(_SCHEMA)
            # WAL with synchronous=NORMAL: a commit does not wait for fsync, yet the file stays
            # consistent after a crash (the last few traces may be lost, never the database).
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._write(lambda conn: 0)  # trims a file written under a larger bound
        except sqlite3.Error as exc:
            self._conn.close()
            self._conn = None
            raise _open_error(self._path, exc, timeout_s) from exc
        if not os.access(self._path, os.W_OK):
            # A database already in WAL mode opens read-only without a word; every add would fail.
            self._conn.close()
            self._conn = None
            raise _refusal(self._path, _SQLITE_READONLY, "the file is not writable", timeout_s)

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

    @property
    def sanitized(self) -> int:
        """How many traces were stored with values replaced by placeholders (see `add`)."""
        with self._lock:
            return self._sanitized

    @property
    def unreadable(self) -> int:
        """How many rows of the file this store found it cannot decode (skipped by every read)."""
        with self._lock:
            return len(self._unreadable)

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
        """The traces of the rows (seq, id, data) `sql` selects; an undecodable row is skipped and counted."""
        with self._lock:
            rows = self._connection().execute(sql, params).fetchall()
        traces = []
        for seq, trace_id, data in rows:
            try:
                traces.append(decode(data))
            except Exception as exc:  # RecursionError too: one bad row must not make the file unreadable
                self._skip(seq, trace_id, exc)
        return traces

    def _skip(self, seq: int, trace_id: object, exc: BaseException) -> None:
        with self._lock:
            new = seq not in self._unreadable
            self._unreadable.add(seq)
        if new:  # once per row, however often it is read
            _log.warning("SqliteTraceStore: row %s (trace %s) of %s cannot be decoded and is skipped: %s",
                         seq, short_repr(trace_id, 100), self._path, short_repr(exc, 200))  # fmt: skip

    def add(self, trace: Trace) -> None:
        """Store `trace` as the newest; replace a stored trace with the same id; evict the oldest.

        Never raises for what the trace holds: a value JSON cannot hold (a
        container nested deeper than 64 levels or inside itself, an object
        whose `str()` fails, a time that is not a finite number) is replaced by
        a marked placeholder, noted under the `obs.replaced` attribute of its
        span, event or trace, logged and counted in `sanitized`; the rest of
        the trace is stored as it is, lone surrogates in strings included.
        Raises TypeError if `trace` is not a Trace, ValueError if the store is
        closed. A storage failure is logged and counted in `write_errors` instead.
        """
        _check_trace("SqliteTraceStore", trace)
        try:
            encoded, data, notes = encode(trace)
        except Exception as exc:  # a Trace built by hand with fields that are not what they claim
            with self._lock:
                self._write_errors += 1
            _log.warning(
                "SqliteTraceStore: could not encode trace %s: %s", short_repr(trace.id), short_repr(exc)
            )
            return
        if notes:
            with self._lock:
                self._sanitized += 1
            _log.warning("SqliteTraceStore: trace %s stored with values replaced: %s",
                         data["id"], "; ".join(notes))  # fmt: skip
        row = (
            column(data["id"]), column(data["name"]), data["start_time"], data["end_time"],
            data["duration"], column(data["status"]), encoded,
        )  # fmt: skip

        def insert(conn: sqlite3.Connection) -> int:
            removed = conn.execute("DELETE FROM traces WHERE id = ?", (row[0],)).rowcount
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
                _log.warning("SqliteTraceStore: could not store trace %s: %s", row[0], exc)
                return
            self._added += 1
            self._replaced += removed

    def get(self, trace_id: str) -> Trace | None:
        """The trace with id `trace_id`, or None if it is not stored (or cannot be decoded)."""
        if not isinstance(trace_id, str):
            return None
        found = self._fetch("SELECT seq, id, data FROM traces WHERE id = ?", (column(trace_id),))
        return found[0] if found else None

    def __contains__(self, trace_id: object) -> bool:
        """True if a trace with this id is stored."""
        if not isinstance(trace_id, str):
            return False
        with self._lock:
            found = self._connection().execute("SELECT 1 FROM traces WHERE id = ?", (column(trace_id),))
            row = found.fetchone()
        return row is not None

    def all(self) -> list[Trace]:
        """Every stored trace, oldest first."""
        return self._fetch("SELECT seq, id, data FROM traces ORDER BY seq")

    def get_recent(self, n: int | None = None) -> list[Trace]:
        """The `n` most recently added traces (all if None), newest first.

        Raises ValueError if `n` is not None or an int >= 0.
        """
        n = _check_n(n)
        limit = -1 if n is None else n
        return self._fetch("SELECT seq, id, data FROM traces ORDER BY seq DESC LIMIT ?", (limit,))

    def get_errors(self) -> list[Trace]:
        """Traces whose status is "error", oldest first."""
        return self._fetch("SELECT seq, id, data FROM traces WHERE status = 'error' ORDER BY seq")

    def get_slow(self, threshold_ms: float) -> list[Trace]:
        """Ended traces whose duration is at least `threshold_ms`, oldest first.

        Raises ValueError if `threshold_ms` is negative or not a finite number.
        """
        threshold = _check_threshold(threshold_ms)
        return self._fetch(
            "SELECT seq, id, data FROM traces WHERE duration IS NOT NULL AND duration >= ? ORDER BY seq",
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
                self._write_errors, self._sanitized, len(self._unreadable),
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
