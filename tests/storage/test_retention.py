"""Retention by age and by count, clearing the file and describing it.

Retention keeps exactly the newest N traces (by start time) and nothing
older than the age, for traces with their spans, log entries and alert
transitions alike; what the dashboard reads (rollup, sessions) follows. The
settings live in the file, so every store on it sees them.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from obs.alerting.manager import AlertTransition
from obs.logs import LogEntry
from obs.storage.queries import DashboardQueries
from obs.storage.results import RetentionPolicy, RetentionReport
from obs.storage.retention import RetentionThread
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.traces import Trace
from tests.storage._traces import BASE_MS, request_span, trace_of

DAY_MS = 86_400_000.0
NOW_MS = BASE_MS + 10 * DAY_MS


def _traces(n: int, spread_ms: float, seed: int = 3) -> list[Trace]:
    """`n` one-call traces whose starts are spread over `spread_ms` before NOW_MS, in shuffled order."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        start = NOW_MS - rng.random() * spread_ms
        trace_id = f"{i + 1:032x}"
        span = request_span(trace_id, f"{i + 1:016x}", start, 50.0 + i, conversation=f"c{i % 17}")
        out.append(trace_of(trace_id, "chat", [span]))
    return out


def _wait_for(condition: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_keeps_exactly_the_newest_n_traces(tmp_path: Path) -> None:
    traces = _traces(700, 3 * DAY_MS)
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        store.add_many(traces)
        store.set_retention(RetentionPolicy(max_age_s=None, max_traces=250))
        report = store.apply_retention(now_ms=NOW_MS)
        assert report == RetentionReport(traces=450)
        newest = sorted(traces, key=lambda t: t.start_time)[-250:]
        assert sorted(t.id for t in store.all()) == sorted(t.id for t in newest)
        queries = DashboardQueries(store)
        assert queries.tiles().request_count == 250  # the rollup lost the removed requests too
        assert sum(s.turns for s in queries.sessions(limit=1000).items) == 250
        assert store.apply_retention(now_ms=NOW_MS) == RetentionReport()  # nothing more to do


def test_keeps_nothing_older_than_the_age(tmp_path: Path) -> None:
    traces = _traces(500, 10 * DAY_MS)
    cutoff = NOW_MS - 7 * DAY_MS
    entries = [LogEntry(NOW_MS - i * DAY_MS / 10, "info", f"m{i}") for i in range(100)]
    transitions = [AlertTransition("r", "ok", "firing", (NOW_MS - i * DAY_MS) / 1000, 1.0, 0.5, "error_rate",
                                   ">", 5) for i in range(10)]  # fmt: skip
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        store.add_many(traces)
        store.add_logs(entries)
        store.add_alert_transitions(transitions)
        report = store.apply_retention(now_ms=NOW_MS)  # the defaults: 7 days, 100,000 traces
        kept = [t for t in traces if t.start_time >= cutoff]
        assert report.traces == 500 - len(kept) > 0
        assert sorted(t.id for t in store.all()) == sorted(t.id for t in kept)
        queries = DashboardQueries(store)
        # 0 to 7 days old, the one exactly on the cutoff included
        assert [e.message for e in queries.logs(limit=1000).items] == [f"m{i}" for i in range(71)]
        assert len(queries.alert_transitions()) == 7 + 1  # 0..7 days old; the 7-day one is on the cutoff
        assert queries.tiles(until=cutoff / 1000).request_count == 0


def test_count_and_age_together_and_log_entries_by_count(tmp_path: Path) -> None:
    traces = _traces(400, 10 * DAY_MS)
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        store.add_many(traces)
        store.add_logs(LogEntry(NOW_MS - i, "info", f"m{i}") for i in range(50))
        store.set_retention(RetentionPolicy(max_age_s=5 * 86400, max_traces=100, max_log_entries=20))
        store.apply_retention(now_ms=NOW_MS)
        young = sorted((t for t in traces if t.start_time >= NOW_MS - 5 * DAY_MS), key=lambda t: t.start_time)
        assert sorted(t.id for t in store.all()) == sorted(t.id for t in young[-100:])
        assert [e.message for e in DashboardQueries(store).logs().items] == [f"m{i}" for i in range(20)]


def test_the_settings_live_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    with SqliteTraceStore(path) as store:
        assert store.retention == RetentionPolicy(7 * 86400.0, 100_000, 1_000_000)
        assert store.max_traces == 100_000
        store.set_retention(RetentionPolicy(max_age_s=3600.0, max_traces=None))
    with SqliteTraceStore(path) as other:
        assert other.retention == RetentionPolicy(max_age_s=3600.0, max_traces=None)
        assert other.max_traces == 2**63 - 1
        assert other.file_info().retention.max_age_s == 3600.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_age_s", 0), ("max_age_s", float("nan")), ("max_traces", 0), ("max_traces", 1.5),
     ("max_log_entries", -1), ("max_traces", True)],
)  # fmt: skip
def test_bad_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"RetentionPolicy: {field} must be None \(no limit\) or"):
        RetentionPolicy(**{field: value})  # type: ignore[arg-type]


def test_the_background_thread_applies_retention_while_writers_go_on(tmp_path: Path) -> None:
    traces = _traces(600, DAY_MS)
    with SqliteTraceStore(tmp_path / "obs.db", timeout_s=30.0) as store:
        store.set_retention(RetentionPolicy(max_age_s=None, max_traces=100))
        thread = store.start_retention(interval_s=0.01)
        assert store.start_retention(interval_s=5.0) is thread  # one thread per store
        for start in range(0, 600, 20):
            assert store.add_many(traces[start : start + 20]) == 20  # never fails under retention
        _wait_for(lambda: len(store) == 100 and thread.runs > 0)
        assert store.write_errors == 0 and thread.failures == 0
        newest = sorted(traces, key=lambda t: t.start_time)[-100:]
        assert sorted(t.id for t in store.all()) == sorted(t.id for t in newest)
    assert not thread.running  # close() stopped it


def test_a_failing_pass_is_counted_not_raised() -> None:
    def boom() -> None:
        raise RuntimeError("disk gone")

    thread = RetentionThread(boom, interval_s=0.01)
    _wait_for(lambda: thread.failures >= 2)
    assert thread.stop() and thread.last_error == "RuntimeError: disk gone"
    with pytest.raises(ValueError, match=r"interval_s must be a finite number of seconds > 0"):
        RetentionThread(boom, interval_s=0)


def test_clear_empties_the_file_and_file_info_describes_it(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    with SqliteTraceStore(path) as store:
        store.add_many(_traces(300, DAY_MS))
        store.add_logs([LogEntry(NOW_MS, "info", "secret prompt text")])
        info = store.file_info()
        assert (info.path, info.trace_count, info.request_count, info.log_count) == (str(path), 300, 300, 1)
        assert info.oldest_trace_at is not None and info.newest_trace_at is not None
        assert info.oldest_trace_at <= info.newest_trace_at <= NOW_MS / 1000
        assert info.schema_version == 2 and info.size_bytes > 100_000
        store.clear(vacuum=True)
        after = store.file_info()
        assert (after.trace_count, after.request_count, after.log_count) == (0, 0, 0)
        assert after.oldest_trace_at is None
        assert after.size_bytes < info.size_bytes
        assert b"secret prompt text" not in path.read_bytes()
        queries = DashboardQueries(store)
        assert queries.tiles().request_count == 0 and queries.logs().items == ()
        assert store.retention == RetentionPolicy()  # the settings stay
        store.add_many(_traces(5, DAY_MS))
        assert len(store) == 5
