"""Tests for obs.receive.merge: a trace whose spans arrive in parts is stored whole (real SQLite file)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from obs.receive import MergingStoreExporter, merge_traces
from obs.storage.exporter import SqliteExporter
from obs.storage.memory import TraceStore
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.processors import ExportResult
from obs.trace.traces import Trace

from .support import chat_trace


def _parts(trace: Trace) -> tuple[Trace, Trace]:
    """The child span alone (as an SDK sends it first), then the root alone."""
    root, llm = trace.spans
    child_part = replace(trace, name=llm.name, start_time=llm.start_time, end_time=llm.end_time,
                         duration=llm.duration, spans=(llm,))
    root_part = replace(trace, spans=(root,))
    return child_part, root_part


def test_two_parts_merge_into_the_whole_trace() -> None:
    trace = chat_trace()
    child, root = _parts(trace)
    assert merge_traces(child, root) == replace(trace, spans=(trace.spans[1], trace.spans[0]))
    assert merge_traces(root, child) == trace


def test_a_span_sent_again_replaces_its_copy_and_error_wins() -> None:
    trace = chat_trace()
    failed = replace(trace.spans[1], status="error")
    merged = merge_traces(trace, replace(trace, status="error", spans=(failed,)))
    assert merged.spans == (trace.spans[0], failed) and merged.status == "error"


def test_an_explicit_name_and_metadata_of_either_part_are_kept() -> None:
    trace = chat_trace()
    child, root = _parts(trace)
    named = replace(root, name="nightly job", metadata={"service.name": "chat-api", "run": 7})
    merged = merge_traces(named, child)
    assert merged.name == "nightly job" and merged.metadata == {"service.name": "chat-api", "run": 7}
    with pytest.raises(ValueError, match="same id"):
        merge_traces(trace, chat_trace("ab" * 16))


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteTraceStore]:
    with SqliteTraceStore(tmp_path / "traces.sqlite") as store:
        yield store


def test_parts_in_separate_exports_are_stored_as_one_trace(sqlite_store: SqliteTraceStore) -> None:
    exporter = MergingStoreExporter(sqlite_store)
    trace = chat_trace()
    child, root = _parts(trace)
    assert exporter.export([child]) is ExportResult.SUCCESS
    assert exporter.export([root, chat_trace("cd" * 16)]) is ExportResult.SUCCESS
    stored = sqlite_store.get(trace.id)
    assert stored is not None and stored.name == "answer"
    assert {s.id for s in stored.spans} == {s.id for s in trace.spans}
    assert stored.start_time == trace.start_time and stored.end_time == trace.end_time
    assert len(sqlite_store) == 2


def test_parts_in_one_export_are_merged_first() -> None:
    store = TraceStore()
    trace = chat_trace()
    assert MergingStoreExporter(store).export(list(_parts(trace))) is ExportResult.SUCCESS
    assert store.get(trace.id) == replace(trace, spans=(trace.spans[1], trace.spans[0]))


def test_a_closed_store_makes_the_export_fail_without_raising(tmp_path: Path) -> None:
    store = SqliteTraceStore(tmp_path / "traces.sqlite")
    store.close()
    assert MergingStoreExporter(store).export([chat_trace()]) is ExportResult.FAILURE
    with pytest.raises(ValueError, match="target must be a trace store"):
        MergingStoreExporter(object())


def test_a_sqlite_exporter_target_writes_the_merged_batch_in_one_call(sqlite_store: SqliteTraceStore) -> None:
    writer = SqliteExporter(sqlite_store)
    exporter = MergingStoreExporter(writer)
    trace = chat_trace()
    child, root = _parts(trace)
    assert exporter.export([child]) is ExportResult.SUCCESS
    assert exporter.export([root]) is ExportResult.SUCCESS
    stored = sqlite_store.get(trace.id)
    assert stored is not None and {s.id for s in stored.spans} == {s.id for s in trace.spans}
    assert exporter.store is sqlite_store and exporter.exporter is writer
    exporter.shutdown()  # the exporter did not open the store: it stays open
    assert len(sqlite_store) == 1
