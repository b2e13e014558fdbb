"""Tests for the trace stores: the in-memory TraceStore and the SQLite-backed SqliteTraceStore."""

from __future__ import annotations

import dataclasses
import doctest
import logging
import math
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import obs.storage.memory
from obs.clock import FakeClock
from obs.storage.base import StoreStats
from obs.storage.memory import TraceStore
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.ids import SequentialIdGenerator
from obs.trace.spans import add_span_event, create_span, end_span, set_span_attributes
from obs.trace.traces import Trace, add_span_to_trace, create_trace, end_trace

StoreFactory = Callable[..., TraceStore | SqliteTraceStore]


class _Maker:
    """Builds ended traces with exact times: each one starts when the last ended."""

    def __init__(self) -> None:
        self.clock = FakeClock(start_ms=1_700_000_000_000.0)
        self.ids = SequentialIdGenerator()

    def trace(self, name: str = "t", duration_ms: float = 10.0, error: bool = False) -> Trace:
        trace = create_trace(name, {"user": "u1"}, clock=self.clock, id_generator=self.ids)
        span = create_span(
            "work", trace.id, attributes={"k": 1, "s": "x"}, clock=self.clock, id_generator=self.ids
        )
        span = add_span_event(span, "step", {"n": 2}, clock=self.clock)
        self.clock.advance(duration_ms)
        span = end_span(span, error=RuntimeError("boom") if error else None, clock=self.clock)
        return end_trace(add_span_to_trace(trace, span), clock=self.clock)

    def running(self, name: str = "running") -> Trace:
        return create_trace(name, clock=self.clock, id_generator=self.ids)


@pytest.fixture
def maker() -> _Maker:
    return _Maker()


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened: list[SqliteTraceStore] = []

    def factory(max_traces: int = 1000) -> TraceStore | SqliteTraceStore:
        if request.param == "memory":
            return TraceStore(max_traces=max_traces)
        store = SqliteTraceStore(tmp_path / f"traces{len(opened)}.db", max_traces=max_traces)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def _names(traces: list[Trace]) -> list[str]:
    return [t.name for t in traces]


# Behaviour both stores share.


def test_add_and_get_round_trip(make_store: StoreFactory, maker: _Maker) -> None:
    store = make_store()
    trace = maker.trace("a")
    store.add(trace)
    got = store.get(trace.id)
    assert got is not None
    assert got.to_dict() == trace.to_dict()
    assert store.get("f" * 32) is None
    assert trace.id in store
    assert "f" * 32 not in store
    assert len(store) == 1


def test_bound_evicts_oldest_by_insertion(make_store: StoreFactory, maker: _Maker) -> None:
    store = make_store(max_traces=3)
    traces = [maker.trace(name) for name in "abcde"]
    for trace in traces:
        store.add(trace)
    assert len(store) == 3
    assert _names(store.all()) == ["c", "d", "e"]
    assert store.get(traces[0].id) is None
    assert store.evicted == 2
    assert store.stats() == StoreStats(size=3, max_traces=3, added=5, replaced=0, evicted=2)


def test_get_recent_is_newest_first(make_store: StoreFactory, maker: _Maker) -> None:
    store = make_store()
    for name in "abcd":
        store.add(maker.trace(name))
    assert _names(store.get_recent()) == ["d", "c", "b", "a"]
    assert _names(store.get_recent(2)) == ["d", "c"]
    assert store.get_recent(0) == []
    assert _names(store.get_recent(10)) == ["d", "c", "b", "a"]


def test_add_with_same_id_replaces_and_becomes_newest(make_store: StoreFactory, maker: _Maker) -> None:
    store = make_store(max_traces=3)
    a, b, c = maker.trace("a"), maker.trace("b"), maker.trace("c")
    for trace in (a, b, c):
        store.add(trace)
    renamed = Trace.from_dict({**a.to_dict(), "name": "a2"})
    store.add(renamed)
    assert len(store) == 3
    assert _names(store.all()) == ["b", "c", "a2"]
    got = store.get(a.id)
    assert got is not None and got.name == "a2"
    store.add(maker.trace("d"))  # evicts b, the oldest insertion, not the replaced a
    assert _names(store.all()) == ["c", "a2", "d"]
    stats = store.stats()
    assert (stats.added, stats.replaced, stats.evicted) == (5, 1, 1)


def test_get_errors_and_get_slow(make_store: StoreFactory, maker: _Maker) -> None:
    store = make_store()
    store.add(maker.trace("fast", duration_ms=50))
    store.add(maker.trace("bad", duration_ms=100, error=True))
    store.add(maker.trace("slow", duration_ms=300))
    store.add(maker.trace("edge", duration_ms=200))
    store.add(maker.running("open"))
    assert _names(store.get_errors()) == ["bad"]
    assert _names(store.get_slow(200)) == ["slow", "edge"]  # >= threshold, oldest first
    assert _names(store.get_slow(200.5)) == ["slow"]
    assert _names(store.get_slow(0)) == ["fast", "bad", "slow", "edge"]  # running has no duration


def test_query_with_predicate(make_store: StoreFactory, maker: _Maker) -> None:
    store = make_store()
    for name in ("chat", "embed", "chat"):
        store.add(maker.trace(name))
    chats = store.query(lambda t: t.name == "chat")
    assert len(chats) == 2
    assert all(t.name == "chat" for t in chats)
    assert store.query(lambda t: t.metadata.get("user") == "u1") == store.all()
    # The predicate may read the store itself without deadlocking.
    assert len(store.query(lambda t: len(store) == 3)) == 3


def test_clear_keeps_counters(make_store: StoreFactory, maker: _Maker) -> None:
    store = make_store(max_traces=2)
    for name in "abc":
        store.add(maker.trace(name))
    store.clear()
    assert len(store) == 0
    assert store.all() == [] and store.get_recent() == []
    assert store.stats().evicted == 1
    store.add(maker.trace("d"))
    assert _names(store.all()) == ["d"]


def test_empty_store_answers_every_query(make_store: StoreFactory) -> None:
    store = make_store()
    assert len(store) == 0
    assert store.all() == []
    assert store.get_recent(5) == []
    assert store.get_errors() == []
    assert store.get_slow(0) == []
    assert store.query(lambda t: True) == []


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True, None])
def test_max_traces_is_validated(make_store: StoreFactory, bad: object) -> None:
    with pytest.raises(ValueError, match=r"max_traces must be an int >= 1") as info:
        make_store(max_traces=bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, "5"])
def test_get_slow_threshold_is_validated(make_store: StoreFactory, bad: object) -> None:
    with pytest.raises(ValueError, match=r"threshold_ms must be a finite number >= 0"):
        make_store().get_slow(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, 2.0, "3"])
def test_get_recent_n_is_validated(make_store: StoreFactory, bad: object) -> None:
    with pytest.raises(ValueError, match=r"n must be None or an int >= 0"):
        make_store().get_recent(bad)  # type: ignore[arg-type]


def test_add_refuses_what_is_not_a_trace(make_store: StoreFactory, maker: _Maker) -> None:
    with pytest.raises(TypeError, match="expected a Trace, got dict"):
        make_store().add(maker.trace().to_dict())  # type: ignore[arg-type]


def test_concurrent_adds_keep_exact_counts(make_store: StoreFactory) -> None:
    threads_n, per_thread = 8, 60
    store = make_store(max_traces=threads_n * per_thread)
    ids = SequentialIdGenerator()
    clock = FakeClock()
    batches = [
        [
            end_trace(create_trace(f"w{w}", clock=clock, id_generator=ids), clock=clock)
            for _ in range(per_thread)
        ]
        for w in range(threads_n)
    ]
    barrier = threading.Barrier(threads_n + 1)
    seen_lengths: list[int] = []

    def writer(batch: list[Trace]) -> None:
        barrier.wait()
        for trace in batch:
            store.add(trace)

    def reader() -> None:
        barrier.wait()
        for _ in range(50):
            seen_lengths.append(len(store.get_recent(10)))

    workers = [threading.Thread(target=writer, args=(b,)) for b in batches]
    workers.append(threading.Thread(target=reader))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(store) == threads_n * per_thread
    assert {t.id for t in store.all()} == {t.id for b in batches for t in b}
    assert store.stats().added == threads_n * per_thread
    assert store.stats().evicted == 0
    assert all(0 <= n <= 10 for n in seen_lengths)
    # Within one writer, insertion order is kept.
    for w, batch in enumerate(batches):
        assert [t.id for t in store.all() if t.name == f"w{w}"] == [t.id for t in batch]


def test_concurrent_adds_beyond_the_bound_evict_exactly(make_store: StoreFactory) -> None:
    threads_n, per_thread, bound = 6, 50, 40
    store = make_store(max_traces=bound)
    ids = SequentialIdGenerator()
    clock = FakeClock()
    batches = [
        [end_trace(create_trace("t", clock=clock, id_generator=ids), clock=clock) for _ in range(per_thread)]
        for _ in range(threads_n)
    ]
    workers = [threading.Thread(target=lambda b=b: [store.add(t) for t in b]) for b in batches]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(store) == bound
    stats = store.stats()
    assert stats.added == threads_n * per_thread
    assert stats.evicted == threads_n * per_thread - bound


# In-memory specifics.


def test_memory_store_returns_snapshots(maker: _Maker) -> None:
    store = TraceStore()
    store.add(maker.trace("a"))
    snapshot = store.all()
    store.add(maker.trace("b"))
    assert _names(snapshot) == ["a"]
    assert store.max_traces == 1000
    assert repr(store) == "TraceStore(max_traces=1000, size=2)"


# SQLite specifics.


def test_sqlite_reopen_keeps_traces_and_order(tmp_path: Path, maker: _Maker) -> None:
    path = tmp_path / "traces.db"
    originals = [maker.trace("a"), maker.trace("b", error=True), maker.trace("c", duration_ms=500)]
    with SqliteTraceStore(path) as store:
        for trace in originals:
            store.add(trace)
    with SqliteTraceStore(path) as reopened:
        assert len(reopened) == 3
        assert [t.to_dict() for t in reopened.all()] == [t.to_dict() for t in originals]
        assert _names(reopened.get_recent(1)) == ["c"]
        assert _names(reopened.get_errors()) == ["b"]
        assert _names(reopened.get_slow(500)) == ["c"]
        spans = reopened.get(originals[1].id).spans  # type: ignore[union-attr]
        assert spans[0].status == "error"
        assert spans[0].events[0].name == "step"
        reopened.add(maker.trace("d"))
        assert _names(reopened.all()) == ["a", "b", "c", "d"]


def test_sqlite_reopen_with_smaller_bound_trims_oldest(tmp_path: Path, maker: _Maker) -> None:
    path = tmp_path / "traces.db"
    with SqliteTraceStore(path, max_traces=10) as store:
        for name in "abcde":
            store.add(maker.trace(name))
    with SqliteTraceStore(path, max_traces=2) as smaller:
        assert _names(smaller.all()) == ["d", "e"]
        assert smaller.evicted == 3


def test_sqlite_two_stores_on_one_file_keep_the_bound(tmp_path: Path, maker: _Maker) -> None:
    path = tmp_path / "shared.db"
    with SqliteTraceStore(path, max_traces=3) as first, SqliteTraceStore(path, max_traces=3) as second:
        for index, name in enumerate("abcdef"):
            (first if index % 2 == 0 else second).add(maker.trace(name))
        assert len(first) == len(second) == 3
        assert _names(second.all()) == ["d", "e", "f"]
        assert first.evicted + second.evicted == 3


def test_sqlite_rows_have_indexed_columns(tmp_path: Path, maker: _Maker) -> None:
    path = tmp_path / "traces.db"
    trace = maker.trace("indexed", duration_ms=42)
    with SqliteTraceStore(path) as store:
        store.add(trace)
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT id, name, start_time, duration, status FROM traces").fetchone()
        indexed = {
            info[2]
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            for info in conn.execute(f"PRAGMA index_info('{name}')")
        }
    finally:
        conn.close()
    assert row == (trace.id, "indexed", trace.start_time, 42.0, "success")
    assert {"id", "start_time", "duration", "status", "name"} <= indexed


def test_sqlite_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"does not exist: create the directory or choose another path"):
        SqliteTraceStore(tmp_path / "nowhere" / "traces.db")


def test_sqlite_directory_as_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is a directory: give a file path"):
        SqliteTraceStore(tmp_path)


def test_sqlite_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the traces you are looking for\n" * 100)
    with pytest.raises(ValueError, match=r"is not a SQLite database: choose another path or delete it"):
        SqliteTraceStore(path)
    assert path.read_text().startswith("these are not")  # left untouched


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, "1"])
def test_sqlite_timeout_is_validated(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match=r"timeout_s must be a finite number > 0"):
        SqliteTraceStore(tmp_path / "t.db", timeout_s=bad)  # type: ignore[arg-type]


def test_sqlite_locked_file_counts_a_write_error_instead_of_raising(
    tmp_path: Path, maker: _Maker, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "traces.db"
    store = SqliteTraceStore(path, timeout_s=0.01)
    store.add(maker.trace("before"))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.WARNING, logger="obs.storage.sqlite"):
            store.add(maker.trace("blocked"))  # must not raise
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.write_errors == 1
    assert store.stats().added == 1
    assert "could not store trace" in caplog.text
    store.add(maker.trace("after"))
    assert _names(store.all()) == ["before", "after"]
    store.close()


def test_sqlite_unencodable_attribute_is_replaced_and_counted_not_lost(tmp_path: Path, maker: _Maker) -> None:
    trace = maker.trace("loop")
    looped: dict[str, object] = {}
    looped["self"] = looped
    trace = dataclasses.replace(trace, spans=(set_span_attributes(trace.spans[0], {"loop": looped}),))
    with SqliteTraceStore(tmp_path / "t.db") as store:
        store.add(trace)
        assert store.write_errors == 0
        assert store.stats().sanitized == 1
        assert len(store) == 1
        got = store.get(trace.id)
    assert got is not None
    assert "contains itself" in got.spans[0].attributes["loop"]["self"]


def test_sqlite_values_json_cannot_hold_are_stored_as_text(tmp_path: Path, maker: _Maker) -> None:
    trace = maker.trace("odd")
    path_attribute = {"path": Path("models") / "m.gguf"}
    trace = dataclasses.replace(trace, spans=(set_span_attributes(trace.spans[0], path_attribute),))
    with SqliteTraceStore(tmp_path / "t.db") as store:
        store.add(trace)
        got = store.get(trace.id)
    assert got is not None
    assert got.spans[0].attributes["path"] == str(Path("models") / "m.gguf")


def test_sqlite_closed_store_refuses_calls(tmp_path: Path, maker: _Maker) -> None:
    store = SqliteTraceStore(tmp_path / "t.db")
    store.close()
    store.close()  # closing twice is fine
    with pytest.raises(ValueError, match="is closed"):
        store.add(maker.trace())
    with pytest.raises(ValueError, match="is closed"):
        store.all()
    with pytest.raises(ValueError, match="is closed"):
        len(store)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(obs.storage.memory)
    assert result.attempted > 0
    assert result.failed == 0
