"""What the rollups, hourly bins, sessions and counters of a SQLite file must hold, computed from its rows.

`assert_sums_exact(conn)` reads every table the writers keep in step and
compares it, row for row, with the same sums grouped straight from `spans`
and `traces`: integer columns exactly, the two float sums (latency, TTFT)
within rounding, and no row more or less on either side (a key whose
requests are all gone has no row).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from obs.storage._columns import SPAN_COLUMNS, TRACE_COLUMNS, encode_trace
from obs.storage._rollup_sql import SPAN_SUMS, SUM_COLUMNS, WRITER_SUMS
from obs.trace.traces import Trace

_FLOAT_SUMS = {SUM_COLUMNS.index("latency_sum"), SUM_COLUMNS.index("ttft_sum")}
_REQUESTS = "FROM spans WHERE request = 1"
_DIMS = "COALESCE(service, ''), COALESCE(model, '')"


def _keyed(conn: sqlite3.Connection, sql: str, width: int) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    return {tuple(row[:width]): tuple(row[width:]) for row in conn.execute(sql)}


def _same_sums(name: str, got: dict[Any, tuple[Any, ...]], want: dict[Any, tuple[Any, ...]]) -> None:
    assert got.keys() == want.keys(), f"{name}: keys differ: {sorted(got.keys() ^ want.keys())[:5]}"
    for key, values in want.items():
        for index, (have, expected) in enumerate(zip(got[key], values, strict=True)):
            if index in _FLOAT_SUMS:
                assert have == pytest.approx(expected, rel=1e-9, abs=1e-6), (name, key, SUM_COLUMNS[index])
            else:
                assert have == expected, (name, key, SUM_COLUMNS[index], have, expected)


def _bins(conn: sqlite3.Connection, dims: str, group: str) -> dict[tuple[Any, ...], int]:
    sql = " UNION ALL ".join(
        f"SELECT hour, {dims}{', ' if dims else ''}{metric}, {column}, COUNT(*) {_REQUESTS} "
        f"AND {column} IS NOT NULL GROUP BY {group}, {column}"
        for metric, column in ((0, "latency_bin"), (1, "ttft_bin"))
    )
    return {tuple(row[:-1]): row[-1] for row in conn.execute(sql)}


def assert_sums_exact(conn: sqlite3.Connection) -> None:
    """Every rollup, bin, session and counter of the file on `conn` equals the sums of its rows."""
    columns = ", ".join(SUM_COLUMNS)
    for table, key in (("rollup", "minute"), ("rollup_hour", "hour")):
        got = _keyed(conn, f"SELECT {key}, service, model, {columns} FROM {table}", 3)
        want = _keyed(conn, f"SELECT {key}, {_DIMS}, {SPAN_SUMS} {_REQUESTS} GROUP BY 1, 2, 3", 3)
        _same_sums(table, got, want)
    bins = {tuple(row[:-1]): row[-1] for row in
            conn.execute("SELECT hour, service, model, metric, bin, n FROM hour_bins")}  # fmt: skip
    assert bins == _bins(conn, _DIMS, "1, 2, 3")
    everything = {tuple(row[:-1]): row[-1] for row in
                  conn.execute("SELECT hour, metric, bin, n FROM hour_bins_all")}  # fmt: skip
    assert everything == _bins(conn, "", "1")
    sessions = _keyed(conn, "SELECT conversation_id, turns, requests, errors, input_tokens, output_tokens, "
                      "cost_units FROM sessions", 1)  # fmt: skip
    want_sessions = _keyed(conn, "SELECT conversation_id, COUNT(*), SUM(requests), SUM(status = 'error'), "
                           "SUM(input_tokens), SUM(output_tokens), SUM(cost_units) FROM traces "
                           "WHERE conversation_id IS NOT NULL GROUP BY 1", 1)  # fmt: skip
    assert sessions == want_sessions
    counters = dict(conn.execute("SELECT name, n FROM counters"))
    assert counters["requests"] == conn.execute(f"SELECT COUNT(*) {_REQUESTS}").fetchone()[0]
    assert counters["traces"] == conn.execute("SELECT COUNT(*) FROM traces").fetchone()[0]
    assert counters["logs"] == conn.execute("SELECT COUNT(*) FROM logs").fetchone()[0]
    assert counters[WRITER_SUMS] == 0  # only ever 1 inside a writer's own transaction


def write_as_the_previous_release(path: Path, traces: list[Trace]) -> None:
    """Rows written as the previous release wrote them: one INSERT per row, sums left to the trigger."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for trace in traces:
            encoded = encode_trace(trace)
            conn.execute("DELETE FROM spans WHERE trace_id = ?", (encoded.trace_id,))
            conn.execute("DELETE FROM traces WHERE id = ?", (encoded.trace_id,))
            conn.execute(f"INSERT INTO traces ({', '.join(TRACE_COLUMNS)}) "
                         f"VALUES ({', '.join('?' * len(TRACE_COLUMNS))})", encoded.trace_row)  # fmt: skip
            for row in encoded.span_rows:
                conn.execute(f"INSERT INTO spans ({', '.join(SPAN_COLUMNS)}) "
                             f"VALUES ({', '.join('?' * len(SPAN_COLUMNS))})", row)  # fmt: skip
        conn.execute("COMMIT")
    finally:
        conn.close()


def request_count(conn: sqlite3.Connection) -> int:
    """How many request spans the file holds."""
    return int(conn.execute(f"SELECT COUNT(*) {_REQUESTS}").fetchone()[0])
