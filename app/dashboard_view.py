"""One refresh of the Dashboard page's panel, without Streamlit: the tiles and the eight figures.

`dashboard_view(queries, since, scope, bucket_s=..., now=...)` reads what the
panel shows of the history file through `DashboardQueries` and draws it with
`app.charts`; the page puts the result on screen, and
`benchmarks/bench_dashboard.py` measures the same call. What it reads stays
small whatever the file holds:

- tiles (exact p50 and p95 too) and the latency histogram: SQL aggregates,
  mostly from the per-minute and per-hour rollups;
- throughput, errors and cost over time: buckets summed from the rollups
  (`series(..., percentiles=False)`: no chart draws per-bucket percentiles),
  at most an hour of seconds, a day of minutes, or hours beyond;
- latency per request: at most `LATENCY_POINTS` requests spread evenly over
  the range's time (`request_points`), so the scatter covers the whole
  range yet sends a bounded number of points;
- tokens, time to first token and the latency split per request: the
  requests of the latest `RECENT_TRACES` traces in range (a page in SQL).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from app import charts
from app.charts import Threshold
from obs.dashboard import LATENCY_BUCKETS, requests_frame
from obs.storage.queries import DEFAULT_LATENCY_BOUNDS_MS, DashboardQueries
from obs.storage.results import RequestPoint, SeriesBucket, Tiles

__all__ = [
    "BUCKET_NAMES", "LATENCY_POINTS", "LEFT_CHARTS", "PLOTLY_CONFIG", "RECENT_TRACES", "RIGHT_CHARTS",
    "DashboardView", "bucket_for", "dashboard_view", "histogram_frame", "points_frame", "tile_values",
    "timeline_frame",
]  # fmt: skip

LATENCY_POINTS = 1000
# What st.plotly_chart is given as `config` for every chart of the page.
PLOTLY_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}
RECENT_TRACES = 200
BUCKET_NAMES = {1: "1 second", 60: "1 minute", 3600: "1 hour"}
# The page's two columns of charts, top to bottom; each key is the chart's Streamlit key.
LEFT_CHARTS = ("chart_latency", "chart_throughput", "chart_tokens", "chart_errors")
RIGHT_CHARTS = ("chart_histogram", "chart_cost", "chart_ttft", "chart_breakdown")
_POINT_COLUMNS = ("time", "trace_id", "status", "latency_ms", "ttft_ms")
_BUCKET_NAMES = [field.name for field in dataclasses.fields(SeriesBucket)]
_BUCKET_FIELDS = operator.attrgetter(*_BUCKET_NAMES)


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class DashboardView:
    """What one refresh shows: tile label -> display value, figures by chart key, and what they cover.

    `figures` holds every key of `LEFT_CHARTS` and `RIGHT_CHARTS`; `bucket_s`
    is the width of the time buckets drawn; `points` the requests drawn on
    the latency chart (all of `request_count` when they fit); `caption` says
    all that in words.
    """

    tiles: dict[str, str | int]
    figures: dict[str, go.Figure]
    bucket_s: int
    request_count: int
    points: int
    caption: str


def bucket_for(
    bucket_s: int, since: float | None, first_at: float | None, now: float
) -> tuple[int, float | None]:
    """The bucket the charts use and where their series starts.

    The chosen bucket where the queries allow it: 1 s buckets over an hour
    at most, hours beyond a day. The series starts at the first stored
    request in range and scope (the range's start when there is none), so
    that a short history is drawn in the chosen buckets rather than in hours.
    """
    start = first_at if since is None or (first_at is not None and first_at > since) else since
    span = None if start is None else now - start
    if span is None or span > 86400.0:
        return 3600, start
    if bucket_s == 1 and span > 3600.0:
        return 60, start
    return bucket_s, start


def tile_values(tiles: Tiles) -> dict[str, str | int]:
    """The dashboard's tiles, label -> display value, from the stored requests' summary."""
    return {
        "Total Requests": int(tiles.request_count),
        "Total Tokens": int(tiles.total_tokens),
        "Total Cost": f"${tiles.total_cost:.4f}",
        "Avg Latency": f"{tiles.avg_latency_ms:.0f}ms",
        "P95 Latency": f"{tiles.p95_latency_ms:.0f}ms",
        "Error Rate": f"{tiles.error_rate * 100:.1f}%",
        "Cache Hit Rate": f"{tiles.cache_hit_rate * 100:.1f}%",
        "Throughput": f"{tiles.requests_per_second:.2f} req/s",
    }


def timeline_frame(buckets: list[SeriesBucket]) -> pd.DataFrame:
    """The charts' timeline (time, requests, errors, tokens, cost, percentiles) from stored buckets."""
    # Fields read directly: `to_dict()` (dataclasses.asdict) deep-copies, ten times the cost.
    frame = pd.DataFrame([_BUCKET_FIELDS(bucket) for bucket in buckets], columns=_BUCKET_NAMES)
    frame.insert(0, "time", pd.to_datetime(frame["start"], unit="s", utc=True))
    return frame


def histogram_frame(counts: list[int]) -> pd.DataFrame:
    """The latency histogram's bars (bucket label, count) from the counts between the default bounds."""
    if tuple(hi for _, _, hi in LATENCY_BUCKETS[:-1]) != DEFAULT_LATENCY_BOUNDS_MS:
        raise ValueError("histogram_frame: the stored latency bounds no longer match LATENCY_BUCKETS")
    return pd.DataFrame({"bucket": [label for label, _, _ in LATENCY_BUCKETS], "count": counts})


def points_frame(points: Sequence[RequestPoint]) -> pd.DataFrame:
    """The latency chart's requests (time, trace_id, status, latency_ms, ttft_ms), oldest first."""
    frame = pd.DataFrame({
        "time": pd.to_datetime(pd.Series([p.start for p in points], dtype="float64"), unit="s", utc=True),
        "trace_id": pd.Series([p.trace_id for p in points], dtype="object"),
        "status": pd.Series([p.status for p in points], dtype="object"),
        "latency_ms": pd.Series([p.latency_ms for p in points], dtype="float64"),
        "ttft_ms": pd.Series([p.ttft_ms for p in points], dtype="float64"),
    })  # fmt: skip
    return frame[list(_POINT_COLUMNS)]


def _caption(tiles: Tiles, bucket_s: int, points: int, recent: int, more_traces: bool) -> str:
    n = tiles.request_count
    drawn = (f"all {points:,} requests" if points >= n else
             f"{points:,} of the {n:,} requests, one from each equal slice of the range's time")  # fmt: skip
    latest = f"the latest {recent}" if more_traces else f"all {recent}"
    return (
        f"Tiles, throughput, errors, cost and the latency distribution count every stored request in range "
        f"({n:,}), in {BUCKET_NAMES[bucket_s]} buckets. Latency per request draws {drawn}; tokens, time to "
        f"first token and the latency breakdown show the requests of {latest} trace(s) in range. Traces "
        "dropped by sampling are not stored, so not counted here."
    )


def dashboard_view(
    queries: DashboardQueries, since: float | None, scope: Mapping[str, Any], *, bucket_s: int, now: float,
    thresholds: Mapping[str, Sequence[Threshold]] | None = None,
) -> DashboardView:  # fmt: skip
    """Read and draw one refresh of the panel for the requests since `since` (epoch s, None: all) in `scope`.

    `scope` holds the queries' scope arguments (service, model, conversation);
    `bucket_s` is the user's choice of bucket (1 or 60 s; `bucket_for` widens
    it for long ranges); `now` (epoch s) is where the range ends;
    `thresholds` the alert lines by chart ("latency_ms", "error_rate",
    "ttft_ms"). ValueError (from the queries) names a bad argument.
    """
    lines = thresholds or {}
    tiles = queries.tiles(since, **scope)
    bucket_s, series_since = bucket_for(bucket_s, since, tiles.first_request_at, now)
    timeline = timeline_frame(queries.series(bucket_s, series_since, **scope, percentiles=False))
    histogram = histogram_frame(queries.latency_histogram(since, **scope))
    points = points_frame(queries.request_points(since, points=LATENCY_POINTS, **scope))
    page = queries.traces(limit=RECENT_TRACES, since=since, **scope)
    requests = requests_frame(reversed(queries.store.get_many([t.trace_id for t in page.items])))
    percentiles = {"p50": tiles.p50_latency_ms, "p95": tiles.p95_latency_ms}
    figures = {
        "chart_latency": charts.latency_over_time(points, percentiles, lines.get("latency_ms", ())),
        "chart_throughput": charts.throughput_over_time(timeline, bucket_s),
        "chart_tokens": charts.tokens_per_request(requests),
        "chart_errors": charts.error_rate_over_time(timeline, lines.get("error_rate", ())),
        "chart_histogram": charts.latency_histogram(histogram),
        "chart_cost": charts.cumulative_cost(timeline),
        "chart_ttft": charts.ttft_distribution(requests, lines.get("ttft_ms", ())),
        "chart_breakdown": charts.latency_breakdown(requests),
    }
    caption = _caption(tiles, bucket_s, len(points), len(page.items), page.has_more)
    return DashboardView(tile_values(tiles), figures, bucket_s, tiles.request_count, len(points), caption)
