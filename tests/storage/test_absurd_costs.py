"""A request span with an absurd `obs.cost.usd` is stored with its trace, and the sums stay sane.

A cost of 1.8e296 USD or more has picodollars past the largest float, which
once made `round()` raise and the whole trace go unstored. Now any finite
cost >= 0 is kept in the `cost` column as given and its `cost_units` are
clamped to 2**62; an infinite, NaN or negative cost is no cost (both columns
NULL). Real SQLite files: the trace reads back whole (its other spans and
tokens intact), both encoding paths give the same rows, and the rollups,
sessions, counters and the dashboard's queries over them neither raise nor
wrap around, however many such spans share a minute, an hour or a
conversation; replacing the absurd spans brings the sums back exactly.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

from obs.storage._columns import COST_UNITS_PER_USD, SPAN_COLUMNS, _object_rows, _rows, encode_trace
from obs.storage._rows import storable
from obs.storage.queries import DashboardQueries
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.spans import Span
from obs.trace.traces import Trace
from tests.storage._rollups import assert_sums_exact
from tests.storage._traces import BASE_MS, request_span, trace_of

CLAMP = 2**62  # the most cost units one span adds
HOUR_MS = 3_600_000.0
_COST, _UNITS = SPAN_COLUMNS.index("cost"), SPAN_COLUMNS.index("cost_units")
_INPUTS, _OUTPUTS = SPAN_COLUMNS.index("input_tokens"), SPAN_COLUMNS.index("output_tokens")

# (cost attribute, the `cost` column, the `cost_units` column)
ABSURD = {
    "1e296 (picodollars still a finite float)": (1e296, 1e296, CLAMP),
    "1.8e296 (picodollars past the largest float)": (1.8e296, 1.8e296, CLAMP),
    "1e300": (1e300, 1e300, CLAMP),
    "the largest float": (sys.float_info.max, sys.float_info.max, CLAMP),
    "just over the clamp": (4_611_687.0, 4_611_687.0, CLAMP),
    "infinity": (math.inf, None, None),
    "NaN": (math.nan, None, None),
    "negative infinity": (-math.inf, None, None),
    "negative": (-1e300, None, None),
}


def _turn(trace_id: str, start: float, cost: Any, *, conversation: str | None = "c-1") -> Trace:
    """A turn: a root span, a request with `cost`, and a second request with an ordinary cost."""
    root_id, absurd_id, plain_id = (f"{trace_id[-15:]}{n}" for n in "123")
    absurd = request_span(trace_id, absurd_id, start + 1.0, 40.0, parent=root_id, inputs=11, outputs=7,
                          cost=cost, conversation=conversation, question="how?", answer="a lot")  # fmt: skip
    plain = request_span(trace_id, plain_id, start + 50.0, 30.0, parent=root_id, inputs=5, outputs=3,
                         cost=0.25, conversation=conversation)  # fmt: skip
    root = Span(root_id, trace_id, None, "turn", start, start + 90.0, 90.0, "success", {"step": 1})
    return trace_of(trace_id, "turn", [root, absurd, plain])


def _identical(a: object, b: object) -> bool:
    """Equal, NaN equal to NaN (compared by repr, so 1 and 1.0 and True differ)."""
    return repr(a) == repr(b)


@pytest.mark.parametrize(("cost", "column", "units"), ABSURD.values(), ids=ABSURD.keys())
def test_the_trace_is_stored_and_reads_back_whole(
    tmp_path: Path, cost: float, column: Any, units: Any
) -> None:
    trace = _turn("a" * 32, BASE_MS, cost)
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        store.add(trace)
        assert store.write_errors == 0 and store.sanitized == 0
        got = store.get(trace.id)
        with store.database().read() as conn:
            rows = conn.execute(
                "SELECT name, cost, cost_units, input_tokens, output_tokens FROM spans WHERE trace_id = ? "
                "ORDER BY position", (trace.id,),
            ).fetchall()  # fmt: skip
            trace_row = conn.execute(
                "SELECT span_count, requests, input_tokens, output_tokens, cost_units FROM traces"
            ).fetchone()
    assert got is not None and _identical(got.to_dict(), trace.to_dict())
    assert _identical(rows, [("turn", None, None, None, None), ("chat smollm2", column, units, 11, 7),
                             ("chat smollm2", 0.25, 250_000_000_000, 5, 3)])  # fmt: skip
    # A trace sums at most 2**62 cost units too.
    assert trace_row == (3, 2, 16, 10, min((units or 0) + 250_000_000_000, CLAMP))


@pytest.mark.parametrize(("cost", "units"), [(cost, units) for cost, _, units in ABSURD.values()],
                         ids=ABSURD.keys())  # fmt: skip
def test_both_encoding_paths_give_the_same_rows(cost: float, units: Any) -> None:
    trace = _turn("b" * 32, BASE_MS, cost)
    quick = _object_rows(trace)
    assert quick is not None  # nothing here for `storable` to replace: the quick path takes it
    data, notes = storable(trace)
    assert notes == [] and repr(quick) == repr(_rows(data))
    encoded = encode_trace(trace)
    assert encoded.span_rows[1][_UNITS] == units


def _clamped_turns(count: int, *, apart_ms: float, conversation: str | None) -> list[Trace]:
    return [_turn(f"{i + 1:032x}", BASE_MS + i * apart_ms, 1e300, conversation=conversation)
            for i in range(count)]  # fmt: skip


def _dashboard(store: SqliteTraceStore) -> dict[str, Any]:
    """Everything the dashboard reads that sums requests, over ranges that take every path: whole hours
    and minutes from the rollups, partial minutes from the spans, a conversation from the spans alone."""
    queries = DashboardQueries(store)
    since, until = (BASE_MS - 500.0) / 1000.0, BASE_MS / 1000.0 + 30 * 3600.0 + 0.5  # inside minutes
    return {
        "tiles": queries.tiles(),
        "tiles of a range": queries.tiles(since, until),
        "tiles of the conversation": queries.tiles(conversation="c-1"),
        "minutes": queries.series(60, since, until),
        "hours": queries.series(3600),
        "hours from the rollups": queries.series(3600, percentiles=False),
        "minutes of the conversation": queries.series(60, conversation="c-1"),
        "sessions": queries.sessions(),
    }


@pytest.mark.parametrize(("count", "apart_ms"), [(5, 1_000.0), (5, HOUR_MS), (40, 61_000.0)],
                         ids=["one minute", "one hour each", "many minutes"])  # fmt: skip
def test_many_clamped_costs_sum_without_raising_or_wrapping(
    tmp_path: Path, count: int, apart_ms: float
) -> None:
    """`count` absurd costs in one conversation: their sums pass 2**63 and become floats, never negative.
    A request adds its clamped units to the rollups; a trace adds at most 2**62 to its session."""
    traces = _clamped_turns(count, apart_ms=apart_ms, conversation="c-1")
    expected_units = count * (CLAMP + 250_000_000_000)
    session_units = count * CLAMP
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        assert store.add_many(traces) == count and store.write_errors == 0
        read = _dashboard(store)
        with store.database().read() as conn:
            rollup = conn.execute("SELECT SUM(requests), TOTAL(cost_units) FROM rollup").fetchone()
            rollup_hour = conn.execute("SELECT SUM(requests), TOTAL(cost_units) FROM rollup_hour").fetchone()
            session = conn.execute(
                "SELECT turns, requests, cost_units, input_tokens FROM sessions"
            ).fetchall()
            counters = dict(conn.execute("SELECT name, n FROM counters"))
    for name in ("tiles", "tiles of a range", "tiles of the conversation"):
        tiles = read[name]
        assert (tiles.request_count, tiles.prompt_tokens, tiles.completion_tokens) == (2 * count, 16 * count,
                                                                                       10 * count), name
        assert tiles.total_cost == pytest.approx(expected_units / COST_UNITS_PER_USD, rel=1e-12), name
    for name in ("minutes", "hours", "hours from the rollups", "minutes of the conversation"):
        buckets = read[name]
        assert sum(b.requests for b in buckets) == 2 * count, name
        assert sum(b.prompt_tokens for b in buckets) == 16 * count, name
        assert all(b.cost > 0.0 for b in buckets), name
        assert sum(b.cost for b in buckets) == pytest.approx(expected_units / COST_UNITS_PER_USD, rel=1e-12)
    (summary,) = read["sessions"].items
    assert (summary.turns, summary.requests, summary.input_tokens) == (count, 2 * count, 16 * count)
    assert summary.cost == pytest.approx(session_units / COST_UNITS_PER_USD, rel=1e-12)
    for requests, units in (rollup, rollup_hour):
        assert requests == 2 * count and units == pytest.approx(expected_units, rel=1e-12)
    ((turns, session_requests, units, inputs),) = session
    assert (turns, session_requests, inputs) == (count, 2 * count, 16 * count)
    assert units == pytest.approx(session_units, rel=1e-12)
    assert counters["requests"] == 2 * count and counters["traces"] == count


def test_replacing_the_absurd_costs_brings_the_sums_back_exactly(tmp_path: Path) -> None:
    """The clamped units come out of every sum again: replaced by ordinary costs, the sums are exact."""
    absurd = _clamped_turns(6, apart_ms=1_000.0, conversation="c-1")
    ordinary = [_turn(t.id, t.start_time, 0.5) for t in absurd]
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        assert store.add_many(absurd) == 6
        assert store.add_many(ordinary) == 6 and store.write_errors == 0
        tiles = DashboardQueries(store).tiles()
        with store.database().read() as conn:
            assert_sums_exact(conn)
            units = conn.execute("SELECT cost_units, typeof(cost_units) FROM rollup").fetchall()
            session_units = conn.execute("SELECT cost_units, typeof(cost_units) FROM sessions").fetchall()
    assert units == session_units == [(6 * 750_000_000_000, "integer")]
    assert tiles.total_cost == 4.5 and tiles.request_count == 12


def test_one_clamped_cost_per_hour_keeps_every_sum_exact(tmp_path: Path) -> None:
    """Absurd costs beside ordinary traffic, one per hour and conversation: every rollup, hourly bin,
    session and counter equals the sums of its rows, integers exactly."""
    traces = [_turn(f"{i + 1:032x}", BASE_MS + i * HOUR_MS, 1e300, conversation=f"c-{i}") for i in range(4)]
    traces += [_turn(f"{i + 101:032x}", BASE_MS + i * 20 * 60_000.0, 0.001 * i, conversation=f"c-{i % 4}")
               for i in range(12)]  # fmt: skip
    traces.append(_turn("f" * 32, BASE_MS + 30_000.0, math.inf, conversation="c-0"))
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        assert store.add_many(traces) == len(traces) and store.write_errors == 0
        with store.database().read() as conn:
            assert_sums_exact(conn)
            spans = conn.execute(f"SELECT {', '.join(SPAN_COLUMNS)} FROM spans WHERE request = 1").fetchall()
    by_trace = {trace.id: encode_trace(trace).span_rows for trace in traces}
    assert sorted(map(repr, spans)) == sorted(
        repr(row) for rows in by_trace.values() for row in rows if row[SPAN_COLUMNS.index("request")] == 1
    )
    clamped = [row for row in spans if row[_UNITS] == CLAMP]
    assert len(clamped) == 4 and all(row[_COST] == 1e300 for row in clamped)

