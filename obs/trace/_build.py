"""Building the finished Span, SpanEvent and Trace values fast, for the tracer's handles.

The dataclasses' own `__init__` sets each field through `object.__setattr__`
(they are frozen) and then runs `__post_init__` to freeze what it was given;
the handles already own a dict and a list nobody else can write, so they
build the values slot by slot through the slot descriptors' setters, kept as
module globals, and wrap the dict and list once. The tracer builds three
values per traced request. Measured with `python -m obs.trace._build`
(2 busy cores, median of 7 rounds, two runs): building a Span with 12
attributes and one event this way takes 0.85 µs against 1.78 µs through the
constructor (2.1x faster). Field order is checked by tests/trace/test_handles.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from obs.trace.spans import FrozenDict, Span, SpanEvent, SpanKind, SpanStatus
from obs.trace.traces import Trace, TraceStatus

__all__ = ["new_event", "new_span", "new_trace", "slot_setters"]


def slot_setters(cls: type) -> tuple[Callable[[Any, Any], None], ...]:
    """The slot descriptors' setters of a frozen, slotted dataclass, in field order."""
    return tuple(cls.__dict__[name].__set__ for name in cls.__dataclass_fields__)  # type: ignore[attr-defined]


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
) = slot_setters(Span)
_set_event_name, _set_event_timestamp, _set_event_attributes = slot_setters(SpanEvent)
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
) = slot_setters(Trace)


def new_event(name: str, timestamp: float, attributes: dict[str, Any]) -> SpanEvent:
    """A SpanEvent owning `attributes` (which the caller must not write to afterwards)."""
    event = _new(SpanEvent)
    _set_event_name(event, name)
    _set_event_timestamp(event, timestamp)
    _set_event_attributes(event, FrozenDict(attributes))
    return event


def new_span(
    span_id: str,
    trace_id: str,
    parent_id: str | None,
    name: str,
    start_time: float,
    duration: float,
    status: SpanStatus,
    attributes: dict[str, Any],
    events: list[SpanEvent],
    kind: SpanKind,
    start_mono: float,
) -> Span:
    """An ended Span owning frozen copies of `attributes` and `events`.

    The end time is start + duration, and the duration stored is end - start, so the two agree
    to the last bit however the sum rounds (an exporter sending start and end loses nothing).
    """
    end_time = start_time + duration
    span = _new(Span)
    _set_span_id(span, span_id)
    _set_span_trace_id(span, trace_id)
    _set_span_parent_id(span, parent_id)
    _set_span_name(span, name)
    _set_span_start_time(span, start_time)
    _set_span_end_time(span, end_time)
    _set_span_duration(span, end_time - start_time)
    _set_span_status(span, status)
    _set_span_attributes(span, FrozenDict(attributes))
    _set_span_events(span, tuple(events))
    _set_span_kind(span, kind)
    _set_span_start_mono(span, start_mono)
    return span


def new_trace(
    trace_id: str,
    name: str,
    start_time: float,
    end_time: float,
    status: TraceStatus,
    metadata: dict[str, Any],
    spans: list[Span],
    start_mono: float,
) -> Trace:
    """An ended Trace owning frozen copies of `metadata` and `spans`."""
    trace = _new(Trace)
    _set_trace_id(trace, trace_id)
    _set_trace_name(trace, name)
    _set_trace_start_time(trace, start_time)
    _set_trace_end_time(trace, end_time)
    _set_trace_duration(trace, end_time - start_time)
    _set_trace_status(trace, status)
    _set_trace_metadata(trace, FrozenDict(metadata))
    _set_trace_spans(trace, tuple(spans))
    _set_trace_start_mono(trace, start_mono)
    return trace


if __name__ == "__main__":  # the measurement quoted in the module docstring
    import statistics
    import timeit

    attrs = {f"gen_ai.attribute.{i}": i for i in range(12)}
    events = [SpanEvent("first_token", 1.0, {})]

    def fast() -> Span:
        return new_span("a" * 16, "b" * 32, None, "chat", 1.0, 2.0, "success", attrs, events, "client", 0.0)

    def plain() -> Span:
        return Span("a" * 16, "b" * 32, None, "chat", 1.0, 3.0, 2.0, "success", attrs, events, "client", 0.0)

    n = 20000
    rounds = [(timeit.timeit(fast, number=n), timeit.timeit(plain, number=n)) for _ in range(7)]
    f = statistics.median(r[0] for r in rounds) / n * 1e6
    p = statistics.median(r[1] for r in rounds) / n * 1e6
    print(f"slot setters {f:.2f} µs, constructor {p:.2f} µs, {p / f:.1f}x")
