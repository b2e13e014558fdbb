"""Finished spans and traces cannot be changed through what they hand out, and compare by content."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest

from obs.clock import FakeClock
from obs.storage.memory import TraceStore
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.ids import SequentialIdGenerator
from obs.trace.spans import FrozenDict, Span, SpanEvent, create_span, set_span_attributes
from obs.trace.tracer import Tracer
from obs.trace.traces import Trace
from tests.trace.support import Collected


@pytest.fixture
def finished() -> Trace:
    clock = FakeClock(start_ms=1_700_000_000_000.0)
    out = Collected()
    tracer = Tracer(clock=clock, id_generator=SequentialIdGenerator(), processors=[out])
    with tracer.start_span("root", {"user": "u1", "tags": ["a", "b"]}) as root:
        root.add_event("first_token", {"n": 1})
        with tracer.start_span("child", {"k": 2.5}, kind="client"):
            clock.advance(12.5)
    (trace,) = out
    return trace


def test_attributes_metadata_and_event_attributes_refuse_every_change(finished: Trace) -> None:
    span = finished.spans[0]
    mappings = [span.attributes, finished.metadata, span.events[0].attributes]
    for mapping in mappings:
        assert isinstance(mapping, FrozenDict)
        before = dict(mapping)
        with pytest.raises(TypeError, match="read-only"):
            mapping["new"] = 1  # type: ignore[index]
        with pytest.raises(TypeError, match="read-only"):
            del mapping[next(iter(mapping))]  # type: ignore[attr-defined]
        for change in ("clear", "popitem"):
            with pytest.raises(TypeError, match="read-only"):
                getattr(mapping, change)()
        with pytest.raises(TypeError, match="read-only"):
            mapping.update(x=1)  # type: ignore[attr-defined]
        with pytest.raises(TypeError, match="read-only"):
            mapping.setdefault("x", 1)  # type: ignore[attr-defined]
        with pytest.raises(TypeError, match="read-only"):
            mapping.pop("x", None)  # type: ignore[attr-defined]
        with pytest.raises(TypeError, match="read-only"):
            mapping |= {"x": 1}  # type: ignore[operator]
        assert dict(mapping) == before


def test_spans_and_events_are_tuples_and_fields_are_frozen(finished: Trace) -> None:
    assert isinstance(finished.spans, tuple) and isinstance(finished.spans[0].events, tuple)
    with pytest.raises(AttributeError):
        finished.spans.append(finished.spans[0])  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        finished.spans[0].events.append(finished.spans[0].events[0])  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        finished.spans[0].name = "renamed"  # type: ignore[misc]


def test_a_stored_trace_cannot_be_changed_through_what_the_store_hands_out(finished: Trace) -> None:
    store = TraceStore()
    store.add(finished)
    got = store.get(finished.id)
    assert got is not None
    with pytest.raises(TypeError):
        got.spans[0].attributes["user"] = "someone else"  # type: ignore[index]
    assert store.get(finished.id).spans[0].attributes["user"] == "u1"  # type: ignore[union-attr]


def test_values_built_by_hand_are_frozen_too_and_keep_no_link_to_their_inputs() -> None:
    attributes = {"a": 1}
    events = [SpanEvent("e", 1.0, {"x": 1})]
    span = Span("0" * 15 + "1", "0" * 31 + "1", None, "s", 1.0, attributes=attributes, events=events)  # type: ignore[arg-type]
    attributes["a"] = 2
    events.clear()
    assert span.attributes == {"a": 1} and len(span.events) == 1
    assert isinstance(span.attributes, FrozenDict) and isinstance(span.events, tuple)
    changed = set_span_attributes(span, {"b": 2})
    assert changed.attributes == {"a": 1, "b": 2} and span.attributes == {"a": 1}
    trace = Trace("0" * 31 + "1", "t", 1.0, metadata={"m": 1}, spans=[span])  # type: ignore[arg-type]
    assert isinstance(trace.metadata, FrozenDict) and trace.spans == (span,)


def test_equality_is_by_content_through_dicts_json_pickle_and_copies(finished: Trace) -> None:
    rebuilt = Trace.from_dict(json.loads(json.dumps(finished.to_dict())))
    assert rebuilt == finished  # start_mono (not serialised) takes no part
    assert pickle.loads(pickle.dumps(finished)) == finished
    assert copy.deepcopy(finished) == finished and copy.copy(finished) == finished
    a = create_span("s", "0" * 31 + "1", span_id="0" * 15 + "1", clock=FakeClock(start_ms=5.0))
    b = create_span("s", "0" * 31 + "1", span_id="0" * 15 + "1", clock=FakeClock(start_ms=5.0))
    object.__setattr__(b, "start_mono", 99.0)
    assert a == b


def test_a_trace_read_back_from_sqlite_equals_the_one_written(finished: Trace, tmp_path: Path) -> None:
    with SqliteTraceStore(tmp_path / "traces.db") as store:
        store.add(finished)
    with SqliteTraceStore(tmp_path / "traces.db") as reopened:
        assert reopened.get(finished.id) == finished


def test_with_the_real_clock_duration_is_exactly_end_minus_start_and_otlp_round_trips() -> None:
    from obs.export.otlp import to_otlp
    from obs.export.otlp_decode import from_otlp

    out = Collected()
    tracer = Tracer(processors=[out])  # the system clock: sums of floats that round
    for i in range(200):
        with tracer.start_span(f"t{i}"), tracer.start_span("child"):
            pass
    for trace in out:
        for span in trace.spans:
            assert span.duration == span.end_time - span.start_time  # type: ignore[operator]
    assert from_otlp(to_otlp(list(out))) == list(out)
