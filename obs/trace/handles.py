"""Span handles: the mutable side of a span while it runs.

`Tracer.start_span` and `Tracer.begin_span` hand out a `SpanHandle` (made by
`start_root_span` for a span that begins a trace, `start_child_span` for one
that joins a running trace). It takes attributes and events as plain dict
and list writes, so the hot path stays cheap, and ending it produces the
immutable `Span`, settled into its `obs.trace.core.TraceHandle`. The handle
knows its tracer only through the `TracerCore` it is given.
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import Mapping
from typing import Any

from obs import semconv
from obs.trace._build import new_event, new_span
from obs.trace.core import TraceHandle, TracerCore
from obs.trace.ids import format_traceparent
from obs.trace.spans import Span, SpanEvent, SpanKind, SpanStatus, error_records

__all__ = ["SpanHandle", "start_child_span", "start_root_span"]

_log = logging.getLogger(__name__)


def start_root_span(
    core: TracerCore,
    trace_id: str,
    parent_span_id: str | None,
    sampled: bool,
    metadata: dict[str, Any],
    name: str,
    kind: SpanKind,
    attributes: dict[str, Any],
) -> SpanHandle:
    """Start the root span of a new implicit trace, which ends when its last span does."""
    div = core.clock_div
    start_time, start_mono = core.wall_raw() / div, core.mono_raw() / div
    # An implicit trace takes its root span's time frame.
    trace = TraceHandle(
        core, trace_id, name, metadata, start_time, start_mono, parent_span_id, sampled, False
    )
    return SpanHandle(
        core, trace, trace._reserve(), core.new_span_id(), parent_span_id, name, kind, attributes,
        start_time, start_mono,
    )


def start_child_span(
    core: TracerCore, parent: SpanHandle | TraceHandle, name: str, kind: SpanKind, attributes: dict[str, Any]
) -> SpanHandle | None:
    """Start a span under `parent` (a running span, or an explicit trace's top level).

    None when `parent` is an explicit trace that has ended: the caller starts a new trace.
    """
    if type(parent) is SpanHandle:
        trace = parent._trace
        parent_id: str | None = parent._id
    else:
        trace = parent  # type: ignore[assignment]
        if trace.ended:
            return None
        parent_id = trace.parent_span_id
    div = core.clock_div
    return SpanHandle(
        core, trace, trace._reserve(), core.new_span_id(), parent_id, name, kind, attributes,
        core.wall_raw() / div, core.mono_raw() / div,
    )


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
        "_core",
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
    )

    def __init__(
        self,
        core: TracerCore,
        trace: TraceHandle,
        seq: int,
        span_id: str,
        parent_id: str | None,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        start_time: float,
        start_mono: float,
    ) -> None:
        """Internal: made by `start_root_span` / `start_child_span` (epoch ms, monotonic ms)."""
        self._core = core
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
        self._start_time = start_time
        self._start_mono = start_mono

    @property
    def span_id(self) -> str:
        """This span's id (16 lowercase hex)."""
        return self._id

    @property
    def trace_id(self) -> str:
        """The id of the trace this span belongs to."""
        return self._trace.trace_id

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
        return self._trace.sampled

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

    def update_name(self, name: str) -> None:
        """Rename the span (ignored with a warning once it has ended), as OpenTelemetry's `update_name`.

        The implicit trace this span began (its root) takes the new name too.
        ValueError for a name that is not a non-empty string.
        """
        if self._final is not None:
            self._ignored("update_name")
            return
        if not name or not isinstance(name, str):
            raise ValueError(f"update_name: name must be a non-empty string, got {name!r}")
        self._name = name
        trace = self._trace
        if self._seq == 0 and not trace._explicit:
            trace._name = name

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
            core = self._core
            timestamp = core.wall_raw() / core.clock_div
        elif isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or not (
            math.isfinite(timestamp) and timestamp >= 0
        ):
            raise ValueError(f"add_event: timestamp must be finite epoch ms >= 0, got {timestamp!r}")
        self._events.append(new_event(name, float(timestamp), dict(attributes) if attributes else {}))

    def record_error(self, error: BaseException | str) -> None:
        """Record `error` now: `error.type`/`error.message` attributes and an `exception` event.

        The span will end with status "error" whatever status `end` is given.
        """
        if self._final is not None:
            self._ignored("record_error")
            return
        attributes, event_attrs = error_records(error, self._attributes.get(semconv.ERROR_TYPE))
        self._attributes.update(attributes)
        self._events.append(SpanEvent(semconv.EVENT_EXCEPTION, self._core.time_ms(), event_attrs))
        self._error = True

    @property
    def span(self) -> Span:
        """The ended Span, or a running snapshot of this span now."""
        final = self._final
        if final is not None:
            return final
        return Span(
            id=self._id,
            trace_id=self._trace.trace_id,
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
        return format_traceparent(self._trace.trace_id, self._id, self._trace.sampled)

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
        core = self._core
        trace = self._trace
        duration = core.mono_raw() / core.clock_div - self._start_mono
        if duration < 0.0:
            duration = 0.0
        end_time = self._start_time + duration
        # Once ended, the handle refuses writes, so its dict and list become the Span's own.
        attributes = self._attributes
        events = self._events
        if error is not None:
            status = "error"
            error_attrs, event_attrs = error_records(error, attributes.get(semconv.ERROR_TYPE))
            attributes = {**attributes, **error_attrs}
            events = [*events, SpanEvent(semconv.EVENT_EXCEPTION, end_time, event_attrs)]
        elif self._error:
            status = "error"
        elif status == "error" and semconv.ERROR_TYPE not in attributes:
            attributes[semconv.ERROR_TYPE] = semconv.ERROR_TYPE_OTHER
        span = new_span(
            self._id, trace.trace_id, self._parent_id, self._name, self._start_time, duration,
            status, attributes, events, self._kind, self._start_mono,
        )
        trace._settle(self, self._seq, span)
        return span

    def __enter__(self) -> SpanHandle:
        self._token = self._core.current.set(self)
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
                var = self._core.current
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
