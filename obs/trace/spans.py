"""Spans: one timed operation inside a trace, as immutable values.

Every function here returns a new `Span` and leaves the one it was given
unchanged, so a span handed to a store or an exporter never changes under it.
What a span hands out cannot change it either: attributes are a read-only
mapping (`FrozenDict`) and events a tuple. Equality is by content: the
monotonic start reading (`start_mono`) takes no part in `==`.
Times are epoch milliseconds (float); the duration comes from a monotonic
clock, and `end_time` is `start_time + duration`.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NoReturn

from obs import semconv
from obs.clock import SYSTEM_CLOCK, Clock
from obs.trace.ids import IdGenerator, RandomIdGenerator, is_valid_span_id, is_valid_trace_id

__all__ = [
    "FrozenDict",
    "Span",
    "SpanEvent",
    "SpanKind",
    "SpanStatus",
    "add_span_event",
    "create_span",
    "end_span",
    "set_span_attributes",
]

SpanStatus = Literal["running", "success", "error"]
SpanKind = Literal["internal", "client", "server", "producer", "consumer"]
_END_STATUSES = ("success", "error")
_KINDS = ("internal", "client", "server", "producer", "consumer")
_DEFAULT_IDS = RandomIdGenerator()


class FrozenDict(dict[str, Any]):
    """A dict that refuses every change: the attributes and metadata of finished spans and traces.

    It reads, compares, prints, pickles and JSON-encodes as the dict it is;
    every method that would change it raises TypeError saying how to make a
    changed copy instead.
    """

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Refuse the change: a finished span's or trace's mappings never change (TypeError)."""
        raise TypeError(
            "the attributes and metadata of a finished span or trace are read-only; make a changed "
            "copy instead ({**mapping, key: value}, set_span_attributes(span, {...}))"
        )

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        return (FrozenDict, (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self


@dataclass(frozen=True, slots=True)
class SpanEvent:
    """Something that happened at one instant during a span (attributes read-only)."""

    name: str
    timestamp: float
    attributes: Mapping[str, Any] = field(default_factory=FrozenDict)

    def __post_init__(self) -> None:
        if type(self.attributes) is not FrozenDict:
            object.__setattr__(self, "attributes", FrozenDict(self.attributes))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of this event."""
        return {"name": self.name, "timestamp": self.timestamp, "attributes": dict(self.attributes)}


@dataclass(frozen=True, slots=True)
class Span:
    """One timed operation: ids, name, times in epoch ms, status, attributes, events.

    `end_time` and `duration` are None while the span runs. `start_mono` is the
    monotonic reading at start (ms), used only to measure the duration and
    left out of `==`. Attributes come as a read-only mapping, events as a tuple.
    """

    id: str
    trace_id: str
    parent_id: str | None
    name: str
    start_time: float
    end_time: float | None = None
    duration: float | None = None
    status: SpanStatus = "running"
    attributes: Mapping[str, Any] = field(default_factory=FrozenDict)
    events: tuple[SpanEvent, ...] = ()
    kind: SpanKind = "internal"
    start_mono: float = field(default=0.0, compare=False)

    def __post_init__(self) -> None:
        # Values built by the tracer's handles come frozen already and skip this (see handles.py).
        if type(self.attributes) is not FrozenDict:
            object.__setattr__(self, "attributes", FrozenDict(self.attributes))
        if type(self.events) is not tuple:
            object.__setattr__(self, "events", tuple(self.events))

    @property
    def is_running(self) -> bool:
        """True until the span is ended."""
        return self.status == "running"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of this span (the monotonic reading is left out)."""
        return {
            "id": self.id,
            "trace_id": self.trace_id,
            "parent_id": self.parent_id,
            "name": self.name,
            "kind": self.kind,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration": self.duration,
            "status": self.status,
            "attributes": dict(self.attributes),
            "events": [event.to_dict() for event in self.events],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Span:
        """Rebuild a span from `to_dict()` output."""
        return cls(
            id=data["id"],
            trace_id=data["trace_id"],
            parent_id=data.get("parent_id"),
            name=data["name"],
            start_time=float(data["start_time"]),
            end_time=None if data.get("end_time") is None else float(data["end_time"]),
            duration=None if data.get("duration") is None else float(data["duration"]),
            status=data.get("status", "running"),
            attributes=dict(data.get("attributes") or {}),
            events=tuple(
                SpanEvent(e["name"], float(e["timestamp"]), dict(e.get("attributes") or {}))
                for e in data.get("events") or []
            ),
            kind=data.get("kind", "internal"),
        )


def create_span(
    name: str,
    trace_id: str,
    parent_id: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: SpanKind = "internal",
    clock: Clock = SYSTEM_CLOCK,
    id_generator: IdGenerator = _DEFAULT_IDS,
    span_id: str | None = None,
) -> Span:
    """Start a new running span in trace `trace_id`, under `parent_id` if given.

    Raises ValueError for an empty name, malformed ids or an unknown kind.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"create_span: name must be a non-empty string, got {name!r}")
    if not is_valid_trace_id(trace_id):
        raise ValueError(
            f"create_span: trace_id must be 32 lowercase hex characters, not all zeros; "
            f"got {trace_id!r}"
        )
    if parent_id is not None and not is_valid_span_id(parent_id):
        raise ValueError(
            f"create_span: parent_id must be 16 lowercase hex characters or None; got {parent_id!r}"
        )
    if kind not in _KINDS:
        raise ValueError(f"create_span: kind must be one of {_KINDS}, got {kind!r}")
    if span_id is None:
        span_id = id_generator.span_id()
    elif not is_valid_span_id(span_id):
        raise ValueError(f"create_span: span_id must be 16 lowercase hex characters; got {span_id!r}")
    return Span(
        id=span_id,
        trace_id=trace_id,
        parent_id=parent_id,
        name=name,
        start_time=clock.time_ms(),
        attributes=dict(attributes) if attributes else {},
        kind=kind,
        start_mono=clock.monotonic_ms(),
    )


def add_span_event(
    span: Span,
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    timestamp: float | None = None,
) -> Span:
    """Return a copy of `span` with one more event named `name`, stamped now.

    Raises ValueError for an empty name or a NaN/negative timestamp.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"add_span_event: name must be a non-empty string, got {name!r}")
    if timestamp is None:
        timestamp = clock.time_ms()
    elif not (isinstance(timestamp, int | float) and math.isfinite(timestamp) and timestamp >= 0):
        raise ValueError(f"add_span_event: timestamp must be finite epoch ms >= 0, got {timestamp!r}")
    event = SpanEvent(name, float(timestamp), dict(attributes) if attributes else {})
    return replace(span, events=(*span.events, event))


def set_span_attributes(span: Span, attrs: Mapping[str, Any]) -> Span:
    """Return a copy of `span` whose attributes are updated with `attrs`."""
    if not isinstance(attrs, Mapping):
        raise ValueError(f"set_span_attributes: attrs must be a mapping, got {type(attrs).__name__}")
    return replace(span, attributes={**span.attributes, **attrs})


def _error_type(error: BaseException | str) -> str:
    if isinstance(error, BaseException):
        return type(error).__name__
    return semconv.ERROR_TYPE_OTHER


def error_records(
    error: BaseException | str, error_type: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The span attributes and `exception` event attributes that record `error`.

    `error_type` (an `error.type` already on the span) wins over the one derived
    from the error, so a more precise type set earlier (an HTTP status) is kept.
    """
    derived = _error_type(error)
    message = str(error) or derived
    attributes = {semconv.ERROR_TYPE: error_type or derived, semconv.ERROR_MESSAGE: message}
    event_attrs: dict[str, Any] = {
        semconv.EXCEPTION_TYPE: derived if isinstance(error, BaseException) else error_type or derived,
        semconv.EXCEPTION_MESSAGE: message,
    }
    if isinstance(error, BaseException) and error.__traceback__ is not None:
        event_attrs[semconv.EXCEPTION_STACKTRACE] = "".join(
            traceback.format_exception(type(error), error, error.__traceback__)
        )
    return attributes, event_attrs


def end_span(
    span: Span,
    status: SpanStatus = "success",
    error: BaseException | str | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> Span:
    """Return `span` ended now with `status`; an `error` forces status "error".

    The error (an exception or a message) is recorded as `error.type` and
    `error.message` attributes and an `exception` event. Ending a span that is
    already ended raises ValueError.
    """
    if span.status != "running":
        raise ValueError(
            f"end_span: span {span.name!r} ({span.id}) already ended with status "
            f"{span.status!r}; end a span once"
        )
    if status not in _END_STATUSES:
        raise ValueError(f"end_span: status must be 'success' or 'error', got {status!r}")
    duration = max(0.0, clock.monotonic_ms() - span.start_mono)
    attributes = span.attributes
    events = span.events
    if error is not None:
        status = "error"
        error_attrs, event_attrs = error_records(error, span.attributes.get(semconv.ERROR_TYPE))
        attributes = {**attributes, **error_attrs}
        events = (*events, SpanEvent(semconv.EVENT_EXCEPTION, span.start_time + duration, event_attrs))
    elif status == "error" and semconv.ERROR_TYPE not in attributes:
        attributes = {**attributes, semconv.ERROR_TYPE: semconv.ERROR_TYPE_OTHER}
    return replace(
        span,
        end_time=span.start_time + duration,
        duration=duration,
        status=status,
        attributes=attributes,
        events=events,
    )
