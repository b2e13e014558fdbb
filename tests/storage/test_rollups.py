"""The sums the dashboard reads stay exact however traces come and go.

obs's writer adds a batch's request spans to the rollups itself, summed per
minute, hour, service and model; triggers take removed spans out one by one,
and still add the spans of a writer that leaves the sums to them (an older
release on the same file). After batches of every size, a trace given twice
in one batch, replacements that move requests between keys, trace parts
merged across exports, eviction by `max_traces`, retention by age and by
count, writes by such an older writer, a batch that fails halfway and sums
past 64 bits, every rollup, hourly bin, session and counter is compared row
for row with the same sums grouped from the span and trace rows
(`tests.storage._rollups`). Real SQLite files throughout.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obs import semconv
from obs.receive import MergingStoreExporter
from obs.storage._rollup_sql import LATENCY_BOUNDS_MS
from obs.storage.exporter import SqliteExporter
from obs.storage.results import RetentionPolicy
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.processors import ExportResult
from obs.trace.spans import Span
from obs.trace.traces import Trace
from tests.storage._rollups import assert_sums_exact, request_count, write_as_the_previous_release
from tests.storage._traces import BASE_MS, MODELS, random_traces, request_span, trace_of

HOUR_MS = 3_600_000.0


def _edge_traces() -> list[Trace]:
    """Requests on every edge of the sums: latencies on and just under each histogram bound, zero, none."""
    latencies = [0.0, *LATENCY_BOUNDS_MS, *(math.nextafter(b, 0.0) for b in LATENCY_BOUNDS_MS), 1e9]
    traces = []
    for i, latency in enumerate(latencies):
        trace_id = f"e{i:031x}"
        span = request_span(trace_id, f"e{i:015x}", BASE_MS + i * 7_000.0, latency, model=None,
                            ttft=[None, 0.0, latency][i % 3], inputs=None, cost=None)  # fmt: skip
        traces.append(trace_of(trace_id, "chat", [span], service=None if i % 2 else "edge"))
    running = request_span("e" * 32, "e" * 16, BASE_MS, 5.0)
    attrs = {k: v for k, v in running.attributes.items() if k != semconv.OBS_LATENCY_MS}
    running = replace(running, end_time=None, duration=None, status="running", attributes=attrs)
    traces.append(Trace("e" * 32, "running", BASE_MS, None, None, "running", {}, (running,)))
    return traces


def _exact(store: SqliteTraceStore) -> None:
    with store.database().read() as conn:
        assert_sums_exact(conn)


def _requests(store: SqliteTraceStore) -> int:
    with store.database().read() as conn:
        return request_count(conn)


def _moved(trace: Trace, shift_ms: float, model: str) -> Trace:
    """The same trace id with its request spans moved in time, to another model and latency."""
    spans = []
    for span in trace.spans:
        attrs = dict(span.attributes)
        if semconv.GEN_AI_OPERATION_NAME in attrs:
            attrs[semconv.GEN_AI_REQUEST_MODEL] = model
            attrs[semconv.OBS_LATENCY_MS] = float(attrs.get(semconv.OBS_LATENCY_MS, 1.0)) * 3 + 7
            attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] = 1234
        spans.append(replace(span, start_time=span.start_time + shift_ms, attributes=attrs))
    return replace(trace, start_time=trace.start_time + shift_ms, spans=tuple(spans))


def test_batches_replacements_evictions_and_retention_keep_every_sum_exact(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    traces = random_traces(900, span_ms=30 * HOUR_MS)
    with SqliteTraceStore(path) as store:
        at = 0
        for size in (1, 7, 100, 492, 300):  # one trace, a few, and batches past a statement's rows
            assert store.add_many(traces[at : at + size]) == size
            at += size
            _exact(store)
        edges = _edge_traces()
        assert store.add_many(edges) == len(edges)
        _exact(store)
        with store.database().read() as conn:  # each edge counted in the histogram column it belongs to
            counts = conn.execute(f"SELECT {', '.join(f'SUM(lat{i})' for i in range(8))}, SUM(latency_count) "
                                  "FROM rollup WHERE service = 'edge' OR model = ''").fetchone()  # fmt: skip
        # 0 and just under 100 in the first column, each bound and just under the next in its own, the
        # last bound and 1e9 in the last; the running request has no latency.
        assert tuple(counts) == (2, 2, 2, 2, 2, 2, 2, 2, 16)
        want = sum(semconv.GEN_AI_OPERATION_NAME in s.attributes for t in [*traces, *edges] for s in t.spans)
        assert _requests(store) == want > 500

        # Replacements: other minutes, hours and models; one id twice in a batch (the later copy wins).
        rng = random.Random(5)
        chosen = rng.sample(traces, 150)
        shifts = [-2 * HOUR_MS, 90_000.0, 5 * HOUR_MS]
        again = [_moved(t, rng.choice(shifts), rng.choice(MODELS)) for t in chosen]
        twice = _moved(chosen[0], 60_000.0, "twice")
        assert store.add_many([*again, twice]) == 151
        assert store.stats().replaced == 151  # 150 stored ones, and the earlier copy in the same batch
        assert store.get(chosen[0].id) == twice
        assert len(store) == 900 + len(edges)
        _exact(store)

        store.set_retention(RetentionPolicy(max_age_s=20 * 3600, max_traces=600))
        report = store.apply_retention(now_ms=BASE_MS + 32 * HOUR_MS)  # older than 20 h, then the newest 600
        assert report.traces > 300 and len(store) <= 600
        _exact(store)
    with SqliteTraceStore(path, max_traces=250) as bounded:  # trims the file on opening, then each write
        assert len(bounded) == 250
        _exact(bounded)
        assert bounded.add_many(random_traces(960, span_ms=30 * HOUR_MS)[900:]) == 60
        assert len(bounded) == 250 and bounded.evicted > 0
        _exact(bounded)
        bounded.clear()
        _exact(bounded)
        assert _requests(bounded) == 0


def test_trace_parts_merged_across_exports_are_summed_once(tmp_path: Path) -> None:
    traces = [t for t in random_traces(200, seed=3) if len(t.spans) > 1]
    parts = [replace(t, spans=(span,)) for t in traces for span in reversed(t.spans)]  # children first
    random.Random(2).shuffle(parts)
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        exporter = MergingStoreExporter(SqliteExporter(store))
        for at in range(0, len(parts), 16):
            assert exporter.export(parts[at : at + 16]) is ExportResult.SUCCESS
            _exact(store)
        resent = [replace(t, spans=(t.spans[-1],)) for t in traces[:40]]  # sent again: replaces its copy
        assert exporter.export(resent) is ExportResult.SUCCESS
        assert len(store) == len(traces)
        assert {s.id for t in store.all() for s in t.spans} == {s.id for t in traces for s in t.spans}
        assert _requests(store) == sum(1 for t in traces for s in t.spans
                                       if semconv.GEN_AI_OPERATION_NAME in s.attributes)  # fmt: skip
        _exact(store)


def test_a_writer_that_leaves_the_sums_to_the_trigger_is_still_summed(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    traces = random_traces(300, seed=9)
    with SqliteTraceStore(path) as store:
        store.add_many(traces[:100])
        write_as_the_previous_release(path, traces[100:200])
        _exact(store)
        store.add_many(traces[200:])
        write_as_the_previous_release(path, [_moved(t, HOUR_MS, "other") for t in traces[:50]])  # replaces
        assert len(store) == 300
        _exact(store)


def test_a_batch_that_fails_halfway_leaves_neither_its_traces_nor_its_sums(tmp_path: Path) -> None:
    path = tmp_path / "obs.db"
    traces = random_traces(80, seed=4)
    with SqliteTraceStore(path) as store:
        store.add_many(traces[:40])
        with store.database().write() as conn:  # a disk-full stand-in: the 30th span of a batch fails
            conn.execute("CREATE TRIGGER fail_late BEFORE INSERT ON spans WHEN NEW.name = 'poison' "
                         "BEGIN SELECT RAISE(ABORT, 'poisoned'); END")  # fmt: skip
        with store.database().read() as conn:
            before = [sorted(conn.execute(f"SELECT * FROM {table}").fetchall())
                      for table in ("rollup", "rollup_hour", "hour_bins", "counters")]  # fmt: skip
        late = traces[40:80]
        poisoned = replace(late[30], spans=(*late[30].spans, replace(late[30].spans[0], id="f" * 16,
                                                                       name="poison")))  # fmt: skip
        assert store.add_many([*late[:30], poisoned, *late[31:]]) == 0
        assert store.write_errors == 40 and len(store) == 40
        with store.database().read() as conn:
            after = [sorted(conn.execute(f"SELECT * FROM {table}").fetchall())
                     for table in ("rollup", "rollup_hour", "hour_bins", "counters")]  # fmt: skip
        assert after == before
        _exact(store)
        with store.database().write() as conn:
            conn.execute("DROP TRIGGER fail_late")
        assert store.add_many(late) == 40
        _exact(store)


def test_sums_past_64_bits_are_stored_as_sqlite_itself_would_add_them(tmp_path: Path) -> None:
    """Token counts each under 2**62 whose sum passes 2**63 become a float sum, as SQLite's own `+` does."""
    huge = 2**62 - 1
    spans = [request_span(f"{i + 1:032x}", f"{i + 1:016x}", BASE_MS + i, 10.0, inputs=huge) for i in range(4)]
    traces = [trace_of(s.trace_id, "chat", [s]) for s in spans]
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        assert store.add_many(traces) == 4 and store.write_errors == 0
        with store.database().read() as conn:
            (total,) = conn.execute("SELECT SUM(input_tokens) FROM rollup").fetchone()
            (rows,) = conn.execute("SELECT COUNT(*) FROM spans WHERE input_tokens = ?", (huge,)).fetchone()
    assert total == pytest.approx(4 * huge, rel=1e-12) and rows == 4
    write_as_the_previous_release(tmp_path / "obs.db", [replace(t, id=f"{9:031x}{i}", spans=tuple(
        replace(s, trace_id=f"{9:031x}{i}") for s in t.spans)) for i, t in enumerate(traces)])  # fmt: skip
    with SqliteTraceStore(tmp_path / "obs.db") as reopened, reopened.database().read() as conn:
        (total,) = conn.execute("SELECT SUM(input_tokens) FROM rollup").fetchone()
    assert total == pytest.approx(8 * huge, rel=1e-12)


_OPERATIONS = st.lists(
    st.tuples(st.sampled_from(["add", "replace", "age", "count", "mixed"]), st.integers(0, 2**16)),
    min_size=1, max_size=8,
)  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=_OPERATIONS)
def test_any_sequence_of_writes_and_removals_keeps_the_sums_exact(
    operations: list[tuple[str, int]], tmp_path: Path
) -> None:
    pool = random_traces(120, seed=13, span_ms=6 * HOUR_MS)
    with SqliteTraceStore(":memory:") as store:
        for operation, seed in operations:
            rng = random.Random(seed)
            if operation == "add":
                store.add_many(rng.sample(pool, rng.randrange(1, 60)))
            elif operation == "replace":
                stored = store.all()
                picked = rng.sample(stored, min(len(stored), rng.randrange(1, 20)))
                store.add_many([_moved(t, rng.choice([-HOUR_MS, 61_000.0]), rng.choice(MODELS))
                                for t in picked])  # fmt: skip
            elif operation == "age":
                store.set_retention(RetentionPolicy(max_age_s=rng.randrange(1, 6) * 3600, max_traces=None))
                store.apply_retention(now_ms=BASE_MS + 6 * HOUR_MS)
            elif operation == "count":
                store.set_retention(RetentionPolicy(max_age_s=None, max_traces=rng.randrange(1, 80)))
                store.apply_retention(now_ms=BASE_MS + 6 * HOUR_MS)
            else:
                extra = Span(f"{seed + 1:016x}", f"{seed + 1:032x}", None, "job", BASE_MS, BASE_MS + 1.0, 1.0,
                             "success")  # a trace without requests, then one with, in the same batch
                store.add_many([trace_of(extra.trace_id, "job", [extra]), rng.choice(pool)])
            _exact(store)
