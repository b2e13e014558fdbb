"""Load test page: many chat requests at once against the session's llama-server, and what they did.

Choose the concurrency (or, for a sweep, a list of them), the number of
requests, the prompts (one per line) and streaming; the run goes on a
thread of its own (`obs.loadgen.background.BackgroundLoad`) through an
`AsyncInstrumentedClient` on the session's tracer, so every request is a
trace in the history file and counts in this session's collector: the
Dashboard's charts fill while it runs. Each run is a conversation of this
browser session (the Dashboard's default scope shows it). The page shows a
progress bar and the latency of each request as they end, then the summary
(requests/s, output tokens/s, latency and TTFT percentiles, errors by type)
or, for a sweep, the table and the capacity curve (throughput against p95
latency, one point per concurrency) with its knee. One load test runs at a
time per dashboard process: they share the server, and two at once would
measure each other. Stop cancels the requests in flight and keeps what was
done.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import sidebar, state
from app.state import AppSession
from obs.llm.async_client import AsyncInstrumentedClient
from obs.llm.conversation import new_conversation_id
from obs.loadgen import DEFAULT_PROMPTS, LoadConfig, parse_levels, parse_prompt_lines
from obs.loadgen.background import BackgroundLoad
from obs.loadgen.report import SWEEP_COLUMNS, knee_text, sweep_rows
from obs.loadgen.results import Knee, LoadResult, LoadSummary, RequestResult, SweepResult, find_knee

MODES = ("Single run", "Sweep")
MAX_CONCURRENCY = 64
MAX_REQUESTS = 2000
_MODE, _CONCURRENCY, _LEVELS = "w_load_mode", "w_load_concurrency", "w_load_levels"
_REQUESTS, _MAX_TOKENS, _PROMPTS, _STREAM = "w_load_requests", "w_load_max_tokens", "w_load_prompts", \
    "w_load_stream"
_JOB, _PROBLEM = "obs_load_job", "obs_load_problem"
_POLL_S = 0.5
_PLOTLY_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


@st.cache_resource(show_spinner=False)
def _active() -> dict[str, Any]:
    """The process's load test in progress (at most one) under "job", with the session that started it,
    and the "lock" taken to start one."""
    return {"lock": threading.Lock()}


def _running_elsewhere(app: AppSession) -> bool:
    current = _active().get("job")
    return current is not None and current[0].running and current[1] is not app


def _start(app: AppSession) -> None:
    """The Run button: check the form, then start the load on its own thread."""
    ss = st.session_state
    ss[_PROBLEM] = ""
    prompts = parse_prompt_lines(str(ss.get(_PROMPTS) or ""))
    if not prompts:
        ss[_PROBLEM] = "Give at least one prompt, one per line (lines starting with # are skipped)."
        return
    levels = None
    try:
        if ss.get(_MODE) == MODES[1]:
            levels = parse_levels(str(ss.get(_LEVELS) or ""))
        conversation = new_conversation_id()
        config = LoadConfig(url=app.settings.server_url, concurrency=int(ss[_CONCURRENCY]),
                            requests=int(ss[_REQUESTS]), prompts=prompts, stream=bool(ss[_STREAM]),
                            max_tokens=int(ss[_MAX_TOKENS]), conversation_id=conversation)  # fmt: skip
    except ValueError as exc:
        ss[_PROBLEM] = f"Sweep levels: {exc}" if levels is None and ss.get(_MODE) == MODES[1] else str(exc)
        return
    capture = app.settings.capture_content

    def client() -> AsyncInstrumentedClient:
        return AsyncInstrumentedClient(config.url, tracer=app.tracer, capture_content=capture)

    with _active()["lock"]:
        if _running_elsewhere(app):
            ss[_PROBLEM] = ("Another browser session's load test is running against this server: wait for "
                            "it to end.")
            return
        with app.lock:  # the run is a conversation of this session: its scope on the other pages shows it
            app.conversations.append(conversation)
        job = BackgroundLoad(config, levels=levels, client_factory=client).start()
        ss[_JOB] = job
        _active()["job"] = (job, app)


def _form(app: AppSession, busy: bool) -> None:
    state.init_widget(_MODE, MODES[0])
    state.init_widget(_CONCURRENCY, 4)
    state.init_widget(_LEVELS, "1,2,4")
    state.init_widget(_REQUESTS, 20)
    state.init_widget(_MAX_TOKENS, 32)
    state.init_widget(_PROMPTS, "\n".join(p[0]["content"] for p in DEFAULT_PROMPTS))
    state.init_widget(_STREAM, True)
    with st.form("load_test"):
        st.radio("Mode", MODES, key=_MODE, horizontal=True,
                 help="A single run at one concurrency, or a sweep: the same load at each concurrency of a "
                 "list, giving the server's capacity curve")
        left, middle, right = st.columns(3)
        left.number_input("Concurrency", 1, MAX_CONCURRENCY, key=_CONCURRENCY, step=1,
                          help="Requests in flight at once (a single run)")
        middle.text_input("Sweep levels", key=_LEVELS, help="Concurrencies of a sweep, like 1,2,4,8")
        right.number_input("Requests", 1, MAX_REQUESTS, key=_REQUESTS, step=1,
                           help="Requests to send (at each level of a sweep)")
        left, right = st.columns([1, 2])
        left.number_input("Max tokens", 1, 4096, key=_MAX_TOKENS, step=1, help="Longest answer, in tokens")
        left.toggle("Stream", key=_STREAM, help="Stream the answers: gives the time to first token")
        right.text_area("Prompts", key=_PROMPTS, height=150,
                        help="One prompt per line, sent in turn; lines starting with # are skipped")
        st.form_submit_button("Run load test", icon=":material/speed:", on_click=_start, args=(app,),
                              disabled=busy, type="primary")  # fmt: skip
    if st.session_state.get(_PROBLEM):
        st.error(sidebar.md_escape(st.session_state[_PROBLEM]), icon=":material/error:")


def latency_figure(results: Sequence[RequestResult], title: str = "Latency per request") -> go.Figure:
    """Each ended request's latency (ms) at the second it ended; failed ones in red."""
    fig = go.Figure()
    kinds = ((True, "answered", "#1f77b4", "circle"), (False, "failed", "#d62728", "x"))
    for ok, name, color, symbol in kinds:
        chosen = [r for r in results if r.ok is ok]
        if chosen:
            fig.add_trace(go.Scatter(
                x=[r.finished_s for r in chosen], y=[r.latency_ms for r in chosen], mode="markers", name=name,
                marker={"color": color, "symbol": symbol},
                customdata=[[r.index, r.error_type or ""] for r in chosen],
                hovertemplate="request %{customdata[0]}: %{y:.0f} ms %{customdata[1]}<extra></extra>"))
    fig.update_layout(title={"text": title}, xaxis_title="seconds since the start",
                      yaxis_title="latency (ms)", height=340,
                      margin={"t": 50, "b": 40, "l": 60, "r": 20})  # fmt: skip
    return fig


def capacity_figure(summaries: Sequence[LoadSummary], knee: Knee | None) -> go.Figure:
    """The capacity curve: throughput (requests/s) against p95 latency, one labelled point per concurrency."""
    points = [s for s in summaries if s.latency_p95_ms is not None]
    fig = go.Figure(go.Scatter(
        x=[s.requests_per_s for s in points], y=[s.latency_p95_ms for s in points], mode="lines+markers+text",
        text=[f"c={s.concurrency}" for s in points], textposition="top center", name="p95 latency",
        hovertemplate="%{text}: %{x:.2f} requests/s, p95 %{y:.0f} ms<extra></extra>"))  # fmt: skip
    if knee is not None:
        at = next(s for s in points if s.concurrency == knee.at)
        fig.add_annotation(x=at.requests_per_s, y=at.latency_p95_ms, text=f"knee (c={knee.at})",
                           showarrow=True, arrowhead=2, ay=-45)  # fmt: skip
    fig.update_layout(title={"text": "Capacity curve"}, xaxis_title="throughput (requests/s)",
                      yaxis_title="p95 latency (ms)", height=380, showlegend=False,
                      margin={"t": 50, "b": 40, "l": 60, "r": 20})  # fmt: skip
    return fig


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def _rate(value: float) -> str:
    """Three significant digits below 100 (a slow run's 0.0847 req/s is not 0.08), else one decimal."""
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"


def summary_tiles(summary: LoadSummary) -> dict[str, str]:
    """The summary's tiles, label -> value as shown."""
    return {
        "Requests/s": _rate(summary.requests_per_s),
        "Output tokens/s": _rate(summary.output_tokens_per_s),
        "Latency p50": _ms(summary.latency_p50_ms),
        "Latency p95": _ms(summary.latency_p95_ms),
        "Latency p99": _ms(summary.latency_p99_ms),
        "TTFT p50": _ms(summary.ttft_p50_ms),
        "TTFT p95": _ms(summary.ttft_p95_ms),
        "Errors": str(summary.errors),
    }


def _chart(fig: go.Figure, key: str) -> None:
    st.plotly_chart(fig, key=key, config=_PLOTLY_CONFIG)


def _show_run(run: LoadResult, streamed: bool) -> None:
    summary = run.summary
    tiles = list(summary_tiles(summary).items())
    for row in (tiles[:4], tiles[4:]):
        for column, (label, value) in zip(st.columns(4), row, strict=True):
            column.metric(label, value, border=True)
    cancelled = f", {summary.cancelled} cancelled in flight by Stop" if summary.cancelled else ""
    ttft = "" if streamed else " TTFT needs streamed answers."
    st.caption(f"{summary.requests} requests in {summary.elapsed_s:.1f} s at concurrency "
               f"{summary.concurrency}: {summary.ok} answered, {summary.errors} failed{cancelled}; "
               f"{summary.output_tokens} output tokens. Rates count answered requests; percentiles are over "
               f"answered requests.{ttft}")
    if summary.errors_by_type:
        st.dataframe(pd.DataFrame({"error.type": list(summary.errors_by_type),
                                   "requests": list(summary.errors_by_type.values())}),
                     hide_index=True, key="load_errors")  # fmt: skip
    _chart(latency_figure(run.results), "load_latency")


def _show_sweep(sweep: SweepResult) -> None:
    summaries = sweep.summaries
    st.dataframe(pd.DataFrame(sweep_rows(summaries), columns=list(SWEEP_COLUMNS)), hide_index=True,
                 key="load_sweep_table")
    knee = find_knee(summaries)
    _chart(capacity_figure(summaries, knee), "load_capacity")
    stopped = " (stopped early: the last level ran only part of its requests)" if sweep.stopped else ""
    st.info(sidebar.md_escape(knee_text(knee, summaries)) + stopped, icon=":material/insights:")


def _live(job: BackgroundLoad) -> None:
    """While the run goes: its progress, a Stop button and the requests so far; at its end, the page again."""
    if not job.running:
        st.rerun(scope="app")
    progress = job.progress
    level = "" if job.levels is None else (
        f"Level {len(job.levels_done) + 1} of {len(job.levels)} (concurrency "
        f"{job.levels[min(len(job.levels_done), len(job.levels) - 1)]}). ")
    if progress is None:
        st.progress(0.0, text=f"{level}Starting...")
    else:
        st.progress(progress.fraction, text=(
            f"{level}{progress.done}/{progress.total} done, {progress.in_flight} in flight, "
            f"{progress.errors} errors, {progress.elapsed_s:.0f} s"))
    st.button("Stopping..." if job.stopping else "Stop", icon=":material/stop:", on_click=job.stop,
              disabled=job.stopping, key="load_stop")
    if progress is not None and progress.results:
        _chart(latency_figure(progress.results, "Latency per request (so far)"), "load_live_latency")
    if job.levels_done:
        summaries = [run.summary for run in job.levels_done]
        _chart(capacity_figure(summaries, find_knee(summaries)), "load_live_capacity")


def main() -> None:
    """Draw the page."""
    app = state.get_app()
    st.title("Load test")
    st.caption(sidebar.md_escape(
        f"Sends chat requests to {app.settings.server_url}, many at once. Every request is a trace in "
        "the history file and counts in this session's charts: the Dashboard fills while it runs."))
    job: BackgroundLoad | None = st.session_state.get(_JOB)
    busy = (job is not None and job.running) or _running_elsewhere(app)
    _form(app, busy)
    if _running_elsewhere(app) and not (job is not None and job.running):
        st.info("Another browser session's load test is running against this server; this page can start "
                "one when it ends.", icon=":material/hourglass_top:")
    if job is None:
        return
    if job.running:
        st.fragment(run_every=_POLL_S)(_live)(job)
        return
    with _active()["lock"]:
        current = _active().get("job")
        if current is not None and current[0] is job:
            del _active()["job"]  # ended: nothing else waits for it, and its session is not held
    app.flush(5.0)  # the run's traces are in the history file before other pages read it
    st.page_link(state.DASHBOARD_PAGE, label="See these requests on the Dashboard",
                 icon=":material/monitoring:",
                 query_params={state.QUERY_SESSION: st.session_state.get(state.SESSION_ID, "")})
    if job.error is not None:
        st.error(sidebar.md_escape(f"The load test failed: {type(job.error).__name__}: {job.error}"),
                 icon=":material/error:")
    elif isinstance(job.result, SweepResult):
        _show_sweep(job.result)
    elif job.result is not None:
        _show_run(job.result, job.config.stream)


main()
