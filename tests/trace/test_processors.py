"""Tests for obs.trace.processors and the tracer's processor seam: who gets which trace, once;
batching, bounds and drops under threads; exporters that raise, fail, hang or crawl; flush and
shutdown; the flush at interpreter exit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from obs.clock import FakeClock
from obs.metrics.collector import MetricsCollector
from obs.storage.base import TraceStoreProtocol
from obs.storage.memory import TraceStore
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.ids import SequentialIdGenerator
from obs.trace.processors import (
    BatchProcessor,
    ExportResult,
    InMemoryExporter,
    ProcessorStats,
    SimpleProcessor,
    StoreExporter,
    TraceExporter,
    TraceProcessor,
)
from obs.trace.sampling.head import AlwaysOff, TraceIdRatio
from obs.trace.sampling.tail import TailSampler
from obs.trace.tracer import Tracer
from obs.trace.traces import Trace
from tests.trace.support import Collected

ROOT = Path(__file__).resolve().parents[2]
# A deadlock guard, not a speed check: generous enough for the busiest machine.
GUARD_S = 30.0


class RaisingExporter:
    """An exporter whose export raises."""

    def __init__(self) -> None:
        self.calls = 0

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        self.calls += 1
        raise ConnectionError("collector unreachable")

    def shutdown(self) -> None:
        pass


class FailingExporter(InMemoryExporter):
    """Keeps what it is given but says FAILURE."""

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        super().export(traces)
        return ExportResult.FAILURE


class GatedExporter(InMemoryExporter):
    """Blocks every export until `gate` is set (a hanging, or a slow, backend)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        self.entered.set()
        self.gate.wait()
        return super().export(traces)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ms=1_700_000_000_000.0)


@pytest.fixture
def batch() -> Iterator[tuple[BatchProcessor, InMemoryExporter]]:
    exporter = InMemoryExporter()
    processor = BatchProcessor(exporter, schedule_delay_s=60.0)
    yield processor, exporter
    processor.shutdown(timeout_s=GUARD_S)


def _traced(tracer: Tracer, names: Sequence[str]) -> None:
    for name in names:
        with tracer.start_span(name), tracer.start_span(f"{name}.child"):
            pass


def _trace_from_threads(tracer: Tracer, *, threads: int, per_thread: int) -> None:
    """End `threads * per_thread` one-span traces, from `threads` threads at once."""

    def work() -> None:
        for _ in range(per_thread):
            with tracer.start_span("t"):
                pass

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


# -- the seam ------------------------------------------------------------------------------------


def test_the_shipped_classes_satisfy_the_protocols(tmp_path: Path) -> None:
    assert isinstance(SimpleProcessor(InMemoryExporter()), TraceProcessor)
    processor = BatchProcessor(InMemoryExporter())
    try:
        assert isinstance(processor, TraceProcessor)
    finally:
        processor.shutdown()
    for exporter in (InMemoryExporter(), StoreExporter(TraceStore())):
        assert isinstance(exporter, TraceExporter)
    with SqliteTraceStore(tmp_path / "t.db") as sqlite_store:
        for store in (TraceStore(), sqlite_store):
            assert isinstance(store, TraceStoreProtocol)


def test_every_kept_trace_reaches_each_processor_exactly_once_and_dropped_ones_none(clock: FakeClock) -> None:
    first, second = Collected(), InMemoryExporter()
    collector = MetricsCollector(clock=clock)
    tracer = Tracer(
        clock=clock, id_generator=SequentialIdGenerator(), collector=collector,
        processors=[first, SimpleProcessor(second)],
        head_sampler=AlwaysOff(), tail_sampler=TailSampler(keep_errors=True),
    )
    for i in range(6):
        try:
            with tracer.start_span(f"t{i}"), tracer.start_span("child"):
                if i % 3 == 0:
                    raise RuntimeError("kept by the tail rule")
        except RuntimeError:
            pass
    kept = ["t0", "t3"]
    assert [t.name for t in first] == kept
    assert [t.name for t in second.traces] == kept
    assert len({t.id for t in first}) == len(kept)
    metrics = collector.get_metrics()
    assert (metrics.traces_kept_tail, metrics.traces_dropped) == (2, 4)  # the collector saw every trace


def test_head_sampled_traces_reach_processors_once_even_from_many_threads(clock: FakeClock) -> None:
    exporter = InMemoryExporter()
    tracer = Tracer(processors=[SimpleProcessor(exporter)], head_sampler=TraceIdRatio(0.5))
    collector_count = []

    def work() -> None:
        for i in range(200):
            with tracer.start_span(f"w{i}") as span:
                collector_count.append(span.sampled)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [t.id for t in exporter.traces]
    assert len(ids) == len(set(ids)) == sum(collector_count)


def test_store_is_the_first_processor_and_the_store_argument_is_its_short_form() -> None:
    store, later = TraceStore(), Collected()
    tracer = Tracer(store=store, processors=[later])
    (store_processor, second) = tracer.processors
    assert isinstance(store_processor, SimpleProcessor)
    assert isinstance(store_processor.exporter, StoreExporter)
    assert store_processor.exporter.store is store and second is later
    _traced(tracer, ["a"])
    assert [t.name for t in store.all()] == ["a"] and [t.name for t in later] == ["a"]


# -- SimpleProcessor -----------------------------------------------------------------------------


def test_simple_processor_counts_raising_and_failing_exporters_and_never_raises(clock: FakeClock) -> None:
    raising, failing, good = RaisingExporter(), FailingExporter(), InMemoryExporter()
    processors = [SimpleProcessor(raising), SimpleProcessor(failing), SimpleProcessor(good)]
    tracer = Tracer(clock=clock, processors=processors)
    _traced(tracer, ["a", "b"])
    assert raising.calls == 2 and len(failing.traces) == 2 and len(good.traces) == 2
    assert processors[0].stats() == ProcessorStats(2, 0, 0, 2, 0)
    assert processors[1].stats() == ProcessorStats(2, 0, 0, 2, 0)
    assert processors[2].stats() == ProcessorStats(2, 0, 2, 0, 0)
    assert tracer.processor_errors == 0  # the processors caught it all


def test_after_shutdown_traces_are_counted_by_the_collector_but_reach_no_processor(clock: FakeClock) -> None:
    exporter = InMemoryExporter()
    processor = SimpleProcessor(exporter)
    collector = MetricsCollector(clock=clock)
    tracer = Tracer(clock=clock, collector=collector, processors=[processor])
    _traced(tracer, ["before"])
    assert tracer.shutdown(timeout_s=5.0) is True
    assert tracer.shutdown(timeout_s=5.0) is True  # a second call is harmless
    _traced(tracer, ["after"])
    assert [t.name for t in exporter.traces] == ["before"]
    assert collector.get_metrics().traces_kept_head == 2
    with pytest.raises(ValueError, match="was shut down"):
        tracer.add_processor(Collected())


# -- BatchProcessor ------------------------------------------------------------------------------


def test_batch_processor_exports_exactly_every_trace_from_8_threads(clock: FakeClock) -> None:
    exporter = InMemoryExporter()
    processor = BatchProcessor(
        exporter, max_queue_size=40_000, max_export_batch_size=512, schedule_delay_s=0.05
    )
    tracer = Tracer(clock=clock, id_generator=SequentialIdGenerator(), processors=[processor])

    _trace_from_threads(tracer, threads=8, per_thread=5_000)
    assert processor.force_flush(timeout_s=GUARD_S) is True
    stats = processor.stats()
    assert stats == ProcessorStats(queued=40_000, pending=0, exported=40_000, failed=0, dropped=0)
    assert len({t.id for t in exporter.traces}) == 40_000
    assert tracer.shutdown(timeout_s=GUARD_S) is True


def test_batch_processor_with_a_small_queue_drops_and_counts_the_rest(clock: FakeClock) -> None:
    exporter = GatedExporter()  # holds the first batch, so the queue fills behind it
    processor = BatchProcessor(
        exporter, max_queue_size=100, max_export_batch_size=10, schedule_delay_s=0.01, export_timeout_s=600
    )
    tracer = Tracer(clock=clock, id_generator=SequentialIdGenerator(), processors=[processor])

    _trace_from_threads(tracer, threads=8, per_thread=5_000)
    exporter.gate.set()
    assert processor.shutdown(timeout_s=GUARD_S) is True
    stats = processor.stats()
    assert stats.dropped > 0 and stats.failed == 0 and stats.pending == 0
    assert stats.exported + stats.dropped == 40_000 == stats.queued + stats.dropped
    assert len(exporter.traces) == stats.exported


def _wait_until(condition: Callable[[], bool]) -> bool:
    """Poll `condition` until it holds or the deadlock guard runs out."""
    deadline = time.monotonic() + GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_a_full_batch_goes_out_without_waiting_for_the_delay() -> None:
    exporter = InMemoryExporter()
    # Schedule delay 60 s: only reaching the batch size can trigger this export.
    processor = BatchProcessor(exporter, max_queue_size=10, max_export_batch_size=5, schedule_delay_s=60.0)
    tracer = Tracer(processors=[processor])
    _traced(tracer, [f"t{i}" for i in range(5)])
    assert _wait_until(lambda: len(exporter.traces) == 5)
    assert processor.stats().exported == 5
    processor.shutdown()


def test_force_flush_and_shutdown_export_what_waits(batch: tuple[BatchProcessor, InMemoryExporter]) -> None:
    processor, exporter = batch
    tracer = Tracer(processors=[processor])
    _traced(tracer, ["a", "b"])
    assert exporter.traces == []  # the 60 s delay has not passed
    assert tracer.force_flush(timeout_s=GUARD_S) is True
    assert [t.name for t in exporter.traces] == ["a", "b"]
    _traced(tracer, ["c"])
    assert tracer.shutdown(timeout_s=GUARD_S) is True
    assert [t.name for t in exporter.traces] == ["a", "b", "c"]
    _traced(tracer, ["late"])  # the tracer dropped its processors: nothing more arrives
    processor.on_end(exporter.traces[0])  # the processor itself refuses and counts
    assert processor.stats().dropped == 1 and len(exporter.traces) == 3


def test_flush_soon_exports_what_waits_without_waiting_for_the_export() -> None:
    exporter = GatedExporter()  # every export blocks until the gate opens
    processor = BatchProcessor(exporter, schedule_delay_s=60.0)
    tracer = Tracer(processors=[processor])
    _traced(tracer, ["a", "b"])
    assert not exporter.entered.is_set()  # the 60 s delay has not passed
    processor.flush_soon()  # returns while the export it asked for is blocked
    assert exporter.entered.wait(GUARD_S)
    assert exporter.traces == []
    exporter.gate.set()
    assert _wait_until(lambda: [t.name for t in exporter.traces] == ["a", "b"])
    processor.flush_soon()  # nothing queued: nothing happens
    assert processor.stats().exported == 2
    processor.shutdown(timeout_s=GUARD_S)
    _traced(tracer, ["late"])
    processor.flush_soon()  # after shutdown: neither raises nor exports
    assert len(exporter.traces) == 2


class _RaisingFlushSoon(InMemoryExporter):
    def flush_soon(self) -> None:  # a processor-like object whose nudge fails
        raise RuntimeError("boom")

    def on_end(self, trace: Trace) -> None:
        self.export([trace])

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        return True


def test_tracer_flush_soon_asks_each_processor_that_can_and_never_raises() -> None:
    exporter = InMemoryExporter()
    batch = BatchProcessor(exporter, schedule_delay_s=60.0)
    simple_target = InMemoryExporter()
    raising = _RaisingFlushSoon()
    tracer = Tracer(processors=[SimpleProcessor(simple_target), raising, batch])
    _traced(tracer, ["a"])
    assert exporter.traces == [] and len(simple_target.traces) == 1
    tracer.flush_soon()  # SimpleProcessor has nothing to flush; the raising one is counted
    assert _wait_until(lambda: [t.name for t in exporter.traces] == ["a"])
    assert tracer.processor_errors == 1
    batch.shutdown(timeout_s=GUARD_S)


def test_raising_failing_and_hanging_exporters_never_hold_up_the_traced_code() -> None:
    hanging = GatedExporter()
    processors = [
        BatchProcessor(RaisingExporter(), schedule_delay_s=0.01),
        BatchProcessor(FailingExporter(), schedule_delay_s=0.01),
        BatchProcessor(hanging, schedule_delay_s=0.01, export_timeout_s=0.2),
    ]
    tracer = Tracer(processors=processors)
    finished = threading.Event()

    def traced_code() -> None:
        _traced(tracer, [f"t{i}" for i in range(50)])
        finished.set()

    worker = threading.Thread(target=traced_code, daemon=True)
    worker.start()
    # The hanging exporter stays blocked all along: traced code that waited on it would never finish.
    assert finished.wait(GUARD_S)
    assert hanging.entered.wait(GUARD_S) and not hanging.gate.is_set()
    assert processors[0].force_flush(timeout_s=GUARD_S) and processors[1].force_flush(timeout_s=GUARD_S)
    for processor in processors[:2]:
        stats = processor.stats()
        assert stats.failed == 50 and stats.exported == 0 and stats.dropped == 0
    # The hung export is abandoned after export_timeout_s and counted as failed; shutdown does not
    # wait for the exporter beyond its own timeout.
    assert processors[2].force_flush(timeout_s=GUARD_S) is True
    assert processors[2].stats().failed == 50 and processors[2].stats().exported == 0
    hanging.gate.set()
    assert tracer.shutdown(timeout_s=GUARD_S) is True


def test_shutdown_gives_up_at_its_timeout_when_an_export_hangs() -> None:
    hanging = GatedExporter()
    processor = BatchProcessor(hanging, schedule_delay_s=0.01, export_timeout_s=60.0)
    tracer = Tracer(processors=[processor])
    _traced(tracer, ["stuck"])
    assert hanging.entered.wait(GUARD_S)
    assert processor.shutdown(timeout_s=0.05) is False  # the export is still inside the exporter
    hanging.gate.set()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_queue_size": 0}, "max_queue_size must be an int >= 1"),
        ({"max_export_batch_size": 1.5}, "max_export_batch_size must be an int >= 1"),
        ({"max_queue_size": 4, "max_export_batch_size": 8}, "must not exceed max_queue_size"),
        ({"schedule_delay_s": 0}, "schedule_delay_s must be a finite number of seconds > 0"),
        ({"export_timeout_s": float("inf")}, "export_timeout_s must be a finite number of seconds > 0"),
    ],
)
def test_batch_processor_validates_its_configuration(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchProcessor(InMemoryExporter(), **kwargs)  # type: ignore[arg-type]


def test_processors_refuse_what_is_not_an_exporter() -> None:
    for cls in (SimpleProcessor, BatchProcessor):
        with pytest.raises(ValueError, match="exporter must have export"):
            cls(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="store must have add"):
        StoreExporter(object())


def test_in_memory_exporter_keeps_clears_and_refuses_after_shutdown(clock: FakeClock) -> None:
    exporter = InMemoryExporter()
    tracer = Tracer(clock=clock, processors=[SimpleProcessor(exporter)])
    _traced(tracer, ["a"])
    snapshot = exporter.traces
    snapshot.clear()  # a copy: the exporter keeps its own
    assert [t.name for t in exporter.traces] == ["a"]
    exporter.clear()
    assert exporter.traces == []
    exporter.shutdown()
    assert exporter.export(snapshot) is ExportResult.FAILURE


# -- the flush at interpreter exit ---------------------------------------------------------------


def test_a_script_that_exits_without_shutdown_loses_no_trace(tmp_path: Path) -> None:
    out = tmp_path / "traces.jsonl"
    script = textwrap.dedent(
        f"""
        import json
        from obs import BatchProcessor, ExportResult, Tracer

        class FileExporter:
            def __init__(self, path):
                self.path = path
            def export(self, traces):
                with open(self.path, "a", encoding="utf-8") as f:
                    for t in traces:
                        f.write(json.dumps(t.to_dict()) + "\\n")
                return ExportResult.SUCCESS
            def shutdown(self):
                pass

        # A delay far longer than the script runs: only the exit hook can export these.
        tracer = Tracer(processors=[BatchProcessor(FileExporter({str(out)!r}), schedule_delay_s=3600)])
        for i in range(300):
            with tracer.start_span(f"job-{{i}}"):
                pass
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    names = [json.loads(line)["name"] for line in out.read_text().splitlines()]
    assert names == [f"job-{i}" for i in range(300)]
