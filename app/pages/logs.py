"""Logs page: structured log entries, newest first, filtered by level and trace.

In the scope "This browser session" the entries come from the session's
LLMLogger (`get_logs`); in the others, from the history file a page at a
time (`DashboardQueries.logs`), every program's or one service's. Selecting a row that
belongs to a trace, or filtering by a trace id, offers a link that opens that
trace on the Traces page.
"""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app import history, state
from app.state import AppSession
from obs.logs import LEVELS, LogEntry

_ALL = "all"
_LIMIT = 2000
PAGE_SIZE = 200


def _frame(entries: list[LogEntry]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": pd.to_datetime([e.timestamp for e in entries], unit="ms", utc=True),
            "level": [e.level for e in entries],
            "message": [e.message for e in entries],
            "trace_id": [e.trace_id or "" for e in entries],
            "span_id": [e.span_id or "" for e in entries],
            "data": [json.dumps(e.data, default=str) if e.data else "" for e in entries],
        },
        columns=["time", "level", "message", "trace_id", "span_id", "data"],
    )


def _trace_link(trace_id: str) -> None:
    st.page_link(state.TRACES_PAGE, label=f"Open trace {trace_id}", icon=":material/account_tree:",
                 query_params={state.QUERY_TRACE: trace_id,
                               state.QUERY_SESSION: st.session_state.get(state.SESSION_ID, "")})


def _entries(app: AppSession, view: history.View, level: str | None,
             trace_id: str | None) -> tuple[list[LogEntry], str, bool]:
    """The entries to show (newest first), what they are, and whether another page follows."""
    if view.this_session:
        entries = app.logger.get_logs(level=level, trace_id=trace_id, limit=_LIMIT)
        return entries, f"of {len(app.logger)} this browser session keeps", False
    assert app.queries is not None
    page_index = _page_number()
    page = app.queries.logs(limit=PAGE_SIZE, offset=page_index * PAGE_SIZE, since=view.since,
                            min_level=level, trace_id=trace_id, service=view.service)
    first = page_index * PAGE_SIZE
    note = "from the history file" + (f", service {view.service}" if view.service else ", every service")
    if view.model:
        note += " (log entries are not per model: all are shown)"
    shown = f"{first + 1}-{first + len(page.items)}" if page.items else "none"
    return list(page.items), f"{shown} {note}", page.has_more


def _page_number() -> int:
    state.init_widget(state.W_LOG_PAGE, 1)
    return int(st.session_state[state.W_LOG_PAGE]) - 1


def main() -> None:
    """Draw the page."""
    app: AppSession = state.get_app()
    st.title("Logs")
    assert app.queries is not None
    app.flush(2.0)  # this session's log entries are in the file before it is read
    view = history.choose_view(app, app.queries)
    state.init_widget(state.W_LOG_LEVEL, _ALL)
    state.init_widget(state.W_LOG_TRACE, "")
    left, right = st.columns([1, 3])
    level = left.selectbox("Level", (_ALL, *LEVELS), key=state.W_LOG_LEVEL)
    trace_id = right.text_input("Trace id", key=state.W_LOG_TRACE, placeholder="all traces").strip()
    entries, what, has_more = _entries(app, view, None if level == _ALL else level, trace_id or None)
    st.caption(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, newest first ({what})")
    if not view.this_session:
        st.columns([1, 4])[0].number_input("Page", min_value=1, step=1, key=state.W_LOG_PAGE,
                        help=f"{PAGE_SIZE} entries a page, newest first"
                             + ("; more on the next page." if has_more else "."))
    if trace_id and app.queries.trace(trace_id) is not None:
        _trace_link(trace_id)
    if not entries:
        st.info("No log entries match." if (len(app.logger) or not view.this_session)
                else "No log entries yet: chat to make some.")
        return
    frame = _frame(entries)
    event = st.dataframe(
        frame, key=state.W_LOG_TABLE, on_select="rerun", selection_mode="single-row", hide_index=True,
        column_config={
            "time": st.column_config.DatetimeColumn("Time (UTC)", format="HH:mm:ss.SSS"),
            "level": "Level", "message": st.column_config.TextColumn("Message", width="large"),
            "trace_id": "Trace id", "span_id": "Span id", "data": "Data",
        },
    )
    rows = event.selection.rows if event is not None else []
    if rows:
        chosen = entries[rows[0]]
        if chosen.trace_id and chosen.trace_id != trace_id:
            if app.queries.trace(chosen.trace_id) is not None:
                _trace_link(chosen.trace_id)
            else:
                st.caption(f"Trace {chosen.trace_id} is not stored (dropped by sampling or evicted).")


main()
