"""The dashboard at a large history: what it draws equals what pandas computes from the requests themselves.

A file of 40,000 synthetic chat calls over five days (`benchmarks/synthetic.py`,
the file the dashboard benchmark measures, here smaller) is read by
`app.dashboard_view.dashboard_view` as the page reads it, in several views
(ranges, buckets, scopes); the tiles, every chart's data and the percentile
lines must equal the aggregates pandas and numpy compute from the calls'
own numbers: counts and token sums exactly, costs to the picodollar,
percentiles exactly (nearest rank), the latency points the exact requests
the spreading rule picks. A smaller file shows that the synthetic writer
writes what `SqliteTraceStore` itself writes for the same traces, rollups
included.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from app.dashboard_view import LATENCY_POINTS, RECENT_TRACES, DashboardView, dashboard_view
from benchmarks.synthetic import MODELS, SERVICES, frame, synthetic_requests, trace_at, write_store
from obs.clock import FakeClock
from obs.dashboard import LATENCY_BUCKETS
from obs.storage.queries import DashboardQueries
from obs.storage.sqlite import SqliteTraceStore

END_MS = 1_760_000_123_456.25  # not on a minute or an hour
NOW_S = END_MS / 1000.0
DAY_S = 86_400.0
STORED = 40_000


@pytest.fixture(scope="module")
def calls() -> pd.DataFrame:
    return frame(synthetic_requests(STORED, end_ms=END_MS, days=5.0, seed=3))


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardQueries]:
    path = tmp_path_factory.mktemp("scale") / "obs.db"
    write_store(path, synthetic_requests(STORED, end_ms=END_MS, days=5.0, seed=3))
    with SqliteTraceStore(path) as store:
        yield DashboardQueries(store, clock=FakeClock(start_ms=END_MS))


def _conversations(calls: pd.DataFrame) -> list[str]:
    recent = calls[calls["start_ms"] >= END_MS - 20 * 3_600_000.0]["conversation"].unique()
    return sorted(recent[::40].tolist())


# (seconds back (None: all), the user's bucket choice, the bucket drawn, scope)
VIEWS: list[tuple[float | None, int, int, str]] = [
    (None, 60, 3600, "everything"),
    (DAY_S, 1, 60, "everything"),
    (3600.0, 1, 1, "everything"),
    (7200.0, 60, 60, "everything"),
    (2 * DAY_S, 60, 3600, "model"),
    (DAY_S, 60, 60, "service"),
    (3 * DAY_S, 60, 3600, "service and model"),
    (DAY_S, 60, 60, "conversations"),
]


def _scope(name: str, calls: pd.DataFrame) -> dict[str, Any]:
    return {
        "everything": {}, "model": {"model": MODELS[2]}, "service": {"service": SERVICES[1]},
        "service and model": {"service": SERVICES[0], "model": MODELS[0]},
        "conversations": {"conversation": _conversations(calls)},
    }[name]  # fmt: skip


def _chosen(calls: pd.DataFrame, since: float | None, scope: dict[str, Any]) -> pd.DataFrame:
    """The calls the view counts, computed from the calls themselves, oldest first."""
    keep = np.ones(len(calls), dtype=bool)
    if since is not None:
        keep &= calls["start_ms"].to_numpy() >= since * 1000.0
    for column in ("service", "model"):
        if column in scope:
            keep &= calls[column].to_numpy() == scope[column]
    if "conversation" in scope:
        keep &= calls["conversation"].isin(scope["conversation"]).to_numpy()
    return calls[keep].sort_values("start_ms", kind="stable")


def _nearest_rank(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q, method="inverted_cdf"))


def _view(queries: DashboardQueries, calls: pd.DataFrame, back: float | None, bucket: int, scope: str
          ) -> tuple[DashboardView, pd.DataFrame, float | None]:  # fmt: skip
    since = None if back is None else NOW_S - back
    scoped = _scope(scope, calls)
    view = dashboard_view(queries, since, scoped, bucket_s=bucket, now=NOW_S)
    return view, _chosen(calls, since, scoped), since


def _by_name(figure: go.Figure) -> dict[str, Any]:
    return {trace.name: trace for trace in figure.data}


def _ms(times: Any) -> list[int]:
    """A chart's date axis values (UTC) as epoch ms."""
    return np.asarray(times, dtype="datetime64[ms]").astype(np.int64).tolist()


@pytest.mark.parametrize(("back", "bucket", "drawn", "scope"), VIEWS)
def test_the_tiles_equal_the_calls_own_sums(
    queries: DashboardQueries, calls: pd.DataFrame, back: float | None, bucket: int, drawn: int, scope: str,
) -> None:  # fmt: skip
    view, chosen, since = _view(queries, calls, back, bucket, scope)
    n = len(chosen)
    assert n > 100 and view.request_count == n and view.bucket_s == drawn
    latency = chosen["latency_ms"].to_numpy()
    tokens = int(chosen["input_tokens"].sum() + chosen["output_tokens"].sum())
    starts = chosen["start_ms"].to_numpy()
    elapsed = (END_MS - since * 1000.0 if since is not None else starts[-1] - starts[0]) / 1000.0
    assert view.tiles == {
        "Total Requests": n,
        "Total Tokens": tokens,
        "Total Cost": f"${int(chosen['cost_units'].sum()) / 10**12:.4f}",
        "Avg Latency": f"{latency.mean():.0f}ms",
        "P95 Latency": f"{_nearest_rank(latency, 0.95):.0f}ms",
        "Error Rate": f"{chosen['error'].mean() * 100:.1f}%",
        "Cache Hit Rate": f"{chosen['cache_hit'].mean() * 100:.1f}%",
        "Throughput": f"{n / max(1.0, elapsed):.2f} req/s",
    }
    tiles = queries.tiles(since, **_scope(scope, calls))
    assert (tiles.p50_latency_ms, tiles.p95_latency_ms) == (_nearest_rank(latency, 0.5),
                                                            _nearest_rank(latency, 0.95))  # fmt: skip
    assert tiles.total_cost * 10**12 == pytest.approx(int(chosen["cost_units"].sum()), abs=1.0)
    assert tiles.avg_ttft_ms == pytest.approx(chosen["ttft_ms"].mean(), rel=1e-12)


@pytest.mark.parametrize(("back", "bucket", "drawn", "scope"), VIEWS)
def test_the_charts_over_time_equal_the_calls_grouped_by_bucket(
    queries: DashboardQueries, calls: pd.DataFrame, back: float | None, bucket: int, drawn: int, scope: str,
) -> None:  # fmt: skip
    view, chosen, _ = _view(queries, calls, back, bucket, scope)
    width_ms = drawn * 1000.0
    grouped = chosen.groupby(np.floor(chosen["start_ms"] / width_ms) * width_ms)
    want = pd.DataFrame({"requests": grouped.size(), "errors": grouped["error"].sum(),
                         "completion": grouped["output_tokens"].sum(), "units": grouped["cost_units"].sum()})
    times = [int(ms) for ms in want.index]
    bars, line = view.figures["chart_throughput"].data
    assert _ms(bars.x) == times
    assert list(bars.y) == pytest.approx((want["requests"] / drawn).tolist(), rel=1e-12)
    assert list(line.y) == pytest.approx((want["completion"] / drawn).tolist(), rel=1e-12)
    errors = _by_name(view.figures["chart_errors"])["error rate"]
    assert _ms(errors.x) == times
    assert list(errors.y) == pytest.approx((want["errors"] / want["requests"]).tolist(), rel=1e-12)
    (cost,) = view.figures["chart_cost"].data
    assert _ms(cost.x) == times
    assert list(cost.y) == pytest.approx((want["units"].cumsum() / 10**12).tolist(), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("back", "bucket", "drawn", "scope"), VIEWS)
def test_the_latency_histogram_counts_every_call(
    queries: DashboardQueries, calls: pd.DataFrame, back: float | None, bucket: int, drawn: int, scope: str,
) -> None:  # fmt: skip
    view, chosen, _ = _view(queries, calls, back, bucket, scope)
    edges = [low for _, low, _ in LATENCY_BUCKETS] + [math.inf]
    counts = pd.cut(chosen["latency_ms"], edges, right=False).value_counts(sort=False).tolist()
    (bars,) = view.figures["chart_histogram"].data
    assert list(bars.x) == [label for label, _, _ in LATENCY_BUCKETS] and list(bars.y) == counts


def _spread(chosen: pd.DataFrame, points: int) -> pd.DataFrame:
    """All the calls when they fit, else the first of each of `points` equal slices of their time."""
    if len(chosen) <= points:
        return chosen
    starts = chosen["start_ms"].tolist()
    first, last = starts[0], starts[-1]
    width = (last - first) / (points - 1)
    picked = []
    for j in range(points):
        at = int(np.searchsorted(starts, first + j * width, side="left"))
        if at < len(starts) and starts[at] < first + (j + 1) * width:
            picked.append(at)
    return chosen.iloc[picked]


@pytest.mark.parametrize(("back", "bucket", "drawn", "scope"), VIEWS)
def test_the_latency_points_are_the_calls_spread_over_the_range(
    queries: DashboardQueries, calls: pd.DataFrame, back: float | None, bucket: int, drawn: int, scope: str,
) -> None:  # fmt: skip
    view, chosen, _ = _view(queries, calls, back, bucket, scope)
    want = _spread(chosen, LATENCY_POINTS)
    figure = view.figures["chart_latency"]
    got = sorted((str(trace_id), float(y), trace.name) for trace in figure.data
                 for trace_id, y in zip(trace.customdata, trace.y, strict=True))  # fmt: skip
    expected = sorted((row.trace_id, row.latency_ms, "error" if row.error else "success")
                      for row in want.itertuples())  # fmt: skip
    assert got == expected and view.points == len(want) <= LATENCY_POINTS
    if len(chosen) > LATENCY_POINTS:
        assert len(want) > 0.9 * LATENCY_POINTS  # the calls are spread enough to fill most slices
    latency = chosen["latency_ms"].to_numpy()
    lines = [shape.y0 for shape in figure.layout.shapes]
    assert lines == [_nearest_rank(latency, 0.5), _nearest_rank(latency, 0.95)]


@pytest.mark.parametrize(("back", "bucket", "drawn", "scope"), VIEWS)
def test_the_per_request_charts_show_the_latest_calls(
    queries: DashboardQueries, calls: pd.DataFrame, back: float | None, bucket: int, drawn: int, scope: str,
) -> None:  # fmt: skip
    view, chosen, _ = _view(queries, calls, back, bucket, scope)
    latest = chosen.tail(RECENT_TRACES)  # one request per trace here
    prompt, completion = view.figures["chart_tokens"].data
    assert list(prompt.y) == latest["input_tokens"].tolist()
    assert list(completion.y) == latest["output_tokens"].tolist()
    (ttft,) = view.figures["chart_ttft"].data
    assert sorted(ttft.x) == sorted(latest["ttft_ms"].dropna().tolist())
    prompt_ms = _by_name(view.figures["chart_breakdown"])["prompt processing"]
    want = np.where(latest["error"], np.nan, latest["latency_ms"] * 0.25)
    assert np.array_equal(np.asarray(prompt_ms.y, dtype=float), want, equal_nan=True)
    shown = f"the latest {RECENT_TRACES}" if len(chosen) > RECENT_TRACES else f"all {len(chosen)}"
    assert f"({len(chosen):,})" in view.caption and shown in view.caption


def _table(path: Path, table: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
    finally:
        conn.close()


def _same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    """Rows equal, sums of floats up to their last bits (the rows are added up in another order)."""
    if len(a) != len(b):
        return False
    for row_a, row_b in zip(a, b, strict=True):
        for x, y in zip(row_a, row_b, strict=True):
            if isinstance(x, float) and isinstance(y, float):
                if not math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-9):
                    return False
            elif x != y:
                return False
    return True


def test_the_synthetic_file_holds_what_the_store_writes(tmp_path: Path) -> None:
    requests = synthetic_requests(1500, end_ms=END_MS, days=0.3, seed=5)
    fast, stored = tmp_path / "fast.db", tmp_path / "stored.db"
    write_store(fast, requests)
    with SqliteTraceStore(stored) as store:
        assert store.add_many([trace_at(requests, i) for i in range(len(requests))]) == len(requests)
    conn = sqlite3.connect(stored)
    tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                               "AND name NOT IN ('meta', 'sqlite_sequence')")]  # fmt: skip
    conn.close()
    kept = {"traces", "spans", "rollup", "rollup_hour", "hour_bins", "hour_bins_all", "sessions", "counters"}
    assert kept <= set(tables)
    for table in tables:
        assert _same(_table(fast, table), _table(stored, table)), table
    with SqliteTraceStore(fast) as store:
        assert store.get(f"{7:032x}") == trace_at(requests, 6)
