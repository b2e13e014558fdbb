"""The tracer's core and the running trace: what span handles need of their tracer.

`TracerCore` bundles the clocks, the context variable that says which span
or trace is current, the id maker and the callbacks a finished trace or a
late span goes to; the Tracer builds one and hands it to every handle, so
neither this module nor `obs.trace.handles` imports the tracer's.
`TraceHandle` is a trace while it runs: `Tracer.begin_trace` makes one
(`begin_explicit_trace`), and so does a span started with no trace around
it. It collects the spans that end in it and, once ended, becomes the
immutable `Trace` handed to `TracerCore.finish`.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any

from obs.trace._build import new_trace
from obs.trace.spans import Span
from obs.trace.traces import Trace

__all__ = ["TraceHandle", "TracerCore", "begin_explicit_trace"]

_log = logging.getLogger(__name__)


class TracerCore:
    """What the handles need of their tracer, and nothing else.

    `wall_raw`/`mono_raw` read the clocks in raw units (divide by `clock_div`
    for epoch ms and monotonic ms); `time_ms` reads epoch ms; `current` is
    the context variable of the current span or trace; `new_span_id` makes
    span ids; `finish(trace, sampled)` takes each finished trace;
    `late_span(span)` each span that ended after its trace.
    """

    __slots__ = (
        "clock_div", "current", "finish", "late_span", "mono_raw", "new_span_id", "time_ms", "wall_raw",
    )

    def __init__(
        self,
        *,
        wall_raw: Callable[[], float],
        mono_raw: Callable[[], float],
        clock_div: float,
        time_ms: Callable[[], float],
        current: contextvars.ContextVar[Any],
        new_span_id: Callable[[], str],
        finish: Callable[[Trace, bool], Any],
        late_span: Callable[[Span], Any],
    ) -> None:
        """Bundle the tracer's clocks, context variable, id maker and callbacks."""
        self.wall_raw = wall_raw
        self.mono_raw = mono_raw
        self.clock_div = clock_div
        self.time_ms = time_ms
        self.current = current
        self.new_span_id = new_span_id
        self.finish = finish
        self.late_span = late_span


class TraceHandle:
    """A trace while it runs: collects the spans that end in it, then becomes a `Trace`.

    Made by `Tracer.begin_trace` (explicit: ends with `end_trace`) or by a span
    started with no trace around it (implicit: ends when no span in it runs).
    Usable as a context manager that ends the trace on exit. Thread-safe.
    """

    __slots__ = (
        "_core",
        "_ended",
        "_error",
        "_explicit",
        "_final",
        "_lock",
        "_metadata",
        "_name",
        "_open",
        "_parent_span_id",
        "_prev",
        "_sampled",
        "_spans",
        "_start_mono",
        "_start_time",
        "_trace_id",
    )

    def __init__(
        self,
        core: TracerCore,
        trace_id: str,
        name: str,
        metadata: dict[str, Any],
        start_time: float,
        start_mono: float,
        parent_span_id: str | None,
        sampled: bool,
        explicit: bool,
    ) -> None:
        """Internal: handles are made by the Tracer."""
        self._core = core
        self._trace_id = trace_id
        self._name = name
        self._metadata = metadata
        self._start_time = start_time
        self._start_mono = start_mono
        self._parent_span_id = parent_span_id
        self._sampled = sampled
        self._explicit = explicit
        self._lock = threading.Lock()
        # One slot per span that joined, in start order; filled when the span ends.
        self._spans: list[Span | None] = []
        self._open = 0
        self._ended = False
        self._error = False
        self._final: Trace | None = None
        self._prev: object = None

    @property
    def trace_id(self) -> str:
        """The trace id (32 lowercase hex)."""
        return self._trace_id

    @property
    def name(self) -> str:
        """The trace name."""
        return self._name

    @property
    def metadata(self) -> dict[str, Any]:
        """A copy of the trace metadata."""
        with self._lock:
            return dict(self._metadata)

    @property
    def sampled(self) -> bool:
        """The head sampling decision made when the trace began."""
        return self._sampled

    @property
    def parent_span_id(self) -> str | None:
        """The remote parent span id this trace continues (from a traceparent), if any."""
        return self._parent_span_id

    @property
    def ended(self) -> bool:
        """True once the trace is finished."""
        return self._ended

    @property
    def running_spans(self) -> int:
        """How many spans of this trace have started and not ended."""
        with self._lock:
            return self._open

    def set_metadata(self, key: str, value: Any) -> None:
        """Set one metadata entry (ignored with a warning once the trace has ended)."""
        with self._lock:
            if not self._ended:
                self._metadata[key] = value
                return
        _log.warning("obs: metadata %r set on trace %s after it ended; ignored", key, self._trace_id)

    @property
    def trace(self) -> Trace:
        """The finished Trace once ended, else a running snapshot of the spans ended so far."""
        final = self._final
        if final is not None:
            return final
        with self._lock:
            spans = [span for span in self._spans if span is not None]
            metadata = dict(self._metadata)
        return Trace(
            id=self._trace_id,
            name=self._name,
            start_time=self._start_time,
            metadata=metadata,
            spans=spans,
            start_mono=self._start_mono,
        )

    def end(self) -> Trace:
        """Finish this trace with the spans ended in it, hand it on, and return it.

        The trace is sampled and sent to the processors like any other. Spans
        still running are left out (logged); if they end later they are
        counted as dropped. Ending a trace twice raises ValueError.
        """
        with self._lock:
            if self._ended:
                raise ValueError(f"end_trace: trace {self._name!r} ({self._trace_id}) already ended")
            self._ended = True
            running = self._open
        current = self._core.current
        if current.get() is self:
            current.set(self._prev)  # type: ignore[arg-type]
        if running:
            _log.warning(
                "obs: trace %r (%s) ended with %d span(s) still running; they are left out",
                self._name, self._trace_id, running,
            )
        return self._finish()

    def __enter__(self) -> TraceHandle:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self._error = True
        if not self._ended:
            self.end()

    def __repr__(self) -> str:
        state = "ended" if self._ended else "running"
        return f"TraceHandle({self._name!r}, trace_id={self._trace_id}, {state})"

    # -- called by SpanHandle (obs.trace.handles), the only other writer of a running trace --------

    def _reserve(self) -> int:
        """A slot for a span joining this trace: its index, or -1 if the trace has ended."""
        with self._lock:
            if self._ended:
                return -1  # too late to join: the span will be counted as dropped when it ends
            self._spans.append(None)
            self._open += 1
            return len(self._spans) - 1

    def _settle(self, handle: Any, seq: int, span: Span) -> None:
        """Put `handle`'s ended `span` in slot `seq`; finish the trace if it was the last one running.

        Raises ValueError if `handle` already ended (checked under the lock, so one end wins).
        """
        with self._lock:
            if handle._final is not None:
                raise ValueError(
                    f"span {span.name!r} ({span.id}) already ended with status "
                    f"{handle._final.status!r}; end a span once"
                )
            handle._final = span
            finish = late = False
            if self._ended or seq < 0:
                late = True
            else:
                self._spans[seq] = span
                self._open -= 1
                if self._open == 0 and not self._explicit:
                    finish = self._ended = True
        if finish:
            self._finish()
        elif late:
            self._core.late_span(span)

    def _finish(self) -> Trace:
        """Build the finished Trace once `_ended` is set (nothing writes here any more); hand it on."""
        # Only an explicit trace can end with spans still running, whose slots are empty.
        spans: list[Span] = (
            [span for span in self._spans if span is not None] if self._explicit else self._spans  # type: ignore[misc]
        )
        error = self._error
        end_time = self._start_time
        for span in spans:
            if span.status == "error":
                error = True
            if span.end_time > end_time:  # type: ignore[operator]
                end_time = span.end_time  # type: ignore[assignment]
        if self._explicit:
            core = self._core
            now = self._start_time + max(0.0, core.mono_raw() / core.clock_div - self._start_mono)
            if now > end_time:
                end_time = now
        trace = new_trace(
            self._trace_id, self._name, self._start_time, end_time, "error" if error else "success",
            self._metadata, spans, self._start_mono,
        )
        self._final = trace
        # Called once per trace, outside the lock: processors may take their time or start spans.
        self._core.finish(trace, self._sampled)
        return trace


def begin_explicit_trace(
    core: TracerCore,
    trace_id: str,
    name: str,
    metadata: dict[str, Any],
    parent_span_id: str | None,
    sampled: bool,
) -> TraceHandle:
    """Begin an explicit trace, current in this context until it ends."""
    div = core.clock_div
    handle = TraceHandle(
        core, trace_id, name, metadata, core.wall_raw() / div, core.mono_raw() / div,
        parent_span_id, sampled, True,
    )
    handle._prev = core.current.get()
    core.current.set(handle)
    return handle
