"""Traces page: the session's traces in a filterable table, and a waterfall of the one selected.

A trace is selected by clicking its row, by a link from the chat or the logs
(`?trace=<id>`), or else the newest shown trace is. Its spans are drawn as a
timeline indented by depth and coloured by status, followed by each span's
attributes and events. Selected or all shown traces download as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd
import streamlit as st

from app import charts, downloads, sidebar, state
from obs.dashboard import traces_frame
from obs.trace.traces import Trace, span_tree

_TABLE_COLUMNS = ["time", "name", "duration_ms", "status", "spans", "prompt_tokens", "completion_tokens",
                  "cost", "trace_id"]


def _matches(trace: Trace, text: str) -> bool:
    """True if `text` (lowercase) occurs in the trace's name, metadata, or its spans' names."""
    haystack = [trace.name, json.dumps(trace.metadata, default=str)]
    haystack.extend(span.name for span in trace.spans)
    return any(text in part.lower() for part in haystack)


def _filters() -> tuple[bool, float, str]:
    state.init_widget(state.W_ERRORS_ONLY, False)
    state.init_widget(state.W_SLOWER_MS, 0)
    state.init_widget(state.W_SEARCH, "")
    left, middle, right = st.columns([1, 1, 2], vertical_alignment="bottom")
    errors_only = left.toggle("Errors only", key=state.W_ERRORS_ONLY)
    slower = middle.number_input("Slower than (ms)", min_value=0, step=100, key=state.W_SLOWER_MS,
                                 help="0 shows every trace")
    search = right.text_input("Search names and metadata", key=state.W_SEARCH,
                              placeholder="e.g. conversation")
    return bool(errors_only), float(slower), str(search).strip().lower()


def _filtered(traces: Sequence[Trace], errors_only: bool, slower_ms: float, search: str) -> list[Trace]:
    shown = []
    for trace in traces:
        if errors_only and trace.status != "error":
            continue
        if slower_ms > 0 and (trace.duration is None or trace.duration < slower_ms):
            continue
        if search and not _matches(trace, search):
            continue
        shown.append(trace)
    return shown


def _take_trace_from_link() -> None:
    linked = st.query_params.get(state.QUERY_TRACE)
    if linked:
        st.session_state[state.SELECTED_TRACE] = linked
        del st.query_params[state.QUERY_TRACE]


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


def _table(shown: list[Trace], selected: str | None) -> None:
    frame = traces_frame(shown)
    frame = frame.iloc[::-1].reset_index(drop=True)  # newest first
    ids = list(frame["trace_id"])
    st.session_state[state.TRACE_TABLE_IDS] = ids
    default = {"selection": {"rows": [ids.index(selected)] if selected in ids else [], "columns": []}}
    event = st.dataframe(
        frame[_TABLE_COLUMNS], key=state.W_TRACE_TABLE, on_select="rerun",
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
            "trace_id": "Trace id",
        },
    )
    # What the table shows now (the default, or a pick that outlived a link) is not a new pick.
    rows = list(event.selection.rows) if event is not None else []
    st.session_state[state.TRACE_TABLE_PICK] = ids[rows[0]] if rows and rows[0] < len(ids) else None


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
    """Draw the page."""
    app = state.get_app()
    st.title("Traces")
    _take_trace_from_link()
    _take_table_selection()
    errors_only, slower_ms, search = _filters()
    traces = app.traces()
    shown = _filtered(traces, errors_only, slower_ms, search)
    if not traces:
        st.info("No traces yet: chat with the model and each conversation appears here.")
        return
    if not shown:
        st.warning("No trace matches these filters.")
        return
    selected_id = st.session_state.get(state.SELECTED_TRACE)
    if selected_id not in {t.id for t in shown}:
        selected_id = shown[-1].id
    _table(shown, selected_id)
    trace = next(t for t in shown if t.id == selected_id)
    running = " (running)" if trace.end_time is None else ""
    st.subheader(f"{sidebar.md_escape(trace.name)}{running}")
    st.caption(f"trace {trace.id} · {len(trace.spans)} span(s) · status {trace.status}")
    st.plotly_chart(charts.waterfall(charts.waterfall_frame(trace)), key="chart_waterfall",
                    config={"displaylogo": False})
    _downloads(trace, shown)
    downloads.render([trace], f"trace-{trace.id}", key="trace")
    _span_details(trace)


main()
