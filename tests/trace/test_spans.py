"""Tests for obs.trace.spans: immutable spans, their events, attributes, and ending them."""

from __future__ import annotations

import dataclasses

import pytest

from obs import semconv
from obs.clock import FakeClock
from obs.trace.ids import SequentialIdGenerator
from obs.trace.spans import (
    Span,
    SpanEvent,
    add_span_event,
    create_span,
    end_span,
    set_span_attributes,
)

T0 = 1_700_000_000_000.0
TRACE = "0" * 31 + "1"
PARENT = "0" * 15 + "9"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ms=T0)


def make(clock: FakeClock, name: str = "work", **kwargs: object) -> Span:
    return create_span(name, TRACE, clock=clock, id_generator=SequentialIdGenerator(), **kwargs)  # type: ignore[arg-type]


def test_create_span_fills_every_field(clock: FakeClock) -> None:
    clock.advance(7)
    span = make(clock, "retrieve", parent_id=PARENT, attributes={"k": 1}, kind="client")
    assert span == Span(
        id="0" * 15 + "1",
        trace_id=TRACE,
        parent_id=PARENT,
        name="retrieve",
        start_time=T0 + 7,
        attributes={"k": 1},
        kind="client",
        start_mono=7.0,
    )
    assert span.is_running and span.end_time is None and span.duration is None and span.events == ()


def test_create_span_copies_the_attributes(clock: FakeClock) -> None:
    attrs = {"k": 1}
    span = make(clock, attributes=attrs)
    attrs["k"] = 2
    assert span.attributes == {"k": 1}


def test_create_span_uses_a_given_span_id(clock: FakeClock) -> None:
    assert make(clock, span_id="00000000000000ab").id == "00000000000000ab"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name must be a non-empty string"),
        ({"trace_id": "0" * 32}, "trace_id must be 32 lowercase hex"),
        ({"trace_id": "xyz"}, "trace_id must be 32 lowercase hex"),
        ({"parent_id": "0" * 16}, "parent_id must be 16 lowercase hex"),
        ({"kind": "sideways"}, "kind must be one of"),
        ({"span_id": "ABC"}, "span_id must be 16 lowercase hex"),
    ],
)
def test_create_span_refuses_bad_input(clock: FakeClock, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"name": "work", "trace_id": TRACE, "clock": clock, **kwargs}
    with pytest.raises(ValueError, match=message):
        create_span(**args)  # type: ignore[arg-type]


def test_spans_are_immutable(clock: FakeClock) -> None:
    span = make(clock)
    with pytest.raises(dataclasses.FrozenInstanceError):
        span.name = "other"  # type: ignore[misc]


def test_add_span_event_returns_a_new_span(clock: FakeClock) -> None:
    span = make(clock)
    clock.advance(3)
    with_event = add_span_event(span, "first_token", {"n": 1}, clock=clock)
    assert span.events == ()
    assert with_event.events == (SpanEvent("first_token", T0 + 3, {"n": 1}),)
    later = add_span_event(with_event, "done", timestamp=T0 + 10)
    assert [e.name for e in later.events] == ["first_token", "done"]
    assert later.events[1].timestamp == T0 + 10 and later.events[1].attributes == {}


@pytest.mark.parametrize(
    ("name", "timestamp", "message"),
    [("", None, "name must be"), ("e", -1.0, "timestamp must be"), ("e", float("nan"), "timestamp must be")],
)
def test_add_span_event_refuses_bad_input(
    clock: FakeClock, name: str, timestamp: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        add_span_event(make(clock), name, timestamp=timestamp)


def test_set_span_attributes_merges_into_a_copy(clock: FakeClock) -> None:
    span = make(clock, attributes={"a": 1, "b": 2})
    updated = set_span_attributes(span, {"b": 3, "c": 4})
    assert updated.attributes == {"a": 1, "b": 3, "c": 4}
    assert span.attributes == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="attrs must be a mapping"):
        set_span_attributes(span, [("a", 1)])  # type: ignore[arg-type]


def test_end_span_measures_the_duration_on_the_monotonic_clock(clock: FakeClock) -> None:
    span = make(clock)
    clock.advance(125.5)
    ended = end_span(span, clock=clock)
    assert (ended.status, ended.duration, ended.end_time) == ("success", 125.5, T0 + 125.5)
    assert span.is_running and not ended.is_running


def test_end_span_with_an_exception_records_it(clock: FakeClock) -> None:
    span = make(clock)
    clock.advance(4)
    try:
        raise TimeoutError("server took too long")
    except TimeoutError as exc:
        ended = end_span(span, error=exc, clock=clock)
    assert ended.status == "error"
    assert ended.attributes[semconv.ERROR_TYPE] == "TimeoutError"
    assert ended.attributes[semconv.ERROR_MESSAGE] == "server took too long"
    (event,) = ended.events
    assert event.name == semconv.EVENT_EXCEPTION and event.timestamp == T0 + 4
    assert event.attributes[semconv.EXCEPTION_TYPE] == "TimeoutError"
    assert event.attributes[semconv.EXCEPTION_MESSAGE] == "server took too long"
    assert "raise TimeoutError" in event.attributes[semconv.EXCEPTION_STACKTRACE]


def test_end_span_with_a_message_uses_the_other_error_type(clock: FakeClock) -> None:
    ended = end_span(make(clock), status="success", error="bad gateway", clock=clock)
    assert ended.status == "error"
    assert ended.attributes[semconv.ERROR_TYPE] == semconv.ERROR_TYPE_OTHER
    assert ended.events[0].attributes == {
        semconv.EXCEPTION_TYPE: semconv.ERROR_TYPE_OTHER,
        semconv.EXCEPTION_MESSAGE: "bad gateway",
    }


def test_end_span_keeps_an_error_type_set_earlier(clock: FakeClock) -> None:
    span = make(clock, attributes={semconv.ERROR_TYPE: "503"})
    ended = end_span(span, error=RuntimeError("loading"), clock=clock)
    assert ended.attributes[semconv.ERROR_TYPE] == "503"
    assert ended.events[0].attributes[semconv.EXCEPTION_TYPE] == "RuntimeError"


def test_end_span_with_an_empty_message_names_the_type(clock: FakeClock) -> None:
    ended = end_span(make(clock), error=KeyError(), clock=clock)
    assert ended.attributes[semconv.ERROR_MESSAGE] == "KeyError"
    assert semconv.EXCEPTION_STACKTRACE not in ended.events[0].attributes  # never raised: no traceback


def test_end_span_error_status_without_an_error(clock: FakeClock) -> None:
    ended = end_span(make(clock), status="error", clock=clock)
    assert ended.status == "error"
    assert ended.attributes == {semconv.ERROR_TYPE: semconv.ERROR_TYPE_OTHER}
    assert ended.events == ()


def test_end_span_twice_is_refused(clock: FakeClock) -> None:
    ended = end_span(make(clock, "fetch"), clock=clock)
    with pytest.raises(ValueError, match=r"span 'fetch' \(0000000000000001\) already ended.*end a span once"):
        end_span(ended, clock=clock)


def test_end_span_refuses_an_unknown_status(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="status must be 'success' or 'error'"):
        end_span(make(clock), status="running", clock=clock)


def test_span_round_trips_through_a_dict(clock: FakeClock) -> None:
    span = add_span_event(make(clock, attributes={"a": [1, 2]}, kind="server"), "e", {"x": 1}, clock=clock)
    clock.advance(2)
    ended = end_span(span, clock=clock)
    data = ended.to_dict()
    assert "start_mono" not in data
    assert data["events"] == [{"name": "e", "timestamp": T0, "attributes": {"x": 1}}]
    rebuilt = Span.from_dict(data)
    assert dataclasses.replace(rebuilt, start_mono=ended.start_mono) == ended
