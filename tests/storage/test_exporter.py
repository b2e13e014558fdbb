"""SqliteExporter on the processor seam and SqliteLogSink behind an LLMLogger, on real files."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from obs.clock import FakeClock
from obs.logs import LLMLogger
from obs.storage.exporter import SqliteExporter, SqliteLogSink
from obs.storage.queries import DashboardQueries
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.processors import BatchProcessor, ExportResult
from obs.trace.tracer import Tracer
from tests.storage._writer import numbered_trace


def test_a_tracer_with_a_batch_processor_writes_its_traces_into_the_file(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    processor = BatchProcessor(SqliteExporter(path), schedule_delay_s=60.0)
    tracer = Tracer(processors=[processor], service_name="my-app")
    for job in ("a", "b", "c"):
        with tracer.start_span(job, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}):
            pass
    assert tracer.force_flush(timeout_s=10.0)
    with SqliteTraceStore(path) as reader:
        assert [t.name for t in reader.all()] == ["a", "b", "c"]
        queries = DashboardQueries(reader)
        assert queries.tiles(service="my-app").request_count == 3
        assert queries.services() == ["my-app"]
    assert tracer.shutdown(timeout_s=10.0)
    assert processor.stats().exported == 3


def test_one_export_is_one_transaction_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    exporter = SqliteExporter(path, timeout_s=0.05)
    batch = [numbered_trace(i) for i in range(3)]
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        assert exporter.export(batch) is ExportResult.FAILURE  # locked: nothing written, nothing raised
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert len(exporter.store) == 0 and exporter.store.write_errors == 3
    assert exporter.export(batch) is ExportResult.SUCCESS
    assert exporter.export([]) is ExportResult.SUCCESS
    assert exporter.store.all() == batch
    exporter.shutdown()  # it opened the store: it closes it
    with pytest.raises(ValueError, match="is closed"):
        len(exporter.store)
    assert exporter.export(batch) is ExportResult.FAILURE  # after shutdown: refused, not raised


def test_an_exporter_given_a_store_leaves_it_open(tmp_path: Path) -> None:
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        exporter = SqliteExporter(store)
        exporter.export([numbered_trace(0)])
        exporter.shutdown()
        assert len(store) == 1
    with pytest.raises(ValueError, match=r"SqliteExporter: give a database path .* got int"):
        SqliteExporter(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"is a directory"):
        SqliteExporter(tmp_path)


def test_log_entries_reach_the_file_through_the_sink(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    sink = SqliteLogSink(path, service="my-app", flush_interval_s=60.0)
    logger = LLMLogger(stream=sink, clock=FakeClock(start_ms=1_700_000_000_000.0))
    logger.info("request sent", {"model": "m", "odd": float("nan")})
    logger.log("error", "request failed", {"status": 500}, trace_id="a" * 32, span_id="b" * 16)
    sink.write("not json\n")
    assert sink.flush(timeout_s=10.0)
    assert (sink.written, sink.failed, sink.dropped) == (2, 1, 0)
    with SqliteTraceStore(path) as reader:
        page = DashboardQueries(reader).logs()
        assert [e.message for e in page.items] == ["request failed", "request sent"]
        assert page.items[0].trace_id == "a" * 32 and page.items[0].span_id == "b" * 16
        assert page.items[0].data == {"status": 500} and page.items[1].data["odd"] == "NaN"
        assert page.items[1].timestamp == 1_700_000_000_000.0 and page.services == ("my-app", "my-app")
    logger.info("last words")
    assert sink.close(timeout_s=10.0)  # stores what waits, then stops
    assert sink.close(timeout_s=10.0)
    sink.write("after close\n")
    assert sink.dropped == 1 and sink.written == 3


def test_logging_into_the_sink_never_waits_for_the_disk(tmp_path: Path) -> None:
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        sink = SqliteLogSink(store, flush_interval_s=3600.0)
        logger = LLMLogger(stream=sink)
        logger.info("queued")  # the logger flushes its stream after each line: that must not store it
        assert sink.written == 0 and DashboardQueries(store).logs().items == ()
        assert sink.flush(timeout_s=10.0)  # an explicit flush waits for the disk
        assert sink.written == 1
        assert sink.close()


def test_flush_soon_stores_waiting_lines_without_waiting_and_the_logger_passes_it_on(tmp_path: Path) -> None:
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        sink = SqliteLogSink(store, flush_interval_s=3600.0)
        logger = LLMLogger(stream=sink)
        logger.info("first")
        logger.flush_soon()  # the logger asks its stream; nothing waits for the disk
        deadline = time.monotonic() + 30.0
        while sink.written < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert sink.written == 1 and [e.message for e in DashboardQueries(store).logs().items] == ["first"]
        sink.flush_soon()  # nothing waits: nothing happens
        assert sink.close()
        logger.info("after close")
        sink.flush_soon()  # closed: neither raises nor stores
        assert sink.written == 1 and sink.dropped == 1


class _BrokenNudge:
    def write(self, text: str, /) -> None:
        pass

    def flush_soon(self) -> None:
        raise OSError("gone")


def test_a_logger_whose_stream_cannot_flush_soon_counts_it_and_goes_on() -> None:
    logger = LLMLogger(stream=_BrokenNudge())
    logger.flush_soon()
    logger.flush_soon()
    assert logger.write_errors == 2
    LLMLogger().flush_soon()  # no stream: nothing to ask


def test_a_full_sink_queue_drops_and_counts(tmp_path: Path) -> None:
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        sink = SqliteLogSink(store, flush_interval_s=60.0, max_queue=3)
        logger = LLMLogger(stream=sink)
        for i in range(5):
            logger.info(f"m{i}")  # the worker may take some before the queue fills: at most 5 kept
        assert sink.flush(timeout_s=10.0)
        assert sink.written + sink.dropped == 5 and sink.written >= 3
        assert sink.close() and len(DashboardQueries(store).logs().items) == sink.written
    with pytest.raises(ValueError, match=r"max_queue must be an int >= 1"):
        SqliteLogSink(tmp_path / "x.db", max_queue=0)
    with pytest.raises(ValueError, match=r"flush_interval_s must be a finite number of seconds > 0"):
        SqliteLogSink(tmp_path / "x.db", flush_interval_s=0)
