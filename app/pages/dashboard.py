"""Dashboard page: KPI tiles, live Plotly charts and the cost of each model for this session's requests.

The panel's tiles and charts are one `app.dashboard_view.dashboard_view`
over the history file (the same call `benchmarks/bench_dashboard.py`
measures): SQL aggregates and bounded reads, so a refresh stays fast
whatever the file holds. Cost by model and sampling come from this browser
session's MetricsCollector (`cost_by_model()`, `generate_dashboard_data`);
`app.charts` only turns those into figures and tables (a model priced at
zero shows "free", never a bare $0). The panel is a fragment that reruns
itself every few seconds (interval selectable, pausable) without redrawing
the rest of the page.
"""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from app import charts, history, sidebar, state
from app.dashboard_view import LEFT_CHARTS, PLOTLY_CONFIG, RIGHT_CHARTS, dashboard_view
from app.dashboard_view import bucket_for as bucket_for  # where this page's tests have always found it
from app.history import View
from app.state import AppSession
from obs import semconv
from obs.dashboard import generate_dashboard_data

REFRESH_CHOICES_S = (1, 2, 5, 10, 30)
BUCKET_CHOICES = {"1 second": 1, "1 minute": 60}


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
    st.plotly_chart(fig, key=key, config=PLOTLY_CONFIG)


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


def _panel(app: AppSession, view: View) -> None:
    queries = app.queries
    assert queries is not None  # every session has the history file (or its in-memory stand-in)
    app.flush(2.0)  # this session's finished turns are in the file before it is read
    thresholds = {chart: app.chart_thresholds(chart) for chart in ("latency_ms", "error_rate", "ttft_ms")}
    shown = dashboard_view(queries, view.since, view.scope, bucket_s=app.settings.bucket_s, now=time.time(),
                           thresholds=thresholds)  # fmt: skip
    values = list(shown.tiles.items())
    for row in (values[:4], values[4:]):
        for column, (label, value) in zip(st.columns(4), row, strict=False):
            column.metric(label, value, border=True)
    left, right = st.columns(2)
    for column, keys in ((left, LEFT_CHARTS), (right, RIGHT_CHARTS)):
        with column:
            for key in keys:
                _chart(shown.figures[key], key)
    st.caption(shown.caption)


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
