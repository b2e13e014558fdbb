"""Building finished Span, SpanEvent and Trace values fast: for the tracer's handles and the OTLP decoder.

The dataclasses are frozen, so their own `__init__` sets each field through
`object.__setattr__` and then runs `__post_init__` to freeze what it was
given. Builders that already hold fields nobody else can write (the
handles' own dict and list, a decoded span's fresh values) skip all that: a
value is filled in on a draft, a plain class with the same slots
(`SpanDraft`, `EventDraft`, `TraceDraft`), with plain attribute stores, and
then becomes the dataclass by `__class__` assignment, which CPython allows
between classes with the same slots. `obs.export.otlp_decode` fills span
and trace drafts inline and calls `new_event`; the tracer calls `new_span`,
`new_event` and `new_trace`.

The fields each draft is filled with are written out below and checked at
import against the dataclasses (names, order and slots, and one probe
assignment of `__class__`), so a field added, removed or renamed fails at
import with a RuntimeError naming what to update, never in a request.
Measured with `python -m obs.trace._build` (2 busy cores, median of 7
interleaved rounds, two runs): a Span with 12 attributes and one event takes
1.2 µs this way against 5.0 µs through the constructor (4.2x), and half the
time of the slot descriptors' setters the tracer used before.
"""

from __future__ import annotations

from typing import Any

from obs.trace.spans import FrozenDict, Span, SpanEvent, SpanKind, SpanStatus
from obs.trace.traces import Trace, TraceStatus

__all__ = [
    "EVENT_FIELDS", "SPAN_FIELDS", "TRACE_FIELDS", "EventDraft", "SpanDraft", "TraceDraft", "draft_class",
    "new_event", "new_span", "new_trace",
]  # fmt: skip

# The fields every builder of these values sets, in the dataclasses' order.
SPAN_FIELDS = ("id", "trace_id", "parent_id", "name", "start_time", "end_time", "duration", "status",
               "attributes", "events", "kind", "start_mono")  # fmt: skip
EVENT_FIELDS = ("name", "timestamp", "attributes")
TRACE_FIELDS = ("id", "name", "start_time", "end_time", "duration", "status", "metadata", "spans",
                "start_mono")  # fmt: skip


def draft_class(cls: type, fields: tuple[str, ...]) -> type:
    """A plain class with the slots of frozen, slotted dataclass `cls`, whose fields must be `fields`.

    An instance filled in with a value for every one of `fields` becomes a
    `cls` by `draft.__class__ = cls`. Raises RuntimeError when `cls` does not
    have exactly `fields` (in that order) as its fields and slots, or when
    CPython refuses the `__class__` assignment: the builders must then be
    updated to set every field.
    """
    dataclass_fields = tuple(getattr(cls, "__dataclass_fields__", ()))
    slots = tuple(getattr(cls, "__slots__", ()))
    if dataclass_fields != fields or sorted(slots) != sorted(fields):
        raise RuntimeError(
            f"{cls.__name__} has the fields {dataclass_fields} (slots {slots}), but obs.trace._build "
            f"builds it from exactly {fields}: update the builders (obs.trace._build, "
            "obs.export.otlp_decode) to set every field"
        )
    draft = type(f"{cls.__name__}Draft", (), {"__slots__": slots, "__module__": __name__})
    probe = draft()
    for name in fields:
        setattr(probe, name, None)
    try:
        probe.__class__ = cls
    except TypeError as exc:
        raise RuntimeError(
            f"a draft with the slots of {cls.__name__} cannot become one ({exc}): obs.trace._build "
            "needs a frozen dataclass with slots=True and no other base"
        ) from None
    return draft


SpanDraft = draft_class(Span, SPAN_FIELDS)
EventDraft = draft_class(SpanEvent, EVENT_FIELDS)
TraceDraft = draft_class(Trace, TRACE_FIELDS)


def new_event(name: str, timestamp: float, attributes: dict[str, Any]) -> SpanEvent:
    """A SpanEvent owning `attributes` (which the caller must not write to afterwards)."""
    event: Any = EventDraft()
    event.name = name
    event.timestamp = timestamp
    event.attributes = FrozenDict(attributes)
    event.__class__ = SpanEvent
    return event  # type: ignore[no-any-return]


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
    span: Any = SpanDraft()
    span.id = span_id
    span.trace_id = trace_id
    span.parent_id = parent_id
    span.name = name
    span.start_time = start_time
    span.end_time = end_time
    span.duration = end_time - start_time
    span.status = status
    span.attributes = FrozenDict(attributes)
    span.events = tuple(events)
    span.kind = kind
    span.start_mono = start_mono
    span.__class__ = Span
    return span  # type: ignore[no-any-return]


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
    trace: Any = TraceDraft()
    trace.id = trace_id
    trace.name = name
    trace.start_time = start_time
    trace.end_time = end_time
    trace.duration = end_time - start_time
    trace.status = status
    trace.metadata = FrozenDict(metadata)
    trace.spans = tuple(spans)
    trace.start_mono = start_mono
    trace.__class__ = Trace
    return trace  # type: ignore[no-any-return]


if __name__ == "__main__":  # drafts against the constructor, medians of interleaved rounds
    import statistics
    import timeit

    attrs = {f"gen_ai.attribute.{i}": i for i in range(12)}
    events = [SpanEvent("first_token", 1.0, {})]

    def drafted() -> Span:
        return new_span("a" * 16, "b" * 32, None, "chat", 1.0, 2.0, "success", attrs, events, "client", 0.0)

    def constructed() -> Span:
        return Span("a" * 16, "b" * 32, None, "chat", 1.0, 3.0, 2.0, "success", attrs, events, "client", 0.0)

    n = 20000
    rounds = [(timeit.timeit(drafted, number=n), timeit.timeit(constructed, number=n)) for _ in range(7)]
    d = statistics.median(r[0] for r in rounds) / n * 1e6
    c = statistics.median(r[1] for r in rounds) / n * 1e6
    print(f"a Span with 12 attributes and an event: draft {d:.2f} µs, constructor {c:.2f} µs, {c / d:.1f}x")
