"""Retention: how long a file keeps traces, log entries and alert transitions, applied in small steps.

The settings (`RetentionPolicy`: 7 days, 100,000 traces and 1,000,000 log
entries by default) live in the file's `meta` table, so every process that
writes the file applies the same ones. `apply_retention` removes what they
no longer keep, oldest first, at most `chunk` rows per transaction: a writer
(a chat's trace on its way in) waits for one short transaction at most, never
for the whole pass. `RetentionThread` runs it in the background.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from obs.storage._database import Database
from obs.storage._writes import delete_traces
from obs.storage.results import RetentionPolicy, RetentionReport

__all__ = ["RetentionThread", "apply_retention", "read_policy", "write_policy"]

_log = logging.getLogger(__name__)
_FIELDS = ("max_age_s", "max_traces", "max_log_entries")
_CHUNK = 200


def read_policy(conn: sqlite3.Connection) -> RetentionPolicy:
    """The retention settings kept in the file (defaults for those never set)."""
    stored = dict(conn.execute("SELECT key, value FROM meta WHERE key LIKE 'retention.%'").fetchall())
    values: dict[str, Any] = {}
    for name in _FIELDS:
        raw = stored.get(f"retention.{name}")
        if raw is None:
            continue
        if raw == "none":
            values[name] = None
        else:
            try:
                values[name] = float(raw) if name == "max_age_s" else int(raw)
            except ValueError:
                _log.warning("retention setting %s=%r in the file is not a number; the default is used",
                             name, raw)  # fmt: skip
    try:
        return RetentionPolicy(**values)
    except ValueError as exc:
        _log.warning("retention settings in the file are out of range (%s); the defaults are used", exc)
        return RetentionPolicy()


def write_policy(conn: sqlite3.Connection, policy: RetentionPolicy) -> None:
    """Keep `policy` in the file's `meta` table (inside the caller's transaction)."""
    for name in _FIELDS:
        value = getattr(policy, name)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (f"retention.{name}", "none" if value is None else repr(value)),
        )


def _in_chunks(db: Database, step: Callable[[sqlite3.Connection], int]) -> int:
    """Run `step` in one transaction after another until it removes fewer than a chunk; the total removed."""
    total = 0
    while True:
        with db.write() as conn:
            removed = step(conn)
        total += removed
        if removed < _CHUNK:
            return total


def apply_retention(db: Database, now_ms: float | None = None) -> RetentionReport:
    """Remove what the file's retention settings no longer keep; return how many of each went.

    Traces older than `max_age_s` (by start time), then the oldest beyond
    `max_traces` (by start time, ties by insertion), so that exactly the newest
    `max_traces` remain; log entries and alert transitions older than
    `max_age_s`, then log entries beyond `max_log_entries`. Each transaction
    removes at most a few hundred rows and re-reads the counts, so writers in
    other threads and processes interleave and the bound holds at the end.
    """
    now = time.time() * 1000.0 if now_ms is None else float(now_ms)
    with db.read() as conn:
        policy = read_policy(conn)
    traces = logs = alerts = 0
    if policy.max_age_s is not None:
        cutoff = now - policy.max_age_s * 1000.0

        def old_traces(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT id FROM traces WHERE start_time < ? ORDER BY start_time LIMIT ?", (cutoff, _CHUNK)
            )
            ids = [row[0] for row in rows]
            return delete_traces(conn, ids)

        def old_logs(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM logs WHERE seq IN (SELECT seq FROM logs WHERE timestamp < ? LIMIT ?)",
                (cutoff, _CHUNK),
            ).rowcount

        def old_alerts(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM alert_transitions WHERE seq IN "
                "(SELECT seq FROM alert_transitions WHERE at < ? LIMIT ?)", (cutoff / 1000.0, _CHUNK),
            ).rowcount  # fmt: skip

        traces += _in_chunks(db, old_traces)
        logs += _in_chunks(db, old_logs)
        alerts += _in_chunks(db, old_alerts)
    if policy.max_traces is not None:
        bound = policy.max_traces

        def extra_traces(conn: sqlite3.Connection) -> int:
            count = conn.execute("SELECT n FROM counters WHERE name = 'traces'").fetchone()[0]
            excess = min(count - bound, _CHUNK)
            if excess <= 0:
                return 0
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM traces ORDER BY start_time, seq LIMIT ?", (excess,))]  # fmt: skip
            return delete_traces(conn, ids)

        traces += _in_chunks(db, extra_traces)
    if policy.max_log_entries is not None:
        log_bound = policy.max_log_entries

        def extra_logs(conn: sqlite3.Connection) -> int:
            count = conn.execute("SELECT n FROM counters WHERE name = 'logs'").fetchone()[0]
            excess = min(count - log_bound, _CHUNK)
            if excess <= 0:
                return 0
            return conn.execute(
                "DELETE FROM logs WHERE seq IN (SELECT seq FROM logs ORDER BY timestamp, seq LIMIT ?)",
                (excess,),
            ).rowcount

        logs += _in_chunks(db, extra_logs)
    return RetentionReport(traces, logs, alerts)


class RetentionThread:
    """Calls `apply()` at once and then every `interval_s` seconds on a daemon thread, until `stop()`.

    A failing pass is logged and counted in `failures`, never raised; the
    next one runs on time. `runs`, `last_report` and `last_error` say how it went.
    """

    def __init__(self, apply: Callable[[], Any], interval_s: float = 60.0) -> None:
        """Start the thread; ValueError if `interval_s` is not a finite number > 0."""
        if isinstance(interval_s, bool) or not isinstance(interval_s, int | float) or not (
            math.isfinite(interval_s) and interval_s > 0
        ):
            raise ValueError(
                "RetentionThread: interval_s must be a finite number of seconds > 0 (e.g. 60), "
                f"got {interval_s!r}"
            )
        self.interval_s = float(interval_s)
        self._apply = apply
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.runs = 0
        self.failures = 0
        self.last_report: Any = None
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="obs-retention", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """True until `stop()` (or the thread died)."""
        return self._thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = self._apply()
            except Exception as exc:
                with self._lock:
                    self.failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                _log.warning("obs: retention pass failed: %s: %s", type(exc).__name__, exc)
            else:
                with self._lock:
                    self.last_report = report
            with self._lock:
                self.runs += 1
            self._stop.wait(self.interval_s)

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop after the pass under way; True if the thread ended within `timeout_s` seconds."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def __repr__(self) -> str:
        return f"RetentionThread(interval_s={self.interval_s:g}, runs={self.runs}, failures={self.failures})"
