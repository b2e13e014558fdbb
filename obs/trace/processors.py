"""The seam where finished traces leave the tracer: processors, and the exporters they feed.

The shape is OpenTelemetry's SDK (`SpanProcessor`, `SpanExporter`), one level
up: obs hands on whole traces, since every backend it speaks groups by trace.

- A `TraceProcessor` is called by the Tracer with every finished trace that
  sampling kept (`on_end`), and can be flushed and shut down with a timeout.
- A `TraceExporter` turns a batch of traces into something outside the
  process (a file, a database row, an HTTP request) and says whether that
  worked (`ExportResult`). Exporters never raise into the application: a
  processor catches, logs and counts whatever they do.
- `SimpleProcessor` exports each trace at once on the thread that ended it;
  `BatchProcessor` queues traces (bounded: a full queue drops the new trace
  and counts it) and exports them in batches from one background thread, so
  a slow, failing or hanging exporter never delays the application.
- `InMemoryExporter` keeps what it is given, for tests (OpenTelemetry ships
  the same test double); `StoreExporter` adds each trace to a trace store.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from obs.trace.traces import Trace

__all__ = [
    "BatchProcessor",
    "ExportResult",
    "InMemoryExporter",
    "ProcessorStats",
    "SimpleProcessor",
    "StoreExporter",
    "TraceExporter",
    "TraceProcessor",
]

_log = logging.getLogger(__name__)


class ExportResult(enum.Enum):
    """What an exporter says of one `export` call."""

    SUCCESS = "success"
    FAILURE = "failure"


@runtime_checkable
class TraceExporter(Protocol):
    """Sends finished traces somewhere; the processor decides when and on which thread."""

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        """Send `traces`; return SUCCESS or FAILURE (a raised exception counts as FAILURE)."""
        ...

    def shutdown(self) -> None:
        """Release what the exporter holds; later exports may fail."""
        ...


@runtime_checkable
class TraceProcessor(Protocol):
    """Receives every finished trace that sampling kept."""

    def on_end(self, trace: Trace) -> None:
        """Take one finished trace; must return quickly and never raise."""
        ...

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Export everything received so far; True if done within `timeout_s` seconds."""
        ...

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        """Flush, then stop and shut the exporter down; True if done within `timeout_s` seconds."""
        ...


@dataclass(frozen=True, slots=True)
class ProcessorStats:
    """Counters of a processor, read at one instant.

    `queued` counts traces accepted (for `SimpleProcessor`, handed to the
    exporter), `pending` those waiting in the queue now, `exported` those the
    exporter took with SUCCESS, `failed` those in exports that returned
    FAILURE, raised or timed out, and `dropped` those refused because the
    queue was full or the processor was shut down. Once idle,
    `queued == exported + failed` and every trace given is in `queued + dropped`.
    """

    queued: int
    pending: int
    exported: int
    failed: int
    dropped: int


def check_timeout(owner: str, name: str, value: object) -> float:
    """`value` as float seconds if it is a finite number > 0, else a ValueError naming `owner.name`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
        math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{owner}: {name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def _check_exporter(owner: str, exporter: object) -> None:
    if not callable(getattr(exporter, "export", None)):
        raise ValueError(
            f"{owner}: exporter must have export(traces) -> ExportResult, e.g. InMemoryExporter(); "
            f"got {exporter!r}"
        )


def _run_export(exporter: Any, batch: Sequence[Trace]) -> bool:
    """Export `batch`; True on SUCCESS. Failures are logged here, never raised."""
    try:
        result = exporter.export(batch)
    except Exception as exc:
        _log.warning(
            "obs: exporter %r raised on %d trace(s): %s: %s", exporter, len(batch), type(exc).__name__, exc
        )
        return False
    if result is ExportResult.SUCCESS:
        return True
    _log.warning("obs: exporter %r returned %r for %d trace(s)", exporter, result, len(batch))
    return False


def _shutdown_exporter(exporter: Any) -> None:
    shutdown = getattr(exporter, "shutdown", None)
    if callable(shutdown):
        try:
            shutdown()
        except Exception as exc:
            _log.warning("obs: exporter %r failed to shut down: %s: %s", exporter, type(exc).__name__, exc)


class SimpleProcessor:
    """Exports each trace at once, on the thread that ended it. Thread-safe.

    For exporters that are fast and local (an in-memory or SQLite store, a
    test double); anything that talks to a network belongs behind a
    `BatchProcessor`. A raising or failing exporter is logged and counted.
    """

    def __init__(self, exporter: TraceExporter) -> None:
        """Export through `exporter` (an object with `export(traces)`); ValueError otherwise."""
        _check_exporter("SimpleProcessor", exporter)
        self.exporter = exporter
        self._lock = threading.Lock()
        self._exported = self._failed = self._dropped = 0
        self._shutdown = False

    def on_end(self, trace: Trace) -> None:
        """Export `trace` now; after `shutdown` it is dropped and counted."""
        if self._shutdown:
            with self._lock:
                self._dropped += 1
            return
        ok = _run_export(self.exporter, (trace,))
        with self._lock:
            if ok:
                self._exported += 1
            else:
                self._failed += 1

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Nothing waits here: every trace was exported when it ended. Always True."""
        check_timeout("SimpleProcessor.force_flush", "timeout_s", timeout_s)
        return True

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        """Refuse further traces and shut the exporter down (once). Always True."""
        check_timeout("SimpleProcessor.shutdown", "timeout_s", timeout_s)
        with self._lock:
            if self._shutdown:
                return True
            self._shutdown = True
        _shutdown_exporter(self.exporter)
        return True

    def stats(self) -> ProcessorStats:
        """The counters now (`pending` is always 0)."""
        with self._lock:
            return ProcessorStats(
                self._exported + self._failed, 0, self._exported, self._failed, self._dropped
            )

    def __repr__(self) -> str:
        return f"SimpleProcessor({self.exporter!r})"


class BatchProcessor:
    """Queues finished traces and exports them in batches from one background thread.

    A batch goes out when `max_export_batch_size` traces wait or
    `schedule_delay_s` has passed since the last export. `on_end` only
    appends to a bounded queue: when `max_queue_size` traces wait, the new
    one is dropped and counted, so a slow or dead exporter costs the
    application memory up to the bound and never time. An export that takes
    longer than `export_timeout_s` is counted as failed and abandoned (its
    thread is left to finish; while it hangs, later batches fail at once
    rather than pile up threads). `force_flush` and `shutdown` wait at most
    their timeout; `flush_soon` asks for an export now and returns at once.
    Thread-safe. The defaults are OpenTelemetry's (`OTEL_BSP_*`): 2048, 512,
    5 s, 30 s.
    """

    def __init__(
        self,
        exporter: TraceExporter,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        schedule_delay_s: float = 5.0,
        export_timeout_s: float = 30.0,
    ) -> None:
        """Start the worker thread; ValueError names any argument out of range."""
        _check_exporter("BatchProcessor", exporter)
        sizes = (("max_queue_size", max_queue_size), ("max_export_batch_size", max_export_batch_size))
        for name, value in sizes:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BatchProcessor: {name} must be an int >= 1, got {value!r}")
        if max_export_batch_size > max_queue_size:
            raise ValueError(
                f"BatchProcessor: max_export_batch_size ({max_export_batch_size}) must not exceed "
                f"max_queue_size ({max_queue_size})"
            )
        self.exporter = exporter
        self.max_queue_size = max_queue_size
        self.max_export_batch_size = max_export_batch_size
        self.schedule_delay_s = check_timeout("BatchProcessor", "schedule_delay_s", schedule_delay_s)
        self.export_timeout_s = check_timeout("BatchProcessor", "export_timeout_s", export_timeout_s)
        self._queue: deque[Trace] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._flushes: list[threading.Event] = []
        self._soon = False  # flush_soon() asked for an export of everything queued
        self._queued = self._exported = self._failed = self._dropped = 0
        self._shutdown = False
        self._stopped = threading.Event()
        self._hung: threading.Thread | None = None
        self._worker = threading.Thread(target=self._run, name="obs-batch-processor", daemon=True)
        self._worker.start()

    def on_end(self, trace: Trace) -> None:
        """Queue `trace`; drop and count it if the queue is full or the processor shut down."""
        with self._cond:
            if self._shutdown or len(self._queue) >= self.max_queue_size:
                self._dropped += 1
                return
            self._queue.append(trace)
            self._queued += 1
            if len(self._queue) == self.max_export_batch_size:
                self._cond.notify()

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Export every trace queued before this call; True if done within `timeout_s` seconds."""
        timeout = check_timeout("BatchProcessor.force_flush", "timeout_s", timeout_s)
        done = threading.Event()
        with self._cond:
            if self._stopped.is_set():
                return not self._queue
            self._flushes.append(done)
            self._cond.notify()
        return done.wait(timeout)

    def flush_soon(self) -> None:
        """Ask the worker thread to export every queued trace now; returns at once, never raises.

        For a caller that knows a good moment to spend CPU on exporting (a
        proxy whose model is resting between calls) without waiting for it.
        """
        with self._cond:
            if self._queue and not self._shutdown:
                self._soon = True
                self._cond.notify()

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        """Refuse new traces, export the queued ones, stop the thread and shut the exporter down.

        True if all of it finished within `timeout_s` seconds; calling it again returns at once.
        """
        timeout = check_timeout("BatchProcessor.shutdown", "timeout_s", timeout_s)
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._shutdown:
                return self._stopped.is_set()
            self._shutdown = True
            self._cond.notify()
        self._worker.join(max(0.0, deadline - time.monotonic()))
        finished = not self._worker.is_alive()
        _shutdown_exporter(self.exporter)
        return finished

    def stats(self) -> ProcessorStats:
        """The counters now."""
        with self._cond:
            return ProcessorStats(self._queued, len(self._queue), self._exported, self._failed, self._dropped)

    def __repr__(self) -> str:
        return (
            f"BatchProcessor({self.exporter!r}, max_queue_size={self.max_queue_size}, "
            f"max_export_batch_size={self.max_export_batch_size})"
        )

    # -- the worker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        next_export = time.monotonic() + self.schedule_delay_s
        while True:
            with self._cond:
                while not (
                    self._shutdown
                    or self._flushes
                    or self._soon
                    or len(self._queue) >= self.max_export_batch_size
                    or time.monotonic() >= next_export
                ):
                    self._cond.wait(max(0.0, next_export - time.monotonic()))
                flushes, self._flushes = self._flushes, []
                soon, self._soon = self._soon, False
                # A flush or shutdown drains everything queued now; otherwise one batch goes.
                drain = flushes or soon or self._shutdown
                take = len(self._queue) if drain else self.max_export_batch_size
                take = min(take, len(self._queue))
                batch = [self._queue.popleft() for _ in range(take)]
                stopping = self._shutdown
            for start in range(0, len(batch), self.max_export_batch_size):
                self._export(batch[start : start + self.max_export_batch_size])
            for done in flushes:
                done.set()
            next_export = time.monotonic() + self.schedule_delay_s
            if stopping:
                with self._cond:
                    leftover = self._flushes
                    self._flushes = []
                    self._stopped.set()
                for done in leftover:
                    done.set()
                return

    def _export(self, batch: list[Trace]) -> None:
        hung = self._hung
        if hung is not None:
            hung.join(self.export_timeout_s)
            if hung.is_alive():
                _log.warning(
                    "obs: exporter %r is still stuck in an earlier export; %d trace(s) counted as failed",
                    self.exporter, len(batch),
                )
                self._count(exported=0, failed=len(batch))
                return
            self._hung = None
        outcome: list[bool] = []
        runner = threading.Thread(
            target=lambda: outcome.append(_run_export(self.exporter, batch)),
            name="obs-batch-export", daemon=True,
        )
        runner.start()
        runner.join(self.export_timeout_s)
        if runner.is_alive():
            self._hung = runner
            _log.warning(
                "obs: exporter %r did not finish within export_timeout_s=%ss; %d trace(s) counted as failed",
                self.exporter, self.export_timeout_s, len(batch),
            )
            self._count(exported=0, failed=len(batch))
        elif outcome and outcome[0]:
            self._count(exported=len(batch), failed=0)
        else:
            self._count(exported=0, failed=len(batch))

    def _count(self, *, exported: int, failed: int) -> None:
        with self._cond:
            self._exported += exported
            self._failed += failed


class InMemoryExporter:
    """Keeps every trace it is given, in order: the test double for code that exports traces.

    `traces` is a snapshot list; `clear()` empties it. After `shutdown`,
    exports return FAILURE, as a real exporter's would. Thread-safe.
    """

    def __init__(self) -> None:
        """Start empty."""
        self._lock = threading.Lock()
        self._traces: list[Trace] = []
        self._shutdown = False

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        """Keep `traces`; FAILURE once shut down."""
        with self._lock:
            if self._shutdown:
                return ExportResult.FAILURE
            self._traces.extend(traces)
        return ExportResult.SUCCESS

    @property
    def traces(self) -> list[Trace]:
        """The traces exported so far, oldest first (a copy)."""
        with self._lock:
            return list(self._traces)

    def clear(self) -> None:
        """Forget the traces kept so far."""
        with self._lock:
            self._traces.clear()

    def shutdown(self) -> None:
        """Refuse later exports (they return FAILURE); the traces kept stay readable."""
        with self._lock:
            self._shutdown = True

    def __repr__(self) -> str:
        return f"InMemoryExporter({len(self.traces)} traces)"


class StoreExporter:
    """Adds each exported trace to a trace store (anything with `add(trace)`).

    What `Tracer(store=...)` puts first among its processors, behind a
    `SimpleProcessor`. The store is not closed on shutdown: its owner closes it.
    """

    def __init__(self, store: Any) -> None:
        """Export into `store`; ValueError if it has no `add(trace)`."""
        if not callable(getattr(store, "add", None)):
            raise ValueError(f"StoreExporter: store must have add(trace), e.g. TraceStore(); got {store!r}")
        self.store = store

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        """Add every trace to the store; FAILURE if any add raised (the rest are still added)."""
        result = ExportResult.SUCCESS
        for trace in traces:
            try:
                self.store.add(trace)
            except Exception as exc:
                _log.warning("obs: store %r failed to add trace %s: %s: %s", self.store, trace.id,
                             type(exc).__name__, exc)
                result = ExportResult.FAILURE
        return result

    def shutdown(self) -> None:
        """Nothing to release: the store belongs to its owner."""

    def __repr__(self) -> str:
        return f"StoreExporter({self.store!r})"
