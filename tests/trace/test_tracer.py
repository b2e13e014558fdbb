"""Tests for obs.trace.tracer: nesting, explicit traces, threads, asyncio, errors, processors and sampling."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import pytest

from obs import semconv
from obs.clock import FakeClock
from obs.trace.core import TraceHandle
from obs.trace.handles import SpanHandle
from obs.trace.ids import SequentialIdGenerator, TraceParent, parse_traceparent
from obs.trace.processors import ProcessorStats, SimpleProcessor
from obs.trace.spans import Span, SpanEvent
from obs.trace.tracer import Tracer
from obs.trace.traces import Trace, span_tree
from tests.trace.support import Collected

T0 = 1_700_000_000_000.0
REMOTE_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
REMOTE_SPAN = "00f067aa0ba902b7"


def tid(n: int) -> str:
    return f"{n:032x}"


def sid(n: int) -> str:
    return f"{n:016x}"


class FakeStore:
    def __init__(self, fail: bool = False) -> None:
        self.traces: list[Trace] = []
        self.fail = fail

    def add(self, trace: Trace) -> None:
        if self.fail:
            raise OSError("disk full")
        self.traces.append(trace)


class FakeCollector:
    def __init__(self) -> None:
        self.decisions: list[tuple[str, float | None]] = []

    def record_sampling(self, decision: str, timestamp: float | None = None) -> None:
        self.decisions.append((decision, timestamp))


class FakeLogger:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str, str | None, str | None]] = []

    def log(
        self,
        level: str,
        message: str,
        data: Any = None,
        trace_id: str | None = None,
        span_id: str | None = None,
    ) -> None:
        self.entries.append((level, message, trace_id, span_id))


class HeadByTraceId:
    """Keeps the trace ids it is given; records every question it was asked."""

    def __init__(self, keep: set[str] | None = None, fail: bool = False) -> None:
        self.keep = keep or set()
        self.fail = fail
        self.calls: list[tuple[str, bool | None]] = []

    def should_sample(self, trace_id: str, parent_sampled: bool | None = None) -> bool:
        self.calls.append((trace_id, parent_sampled))
        if self.fail:
            raise RuntimeError("sampler bug")
        if parent_sampled is not None:
            return parent_sampled
        return trace_id in self.keep


class TailKeepsErrors:
    def __init__(self, fail: bool = False) -> None:
        self.seen: list[str] = []
        self.fail = fail

    def should_keep(self, trace: Trace) -> bool:
        self.seen.append(trace.id)
        if self.fail:
            raise RuntimeError("tail bug")
        return trace.status == "error"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ms=T0)


@pytest.fixture
def out() -> Collected:
    return Collected()


@pytest.fixture
def tracer(clock: FakeClock, out: Collected) -> Tracer:
    return Tracer(clock=clock, id_generator=SequentialIdGenerator(), processors=[out])


def shape(trace: Trace) -> list[tuple[str, str | None]]:
    """(name, parent name) of each span, in the trace's order."""
    names = {s.id: s.name for s in trace.spans}
    return [(s.name, names.get(s.parent_id) if s.parent_id else None) for s in trace.spans]


# -- nesting -------------------------------------------------------------------------------------


def test_nested_spans_become_one_trace(tracer: Tracer, clock: FakeClock, out: Collected) -> None:
    with tracer.start_span("request", {"user": "u1"}) as root:
        clock.advance(5)
        with tracer.start_span("retrieve") as retrieve:
            clock.advance(10)
            with tracer.start_span("embed", kind="client"):
                clock.advance(20)
        with tracer.start_span("generate"):
            clock.advance(30)
        assert out == []  # nothing is finished while the root runs
    (trace,) = out
    assert trace.id == tid(1) and trace.name == "request" and trace.status == "success"
    assert (trace.start_time, trace.end_time, trace.duration) == (T0, T0 + 65, 65.0)
    assert trace.metadata == {semconv.SERVICE_NAME: "obs"}
    assert shape(trace) == [
        ("request", None),
        ("retrieve", "request"),
        ("embed", "retrieve"),
        ("generate", "request"),
    ]
    assert [s.id for s in trace.spans] == [sid(1), sid(2), sid(3), sid(4)]
    assert [(s.start_time - T0, s.duration) for s in trace.spans] == [
        (0.0, 65.0),
        (5.0, 30.0),
        (15.0, 20.0),
        (35.0, 30.0),
    ]
    assert [s.kind for s in trace.spans] == ["internal", "internal", "client", "internal"]
    assert trace.spans[0].attributes == {"user": "u1"}
    assert [node.depth for node in span_tree(trace)] == [0, 1, 2, 1]
    assert root.ended and retrieve.ended


def test_handles_record_attributes_and_events(tracer: Tracer, clock: FakeClock, out: Collected) -> None:
    with tracer.start_span("chat", kind="client") as span:
        span.set_attribute(semconv.GEN_AI_REQUEST_MODEL, "smollm2")
        span.set_attributes({semconv.GEN_AI_USAGE_INPUT_TOKENS: 10, semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 3})
        span.add_event(semconv.EVENT_REQUEST_START)
        clock.advance(7)
        span.add_event(semconv.EVENT_FIRST_TOKEN, {"n": 1})
        span.add_event("custom", timestamp=T0 + 1)
        running = span.span
        assert running.status == "running" and running.end_time is None
    final = out[0].spans[0]
    assert final.attributes == {
        semconv.GEN_AI_REQUEST_MODEL: "smollm2",
        semconv.GEN_AI_USAGE_INPUT_TOKENS: 10,
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 3,
    }
    assert [(e.name, e.timestamp - T0, e.attributes) for e in final.events] == [
        (semconv.EVENT_REQUEST_START, 0.0, {}),
        (semconv.EVENT_FIRST_TOKEN, 7.0, {"n": 1}),
        ("custom", 1.0, {}),
    ]
    assert span.span is final
    # The snapshot taken while running did not change when the span went on.
    assert len(running.events) == 3 and running.status == "running"


def test_current_span_trace_id_and_traceparent(tracer: Tracer) -> None:
    assert tracer.current_span() is None and tracer.current_trace_id() is None
    assert tracer.traceparent() is None
    with tracer.start_span("outer") as outer:
        assert tracer.current_span() is outer
        with tracer.start_span("inner") as inner:
            assert tracer.current_span() is inner
            assert tracer.current_trace_id() == tid(1) == inner.trace_id
            assert tracer.traceparent() == f"00-{tid(1)}-{sid(2)}-01"
        assert tracer.current_span() is outer
    assert tracer.current_span() is None and tracer.current_trace_id() is None


def test_spans_after_a_finished_trace_begin_a_new_one(tracer: Tracer, out: Collected) -> None:
    with tracer.start_span("a"):
        pass
    with tracer.start_span("b"):
        pass
    assert [(t.id, t.name, len(t.spans)) for t in out] == [(tid(1), "a", 1), (tid(2), "b", 1)]


def test_traces_of_different_tracers_do_not_mix(clock: FakeClock) -> None:
    first, second = Collected(), Collected()
    one = Tracer(clock=clock, id_generator=SequentialIdGenerator(), processors=[first])
    two = Tracer(clock=clock, id_generator=SequentialIdGenerator(start=100), processors=[second])
    with one.start_span("a"), two.start_span("b"):
        assert two.current_span() is not None and two.current_span().parent_id is None  # type: ignore[union-attr]
    assert [len(t.spans) for t in first] == [1] and [len(t.spans) for t in second] == [1]


# -- manual spans --------------------------------------------------------------------------------


def test_begin_span_is_not_current_and_can_outlive_its_parent(
    tracer: Tracer, clock: FakeClock, out: Collected
) -> None:
    with tracer.start_span("request") as root:
        stream = tracer.begin_span("chat stream", kind="client")
        assert tracer.current_span() is root
        assert stream.parent_id == root.span_id
        clock.advance(10)
    assert out == []  # the stream still runs, so the trace is not finished
    clock.advance(40)
    ended = stream.end()
    assert ended.duration == 50.0
    (trace,) = out
    assert shape(trace) == [("request", None), ("chat stream", "request")]
    assert trace.duration == 50.0 and trace.end_time == T0 + 50


def test_begin_span_with_an_explicit_parent(tracer: Tracer, out: Collected) -> None:
    root = tracer.begin_span("root")
    child = tracer.begin_span("child", parent=root)
    grandchild = tracer.begin_span("grandchild", parent=child)
    for handle in (grandchild, child, root):
        handle.end()
    assert shape(out[0]) == [("root", None), ("child", "root"), ("grandchild", "child")]


def test_activate_makes_a_manual_span_current_without_ending_it(tracer: Tracer, out: Collected) -> None:
    root = tracer.begin_span("root")
    with tracer.activate(root):
        with tracer.start_span("child"):
            pass
        assert tracer.current_span() is root
    assert tracer.current_span() is None and not root.ended
    root.end()
    assert shape(out[0]) == [("root", None), ("child", "root")]


# -- errors --------------------------------------------------------------------------------------


def test_an_exception_ends_the_span_with_error_and_passes_through(tracer: Tracer, out: Collected) -> None:
    boom = KeyError("missing")
    with pytest.raises(KeyError) as caught, tracer.start_span("outer"), tracer.start_span("inner"):
        raise boom
    assert caught.value is boom
    (trace,) = out
    assert trace.status == "error"
    assert [s.status for s in trace.spans] == ["error", "error"]
    inner = trace.spans[1]
    assert inner.attributes[semconv.ERROR_TYPE] == "KeyError"
    assert inner.events[-1].name == semconv.EVENT_EXCEPTION
    assert "raise boom" in inner.events[-1].attributes[semconv.EXCEPTION_STACKTRACE]
    assert tracer.current_span() is None


def test_a_caught_error_in_a_child_marks_only_that_child(tracer: Tracer, out: Collected) -> None:
    with tracer.start_span("outer"):
        try:
            with tracer.start_span("flaky"):
                raise TimeoutError
        except TimeoutError:
            pass
    assert [s.status for s in out[0].spans] == ["success", "error"]
    assert out[0].status == "error"


def test_record_error_makes_the_span_end_in_error(tracer: Tracer, clock: FakeClock, out: Collected) -> None:
    with tracer.start_span("call") as span:
        clock.advance(3)
        span.record_error("HTTP 503 while loading")
        clock.advance(1)
    (final,) = out[0].spans
    assert final.status == "error"
    assert final.attributes[semconv.ERROR_TYPE] == semconv.ERROR_TYPE_OTHER
    assert final.attributes[semconv.ERROR_MESSAGE] == "HTTP 503 while loading"
    assert [(e.name, e.timestamp - T0) for e in final.events] == [(semconv.EVENT_EXCEPTION, 3.0)]


def test_end_with_error_status_or_error_value(tracer: Tracer) -> None:
    failed = tracer.begin_span("a").end(status="error")
    assert failed.status == "error" and failed.attributes == {semconv.ERROR_TYPE: semconv.ERROR_TYPE_OTHER}
    span = tracer.begin_span("b", {semconv.ERROR_TYPE: "500"})
    errored = span.end(error=RuntimeError("server error"))
    assert errored.attributes[semconv.ERROR_TYPE] == "500"
    assert errored.attributes[semconv.ERROR_MESSAGE] == "server error"
    with pytest.raises(ValueError, match="status must be 'success' or 'error'"):
        tracer.begin_span("c").end(status="running")  # type: ignore[arg-type]


def test_ending_a_span_twice_is_refused(tracer: Tracer) -> None:
    span = tracer.begin_span("fetch")
    first = span.end()
    with pytest.raises(ValueError, match=r"span 'fetch' \(0000000000000001\) already ended .*once"):
        span.end()
    assert span.span is first


def test_ending_inside_the_block_is_not_a_second_end(tracer: Tracer, out: Collected) -> None:
    with tracer.start_span("early") as span:
        span.end(status="error")
    assert out[0].spans[0].status == "error"


def test_writes_after_end_are_ignored(tracer: Tracer) -> None:
    span = tracer.begin_span("done", {"a": 1})
    final = span.end()
    span.set_attribute("b", 2)
    span.set_attributes({"c": 3})
    span.add_event("late")
    span.record_error("late")
    assert final.attributes == {"a": 1} and final.events == () and final.status == "success"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "span name must be a non-empty string"),
        ({"name": "x", "kind": "sideways"}, "span kind must be one of"),
        ({"name": "x", "parent": "00-abc"}, "parent must be a SpanHandle, TraceHandle or TraceParent, got"),
    ],
)
def test_start_span_refuses_bad_arguments(tracer: Tracer, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tracer.start_span(**kwargs)
    assert tracer.current_span() is None


def test_add_event_refuses_an_empty_name(tracer: Tracer) -> None:
    with pytest.raises(ValueError, match="add_event: name must be a non-empty string"):
        tracer.begin_span("x").add_event("")


def test_update_name_renames_a_span_and_the_implicit_trace_it_began(tracer: Tracer, out: Collected) -> None:
    root = tracer.begin_span("chat")
    child = tracer.begin_span("tool", parent=root)
    root.update_name("chat model-a")
    child.update_name("tool lookup")
    with pytest.raises(ValueError, match="update_name: name must be a non-empty string"):
        root.update_name("")
    child.end()
    root.end()
    root.update_name("too late")  # ignored with a warning once ended
    (trace,) = out
    assert trace.name == "chat model-a"
    assert [s.name for s in trace.spans] == ["chat model-a", "tool lookup"]


def test_update_name_leaves_an_explicit_trace_its_own_name(tracer: Tracer, out: Collected) -> None:
    trace = tracer.begin_trace("conversation")
    span = tracer.begin_span("chat", parent=trace)
    span.update_name("chat model-a")
    span.end()
    tracer.end_trace(trace)
    assert out[0].name == "conversation" and out[0].spans[0].name == "chat model-a"


# -- explicit traces -----------------------------------------------------------------------------


def test_explicit_trace_gathers_top_level_spans(tracer: Tracer, clock: FakeClock, out: Collected) -> None:
    handle = tracer.begin_trace("conversation", {semconv.GEN_AI_CONVERSATION_ID: "c1"})
    assert tracer.current_trace_id() == handle.trace_id == tid(1)
    assert tracer.current_span() is None
    for turn in range(3):
        clock.advance(10)
        with tracer.start_span(f"turn {turn}"), tracer.start_span("chat"):
            clock.advance(5)
    assert out == []  # top-level spans ending do not end an explicit trace
    handle.set_metadata("turns", 3)
    clock.advance(1)
    trace = tracer.end_trace(handle)
    assert out == [trace]
    assert trace.name == "conversation" and trace.status == "success"
    assert trace.metadata == {semconv.SERVICE_NAME: "obs", semconv.GEN_AI_CONVERSATION_ID: "c1", "turns": 3}
    assert (trace.start_time, trace.duration) == (T0, 46.0)
    assert shape(trace) == [
        ("turn 0", None),
        ("chat", "turn 0"),
        ("turn 1", None),
        ("chat", "turn 1"),
        ("turn 2", None),
        ("chat", "turn 2"),
    ]
    assert tracer.current_trace_id() is None
    assert handle.ended and handle.trace is trace


def test_explicit_trace_as_a_context_manager(tracer: Tracer, out: Collected) -> None:
    with tracer.begin_trace("job") as handle:
        with tracer.start_span("step"):
            pass
        assert isinstance(handle, TraceHandle)
    assert [t.name for t in out] == ["job"] and out[0].status == "success"
    with pytest.raises(ZeroDivisionError), tracer.begin_trace("failing job"):
        1 / 0  # noqa: B018
    assert out[1].status == "error" and out[1].spans == ()


def test_ending_an_explicit_trace_twice_is_refused(tracer: Tracer) -> None:
    handle = tracer.begin_trace("conv")
    handle.end()
    with pytest.raises(ValueError, match=r"end_trace: trace 'conv' .* already ended"):
        tracer.end_trace(handle)
    with pytest.raises(ValueError, match="expected a TraceHandle, got str"):
        tracer.end_trace("conv")  # type: ignore[arg-type]


def test_spans_still_running_when_the_trace_ends_are_left_out_and_counted(
    clock: FakeClock, out: Collected
) -> None:
    logger = FakeLogger()
    tracer = Tracer(clock=clock, id_generator=SequentialIdGenerator(), processors=[out], logger=logger)
    handle = tracer.begin_trace("conv")
    done = tracer.begin_span("done")
    late = tracer.begin_span("late")
    done.end()
    assert handle.running_spans == 1
    trace = handle.end()
    assert [s.name for s in trace.spans] == ["done"]
    late.end()
    assert tracer.dropped_spans == 1
    assert logger.entries[-1][0] == "warn" and logger.entries[-1][2:] == (tid(1), sid(2))
    assert len(out) == 1


def test_a_running_snapshot_of_an_explicit_trace(tracer: Tracer) -> None:
    handle = tracer.begin_trace("conv")
    with tracer.start_span("one"):
        pass
    snapshot = handle.trace
    assert snapshot.status == "running" and [s.name for s in snapshot.spans] == ["one"]
    assert handle.metadata == {semconv.SERVICE_NAME: "obs"}


def test_an_explicit_trace_ended_elsewhere_no_longer_gathers_spans(tracer: Tracer, out: Collected) -> None:
    handle = tracer.begin_trace("conv")
    # Ended from another context, so this context still holds the handle.
    contextvars.Context().run(tracer.end_trace, handle)
    assert tracer.current_trace_id() is None
    with tracer.start_span("next"):
        pass
    assert [(t.name, len(t.spans)) for t in out] == [("conv", 0), ("next", 1)]


def test_activate_carries_an_explicit_trace_to_another_context(tracer: Tracer, out: Collected) -> None:
    handle = contextvars.Context().run(tracer.begin_trace, "conv")
    assert tracer.current_trace_id() is None
    with tracer.activate(handle), tracer.start_span("turn"):
        pass
    handle.end()
    assert [s.name for s in out[0].spans] == ["turn"]


# -- threads -------------------------------------------------------------------------------------


def test_threads_with_wrap_all_land_in_one_explicit_trace(tracer: Tracer, out: Collected) -> None:
    threads_n, spans_n = 8, 50
    handle = tracer.begin_trace("fan-out")

    def work(index: int) -> None:
        for n in range(spans_n):
            with tracer.start_span(f"t{index}-{n}"), tracer.start_span("inner"):
                pass

    threads = [threading.Thread(target=tracer.wrap(work), args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trace = handle.end()
    assert len(trace.spans) == threads_n * spans_n * 2
    assert len({s.id for s in trace.spans}) == len(trace.spans)
    parents = {s.id: s for s in trace.spans}
    inner = [s for s in trace.spans if s.name == "inner"]
    assert len(inner) == threads_n * spans_n
    assert all(parents[s.parent_id].name.startswith("t") for s in inner)  # type: ignore[index]
    assert sum(1 for s in trace.spans if s.parent_id is None) == threads_n * spans_n
    assert out == [trace] and tracer.dropped_spans == 0


def test_threads_in_copied_contexts_nest_under_the_current_span(tracer: Tracer, out: Collected) -> None:
    with tracer.start_span("request") as root:
        def work() -> None:
            for _ in range(25):
                with tracer.start_span("part"):
                    pass

        threads = [threading.Thread(target=contextvars.copy_context().run, args=(work,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    (trace,) = out
    assert len(trace.spans) == 101
    assert all(s.parent_id == root.span_id for s in trace.spans[1:])


def test_threads_with_their_own_traces(clock: FakeClock) -> None:
    store = FakeStore()
    tracer = Tracer(clock=clock, id_generator=SequentialIdGenerator(), store=store)

    def work() -> None:
        for _ in range(100):
            with tracer.start_span("request"), tracer.start_span("chat") as chat:
                chat.add_event("e")

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.traces) == 600
    assert len({t.id for t in store.traces}) == 600
    assert all(shape(t) == [("request", None), ("chat", "request")] for t in store.traces)


def test_a_span_shared_by_threads_ends_exactly_once(tracer: Tracer, out: Collected) -> None:
    span = tracer.begin_span("shared")
    barrier = threading.Barrier(8)
    results: list[str] = []
    lock = threading.Lock()

    def finish() -> None:
        barrier.wait()
        try:
            span.end()
            outcome = "ended"
        except ValueError:
            outcome = "refused"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=finish) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["ended"] + ["refused"] * 7
    assert len(out) == 1


# -- asyncio -------------------------------------------------------------------------------------


def test_asyncio_tasks_nest_under_the_span_that_made_them(tracer: Tracer, out: Collected) -> None:
    async def step(name: str) -> str:
        with tracer.start_span(name) as span:
            await asyncio.sleep(0)
            with tracer.start_span(f"{name}.inner"):
                await asyncio.sleep(0)
            return span.parent_id or ""

    async def main() -> list[str]:
        with tracer.start_span("request"):
            return await asyncio.gather(step("a"), step("b"), step("c"))

    parents = asyncio.run(main())
    (trace,) = out
    assert parents == [sid(1)] * 3
    assert sorted(shape(trace)) == sorted(
        [
            ("request", None),
            ("a", "request"),
            ("b", "request"),
            ("c", "request"),
            ("a.inner", "a"),
            ("b.inner", "b"),
            ("c.inner", "c"),
        ]
    )


def test_asyncio_tasks_without_a_parent_make_separate_traces(tracer: Tracer, out: Collected) -> None:
    async def request(name: str) -> None:
        with tracer.start_span(name):
            await asyncio.sleep(0)
            with tracer.start_span("chat"):
                await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(request(f"r{i}") for i in range(5)))

    asyncio.run(main())
    assert sorted(t.name for t in out) == ["r0", "r1", "r2", "r3", "r4"]
    assert all(len(t.spans) == 2 and t.spans[1].parent_id == t.spans[0].id for t in out)


def test_a_span_closed_in_another_context_restores_the_previous_one(
    tracer: Tracer, out: Collected
) -> None:
    def gen() -> Any:
        with tracer.start_span("inside generator"):
            yield 1
            yield 2

    it = gen()
    contextvars.copy_context().run(next, it)
    # Finishing it in this context: the span's token belongs to the other one, which must not
    # turn into an error inside the application's generator.
    assert list(it) == [2]
    assert tracer.current_span() is None
    assert [(s.name, s.status) for s in out[0].spans] == [("inside generator", "success")]


# -- store, collector, processors ----------------------------------------------------------------


class RecordingProcessor(Collected):
    """A Collected that also notes, in a shared list, when it was called and what the store held."""

    def __init__(self, label: str, calls: list[str], store: FakeStore) -> None:
        super().__init__()
        self.label, self.calls, self.store = label, calls, store

    def on_end(self, trace: Trace) -> None:
        self.calls.append(f"{self.label} {len(self.store.traces)}")
        super().on_end(trace)


class BrokenProcessor(Collected):
    """A processor whose on_end raises."""

    def on_end(self, trace: Trace) -> None:
        raise RuntimeError("exporter down")


def test_store_then_processors_then_collector(clock: FakeClock) -> None:
    calls: list[str] = []
    store = FakeStore()
    collector = FakeCollector()
    tracer = Tracer(
        clock=clock,
        id_generator=SequentialIdGenerator(),
        store=store,
        collector=collector,
        processors=[RecordingProcessor("p1", calls, store), RecordingProcessor("p2", calls, store)],
    )
    clock.advance(2_500)
    with tracer.start_span("r"):
        clock.advance(500)
    assert [t.name for t in store.traces] == ["r"]
    assert calls == ["p1 1", "p2 1"]
    assert collector.decisions == [("head", None)]  # counted at the collector's own "now"


def test_a_failing_processor_is_logged_and_counted_never_raised(clock: FakeClock) -> None:
    got = Collected()
    logger = FakeLogger()
    store = FakeStore()
    tracer = Tracer(
        clock=clock,
        id_generator=SequentialIdGenerator(),
        store=store,
        logger=logger,
        processors=[BrokenProcessor(), got],
    )
    with tracer.start_span("r"):
        pass
    assert tracer.processor_errors == 1
    assert len(got) == 1 and len(store.traces) == 1
    level, message, trace_id, _ = logger.entries[0]
    assert level == "error" and "exporter down" in message and trace_id == tid(1)


def test_a_failing_store_is_counted_by_its_processor_and_the_others_still_run(clock: FakeClock) -> None:
    got = Collected()
    tracer = Tracer(clock=clock, store=FakeStore(fail=True), processors=[got])
    with tracer.start_span("r"):
        pass
    store_processor = tracer.processors[0]
    assert isinstance(store_processor, SimpleProcessor)
    assert store_processor.stats() == ProcessorStats(queued=1, pending=0, exported=0, failed=1, dropped=0)
    assert tracer.processor_errors == 0 and len(got) == 1


def test_a_failing_logger_does_not_fail_the_app(clock: FakeClock) -> None:
    class BrokenLogger:
        def log(self, *args: Any, **kwargs: Any) -> None:
            raise OSError("log file gone")

    tracer = Tracer(clock=clock, logger=BrokenLogger(), processors=[BrokenProcessor()])
    with tracer.start_span("r"):
        pass
    assert tracer.processor_errors == 1


def test_add_processor_hands_on_later_traces_and_refuses_others(tracer: Tracer, out: Collected) -> None:
    with tracer.start_span("a"):
        pass
    extra = Collected()
    tracer.add_processor(extra)
    with tracer.start_span("b"):
        pass
    assert [t.name for t in out] == ["a", "b"]
    assert [t.name for t in extra] == ["b"]
    assert tracer.processors == (out, extra)
    with pytest.raises(ValueError, match="lacks on_end, force_flush, shutdown"):
        tracer.add_processor("not a processor")  # type: ignore[arg-type]


# -- sampling ------------------------------------------------------------------------------------


def test_head_sampling_keeps_and_drops(clock: FakeClock) -> None:
    head = HeadByTraceId(keep={tid(2)})
    store, collector, got = FakeStore(), FakeCollector(), Collected()
    tracer = Tracer(
        clock=clock,
        id_generator=SequentialIdGenerator(),
        store=store,
        collector=collector,
        processors=[got],
        head_sampler=head,
    )
    for name in ("one", "two", "three"):
        with tracer.start_span(name) as span:
            assert span.sampled is (name == "two")
            assert tracer.traceparent() == span.traceparent()
    assert head.calls == [(tid(1), None), (tid(2), None), (tid(3), None)]
    assert [t.name for t in store.traces] == ["two"] and [t.name for t in got] == ["two"]
    assert [d for d, _ in collector.decisions] == ["dropped", "head", "dropped"]


def test_an_unsampled_span_says_so_in_its_traceparent(clock: FakeClock) -> None:
    tracer = Tracer(clock=clock, id_generator=SequentialIdGenerator(), head_sampler=HeadByTraceId())
    with tracer.start_span("x"):
        assert tracer.traceparent() == f"00-{tid(1)}-{sid(1)}-00"


def test_tail_sampling_keeps_what_the_head_let_go(clock: FakeClock) -> None:
    tail = TailKeepsErrors()
    store, collector = FakeStore(), FakeCollector()
    tracer = Tracer(
        clock=clock,
        id_generator=SequentialIdGenerator(),
        store=store,
        collector=collector,
        head_sampler=HeadByTraceId(keep={tid(1)}),
        tail_sampler=tail,
    )
    with tracer.start_span("kept by head"):
        pass
    with pytest.raises(ValueError), tracer.start_span("kept by tail"):
        raise ValueError("bad")
    with tracer.start_span("dropped"):
        pass
    assert tail.seen == [tid(2), tid(3)]  # asked only about traces the head let go
    assert [t.name for t in store.traces] == ["kept by head", "kept by tail"]
    assert [d for d, _ in collector.decisions] == ["head", "tail", "dropped"]


def test_broken_samplers_keep_the_trace_and_are_counted(clock: FakeClock) -> None:
    store, collector = FakeStore(), FakeCollector()
    tracer = Tracer(clock=clock, store=store, collector=collector, head_sampler=HeadByTraceId(fail=True))
    with tracer.start_span("a"):
        pass
    tracer2 = Tracer(
        clock=clock,
        store=store,
        collector=collector,
        head_sampler=HeadByTraceId(),
        tail_sampler=TailKeepsErrors(fail=True),
    )
    with tracer2.start_span("b"):
        pass
    assert [t.name for t in store.traces] == ["a", "b"]
    assert [d for d, _ in collector.decisions] == ["head", "tail"]
    assert tracer.internal_errors == 1 and tracer2.internal_errors == 1


def test_an_explicit_trace_is_sampled_once(clock: FakeClock) -> None:
    head = HeadByTraceId()
    store = FakeStore()
    tracer = Tracer(clock=clock, id_generator=SequentialIdGenerator(), store=store, head_sampler=head)
    with tracer.begin_trace("conv"):
        for _ in range(3):
            with tracer.start_span("turn"):
                pass
    assert head.calls == [(tid(1), None)]
    assert store.traces == []


# -- incoming W3C context ------------------------------------------------------------------------


def test_begin_trace_continues_an_incoming_traceparent(clock: FakeClock, out: Collected) -> None:
    head = HeadByTraceId()
    tracer = Tracer(clock=clock, id_generator=SequentialIdGenerator(), head_sampler=head, processors=[out])
    handle = tracer.begin_trace("handle request", traceparent=f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-01")
    assert handle.trace_id == REMOTE_TRACE and handle.parent_span_id == REMOTE_SPAN and handle.sampled
    with tracer.start_span("work"), tracer.start_span("inner"):
        assert tracer.traceparent() == f"00-{REMOTE_TRACE}-{sid(2)}-01"
    trace = handle.end()
    assert head.calls == [(REMOTE_TRACE, True)]
    assert trace.id == REMOTE_TRACE
    assert [(s.name, s.parent_id) for s in trace.spans] == [("work", REMOTE_SPAN), ("inner", sid(1))]
    assert out == [trace]


def test_begin_trace_with_a_parent_context_that_was_not_sampled(clock: FakeClock) -> None:
    head = HeadByTraceId()
    store = FakeStore()
    tracer = Tracer(clock=clock, head_sampler=head, store=store)
    parent = parse_traceparent(f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-00")
    with tracer.begin_trace("downstream", parent_context=parent) as handle:
        assert not handle.sampled
    assert head.calls == [(REMOTE_TRACE, False)] and store.traces == []


def test_a_root_span_can_continue_a_remote_parent(tracer: Tracer, out: Collected) -> None:
    remote = TraceParent(REMOTE_TRACE, REMOTE_SPAN)
    with tracer.start_span("server", kind="server", parent=remote), tracer.start_span("inner"):
        pass
    (trace,) = out
    assert trace.id == REMOTE_TRACE
    assert [s.parent_id for s in trace.spans] == [REMOTE_SPAN, sid(1)]
    assert [node.span.name for node in span_tree(trace)] == ["server", "inner"]


def test_a_malformed_traceparent_starts_a_new_trace(clock: FakeClock) -> None:
    logger = FakeLogger()
    tracer = Tracer(clock=clock, id_generator=SequentialIdGenerator(), logger=logger)
    handle = tracer.begin_trace("r", traceparent="00-not-a-real-header")
    assert handle.trace_id == tid(1) and handle.parent_span_id is None
    assert tracer.internal_errors == 1 and "malformed traceparent" in logger.entries[0][1]
    handle.end()


def test_begin_trace_refuses_bad_arguments(tracer: Tracer) -> None:
    parent = TraceParent(REMOTE_TRACE, REMOTE_SPAN)
    with pytest.raises(ValueError, match="traceparent or parent_context, not both"):
        tracer.begin_trace("r", traceparent=f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-01", parent_context=parent)
    with pytest.raises(ValueError, match="parent_context must be a TraceParent"):
        tracer.begin_trace("r", parent_context="00-x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        tracer.begin_trace("")
    assert tracer.current_trace_id() is None


# -- construction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"store": object()}, "store must be None or an object with add"),
        ({"collector": []}, "collector must be None or an object with record_sampling"),
        ({"logger": "stderr"}, "logger must be None or an object with log"),
        ({"processors": [42]}, "processors must hold TraceProcessors .* 42 lacks on_end"),
        ({"service_name": ""}, "service_name must be a non-empty string"),
        ({"clock": object()}, "clock must have time_ms"),
        ({"id_generator": object()}, "id_generator must have trace_id"),
        ({"head_sampler": TailKeepsErrors()}, "head_sampler must be None or an object with should_sample"),
        ({"tail_sampler": HeadByTraceId()}, "tail_sampler must be None or an object with should_keep"),
    ],
)
def test_tracer_validates_its_configuration(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Tracer(**kwargs)


def test_service_name_goes_into_each_trace(clock: FakeClock, out: Collected) -> None:
    tracer = Tracer(clock=clock, service_name="chat-app", processors=[out])
    with tracer.begin_trace("conv", {semconv.SERVICE_NAME: "override"}):
        pass
    with tracer.start_span("r"):
        pass
    assert [t.metadata[semconv.SERVICE_NAME] for t in out] == ["override", "chat-app"]
    assert tracer.service_name == "chat-app" and "chat-app" in repr(tracer)


def test_handles_describe_themselves(tracer: Tracer) -> None:
    span = tracer.begin_span("x")
    assert isinstance(span, SpanHandle)
    assert repr(span) == f"SpanHandle('x', span_id={sid(1)}, trace_id={tid(1)}, running)"
    assert repr(span.trace_handle) == f"TraceHandle('x', trace_id={tid(1)}, running)"
    assert isinstance(span.end(), Span)
    assert repr(span).endswith("success)") and span.trace_handle.ended


# -- with the real store, collector, logger and samplers ------------------------------------------


def test_with_the_real_store_collector_logger_and_samplers(clock: FakeClock) -> None:
    from obs.logs import LLMLogger
    from obs.metrics.collector import MetricsCollector
    from obs.storage.memory import TraceStore
    from obs.trace.sampling.head import AlwaysOff
    from obs.trace.sampling.tail import TailSampler

    store = TraceStore(max_traces=10)
    collector = MetricsCollector(clock=clock)
    logger = LLMLogger(clock=clock)
    tracer = Tracer(
        store=store,
        collector=collector,
        logger=logger,
        processors=[BrokenProcessor()],
        clock=clock,
        id_generator=SequentialIdGenerator(),
        head_sampler=AlwaysOff(),
        tail_sampler=TailSampler(keep_errors=True),
    )
    with tracer.start_span("fine"):
        clock.advance(10)
    with pytest.raises(ConnectionError), tracer.start_span("failing"):
        raise ConnectionError("refused")
    assert [t.name for t in store.get_recent()] == ["failing"]
    metrics = collector.get_metrics()
    assert (metrics.traces_kept_head, metrics.traces_kept_tail, metrics.traces_dropped) == (0, 1, 1)
    assert tracer.processor_errors == 1
    (entry,) = logger.get_logs_for_trace(tid(2))
    assert entry.level == "error" and "exporter down" in entry.message


def test_a_generator_closed_early_is_not_an_error(tracer: Tracer, out: Collected) -> None:
    def tokens() -> Any:
        with tracer.start_span("stream"):
            yield from ("a", "b", "c")

    stream = tokens()
    assert next(stream) == "a"
    stream.close()
    assert [(s.name, s.status) for s in out[0].spans] == [("stream", "success")]


def test_values_the_tracer_builds_equal_the_dataclasses_built_by_keyword(
    tracer: Tracer, clock: FakeClock, out: Collected
) -> None:
    # The tracer fills the frozen dataclasses slot by slot; a field out of place would show here.
    with tracer.start_span("op", {"k": "v"}, kind="client") as span:
        clock.advance(2)
        span.add_event("e", {"n": 1})
        clock.advance(3)
    (trace,) = out
    event = SpanEvent(name="e", timestamp=T0 + 2, attributes={"n": 1})
    expected_span = Span(
        id=sid(1),
        trace_id=tid(1),
        parent_id=None,
        name="op",
        start_time=T0,
        end_time=T0 + 5,
        duration=5.0,
        status="success",
        attributes={"k": "v"},
        events=[event],
        kind="client",
        start_mono=0.0,
    )
    assert trace == Trace(
        id=tid(1),
        name="op",
        start_time=T0,
        end_time=T0 + 5,
        duration=5.0,
        status="success",
        metadata={semconv.SERVICE_NAME: "obs"},
        spans=[expected_span],
        start_mono=0.0,
    )
    assert type(trace) is Trace and type(trace.spans[0]) is Span
    assert type(trace.spans[0].events[0]) is SpanEvent
    assert trace.spans[0].to_dict() == expected_span.to_dict()


def test_wrap_carries_the_whole_context_into_threads_including_an_active_conversation() -> None:
    import contextvars

    other: contextvars.ContextVar[str] = contextvars.ContextVar("other", default="unset")
    out = Collected()
    tracer = Tracer(processors=[out])
    seen: list[str] = []

    def work(part: int) -> None:
        seen.append(other.get())
        with tracer.start_span(f"part {part}"):
            pass

    with tracer.start_span("fan-out"):
        other.set("from the caller")
        wrapped = tracer.wrap(work)
        threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert seen == ["from the caller"] * 4
    (trace,) = out
    assert sorted(s.name for s in trace.spans) == ["fan-out", "part 0", "part 1", "part 2", "part 3"]
