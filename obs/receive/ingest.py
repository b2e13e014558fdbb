"""The bounded queue between the receiver's HTTP handlers and its exporter, and the thread that drains it.

`Ingest.offer(traces, spans)` is what a request handler calls once a body has
been checked: it queues the traces and returns at once, so a client never
waits for storage. `traces` may also be `Deferred`: traces not built yet (a
checked request body), built once each, in the order queued: by the builder
thread as soon as it is queued, or by whichever gets to it first of the
worker thread (before it exports it) and `materialize()` (which builds every
one queued so far: call it before reading what building them records). So a
client does not wait for that either. It answers with an `Admission`:

- ACCEPTED: queued (the handler answers 200);
- FULL: `max_queue_spans` spans already wait (the exporter is behind):
  the handler answers 429 with `Retry-After`, and the client slows down;
- UNAVAILABLE: the exporter is failing (its last export failed less than
  `retry_after_s` ago) or stuck (one export has run longer than
  `export_timeout_s`), or the receiver is shut down: 503 with `Retry-After`.

A builder thread builds each `Deferred` as soon as it is queued, so the
building of one request (Python work, holding the interpreter's lock)
overlaps the SQLite writes of the one before (which release it). One worker
thread exports the queued traces in batches of at most
`max_export_traces`, oldest first. A batch that fails (FAILURE or an
exception) is tried again after `retry_after_s`, up to `max_attempts` times
in all, then dropped and counted; meanwhile new requests get 503, so a client
keeps its spans and retries instead of losing them here. A queue that is
empty takes any request, however large, so one big request cannot be
refused forever. Thread-safe.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from obs.trace.processors import ExportResult, check_timeout
from obs.trace.traces import Trace

__all__ = ["Admission", "Deferred", "Ingest", "IngestStats"]

_log = logging.getLogger(__name__)


class Admission(enum.Enum):
    """What `Ingest.offer` did with one request's traces."""

    ACCEPTED = "accepted"
    FULL = "full"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class IngestStats:
    """Counters of an `Ingest`, read at one instant.

    `accepted_spans` were queued; `refused_requests` got FULL or UNAVAILABLE;
    `exported_spans` the exporter took, `dropped_spans` were given up after
    `max_attempts` failed exports (or left queued at shutdown), and
    `pending_spans` wait now. `last_error` says why the last export failed.
    """

    accepted_requests: int
    accepted_spans: int
    refused_requests: int
    exported_spans: int
    dropped_spans: int
    pending_spans: int
    failed_exports: int
    last_error: str | None


class Deferred(Protocol):
    """Traces not built yet: how many there will be, and how to build them (called once)."""

    @property
    def trace_count(self) -> int:
        """How many traces `build()` gives (a bound for the batch they go in)."""
        ...

    def build(self) -> list[Trace]:
        """The traces; an exception drops them (logged and counted)."""
        ...


class _Entry:
    """One offered request in the queue: its traces (None until built) and its span count."""

    __slots__ = ("count", "kept", "source", "spans", "traces")

    def __init__(self, source: Sequence[Trace] | Deferred, spans: int) -> None:
        self.spans = spans
        self.kept = spans  # the spans still to export: 0 once building them failed
        self.source: Deferred | None = None
        self.traces: list[Trace] | None = None
        if isinstance(source, Sequence):
            self.traces = list(source)
            self.count = len(self.traces)
        else:
            self.source = source
            self.count = source.trace_count


class Ingest:
    """A bounded queue of received traces in front of `exporter` (see the module docstring)."""

    def __init__(
        self,
        exporter: Any,
        *,
        max_queue_spans: int = 20_000,
        max_export_traces: int = 2048,
        export_timeout_s: float = 30.0,
        retry_after_s: float = 5.0,
        max_attempts: int = 3,
    ) -> None:
        """Start the worker and builder threads; ValueError names any argument out of range.

        `exporter` has `export(traces) -> ExportResult` (a TraceExporter);
        sizes and `max_attempts` are ints >= 1; times are seconds > 0.
        """
        if not callable(getattr(exporter, "export", None)):
            raise ValueError(
                "Ingest: exporter must have export(traces) -> ExportResult, e.g. "
                f"MergingStoreExporter(SqliteTraceStore(path)); got {exporter!r}"
            )
        for name, value in (("max_queue_spans", max_queue_spans), ("max_export_traces", max_export_traces),
                            ("max_attempts", max_attempts)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Ingest: {name} must be an int >= 1, got {value!r}")
        self.exporter = exporter
        self.max_queue_spans = max_queue_spans
        self.max_export_traces = max_export_traces
        self.max_attempts = max_attempts
        self.export_timeout_s = check_timeout("Ingest", "export_timeout_s", export_timeout_s)
        self.retry_after_s = check_timeout("Ingest", "retry_after_s", retry_after_s)
        self._queue: deque[_Entry] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._building = threading.Lock()  # taken before _cond, never after
        self._pending = 0
        self._unbuilt = 0  # queued entries whose traces are not built yet (always the newest ones)
        self._busy_since: float | None = None  # monotonic start of the export running now
        self._failing_until = 0.0
        self._accepted_requests = self._accepted_spans = self._refused = 0
        self._exported = self._dropped = self._failed_exports = 0
        self._last_error: str | None = None
        self._stopping = False
        self._worker = threading.Thread(target=self._run, name="obs-receiver-export", daemon=True)
        self._worker.start()
        self._builder = threading.Thread(target=self._build_ahead, name="obs-receiver-build", daemon=True)
        self._builder.start()

    def offer(self, traces: Sequence[Trace] | Deferred, spans: int) -> Admission:
        """Queue `traces` (holding `spans` spans) unless the queue is full or the exporter is failing."""
        now = time.monotonic()
        with self._cond:
            busy = self._busy_since
            if self._stopping or now < self._failing_until or (
                busy is not None and now - busy > self.export_timeout_s
            ):
                self._refused += 1
                return Admission.UNAVAILABLE
            if self._pending and self._pending + spans > self.max_queue_spans:
                self._refused += 1
                return Admission.FULL
            self._accepted_requests += 1
            self._accepted_spans += spans
            entry = _Entry(traces, spans)
            if entry.count:
                self._queue.append(entry)
                self._pending += spans
                if entry.traces is None:
                    self._unbuilt += 1
                self._cond.notify_all()
            return Admission.ACCEPTED

    def materialize(self) -> int:
        """Build every `Deferred` queued so far, oldest first, each once; return how many this call built.

        The builder thread builds each one as it is queued, and the worker
        any left when it takes them; call this before reading what building
        them records (the receiver's `/metrics`). Waits while another thread
        builds.
        """
        with self._building:
            with self._cond:
                waiting = self._unbuilt_entries()
            for entry in waiting:
                self._build(entry)
        return len(waiting)

    def _unbuilt_entries(self) -> list[_Entry]:
        """The queued entries not built yet, oldest first (the caller holds `_cond`).

        Built oldest first, they are the newest ones: the scan from the newest
        end stops once it has found `_unbuilt`, so a long built backlog is not read.
        """
        found: list[_Entry] = []
        if self._unbuilt:
            for entry in reversed(self._queue):
                if entry.traces is None:
                    found.append(entry)
                    if len(found) == self._unbuilt:
                        break
            found.reverse()
        return found

    def _build(self, entry: _Entry) -> None:
        """Build one entry's traces (the caller holds `_building`); a failure drops its spans, counted."""
        source = entry.source
        if source is None:  # built already
            return
        failed: Exception | None = None
        try:
            traces = list(source.build())
        except Exception as exc:
            _log.warning("obs: receiver dropped %d span(s) it had accepted: building them failed: %s: %s",
                         entry.spans, type(exc).__name__, exc)  # fmt: skip
            traces = []
            failed = exc
        with self._cond:
            if failed is not None:
                self._dropped += entry.spans
                self._last_error = f"building received traces failed: {type(failed).__name__}: {failed}"
                entry.kept = 0
            entry.count = len(traces)
            entry.source = None
            entry.traces = traces
            self._unbuilt -= 1

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every trace queued so far is exported or dropped; True if done within `timeout_s`."""
        timeout = check_timeout("Ingest.flush", "timeout_s", timeout_s)
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and self._busy_since is None, timeout)

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        """Refuse new traces, export the queued ones, stop both threads; True if done within `timeout_s`.

        The worker builds what the builder thread had not (the builder stops
        once the build it is in, if any, ends). Both threads are waited for within the one `timeout_s`;
        False if either still runs then. The exporter is not shut down: its
        owner does that (it may be shared).
        """
        timeout = check_timeout("Ingest.shutdown", "timeout_s", timeout_s)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        self._worker.join(timeout)
        self._builder.join(max(0.0, deadline - time.monotonic()))
        return not self._worker.is_alive() and not self._builder.is_alive()

    def stats(self) -> IngestStats:
        """The counters now."""
        with self._cond:
            return IngestStats(
                self._accepted_requests, self._accepted_spans, self._refused, self._exported, self._dropped,
                self._pending, self._failed_exports, self._last_error,
            )

    def __repr__(self) -> str:
        return f"Ingest({self.exporter!r}, max_queue_spans={self.max_queue_spans})"

    # -- the builder and worker threads ---------------------------------------------------------

    def _build_ahead(self) -> None:
        """The builder thread: build each queued Deferred as it comes, until shutdown."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._unbuilt)
                if self._stopping:
                    return
            self.materialize()

    def _take(self) -> tuple[list[Trace], int, int] | None:
        """The next batch (whole requests, up to max_export_traces traces, built), the spans to export
        in it and the spans it takes off the queue; None to stop."""
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._stopping)
            if not self._queue:
                return None
        self.materialize()  # every entry queued by now; later ones wait behind them
        with self._cond:
            batch: list[Trace] = []
            kept = spans = 0
            limit = self.max_export_traces
            while (
                self._queue and self._queue[0].traces is not None
                and (not batch or len(batch) + self._queue[0].count <= limit)
            ):  # fmt: skip
                entry = self._queue.popleft()
                batch.extend(entry.traces)  # type: ignore[arg-type]
                kept += entry.kept
                spans += entry.spans
            self._busy_since = time.monotonic()
            return batch, kept, spans

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            batch, kept, spans = taken
            for attempt in range(1, self.max_attempts + 1):
                if not batch:  # nothing built (building failed, counted then)
                    break
                error = self._export(batch)
                with self._cond:
                    if error is None:
                        self._exported += kept
                        self._failing_until = 0.0
                        break
                    self._failed_exports += 1
                    self._last_error = error
                    self._failing_until = time.monotonic() + self.retry_after_s
                    if attempt == self.max_attempts or self._stopping:
                        self._dropped += kept
                        _log.warning("obs: receiver dropped %d span(s) after %d failed export(s): %s",
                                     kept, attempt, error)
                        break
                    # Wait before trying again; a shutdown cuts the wait short.
                    self._cond.wait_for(lambda: self._stopping, self.retry_after_s)
            with self._cond:
                self._pending -= spans
                self._busy_since = None
                self._cond.notify_all()

    def _export(self, batch: list[Trace]) -> str | None:
        """Export `batch`; None on success, else why it failed."""
        try:
            result = self.exporter.export(batch)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        if result is ExportResult.SUCCESS:
            return None
        return f"the exporter returned {result!r}"
