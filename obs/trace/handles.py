"""Span and trace handles: the mutable side of a span or trace while it runs.

`Tracer.start_span` and `Tracer.begin_span` hand out a `SpanHandle`;
`Tracer.begin_trace` (or a span started with no trace around it) makes a
`TraceHandle`. A handle takes attributes and events as plain dict and list
writes, so the hot path stays cheap, and ending it produces the immutable
`Span` or `Trace` value the rest of obs reads. The Tracer decides where spans
nest and where finished traces go; the handles only record.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from obs import semconv
from obs.trace.ids import format_traceparent
from obs.trace.spans import Span, SpanEvent, SpanKind, SpanStatus, _error_records
from obs.trace.traces import Trace

if TYPE_CHECKING:
    from obs.trace.tracer import Tracer

__all__ = ["SpanHandle", "TraceHandle"]

_log = logging.getLogger(__name__)


def _slot_setters(cls: type) -> tuple[Callable[[Any, Any], None], ...]:
    """The slot descriptors' setters of a frozen, slotted dataclass, in field order."""
    return tuple(cls.__dict__[name].__set__ for name in cls.__dataclass_fields__)  # type: ignore[attr-defined]


# The values the tracer hands out are built slot by slot, through these setters kept as globals:
# the frozen dataclass's own __init__ sets each field via object.__setattr__, several times slower,
# and the tracer builds three values per traced request. Field order is checked by the tests.
_new = object.__new__
(
    _set_span_id,
    _set_span_trace_id,
    _set_span_parent_id,
    _set_span_name,
    _set_span_start_time,
    _set_span_end_time,
    _set_span_duration,
    _set_span_status,
    _set_span_attributes,
    _set_span_events,
    _set_span_kind,
    _set_span_start_mono,
) = _slot_setters(Span)
_set_event_name, _set_event_timestamp, _set_event_attributes = _slot_setters(SpanEvent)
(
    _set_trace_id,
    _set_trace_name,
    _set_trace_start_time,
    _set_trace_end_time,
    _set_trace_duration,
    _set_trace_status,
    _set_trace_metadata,
    _set_trace_spans,
    _set_trace_start_mono,
) = _slot_setters(Trace)


class TraceHandle:
    """A trace while it runs: collects the spans that end in it, then becomes a `Trace`.

    Made by `Tracer.begin_trace` (explicit: ends with `end_trace`) or by a span
    started with no trace around it (implicit: ends when no span in it runs).
    Usable as a context manager that ends the trace on exit. Thread-safe.
    """

    __slots__ = (
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
        "_tracer",
    )

    def __init__(
        self,
        tracer: Tracer,
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
        self._tracer = tracer
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
        """End this trace (see `Tracer.end_trace`) and return it."""
        return self._tracer.end_trace(self)

    def __enter__(self) -> TraceHandle:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self._error = True
        if not self._ended:
            self._tracer.end_trace(self)

    def __repr__(self) -> str:
        state = "ended" if self._ended else "running"
        return f"TraceHandle({self._name!r}, trace_id={self._trace_id}, {state})"

    def _freeze(self) -> Trace:
        """Build the finished Trace once `_ended` is set: nothing writes to the handle any more."""
        metadata = self._metadata
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
            now = self._start_time + max(0.0, self._tracer._mono_ms() - self._start_mono)
            if now > end_time:
                end_time = now
        trace = _new(Trace)
        _set_trace_id(trace, self._trace_id)
        _set_trace_name(trace, self._name)
        _set_trace_start_time(trace, self._start_time)
        _set_trace_end_time(trace, end_time)
        _set_trace_duration(trace, end_time - self._start_time)
        _set_trace_status(trace, "error" if error else "success")
        _set_trace_metadata(trace, metadata)
        _set_trace_spans(trace, spans)
        _set_trace_start_mono(trace, self._start_mono)
        self._final = trace
        return trace


class SpanHandle:
    """A running span: set attributes, add events, record errors, then end it once.

    As a context manager (what `Tracer.start_span` is for) it is the current
    span inside the block and ends on exit: with status "error" and the
    exception recorded if one escapes the block (the exception is re-raised
    unchanged; `GeneratorExit`, a generator closed by its consumer, is not an
    error). `span` gives the immutable `Span` at any moment. Ending is safe
    from any thread (exactly one `end` wins); attributes and events are meant
    to be written by one thread at a time, as the code that owns the span does.
    """

    __slots__ = (
        "_attributes",
        "_error",
        "_events",
        "_final",
        "_id",
        "_kind",
        "_name",
        "_parent_id",
        "_seq",
        "_start_mono",
        "_start_time",
        "_token",
        "_trace",
        "_tracer",
    )

    def __init__(
        self,
        tracer: Tracer,
        trace: TraceHandle,
        seq: int,
        span_id: str,
        parent_id: str | None,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
    ) -> None:
        """Internal: handles are made by the Tracer."""
        self._tracer = tracer
        self._trace = trace
        self._seq = seq
        self._id = span_id
        self._parent_id = parent_id
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._events: list[SpanEvent] = []
        self._error = False
        self._final: Span | None = None
        self._token: contextvars.Token[Any] | None = None
        div = tracer._clock_div
        self._start_time = tracer._wall_raw() / div
        self._start_mono = tracer._mono_raw() / div

    @property
    def span_id(self) -> str:
        """This span's id (16 lowercase hex)."""
        return self._id

    @property
    def trace_id(self) -> str:
        """The id of the trace this span belongs to."""
        return self._trace._trace_id

    @property
    def parent_id(self) -> str | None:
        """The parent span's id, or None for a root span."""
        return self._parent_id

    @property
    def name(self) -> str:
        """The span name."""
        return self._name

    @property
    def kind(self) -> SpanKind:
        """The span kind ("internal", "client", ...)."""
        return self._kind

    @property
    def trace_handle(self) -> TraceHandle:
        """The handle of the trace this span belongs to."""
        return self._trace

    @property
    def sampled(self) -> bool:
        """The head sampling decision of this span's trace."""
        return self._trace._sampled

    @property
    def ended(self) -> bool:
        """True once `end` has been called."""
        return self._final is not None

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute (ignored with a warning once the span has ended)."""
        if self._final is None:
            self._attributes[key] = value
        else:
            self._ignored("set_attribute")

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set several attributes at once (ignored with a warning once the span has ended)."""
        if self._final is None:
            self._attributes.update(attributes)
        else:
            self._ignored("set_attributes")

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, *, timestamp: float | None = None
    ) -> None:
        """Add an event stamped now (or at `timestamp`, epoch ms); ignored once the span has ended."""
        if self._final is not None:
            self._ignored("add_event")
            return
        if not name or not isinstance(name, str):
            raise ValueError(f"add_event: name must be a non-empty string, got {name!r}")
        if timestamp is None:
            tracer = self._tracer
            timestamp = tracer._wall_raw() / tracer._clock_div
        event = _new(SpanEvent)
        _set_event_name(event, name)
        _set_event_timestamp(event, timestamp)
        _set_event_attributes(event, dict(attributes) if attributes else {})
        self._events.append(event)

    def record_error(self, error: BaseException | str) -> None:
        """Record `error` now: `error.type`/`error.message` attributes and an `exception` event.

        The span will end with status "error" whatever status `end` is given.
        """
        if self._final is not None:
            self._ignored("record_error")
            return
        attributes, event_attrs = _error_records(error, self._attributes.get(semconv.ERROR_TYPE))
        self._attributes.update(attributes)
        self._events.append(
            SpanEvent(semconv.EVENT_EXCEPTION, self._tracer._time_ms(), event_attrs)
        )
        self._error = True

    @property
    def span(self) -> Span:
        """The ended Span, or a running snapshot of this span now."""
        final = self._final
        if final is not None:
            return final
        return Span(
            id=self._id,
            trace_id=self._trace._trace_id,
            parent_id=self._parent_id,
            name=self._name,
            start_time=self._start_time,
            attributes=dict(self._attributes),
            events=list(self._events),
            kind=self._kind,
            start_mono=self._start_mono,
        )

    def traceparent(self) -> str:
        """The W3C `traceparent` header value naming this span as the parent."""
        return format_traceparent(self._trace._trace_id, self._id, self._trace._sampled)

    def end(self, status: SpanStatus = "success", error: BaseException | str | None = None) -> Span:
        """End the span now and return the immutable Span.

        `error` (an exception or a message) forces status "error" and is recorded
        as in `end_span`; so does an earlier `record_error`. Ending twice raises
        ValueError.
        """
        if self._final is not None:
            raise ValueError(
                f"span {self._name!r} ({self._id}) already ended with status "
                f"{self._final.status!r}; end a span once"
            )
        if status != "success" and status != "error":
            raise ValueError(f"SpanHandle.end: status must be 'success' or 'error', got {status!r}")
        return self._end(status, error)

    def _end(self, status: SpanStatus, error: BaseException | str | None) -> Span:
        tracer = self._tracer
        trace = self._trace
        duration = tracer._mono_raw() / tracer._clock_div - self._start_mono
        if duration < 0.0:
            duration = 0.0
        end_time = self._start_time + duration
        # Once ended, the handle refuses writes, so its dict and list become the Span's own.
        attributes = self._attributes
        events = self._events
        if error is not None:
            status = "error"
            error_attrs, event_attrs = _error_records(error, attributes.get(semconv.ERROR_TYPE))
            attributes = {**attributes, **error_attrs}
            events = [*events, SpanEvent(semconv.EVENT_EXCEPTION, end_time, event_attrs)]
        elif self._error:
            status = "error"
        elif status == "error" and semconv.ERROR_TYPE not in attributes:
            attributes[semconv.ERROR_TYPE] = semconv.ERROR_TYPE_OTHER
        span = _new(Span)
        _set_span_id(span, self._id)
        _set_span_trace_id(span, trace._trace_id)
        _set_span_parent_id(span, self._parent_id)
        _set_span_name(span, self._name)
        _set_span_start_time(span, self._start_time)
        _set_span_end_time(span, end_time)
        _set_span_duration(span, duration)
        _set_span_status(span, status)
        _set_span_attributes(span, attributes)
        _set_span_events(span, events)
        _set_span_kind(span, self._kind)
        _set_span_start_mono(span, self._start_mono)
        with trace._lock:
            if self._final is not None:
                raise ValueError(
                    f"span {self._name!r} ({self._id}) already ended with status "
                    f"{self._final.status!r}; end a span once"
                )
            self._final = span
            seq = self._seq
            finish = late = False
            if trace._ended or seq < 0:
                late = True
            else:
                trace._spans[seq] = span
                trace._open -= 1
                if trace._open == 0 and not trace._explicit:
                    finish = trace._ended = True
        if finish:
            tracer._finish(trace)
        elif late:
            tracer._late_span(span)
        return span

    def __enter__(self) -> SpanHandle:
        self._token = self._tracer._current.set(self)
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            if self._final is None:
                # A generator closed early (its consumer stopped) has not failed.
                self._end("success", None if isinstance(exc, GeneratorExit) else exc)
        finally:
            token = self._token
            if token is not None:
                self._token = None
                var = self._tracer._current
                try:
                    var.reset(token)
                except (ValueError, RuntimeError):
                    # Exited in another context (a generator resumed elsewhere): restore by value.
                    previous = token.old_value
                    var.set(None if previous is contextvars.Token.MISSING else previous)

    def __repr__(self) -> str:
        state = self._final.status if self._final is not None else "running"
        return f"SpanHandle({self._name!r}, span_id={self._id}, trace_id={self.trace_id}, {state})"

    def _ignored(self, what: str) -> None:
        _log.warning("obs: %s on span %r (%s) after it ended; ignored", what, self._name, self._id)
