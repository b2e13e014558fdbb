"""Into the SQLite file from the processor seam and the logger: `SqliteExporter`, `SqliteLogSink`.

`SqliteExporter` is a `TraceExporter`: each `export(traces)` call is one
transaction, so behind a `BatchProcessor` a batch of traces is all there or
absent, written off the application's threads. `SqliteLogSink` is what an
`LLMLogger(stream=...)` writes its JSON lines to: it queues them (bounded)
and a background thread stores them in batches, so logging never waits for
the disk. Neither raises into the application: failures are logged and
counted.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any

from obs.logs import LogEntry
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.processors import ExportResult, check_timeout
from obs.trace.traces import Trace

__all__ = ["SqliteExporter", "SqliteLogSink"]

_log = logging.getLogger(__name__)


def _open(owner: str, path_or_store: Any, timeout_s: float) -> tuple[SqliteTraceStore, bool]:
    """The store to write to, and whether this object opened it (and so closes it)."""
    if isinstance(path_or_store, SqliteTraceStore):
        return path_or_store, False
    if isinstance(path_or_store, str | os.PathLike):
        return SqliteTraceStore(path_or_store, timeout_s=timeout_s), True
    raise ValueError(
        f"{owner}: give a database path (str or os.PathLike, e.g. '.obs/obs.db') or a SqliteTraceStore, "
        f"got {type(path_or_store).__name__}"
    )


class SqliteExporter:
    """Writes each batch of traces into a SQLite file in one transaction (a `TraceExporter`).

    `path_or_store` is a file path (opened here with the file's retention
    settings, closed by `shutdown`) or a `SqliteTraceStore` (its owner closes
    it). Put it behind a `BatchProcessor` so the writes leave the
    application's threads: `Tracer(processors=[BatchProcessor(SqliteExporter(path))])`.
    """

    def __init__(
        self, path_or_store: str | os.PathLike[str] | SqliteTraceStore, *, timeout_s: float = 5.0
    ) -> None:
        """Open the file (ValueError naming it and the cause if it cannot be used) or take the store."""
        self.store, self._owned = _open("SqliteExporter", path_or_store, timeout_s)

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        """Store `traces` in one transaction: SUCCESS if every one was written, else FAILURE (logged)."""
        batch = list(traces)
        if not batch:
            return ExportResult.SUCCESS
        try:
            written = self.store.add_many(batch)
        except Exception as exc:  # a closed store, an item that is no Trace
            _log.warning("SqliteExporter: %d trace(s) not stored: %s: %s",
                         len(batch), type(exc).__name__, exc)  # fmt: skip
            return ExportResult.FAILURE
        return ExportResult.SUCCESS if written == len(batch) else ExportResult.FAILURE

    def shutdown(self) -> None:
        """Close the store if this exporter opened it."""
        if self._owned:
            self.store.close()

    def __repr__(self) -> str:
        return f"SqliteExporter({self.store.path!r})"


_SINKS: weakref.WeakSet[SqliteLogSink] = weakref.WeakSet()


def _close_sinks_at_exit() -> None:
    for sink in list(_SINKS):
        try:
            sink.close(timeout_s=5.0)
        except Exception:  # at exit there is nobody left to raise to
            _log.exception("obs: a log sink failed to close at exit")


atexit.register(_close_sinks_at_exit)


class SqliteLogSink:
    """A `write(str)` target for `LLMLogger(stream=...)` that stores each JSON line in the SQLite file.

    `write` only queues the line (at most `max_queue` lines wait; beyond, a
    line is dropped and counted in `dropped`); a background thread stores
    them every `flush_interval_s` seconds, or sooner when 256 wait, in one
    transaction per batch, tagged with `service`. Lines that are not a
    logger's JSON are counted in `failed`. `flush()` stores what waits now;
    `flush_soon()` asks for that and returns at once; `close()` flushes and
    stops (also at interpreter exit).
    """

    def __init__(
        self,
        path_or_store: str | os.PathLike[str] | SqliteTraceStore,
        service: str | None = None,
        *,
        flush_interval_s: float = 1.0,
        max_queue: int = 10_000,
        timeout_s: float = 5.0,
    ) -> None:
        """Open the file or take the store and start the writer thread; ValueError names a bad argument."""
        self.flush_interval_s = check_timeout("SqliteLogSink", "flush_interval_s", flush_interval_s)
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"SqliteLogSink: max_queue must be an int >= 1 (lines held), got {max_queue!r}")
        if service is not None and (not isinstance(service, str) or not service):
            raise ValueError(f"SqliteLogSink: service must be None or a non-empty string, got {service!r}")
        self.store, self._owned = _open("SqliteLogSink", path_or_store, timeout_s)
        self.service = service
        self.max_queue = max_queue
        self._lines: deque[str] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._flushes: list[threading.Event] = []
        self._soon = False  # flush_soon() asked for the waiting lines to be stored
        self._closed = False
        self.written = self.dropped = self.failed = 0
        self._thread = threading.Thread(target=self._run, name="obs-log-sink", daemon=True)
        self._thread.start()
        _SINKS.add(self)

    def write(self, text: str, /) -> None:
        """Queue one line (what LLMLogger writes); never blocks on the disk, never raises."""
        with self._cond:
            if self._closed or len(self._lines) >= self.max_queue:
                self.dropped += 1
                return
            self._lines.append(text)
            if len(self._lines) >= 256:
                self._cond.notify()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Store every line queued before this call; True if done within `timeout_s` seconds.

        With no timeout (how a logger flushes its stream after each line) it
        returns True at once: the lines are queued and the writer thread
        stores them within `flush_interval_s`, so logging never waits for the disk.
        """
        if timeout_s is None:
            return True
        timeout = check_timeout("SqliteLogSink.flush", "timeout_s", timeout_s)
        done = threading.Event()
        with self._cond:
            if self._closed and not self._thread.is_alive():
                return not self._lines
            self._flushes.append(done)
            self._cond.notify()
        return done.wait(timeout)

    def flush_soon(self) -> None:
        """Ask the writer thread to store the waiting lines now; returns at once, never raises."""
        with self._cond:
            if self._lines and not self._closed:
                self._soon = True
                self._cond.notify()

    def close(self, timeout_s: float = 10.0) -> bool:
        """Store what waits, stop the thread, close the store if this sink opened it; True if in time."""
        timeout = check_timeout("SqliteLogSink.close", "timeout_s", timeout_s)
        with self._cond:
            already = self._closed
            self._closed = True
            self._cond.notify()
        if already:
            return not self._thread.is_alive()
        self._thread.join(timeout)
        _SINKS.discard(self)
        if self._owned:
            self.store.close()
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not (self._closed or self._flushes or self._soon or len(self._lines) >= 256):
                    self._cond.wait(self.flush_interval_s)
                self._soon = False
                lines = list(self._lines)
                self._lines.clear()
                flushes, self._flushes = self._flushes, []
                stopping = self._closed
            if lines:
                self._store(lines)
            for done in flushes:
                done.set()
            if stopping:
                with self._cond:
                    left, self._flushes = self._flushes, []
                for done in left:
                    done.set()
                return

    def _store(self, lines: list[str]) -> None:
        entries = []
        for line in lines:
            try:
                record = json.loads(line)
                entries.append(LogEntry(
                    float(record["timestamp"]), record["level"], str(record["message"]),
                    record.get("data") if isinstance(record.get("data"), dict) else {},
                    record.get("trace_id"), record.get("span_id"),
                ))  # fmt: skip
            except Exception:  # not a logger's line: counted, never raised
                self.failed += 1
        try:
            stored = self.store.add_logs(entries, self.service)
        except Exception as exc:  # a closed store
            stored = 0
            _log.warning("SqliteLogSink: %d log entries not stored: %s: %s",
                         len(entries), type(exc).__name__, exc)  # fmt: skip
        self.written += stored
        self.failed += len(entries) - stored

    def __repr__(self) -> str:
        return f"SqliteLogSink({self.store.path!r}, service={self.service!r})"
