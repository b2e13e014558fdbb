"""Dashboard page: KPI tiles, live Plotly charts and the cost of each model for this session's requests.

Everything drawn comes from `obs.dashboard.generate_dashboard_data` over the
session's MetricsCollector and traces, and from the collector's
`cost_by_model()`; `app.charts` only turns those into figures and tables
(a model priced at zero shows "free", never a bare $0). The panel is a
fragment that reruns itself every few seconds (interval selectable,
pausable) without redrawing the rest of the page.
"""

from __future__ import annotations

import dataclasses
import time

import pandas as pd
import streamlit as st

from app import charts, history, sidebar, state
from app.history import View
from app.state import AppSession
from obs import semconv
from obs.dashboard import LATENCY_BUCKETS, generate_dashboard_data, requests_frame
from obs.storage.queries import DEFAULT_LATENCY_BOUNDS_MS
from obs.storage.results import SeriesBucket, Tiles

REFRESH_CHOICES_S = (1, 2, 5, 10, 30)
BUCKET_CHOICES = {"1 second": 1, "1 minute": 60}
_RECENT_TRACES = 200
_BUCKET_NAMES = {1: "1 second", 60: "1 minute", 3600: "1 hour"}
_PLOTLY_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


def _controls(app: AppSession) -> None:
    settings = app.settings
    state.init_widget(state.W_REFRESH_S, settings.refresh_s)
    state.init_widget(state.W_PAUSED, settings.paused)
    state.init_widget(state.W_BUCKET_S, settings.bucket_s)
    left, middle, right, _ = st.columns([1, 1, 1, 2], vertical_alignment="bottom")
    refresh = left.selectbox("Refresh every", REFRESH_CHOICES_S, key=state.W_REFRESH_S,
                             format_func=lambda s: f"{s} s")
    bucket = middle.selectbox("Time buckets", list(BUCKET_CHOICES.values()), key=state.W_BUCKET_S,
                              format_func=lambda s: next(k for k, v in BUCKET_CHOICES.items() if v == s))
    paused = right.toggle("Pause", key=state.W_PAUSED, help="Stop refreshing; the charts keep their data.")
    app.update(refresh_s=int(refresh), bucket_s=int(bucket), paused=bool(paused))


def _chart(fig: object, key: str) -> None:
    st.plotly_chart(fig, key=key, config=_PLOTLY_CONFIG)


def _pricing_text(app: AppSession) -> str:
    price = app.collector.price_for()
    if price.pricing == semconv.PRICING_COMPUTE:
        rule = "free (a compute price of $0)" if price.free else (
            f"by server time: ${price.per_hour:,.4f} per hour of llama.cpp's prompt_ms + predicted_ms")
    else:
        rule = (f"per 1K tokens: ${price.prompt_per_1k:,.4f} prompt, ${price.completion_per_1k:,.4f} "
                "completion. A compute price ($ per hour of server time) in the Chat page's sidebar prices "
                "them by the time llama.cpp spent on them instead")
    return (f"New requests are priced {rule}. A request priced by server time whose server reported no "
            "timings is counted as not priced, never as free.")


def _costs(app: AppSession) -> None:
    st.subheader("Cost by model")
    frame = charts.cost_by_model_frame(app.collector.cost_by_model())
    if frame.empty:
        st.info("No request priced yet.")
    else:
        st.dataframe(frame, hide_index=True, key="cost_by_model", column_config={
            "model": "Model", "requests": st.column_config.NumberColumn("Requests"), "cost": "Cost",
            "priced_by": "Priced by",
            "unpriced": st.column_config.NumberColumn("Not priced", help="Requests priced by server time "
                                                      "whose server reported no timings"),
            "server_s": st.column_config.NumberColumn("Server time", format="%.3f s"),
        })
    st.caption(sidebar.md_escape(_pricing_text(app)))  # escaped: "$" would start LaTeX


def _sampling(app: AppSession, timeline: pd.DataFrame) -> None:
    metrics = app.collector.get_metrics()
    settings = app.settings
    st.subheader("Sampling")
    tiles = (("Traces seen", metrics.traces_seen), ("Kept by head sampling", metrics.traces_kept_head),
             ("Kept by tail rules", metrics.traces_kept_tail), ("Dropped", metrics.traces_dropped))
    for column, (label, value) in zip(st.columns(4), tiles, strict=True):
        column.metric(label, f"{value:,}", border=True)
    _chart(charts.sampling_over_time(timeline, app.settings.bucket_s), "chart_sampling")
    slow = f"traces of {settings.slow_ms:,.0f} ms or more"
    tail = [rule for rule, on in (("errors", settings.keep_errors), (slow, settings.keep_slow)) if on]
    kept = metrics.traces_kept_head + metrics.traces_kept_tail
    share = f" ({kept / metrics.traces_seen:.0%})" if metrics.traces_seen else ""
    st.caption(
        f"Head sampling keeps {settings.sample_rate:.0%} of new traces, by trace id; tail rules keep "
        f"{' and '.join(tail) if tail else 'nothing more'}. {kept:,} of {metrics.traces_seen:,} finished "
        f"traces kept{share}. A trace is counted when it ends (a chat turn ends when its answer is in) and "
        "keeps the decision made when it began; the tiles and charts above count stored requests only, so "
        "the requests of a dropped trace are not in them."
    )


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
    frame = pd.DataFrame([bucket.to_dict() for bucket in buckets],
                         columns=[f.name for f in dataclasses.fields(SeriesBucket)])
    frame.insert(0, "time", pd.to_datetime(frame["start"], unit="s", utc=True))
    return frame


def histogram_frame(counts: list[int]) -> pd.DataFrame:
    """The latency histogram's bars (bucket label, count) from the counts between the default bounds."""
    if tuple(hi for _, _, hi in LATENCY_BUCKETS[:-1]) != DEFAULT_LATENCY_BOUNDS_MS:
        raise ValueError("histogram_frame: the stored latency bounds no longer match LATENCY_BUCKETS")
    return pd.DataFrame({"bucket": [label for label, _, _ in LATENCY_BUCKETS], "count": counts})


def _panel(app: AppSession, view: View) -> None:
    since, scope = view.since, view.scope
    queries = app.queries
    assert queries is not None  # every session has the history file (or its in-memory stand-in)
    app.flush(2.0)  # this session's finished turns are in the file before it is read
    tiles = queries.tiles(since, **scope)
    bucket_s, series_since = bucket_for(app.settings.bucket_s, since, tiles.first_request_at, time.time())
    values = list(tile_values(tiles).items())
    for row in (values[:4], values[4:]):
        for column, (label, value) in zip(st.columns(4), row, strict=False):
            column.metric(label, value, border=True)
    timeline = timeline_frame(queries.series(bucket_s, series_since, **scope))
    histogram = histogram_frame(queries.latency_histogram(since, **scope))
    page = queries.traces(limit=_RECENT_TRACES, since=since, **scope)
    requests = requests_frame(reversed(queries.store.get_many([t.trace_id for t in page.items])))
    percentiles = {"p50": tiles.p50_latency_ms, "p95": tiles.p95_latency_ms}
    left, right = st.columns(2)
    with left:
        _chart(charts.latency_over_time(requests, percentiles, app.chart_thresholds("latency_ms")),
               "chart_latency")
        _chart(charts.throughput_over_time(timeline, bucket_s), "chart_throughput")
        _chart(charts.tokens_per_request(requests), "chart_tokens")
        _chart(charts.error_rate_over_time(timeline, app.chart_thresholds("error_rate")), "chart_errors")
    with right:
        _chart(charts.latency_histogram(histogram), "chart_histogram")
        _chart(charts.cumulative_cost(timeline), "chart_cost")
        _chart(charts.ttft_distribution(requests, app.chart_thresholds("ttft_ms")), "chart_ttft")
        _chart(charts.latency_breakdown(requests), "chart_breakdown")
    recent = f"the latest {len(page.items)}" if page.has_more else f"all {len(page.items)}"
    st.caption(
        f"Tiles, throughput, errors, cost and the latency distribution count every stored request in range "
        f"({tiles.request_count:,}), in {_BUCKET_NAMES[bucket_s]} buckets; the per-request charts show the "
        f"requests of {recent} trace(s) in range. Traces dropped by sampling are not stored, so not "
        "counted here."
    )


def _session_metrics(app: AppSession) -> None:
    _costs(app)
    _sampling(app, generate_dashboard_data(app.collector, (), bucket_s=app.settings.bucket_s).timeline)


def main() -> None:
    """Draw the page."""
    app = state.get_app()
    st.title("Dashboard")
    _controls(app)
    interval = None if app.settings.paused else app.settings.refresh_s
    problem = state.history_file().problem
    if problem:
        st.warning(f"History is kept in memory only for this run: {sidebar.md_escape(problem)}",
                   icon=":material/warning:")
    assert app.queries is not None
    view = history.choose_view(app, app.queries)
    st.fragment(run_every=interval)(_panel)(app, view)
    st.divider()
    st.caption("Below: this browser session's own counts (its prices and sampling), since it began.")
    st.fragment(run_every=interval)(_session_metrics)(app)


main()
