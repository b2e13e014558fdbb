"""The one way finished Span, SpanEvent and Trace values are built fast (`obs.trace._build`).

The tracer's handles call `new_span`, `new_event` and `new_trace`; the OTLP
decoder fills the same drafts inline. What they build must be the frozen
dataclasses themselves, equal field for field to what the constructors
build, and just as frozen; and a dataclass whose fields are not exactly the
ones the builders set is refused with a RuntimeError naming what to update.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from obs.trace import _build
from obs.trace._build import draft_class, new_event, new_span, new_trace
from obs.trace.spans import FrozenDict, Span, SpanEvent, set_span_attributes
from obs.trace.traces import Trace

START = 1_796_130_706_647.464


ATTRIBUTES = {"gen_ai.operation.name": "chat", "n": 3, "scores": [0.5, 0.25]}


def _built() -> tuple[Trace, Span, SpanEvent]:
    attributes = dict(ATTRIBUTES)
    event = new_event("first_token", START + 1.0, {"index": 0})
    span = new_span("b7ad6b7169203331", "0af7651916cd43dd8448eb211c80319c", None, "chat smollm2", START, 0.1,
                    "success", attributes, [event], "client", 12.5)  # fmt: skip
    trace = new_trace("0af7651916cd43dd8448eb211c80319c", "chat smollm2", START, START + 0.2, "success",
                      {"service.name": "svc"}, [span], 12.5)  # fmt: skip
    return trace, span, event


def test_built_values_equal_what_the_constructors_build_field_for_field() -> None:
    trace, span, event = _built()
    assert (type(trace), type(span), type(event)) == (Trace, Span, SpanEvent)
    assert event == SpanEvent("first_token", START + 1.0, {"index": 0})
    end = START + 0.1
    assert span == Span("b7ad6b7169203331", "0af7651916cd43dd8448eb211c80319c", None, "chat smollm2", START,
                        end, end - START, "success", ATTRIBUTES, [event], "client")  # fmt: skip
    assert [getattr(span, f.name) for f in dataclasses.fields(Span)][-1] == 12.5  # start_mono, set too
    assert span.end_time - span.start_time == span.duration  # to the last bit
    assert trace == Trace("0af7651916cd43dd8448eb211c80319c", "chat smollm2", START, START + 0.2,
                          (START + 0.2) - START, "success", {"service.name": "svc"}, [span])  # fmt: skip
    assert trace.start_mono == 12.5


def test_built_values_are_as_frozen_as_constructed_ones() -> None:
    trace, span, event = _built()
    assert type(span.attributes) is FrozenDict and type(event.attributes) is FrozenDict
    assert type(trace.metadata) is FrozenDict and type(trace.spans) is tuple and type(span.events) is tuple
    for value, field in ((span, "name"), (event, "name"), (trace, "status")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, field, "changed")
    with pytest.raises(TypeError, match="read-only"):
        span.attributes["n"] = 4  # type: ignore[index]
    assert pickle.loads(pickle.dumps(trace)) == trace and copy.deepcopy(trace) == trace
    assert dataclasses.replace(span, name="renamed").name == "renamed"
    assert set_span_attributes(span, {"extra": 1}).attributes["extra"] == 1
    assert not hasattr(span, "__dict__") and not hasattr(trace, "__dict__")


def test_the_builders_own_what_they_were_given_as_frozen_copies() -> None:
    attributes, events = {"k": "v"}, [new_event("e", START, {})]
    span = new_span("b7ad6b7169203331", "0af7651916cd43dd8448eb211c80319c", None, "op", START, 1.0, "success",
                    attributes, events, "internal", 0.0)  # fmt: skip
    events.append(new_event("later", START, {}))
    assert span.events == (events[0],)  # the list was copied into a tuple
    assert dict(span.attributes) == {"k": "v"}


def test_each_field_set_on_a_draft_is_read_back_from_that_field_of_the_dataclass() -> None:
    for cls, fields, draft in ((Span, _build.SPAN_FIELDS, _build.SpanDraft),
                               (SpanEvent, _build.EVENT_FIELDS, _build.EventDraft),
                               (Trace, _build.TRACE_FIELDS, _build.TraceDraft)):  # fmt: skip
        value = draft()
        for position, name in enumerate(fields):
            setattr(value, name, f"value {position}")
        value.__class__ = cls
        assert [getattr(value, name) for name in fields] == [f"value {i}" for i in range(len(fields))]


@dataclasses.dataclass(frozen=True, slots=True)
class _Point:
    x: int
    y: int


def test_a_draft_becomes_its_dataclass() -> None:
    draft = draft_class(_Point, ("x", "y"))
    point = draft()
    point.x, point.y = 1, 2
    point.__class__ = _Point
    assert point == _Point(1, 2) and type(point) is _Point


@pytest.mark.parametrize("fields", [("x",), ("x", "y", "z"), ("y", "x"), ("x", "why")],
                         ids=["missing", "one more", "out of order", "renamed"])  # fmt: skip
def test_a_dataclass_whose_fields_the_builders_do_not_name_is_refused(fields: tuple[str, ...]) -> None:
    with pytest.raises(RuntimeError, match=r"_Point has the fields \('x', 'y'\).*to set every field"):
        draft_class(_Point, fields)


class _Base:
    __slots__ = ("extra",)


@dataclasses.dataclass(frozen=True, slots=True)
class _Derived(_Base):
    x: int


def test_a_dataclass_of_another_layout_is_refused_with_what_is_needed() -> None:
    with pytest.raises(RuntimeError, match=r"cannot become one.*slots=True and no other base"):
        draft_class(_Derived, ("x",))
    with pytest.raises(RuntimeError, match="to set every field"):
        draft_class(dataclasses.make_dataclass("Loose", ["x"], frozen=True), ("x",))  # no slots at all
