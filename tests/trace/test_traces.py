"""Tests for obs.trace.traces: traces as values, and the hierarchy helpers on hand-made trees."""

from __future__ import annotations

import dataclasses

import pytest

from obs.clock import FakeClock
from obs.trace.ids import SequentialIdGenerator
from obs.trace.spans import Span, create_span, end_span
from obs.trace.traces import (
    SpanNode,
    Trace,
    add_span_to_trace,
    children_of,
    create_trace,
    critical_path,
    critical_path_duration,
    end_trace,
    root_spans,
    span_depth,
    span_tree,
)

T0 = 1_700_000_000_000.0
TRACE = "0" * 31 + "1"
OTHER_TRACE = "0" * 31 + "2"


def sid(n: int) -> str:
    return f"{n:016x}"


def span(n: int, parent: int | None, start: float, end: float, status: str = "success") -> Span:
    """An ended span `n` under `parent`, from T0+start to T0+end."""
    return Span(
        id=sid(n),
        trace_id=TRACE,
        parent_id=None if parent is None else sid(parent),
        name=f"s{n}",
        start_time=T0 + start,
        end_time=T0 + end,
        duration=end - start,
        status=status,  # type: ignore[arg-type]
    )


def trace_of(*spans: Span) -> Trace:
    return Trace(id=TRACE, name="t", start_time=T0, spans=list(spans))


# root [0,100] with children A [10,40], B [30,70], D [80,90]; B has child C [35,60].
ROOT = span(1, None, 0, 100)
A = span(2, 1, 10, 40)
B = span(3, 1, 30, 70)
C = span(4, 3, 35, 60)
D = span(5, 1, 80, 90)
EXAMPLE = trace_of(D, C, ROOT, B, A)  # stored out of order on purpose


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ms=T0)


def test_create_trace(clock: FakeClock) -> None:
    clock.advance(3)
    trace = create_trace("chat", {"user": "u1"}, clock=clock, id_generator=SequentialIdGenerator())
    assert trace == Trace(
        id=TRACE, name="chat", start_time=T0 + 3, metadata={"user": "u1"}, spans=[], start_mono=3.0
    )
    assert create_trace("x", trace_id=OTHER_TRACE, clock=clock).id == OTHER_TRACE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"name": ""}, "name must be a non-empty string"), ({"trace_id": "0" * 32}, "trace_id must be 32")],
)
def test_create_trace_refuses_bad_input(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"name": "t", **kwargs}
    with pytest.raises(ValueError, match=message):
        create_trace(**args)  # type: ignore[arg-type]


def test_add_span_to_trace_returns_a_new_trace() -> None:
    empty = trace_of()
    one = add_span_to_trace(empty, ROOT)
    two = add_span_to_trace(one, A)
    assert empty.spans == () and one.spans == (ROOT,) and two.spans == (ROOT, A)


def test_add_span_to_trace_replaces_a_span_with_the_same_id(clock: FakeClock) -> None:
    running = create_span("s", TRACE, clock=clock, span_id=sid(1))
    trace = add_span_to_trace(add_span_to_trace(trace_of(), running), A)
    clock.advance(5)
    ended = end_span(running, clock=clock)
    replaced = add_span_to_trace(trace, ended)
    assert replaced.spans == (ended, A)
    assert trace.spans == (running, A)
    assert replaced.span(sid(1)) is ended and replaced.span(sid(99)) is None


def test_add_span_to_trace_refuses_another_traces_span() -> None:
    foreign = dataclasses.replace(A, trace_id=OTHER_TRACE)
    with pytest.raises(ValueError, match=f"belongs to trace {OTHER_TRACE}, not {TRACE}"):
        add_span_to_trace(trace_of(), foreign)


def test_end_trace_success_and_error(clock: FakeClock) -> None:
    trace = create_trace("t", clock=clock, trace_id=TRACE)
    clock.advance(100)
    ok = end_trace(add_span_to_trace(trace, A), clock=clock)
    assert (ok.status, ok.duration, ok.end_time) == ("success", 100.0, T0 + 100)
    failed = end_trace(add_span_to_trace(trace, span(9, None, 0, 5, status="error")), clock=clock)
    assert failed.status == "error"
    assert trace.status == "running"


def test_end_trace_runs_to_the_latest_span_end(clock: FakeClock) -> None:
    trace = create_trace("t", clock=clock, trace_id=TRACE)
    clock.advance(50)
    ended = end_trace(add_span_to_trace(trace, ROOT), clock=clock)  # ROOT ends at T0+100
    assert (ended.end_time, ended.duration) == (T0 + 100, 100.0)


def test_end_trace_twice_is_refused(clock: FakeClock) -> None:
    ended = end_trace(create_trace("conv", clock=clock, trace_id=TRACE), clock=clock)
    with pytest.raises(ValueError, match=r"trace 'conv' .* already ended; end a trace once"):
        end_trace(ended, clock=clock)


def test_trace_round_trips_through_a_dict() -> None:
    trace = dataclasses.replace(
        EXAMPLE, metadata={"m": 1}, end_time=T0 + 100, duration=100.0, status="success"
    )
    assert Trace.from_dict(trace.to_dict()) == trace


def test_root_spans_and_children_in_start_order() -> None:
    orphan = span(7, 42, 5, 6)  # parent not in the trace: counts as a root
    trace = trace_of(*EXAMPLE.spans, orphan)
    assert root_spans(trace) == [ROOT, orphan]
    assert children_of(EXAMPLE, sid(1)) == [A, B, D]
    assert children_of(EXAMPLE, sid(3)) == [C]
    assert children_of(EXAMPLE, sid(5)) == []


def test_span_depth() -> None:
    assert [span_depth(EXAMPLE, sid(n)) for n in (1, 2, 3, 4, 5)] == [0, 1, 1, 2, 1]
    with pytest.raises(KeyError, match="not in trace"):
        span_depth(EXAMPLE, sid(99))


def test_span_tree_is_depth_first_in_start_order() -> None:
    assert span_tree(EXAMPLE) == [
        SpanNode(ROOT, 0),
        SpanNode(A, 1),
        SpanNode(B, 1),
        SpanNode(C, 2),
        SpanNode(D, 1),
    ]
    assert span_tree(trace_of()) == []


def test_span_tree_keeps_spans_caught_in_a_cycle() -> None:
    x, y = span(11, 12, 0, 10), span(12, 11, 5, 8)
    tree = span_tree(trace_of(ROOT, y, x))
    assert [(node.span.id, node.depth) for node in tree] == [(sid(1), 0), (sid(11), 0), (sid(12), 1)]
    assert span_depth(trace_of(x, y), sid(11)) == 1  # stops at the cycle instead of looping


def test_critical_path_on_a_hand_computed_tree() -> None:
    # From the end backwards: the root alone 90-100, D 80-90, the root 70-80, B 60-70,
    # C 35-60, B 30-35, A 10-30 (B starts at 30 and takes over), the root 0-10.
    path = [(s.name, share) for s, share in critical_path(EXAMPLE)]
    assert path == [
        ("s1", 10.0),
        ("s2", 20.0),
        ("s3", 5.0),
        ("s4", 25.0),
        ("s3", 10.0),
        ("s1", 10.0),
        ("s5", 10.0),
        ("s1", 10.0),
    ]
    assert critical_path_duration(EXAMPLE) == 100.0


def test_critical_path_of_a_child_outliving_its_parent_is_cut_at_the_parent_end() -> None:
    trace = trace_of(span(1, None, 0, 50), span(2, 1, 20, 80))
    assert [(s.name, share) for s, share in critical_path(trace)] == [("s1", 20.0), ("s2", 30.0)]


def test_critical_path_of_nothing() -> None:
    assert critical_path(trace_of()) == []
    assert critical_path_duration(trace_of()) == 0.0
