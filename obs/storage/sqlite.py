"""The SQLite trace store: traces, log entries and alert transitions in one file, shared by processes.

`SqliteTraceStore` has the shape of `obs.storage.base.TraceStoreProtocol`.
Each trace is a row of `traces` and one row per span in `spans` (see
`obs.storage.schema`); `add_many` writes a batch in one transaction, so a
trace is all there or absent, and several threads and processes may write
one file at once (WAL, busy timeout). A failed write is logged and counted,
never raised. A trace is made storable before it is written
(`obs.storage._rows.storable`), so every row can be read back; a row that
cannot be decoded anyway (written by something else) is skipped and counted
when read, never fatal to the read. The dashboard's queries are in
`obs.storage.queries`; retention in `obs.storage.retention`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Final

from obs._validate import short_repr
from obs.alerting.manager import AlertTransition
from obs.logs import LogEntry
from obs.storage._columns import SPAN_READ, EncodedTrace, decode_trace, encode_trace
from obs.storage._database import Database
from obs.storage._rows import REPLACED_KEY, column
from obs.storage._writes import INSERT_ALERT, INSERT_LOG, alert_rows, delete_traces, insert_traces, log_rows
from obs.storage.base import (
    StoreStats,
    TracePredicate,
    _check_max_traces,
    _check_n,
    _check_threshold,
    _check_trace,
)
from obs.storage.results import FileInfo, RetentionPolicy, RetentionReport
from obs.storage.retention import RetentionThread, apply_retention, read_policy, write_policy
from obs.storage.schema import SCHEMA_VERSION
from obs.trace.traces import Trace

__all__ = ["FROM_FILE", "REPLACED_KEY", "SqliteTraceStore"]

_log = logging.getLogger(__name__)
_UNBOUNDED = 2**63 - 1
_IN_CHUNK = 500
_TABLES = (
    "spans", "traces", "rollup", "rollup_hour", "hour_bins", "hour_bins_all", "sessions", "logs",
    "alert_transitions",
)  # fmt: skip


class _FromFile:
    """The default of `SqliteTraceStore(max_traces=...)`: the file's retention settings bound the traces."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "FROM_FILE"


FROM_FILE: Final = _FromFile()


def _check_timeout(timeout_s: object) -> float:
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not (timeout_s > 0 and timeout_s != float("inf"))
    ):
        raise ValueError(f"SqliteTraceStore: timeout_s must be a finite number > 0, got {timeout_s!r}")
    return float(timeout_s)


class SqliteTraceStore:
    """Finished traces (and log entries, alert transitions) in a SQLite file, kept across restarts.

    Reopening the file finds what was stored before; other processes may
    write the same file at the same time. Thread-safe. A failed write is
    logged and counted in `write_errors`, never raised, so a full disk cannot
    break the application being traced. Call `close()` (or use `with`).

    With `max_traces` an int, each write keeps at most that many traces,
    evicting the oldest insertions at once (and opening a file that holds
    more trims it); the count is read inside the write's transaction, so
    several stores on one file keep the bound. With `FROM_FILE` (the default),
    the file's retention settings (`retention`, kept in the file: 7 days and
    100,000 traces unless changed) apply, by `apply_retention()` or the
    background thread of `start_retention()`. `path` ":memory:" keeps
    everything in memory (no file).
    """

    def __init__(
        self, path: str | os.PathLike[str], max_traces: int | _FromFile = FROM_FILE, *, timeout_s: float = 5.0
    ) -> None:
        """Open (or create, with permissions 0600) the database at `path`.

        `timeout_s` is how long a write waits for another connection's lock
        before it gives up (and is counted in `write_errors`). Raises
        ValueError if `max_traces` is not None or an int >= 1, `timeout_s`
        not a finite number > 0, or the file cannot be used: a missing
        directory, a directory as path, a read-only file or directory, a
        file that is damaged, no SQLite database, another program's database
        or of a newer schema version (such files are never written to).
        """
        self._max = (
            None if max_traces is FROM_FILE else _check_max_traces("SqliteTraceStore", max_traces, 100_000)
        )
        self._db = Database(path, _check_timeout(timeout_s), "SqliteTraceStore")
        self._lock = threading.Lock()
        self._added = self._replaced = self._evicted = 0
        self._write_errors = self._sanitized = 0
        self._unreadable: set[int] = set()  # seq of the rows found undecodable
        self._retention: RetentionThread | None = None
        if self._max is not None:
            try:
                with self._db.write() as conn:
                    self._evict(conn)  # trims a file written under a larger bound
            except sqlite3.Error as exc:
                self._db.close()
                raise ValueError(f"SqliteTraceStore: {self.path!r} cannot be trimmed: {exc}") from exc

    # -- what the store is --------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file (":memory:" for none)."""
        return str(self._db.path)

    @property
    def opened_as(self) -> str:
        """What opening did to the file: "opened", "created" or "migrated" (from an older layout)."""
        return self._db.outcome

    @property
    def max_traces(self) -> int:
        """The bound on traces: `max_traces` if given, else the file's retention count (2**63-1 if none)."""
        if self._max is not None:
            return self._max
        limit = self.retention.max_traces
        return _UNBOUNDED if limit is None else limit

    @property
    def evicted(self) -> int:
        """How many traces this store object dropped because of `max_traces`."""
        with self._lock:
            return self._evicted

    @property
    def write_errors(self) -> int:
        """How many traces (or log entries, transitions) failed to be written (logged, not raised)."""
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

    def database(self) -> Database:
        """The connections to the file (for `obs.storage.queries` and `obs.storage.retention`)."""
        return self._db

    # -- writing traces -----------------------------------------------------------------------------

    def _evict(self, conn: sqlite3.Connection) -> int:
        if self._max is None:
            return 0
        count = conn.execute("SELECT n FROM counters WHERE name = 'traces'").fetchone()[0]
        excess = count - self._max
        if excess <= 0:
            return 0
        ids = [row[0] for row in conn.execute("SELECT id FROM traces ORDER BY seq LIMIT ?", (excess,))]
        removed = delete_traces(conn, ids)
        self._evicted += removed
        return removed

    def _encode(self, trace: Trace) -> EncodedTrace | None:
        try:
            encoded = encode_trace(trace)
        except Exception as exc:  # a Trace built by hand with fields that are not what they claim
            with self._lock:
                self._write_errors += 1
            _log.warning("SqliteTraceStore: could not encode trace %s: %s",
                         short_repr(trace.id), short_repr(exc))  # fmt: skip
            return None
        if encoded.notes:
            with self._lock:
                self._sanitized += 1
            _log.warning("SqliteTraceStore: trace %s stored with values replaced: %s",
                         encoded.trace_id, "; ".join(encoded.notes))  # fmt: skip
        return encoded

    def add(self, trace: Trace) -> None:
        """Store `trace` as the newest; replace a stored trace with the same id; evict beyond `max_traces`.

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
        self.add_many((trace,))

    def add_many(self, traces: Sequence[Trace]) -> int:
        """Store `traces` in one transaction (all or none); return how many were stored.

        What `add` promises holds for each trace; a trace that cannot be
        encoded is left out and counted. If the transaction fails (a locked
        or full disk), none is stored, each is counted in `write_errors` and
        the failure logged, never raised. Raises TypeError if an item is not
        a Trace, ValueError if the store is closed.
        """
        for trace in traces:
            _check_trace("SqliteTraceStore", trace)
        encoded = [e for e in (self._encode(trace) for trace in traces) if e is not None]
        if not encoded:
            return 0
        try:
            with self._db.write() as conn:  # a closed store raises ValueError here, not counted
                replaced = insert_traces(conn, encoded)
                self._evict(conn)
        except sqlite3.Error as exc:
            with self._lock:
                self._write_errors += len(encoded)
            shown = encoded[0].trace_id
            if len(encoded) > 1:
                shown += f" and {len(encoded) - 1} more"
            _log.warning("SqliteTraceStore: could not store trace %s: %s", shown, exc)
            return 0
        with self._lock:
            self._added += len(encoded)
            self._replaced += replaced
        return len(encoded)

    # -- writing logs and alert transitions ---------------------------------------------------------

    def add_logs(self, entries: Iterable[LogEntry], service: str | None = None) -> int:
        """Store log entries (`obs.logs.LogEntry`) in one transaction, tagged with `service`; return how many.

        Data JSON cannot hold is stored as marked text. A failure is logged
        and counted in `write_errors`, never raised (ValueError if closed).
        """
        return self._insert_rows(INSERT_LOG, log_rows(entries, service), "log entries")

    def add_alert_transitions(
        self, transitions: Iterable[AlertTransition], service: str | None = None
    ) -> int:
        """Store alert state changes (`obs.alerting.AlertTransition`) in one transaction; return how many.

        A failure is logged and counted in `write_errors`, never raised (ValueError if closed).
        """
        return self._insert_rows(INSERT_ALERT, alert_rows(transitions, service), "alert transitions")

    def _insert_rows(self, sql: str, rows: list[tuple[Any, ...]], what: str) -> int:
        if not rows:
            return 0
        try:
            with self._db.write() as conn:
                conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            with self._lock:
                self._write_errors += len(rows)
            _log.warning("SqliteTraceStore: could not store %d %s: %s", len(rows), what, exc)
            return 0
        return len(rows)

    # -- reading traces -----------------------------------------------------------------------------

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Trace]:
        """The traces of the rows (seq, id, data) `sql` selects; an undecodable row is skipped and counted."""
        return [trace for _, trace in self._fetch_pairs(sql, params)]

    def _fetch_pairs(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[str, Trace]]:
        """(row id, trace) of the rows (seq, id, data) `sql` selects; undecodable rows skipped, counted."""
        with self._db.read() as conn:
            rows = conn.execute(sql, params).fetchall()
            spans = self._spans_of(conn, [row[1] for row in rows])
        pairs = []
        for seq, trace_id, data in rows:
            try:
                pairs.append((trace_id, decode_trace(data, spans.get(trace_id, ()))))
            except Exception as exc:  # RecursionError too: one bad row must not make the file unreadable
                self._skip(seq, trace_id, exc)
        return pairs

    @staticmethod
    def _spans_of(conn: sqlite3.Connection, trace_ids: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
        spans: dict[str, list[tuple[Any, ...]]] = {}
        for start in range(0, len(trace_ids), _IN_CHUNK):
            chunk = tuple(trace_ids[start : start + _IN_CHUNK])
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT {SPAN_READ} FROM spans WHERE trace_id IN ({marks}) ORDER BY trace_id, position"
            for row in conn.execute(sql, chunk):
                spans.setdefault(row[0], []).append(row)
        return spans

    def _skip(self, seq: int, trace_id: object, exc: BaseException) -> None:
        with self._lock:
            new = seq not in self._unreadable
            self._unreadable.add(seq)
        if new:  # once per row, however often it is read
            _log.warning("SqliteTraceStore: row %s (trace %s) of %s cannot be decoded and is skipped: %s",
                         seq, short_repr(trace_id, 100), self.path, short_repr(exc, 200))  # fmt: skip

    def get(self, trace_id: str) -> Trace | None:
        """The trace with id `trace_id`, or None if it is not stored (or cannot be decoded)."""
        if not isinstance(trace_id, str):
            return None
        found = self._fetch("SELECT seq, id, data FROM traces WHERE id = ?", (column(trace_id),))
        return found[0] if found else None

    def get_many(self, trace_ids: Sequence[str]) -> list[Trace]:
        """The stored traces among `trace_ids`, in the order given (missing or undecodable ones left out)."""
        wanted = [column(i) for i in trace_ids if isinstance(i, str)]
        found: dict[str, Trace] = {}
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            sql = f"SELECT seq, id, data FROM traces WHERE id IN ({', '.join('?' * len(chunk))})"
            found.update(self._fetch_pairs(sql, chunk))
        return [found[i] for i in wanted if i in found]

    def __contains__(self, trace_id: object) -> bool:
        """True if a trace with this id is stored."""
        if not isinstance(trace_id, str):
            return False
        with self._db.read() as conn:
            row = conn.execute("SELECT 1 FROM traces WHERE id = ?", (column(trace_id),)).fetchone()
        return row is not None

    def all(self) -> list[Trace]:
        """Every stored trace, oldest insertion first."""
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
        with self._db.read() as conn:
            return int(conn.execute("SELECT n FROM counters WHERE name = 'traces'").fetchone()[0])

    def stats(self) -> StoreStats:
        """Size of the file and counters of this store object, read at one instant."""
        size = len(self)
        with self._lock:
            return StoreStats(
                size, self.max_traces, self._added, self._replaced, self._evicted,
                self._write_errors, self._sanitized, len(self._unreadable),
            )  # fmt: skip

    # -- retention, clearing, the file --------------------------------------------------------------

    @property
    def retention(self) -> RetentionPolicy:
        """The retention settings kept in the file (the defaults until `set_retention` changes them)."""
        with self._db.read() as conn:
            return read_policy(conn)

    def set_retention(self, policy: RetentionPolicy) -> None:
        """Keep `policy` in the file: every store on it applies it from its next retention pass.

        Raises ValueError if `policy` is not a RetentionPolicy or the store is
        closed, sqlite3.Error if the file cannot be written.
        """
        if not isinstance(policy, RetentionPolicy):
            raise ValueError(f"set_retention: policy must be a RetentionPolicy, got {type(policy).__name__}")
        with self._db.write() as conn:
            write_policy(conn, policy)

    def apply_retention(self, now_ms: float | None = None) -> RetentionReport:
        """Remove what the file's retention settings no longer keep, a few hundred rows per transaction.

        Traces (with their spans) older than `max_age_s` or beyond the newest
        `max_traces` by start time, log entries and alert transitions older
        than `max_age_s`, log entries beyond the newest `max_log_entries`.
        `now_ms` (epoch ms) defaults to the system clock. Writers wait at most
        one short transaction. Raises sqlite3.Error if the file cannot be
        written, ValueError if closed.
        """
        return apply_retention(self._db, now_ms)

    def start_retention(self, interval_s: float = 60.0) -> RetentionThread:
        """Apply retention now and every `interval_s` seconds on a background thread, until `close()`.

        Failures are logged and counted on the thread, never raised. Calling
        it again returns the running thread. ValueError if `interval_s` is
        not a finite number > 0.
        """
        with self._lock:
            if self._retention is None or not self._retention.running:
                self._retention = RetentionThread(self.apply_retention, interval_s)
            return self._retention

    def clear(self, *, vacuum: bool = False) -> None:
        """Remove every trace, span, log entry and alert transition from the file (counters are kept).

        One transaction. With `vacuum`, the file is then rewritten so that the
        deleted text no longer lies in its free pages; that waits for other
        writers and is skipped (logged) if they hold the file longer than the
        busy timeout. Raises ValueError if closed, sqlite3.Error if the file
        cannot be written.
        """
        with self._db.write() as conn:
            for table in _TABLES:
                conn.execute(f"DELETE FROM {table}")
            conn.execute("UPDATE counters SET n = 0")
        if vacuum:
            try:
                self._db.vacuum()
            except sqlite3.Error as exc:
                _log.warning("SqliteTraceStore: %s was cleared but not vacuumed: %s", self.path, exc)

    def file_info(self) -> FileInfo:
        """Where the file is, its size (with -wal and -shm), what it holds and its retention settings."""
        with self._db.read() as conn:
            counts = dict(conn.execute("SELECT name, n FROM counters").fetchall())
            oldest, newest = conn.execute("SELECT MIN(start_time), MAX(start_time) FROM traces").fetchone()
            policy = read_policy(conn)
        return FileInfo(
            path=self.path, size_bytes=self._db.size_bytes(), trace_count=int(counts.get("traces", 0)),
            request_count=int(counts.get("requests", 0)), log_count=int(counts.get("logs", 0)),
            oldest_trace_at=None if oldest is None else oldest / 1000.0,
            newest_trace_at=None if newest is None else newest / 1000.0,
            retention=policy, schema_version=SCHEMA_VERSION,
        )  # fmt: skip

    def close(self) -> None:
        """Stop the retention thread and close the database; later calls (but `close`) raise ValueError."""
        with self._lock:
            thread, self._retention = self._retention, None
        if thread is not None:
            thread.stop()
        self._db.close()

    def __enter__(self) -> SqliteTraceStore:
        """Use the store in a `with` block that closes it."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the store."""
        self.close()

    def __repr__(self) -> str:
        bound = "" if self._max is None else f", max_traces={self._max}"
        return f"SqliteTraceStore({self.path!r}{bound})"
