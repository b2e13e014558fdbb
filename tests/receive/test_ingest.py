"""The receiver's queue with traces built later (`Deferred`): once each, in order, failures counted.

A checked request body is queued as it is and its traces are built by the
queue's builder thread as soon as it is queued (or by its worker or by
`materialize()`, which the receiver's /metrics calls, when they get there
first): each exactly once however they race, exported in the order offered, and
a body whose building fails is logged and counted as dropped while the
others are stored. Real threads, the in-memory exporter.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from obs.receive import Ingest
from obs.trace.processors import ExportResult, InMemoryExporter
from obs.trace.traces import Trace

from .support import chat_trace


class _Later:
    """Traces built on demand, counting the calls; `fail` makes building raise."""

    def __init__(self, traces: list[Trace], fail: bool = False, gate: threading.Event | None = None) -> None:
        self.traces = traces
        self.fail = fail
        self.gate = gate
        self.builds = 0
        self.built = threading.Event()  # set once a build has ended, failed or not

    @property
    def trace_count(self) -> int:
        return len(self.traces)

    def build(self) -> list[Trace]:
        self.builds += 1
        try:
            if self.gate is not None:
                assert self.gate.wait(10.0)
            if self.fail:
                raise ValueError("a span the checks let through")
            return self.traces
        finally:
            self.built.set()


def _ids(n: int, first: int = 1) -> list[Trace]:
    return [chat_trace(f"{i:032x}") for i in range(first, first + n)]


def test_deferred_traces_are_built_once_each_and_exported_in_order() -> None:
    exporter = InMemoryExporter()
    ingest = Ingest(exporter, max_export_traces=3)
    gate = threading.Event()
    first = _Later(_ids(2), gate=gate)  # holds the worker inside its first build
    rest = [_Later(_ids(2, 10 * k)) for k in range(1, 6)]
    assert ingest.offer(first, 4).value == "accepted"
    for later in rest:
        ingest.offer(later, 4)
    racers = [threading.Thread(target=ingest.materialize) for _ in range(3)]  # /metrics, three times at once
    for racer in racers:
        racer.start()
    gate.set()
    for racer in racers:
        racer.join(10.0)
    assert ingest.flush(10.0)
    assert [later.builds for later in (first, *rest)] == [1] * 6
    assert exporter.traces == [t for later in (first, *rest) for t in later.traces]
    stats = ingest.stats()
    assert stats.exported_spans == 24 and stats.dropped_spans == 0 and stats.pending_spans == 0
    ingest.shutdown()


def test_a_body_whose_building_fails_is_dropped_and_counted_and_the_rest_are_stored() -> None:
    exporter = InMemoryExporter()
    ingest = Ingest(exporter)
    good, bad, after = _Later(_ids(1)), _Later(_ids(2, 5), fail=True), _Later(_ids(1, 9))
    for later, spans in ((good, 2), (bad, 4), (after, 2)):
        ingest.offer(later, spans)
    assert ingest.flush(10.0)
    assert exporter.traces == good.traces + after.traces
    stats = ingest.stats()
    assert (stats.exported_spans, stats.dropped_spans, stats.pending_spans) == (4, 4, 0)
    assert stats.last_error is not None and "a span the checks let through" in stats.last_error
    assert ingest.materialize() == 0  # nothing left to build
    ingest.shutdown()


class _Counting(InMemoryExporter):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        self.batches.append(len(traces))
        return super().export(traces)


def test_lists_and_deferred_bodies_mix_and_shutdown_stores_what_waits() -> None:
    exporter = _Counting()
    ingest = Ingest(exporter, max_export_traces=4)
    gate = threading.Event()
    ingest.offer(_Later(_ids(1), gate=gate), 2)
    ingest.offer(_ids(3, 20), 6)
    ingest.offer(_Later(_ids(3, 30)), 6)
    ingest.offer([], 0)  # an empty body: accepted, nothing queued
    gate.set()
    assert ingest.shutdown(10.0)
    assert [t.id for t in exporter.traces] == [t.id for t in [*_ids(1), *_ids(3, 20), *_ids(3, 30)]]
    assert max(exporter.batches) <= 4 and ingest.stats().exported_spans == 14


class _HeldExporter:
    """An exporter whose first export waits for `release`; says when that export began."""

    def __init__(self) -> None:
        self.inner = InMemoryExporter()
        self.exporting = threading.Event()
        self.release = threading.Event()

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        self.exporting.set()
        assert self.release.wait(10.0)
        return self.inner.export(traces)


def test_a_request_is_built_while_the_one_before_is_being_exported() -> None:
    exporter = _HeldExporter()
    ingest = Ingest(exporter)
    first, second = _Later(_ids(1)), _Later(_ids(1, 5))
    built = threading.Event()
    second_build = second.build

    def build_and_say() -> list[Trace]:
        traces = second_build()
        built.set()
        return traces

    second.build = build_and_say  # type: ignore[method-assign]
    ingest.offer(first, 4)
    assert exporter.exporting.wait(10.0)  # the worker is inside the first export, held there
    ingest.offer(second, 4)
    # Built by the builder thread while the export of the first still runs, not after it.
    assert built.wait(10.0)
    assert exporter.inner.traces == [] and second.builds == 1  # the first export has not ended yet
    exporter.release.set()
    assert ingest.flush(10.0)
    assert exporter.inner.traces == [*first.traces, *second.traces] and second.builds == 1
    assert ingest.shutdown(10.0)


def test_a_backlog_is_built_ahead_while_an_export_is_held_however_materialize_races() -> None:
    exporter = _HeldExporter()
    ingest = Ingest(exporter, max_export_traces=1)
    head = _Later(_ids(1))
    ingest.offer(head, 1)
    assert exporter.exporting.wait(10.0)  # the worker is inside the first export, held there
    # A backlog queued behind it: only the builder thread can build it (nothing else is asked to).
    backlog = [_Later(_ids(1, 100 + k)) for k in range(200)]
    for later in backlog:
        assert ingest.offer(later, 1).value == "accepted"
    assert all(later.built.wait(10.0) for later in backlog)
    assert exporter.inner.traces == []  # all built ahead while the first export still runs
    # More bodies while /metrics builds too: each is built once, by one or the other.
    raced = [_Later(_ids(1, 1000 + k)) for k in range(200)]
    racers = [threading.Thread(target=ingest.materialize) for _ in range(3)]
    for racer in racers:
        racer.start()
    for later in raced:
        ingest.offer(later, 1)
    for racer in racers:
        racer.join(10.0)
    assert all(later.built.wait(10.0) for later in raced)
    # After both ways of building, a body offered now is still built ahead by the builder thread.
    last = _Later(_ids(1, 5000))
    ingest.offer(last, 1)
    assert last.built.wait(10.0) and exporter.inner.traces == []
    assert ingest.materialize() == 0  # nothing was left unbuilt
    exporter.release.set()
    assert ingest.flush(10.0)
    everything = [head, *backlog, *raced, last]
    assert exporter.inner.traces == [t for later in everything for t in later.traces]
    assert [later.builds for later in everything] == [1] * len(everything)
    stats = ingest.stats()
    assert (stats.exported_spans, stats.dropped_spans, stats.pending_spans) == (len(everything), 0, 0)
    assert ingest.shutdown(10.0)
