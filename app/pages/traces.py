"""Traces page: stored traces in a filterable table, a page at a time, and the selected one's waterfall.

The table is a page of `DashboardQueries.traces` over the history file, in
the time range and scope chosen (this browser session, one service or model,
everything), newest first. A trace is selected by clicking its row, by a link from the chat or the logs
(`?trace=<id>`), or else the newest shown trace is. Its spans are drawn as a
timeline indented by depth and coloured by status, followed by each span's
attributes and events. Selected or all shown traces download as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd
import streamlit as st

from app import charts, downloads, history, sidebar, state
from app.state import AppSession
from obs import semconv
from obs.storage.results import TraceSummary
from obs.trace.traces import Trace, span_tree

_TABLE_COLUMNS = ["time", "name", "duration_ms", "status", "spans", "prompt_tokens", "completion_tokens",
                  "cost", "service", "trace_id"]
PAGE_SIZE = 50


def _filters() -> tuple[bool, float, str]:
    state.init_widget(state.W_ERRORS_ONLY, False)
    state.init_widget(state.W_SLOWER_MS, 0)
    state.init_widget(state.W_SEARCH, "")
    left, middle, right = st.columns([1, 1, 2], vertical_alignment="bottom")
    errors_only = left.toggle("Errors only", key=state.W_ERRORS_ONLY)
    slower = middle.number_input("Slower than (ms)", min_value=0, step=100, key=state.W_SLOWER_MS,
                                 help="0 shows every trace")
    search = right.text_input("Search names, ids, conversations and messages", key=state.W_SEARCH,
                              placeholder="e.g. a trace id or a word of a question")
    return bool(errors_only), float(slower), str(search).strip()


def _take_trace_from_link() -> bool:
    linked = st.query_params.get(state.QUERY_TRACE)
    if linked:
        st.session_state[state.SELECTED_TRACE] = linked
        del st.query_params[state.QUERY_TRACE]
    return bool(linked)


def _take_table_selection() -> None:
    """Adopt the row the user picked in the table, but only when the pick changed.

    The table's selection outlives a link that selected another trace; only a
    new pick may override that. Rows index the table as drawn last run.
    """
    event = st.session_state.get(state.W_TRACE_TABLE)
    rows = list(event["selection"]["rows"]) if event else []
    ids = st.session_state.get(state.TRACE_TABLE_IDS, [])
    picked = ids[rows[0]] if rows and rows[0] < len(ids) else None
    if picked is not None and picked != st.session_state.get(state.TRACE_TABLE_PICK):
        st.session_state[state.SELECTED_TRACE] = picked
    st.session_state[state.TRACE_TABLE_PICK] = picked


def summaries_frame(items: Sequence[TraceSummary]) -> pd.DataFrame:
    """The traces table (newest first, as given) from the stored trace summaries."""
    frame = pd.DataFrame({
        "time": pd.to_datetime([t.start_time for t in items], unit="s", utc=True),
        "name": [t.name for t in items],
        "duration_ms": [t.duration_ms for t in items],
        "status": [t.status for t in items],
        "spans": [t.span_count for t in items],
        "prompt_tokens": [t.input_tokens for t in items],
        "completion_tokens": [t.output_tokens for t in items],
        "cost": [t.cost for t in items],
        "service": [t.service or "" for t in items],
        "trace_id": [t.trace_id for t in items],
    }, columns=_TABLE_COLUMNS)
    return frame


def _table(items: Sequence[TraceSummary], selected: str | None) -> None:
    frame = summaries_frame(items)
    ids = list(frame["trace_id"])
    st.session_state[state.TRACE_TABLE_IDS] = ids
    default = {"selection": {"rows": [ids.index(selected)] if selected in ids else [], "columns": []}}
    event = st.dataframe(
        frame, key=state.W_TRACE_TABLE, on_select="rerun",
        selection_mode="single-row", selection_default=default, hide_index=True,
        column_config={
            "time": st.column_config.DatetimeColumn("Time (UTC)", format="HH:mm:ss"),
            "name": "Name",
            "duration_ms": st.column_config.NumberColumn("Duration", format="%.0f ms"),
            "status": "Status",
            "spans": "Spans",
            "prompt_tokens": "Tokens in",
            "completion_tokens": "Tokens out",
            "cost": st.column_config.NumberColumn("Cost", format="$%.6f"),
            "service": "Service",
            "trace_id": "Trace id",
        },
    )
    # What the table shows now (the default, or a pick that outlived a link) is not a new pick.
    rows = list(event.selection.rows) if event is not None else []
    st.session_state[state.TRACE_TABLE_PICK] = ids[rows[0]] if rows and rows[0] < len(ids) else None


def _page_number() -> int:
    """The page of the table to show (0 first), from the pager under it."""
    state.init_widget(state.W_TRACE_PAGE, 1)
    return int(st.session_state[state.W_TRACE_PAGE]) - 1


def _span_details(trace: Trace) -> None:
    st.subheader("Spans")
    for node in span_tree(trace):
        span = node.span
        duration = f"{span.duration:.1f} ms" if span.duration is not None else "running"
        label = f"{'· ' * node.depth}{sidebar.md_escape(span.name)} ({duration}, {span.status})"
        with st.expander(label, expanded=False):
            st.caption(f"span {span.id} · parent {span.parent_id or 'none'} · kind {span.kind}")
            st.json(span.attributes, expanded=True)
            if span.events:
                events = pd.DataFrame([
                    {"event": e.name, "at (ms)": round(e.timestamp - trace.start_time, 2),
                     "attributes": json.dumps(e.attributes, default=str)}
                    for e in span.events
                ])
                st.dataframe(events, hide_index=True)


def _downloads(selected: Trace, shown: list[Trace]) -> None:
    left, right, _ = st.columns([1, 1, 2])
    left.download_button(
        "Download this trace (JSON)", json.dumps(selected.to_dict(), indent=2, default=str),
        file_name=f"trace-{selected.id}.json", mime="application/json", icon=":material/download:",
    )
    right.download_button(
        f"Download all {len(shown)} shown (JSON)",
        json.dumps([t.to_dict() for t in shown], indent=2, default=str),
        file_name="traces.json", mime="application/json", icon=":material/download:",
    )


def main() -> None:
    """Draw the page: its content refreshes itself at the dashboard's interval (unless paused)."""
    app = state.get_app()
    st.title("Traces")
    if _take_trace_from_link():
        app.flush(2.0)  # a trace linked from the chat is in the file before it is looked up
    interval = None if app.settings.paused else app.settings.refresh_s
    st.fragment(run_every=interval)(_content)(app)


def _content(app: AppSession) -> None:
    _take_table_selection()
    assert app.queries is not None
    app.flush(2.0)  # this session's finished turns are in the file before it is read
    view = history.choose_view(app, app.queries)
    errors_only, slower_ms, search = _filters()
    page_index = _page_number()
    page = app.queries.traces(
        limit=PAGE_SIZE, offset=page_index * PAGE_SIZE, since=view.since,
        status="error" if errors_only else None, text=search or None,
        min_duration_ms=slower_ms if slower_ms > 0 else None, **view.scope,
    )
    items = list(page.items)
    filtered = errors_only or slower_ms > 0 or bool(search)
    if not items and page_index > 0:
        st.info("No traces on this page: it is past the last one.")
    elif not items:
        if filtered:
            st.warning("No trace matches these filters.")
        elif view.this_session:
            st.info("No traces yet in this browser session: chat with the model and each turn appears "
                    "here. Choose the scope Everything to see every session and program.")
        else:
            st.info("No traces yet in this time range and scope.")
        if page_index == 0:
            return
    selected_id = st.session_state.get(state.SELECTED_TRACE)
    ids = [t.trace_id for t in items]
    trace = app.queries.trace(selected_id) if selected_id else None
    if trace is None and items:
        selected_id = items[0].trace_id
        trace = app.queries.trace(selected_id)
    _table(items, selected_id)
    first = page_index * PAGE_SIZE
    st.columns([1, 4])[0].number_input(
        "Page", min_value=1, step=1, key=state.W_TRACE_PAGE,
        help=f"{PAGE_SIZE} traces a page, newest first.",
    )
    more = "; more on the next page" if page.has_more else ""
    shown = f"{first + 1}-{first + len(items)}" if items else "none"
    st.caption(f"Traces {shown} of those in range, newest first{more}.")
    if trace is None:
        st.warning("That trace is no longer stored (dropped by sampling or removed by retention).")
        return
    running = " (running)" if trace.end_time is None else ""
    st.subheader(f"{sidebar.md_escape(trace.name)}{running}")
    service = trace.metadata.get(semconv.SERVICE_NAME) if isinstance(trace.metadata, dict) else None
    shown_in = "" if selected_id in ids else " · not on this page"
    st.caption(f"trace {trace.id} · {len(trace.spans)} span(s) · status {trace.status}"
               f"{f' · service {service}' if service else ''}{shown_in}")
    st.plotly_chart(charts.waterfall(charts.waterfall_frame(trace)), key="chart_waterfall",
                    config={"displaylogo": False})
    _downloads(trace, app.queries.store.get_many(ids))
    downloads.render([trace], f"trace-{trace.id}", key="trace")
    _span_details(trace)


main()
