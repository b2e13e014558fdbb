"""Sessions page: one row per conversation, and the turns of the one opened, each with its waterfall.

Each chat turn is a trace of its own; the turns that share a conversation id
(`gen_ai.conversation.id`, `session.id`) make a session. The table has one
row per conversation in the history file, in the time range and scope chosen
(this browser session by default), a page at a time (first message, turns,
tokens, cost, total and p95 latency, errors, last activity), summed up by
`DashboardQueries.sessions` in SQL, and filters by text (the id and the first
message), model and errors. A conversation is opened by picking its row, by the "Open session"
box, or by the Chat page's link (`?conversation=<id>`); it shows its turns
in order, each with its question, answer, caption, waterfall and a link to
its trace on the Traces page. Questions and answers are untrusted text and
are drawn by `app.messages`, which makes nothing in them run or fetch.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from app import charts, conversations, downloads, history, sidebar, state
from app.captions import answer_caption
from app.conversations import SessionTurn
from app.messages import draw_text

_ALL_MODELS = "All models"
PAGE_SIZE = 50
_NOT_RECORDED = "(not recorded)"
_TABLE_COLUMNS = ["first_message", "last_activity", "turns", "prompt_tokens", "completion_tokens", "cost",
                  "total_ms", "p95_ms", "errors", "models", "conversation_id"]
# Relative widths of the summary tiles: the cost needs room for six decimals.
_TILE_WIDTHS = [0.7, 1.4, 1.3, 1.2, 1.2, 0.7]


def _filters(models: list[str]) -> tuple[str, str | None, bool]:
    state.init_widget(state.W_SESSION_SEARCH, "")
    state.init_widget(state.W_SESSION_MODEL, _ALL_MODELS)
    state.init_widget(state.W_SESSION_ERRORS, False)
    options = [_ALL_MODELS, *models]
    if st.session_state[state.W_SESSION_MODEL] not in options:  # its model's sessions have gone
        st.session_state[state.W_SESSION_MODEL] = _ALL_MODELS
    search_col, model_col, errors_col = st.columns([2, 1, 1], vertical_alignment="bottom")
    search = search_col.text_input("Search first messages and ids", key=state.W_SESSION_SEARCH,
                                   placeholder="text of a conversation's first question, or its id",
                                   help="Searches each conversation's id and its first question only "
                                        "(as stored in the history file), not later turns or answers.")
    model = model_col.selectbox("Model", options, key=state.W_SESSION_MODEL)
    errors_only = errors_col.toggle("Errors only", key=state.W_SESSION_ERRORS)
    return str(search), None if model == _ALL_MODELS else str(model), bool(errors_only)


def _take_link() -> str | None:
    """Open the conversation a link names (once: the parameter is then dropped); return it."""
    linked = st.query_params.get(state.QUERY_CONVERSATION)
    if linked:
        st.session_state[state.W_SESSION_PICK] = linked
        del st.query_params[state.QUERY_CONVERSATION]
    return linked or None


def _table_key(selected: str) -> str:
    # One table widget per open session: a session opened another way (the box, a link) starts a
    # table whose selection is that session's row, instead of keeping the row picked before.
    return f"{state.W_SESSION_TABLE}:{selected}"


def _take_table_selection() -> None:
    """Open the row the user picked in the table, but only when the pick changed (as on the Traces page)."""
    key = st.session_state.get(state.SESSION_TABLE_KEY)
    event = st.session_state.get(key) if key else None
    rows = list(event["selection"]["rows"]) if event else []
    ids = st.session_state.get(state.SESSION_TABLE_IDS, [])
    picked = ids[rows[0]] if rows and rows[0] < len(ids) else None
    if picked is not None and picked != st.session_state.get(state.SESSION_TABLE_PICK):
        st.session_state[state.W_SESSION_PICK] = picked
    st.session_state[state.SESSION_TABLE_PICK] = picked


def _table(rows: pd.DataFrame, selected: str) -> None:
    ids = list(rows["conversation_id"])
    st.session_state[state.SESSION_TABLE_IDS] = ids
    shown = rows[_TABLE_COLUMNS].copy()
    shown["first_message"] = shown["first_message"].where(shown["first_message"].notna(), _NOT_RECORDED)
    default = {"selection": {"rows": [ids.index(selected)] if selected in ids else [], "columns": []}}
    key = _table_key(selected)
    st.session_state[state.SESSION_TABLE_KEY] = key
    event = st.dataframe(
        shown, key=key, on_select="rerun", selection_mode="single-row",
        selection_default=default, hide_index=True,
        column_config={
            "first_message": st.column_config.TextColumn("First message", width="medium"),
            "turns": "Turns",
            "prompt_tokens": "Tokens in",
            "completion_tokens": "Tokens out",
            "cost": st.column_config.NumberColumn("Cost", format="$%.6f"),
            "total_ms": st.column_config.NumberColumn("Total latency", format="%.0f ms"),
            "p95_ms": st.column_config.NumberColumn("p95 latency", format="%.0f ms"),
            "errors": "Errors",
            "last_activity": st.column_config.DatetimeColumn("Last activity (UTC)", format="MMM D, HH:mm:ss"),
            "models": st.column_config.ListColumn("Models"),
            "conversation_id": "Conversation id",
        },
    )
    # What the table shows now (the default, or a pick that outlived a link) is not a new pick.
    now = list(event.selection.rows) if event is not None else []
    st.session_state[state.SESSION_TABLE_PICK] = ids[now[0]] if now and now[0] < len(ids) else None


def _label(row: pd.Series) -> str:
    first = row["first_message"] if isinstance(row["first_message"], str) else _NOT_RECORDED
    first = " ".join(first.split())
    if len(first) > 60:
        first = first[:59] + "…"
    when = row["last_activity"].strftime("%H:%M:%S")
    return f"{first} · {row['turns']} turn(s) · last {when} UTC"


def _picker(rows: pd.DataFrame) -> str:
    ids = list(rows["conversation_id"])
    if st.session_state.get(state.W_SESSION_PICK) not in ids:
        st.session_state[state.W_SESSION_PICK] = ids[0]
    labels = {row["conversation_id"]: _label(row) for _, row in rows.iterrows()}
    # Options are drawn as plain text: a question's Markdown never renders here.
    picked = st.selectbox("Open session", ids, format_func=labels.__getitem__, key=state.W_SESSION_PICK)
    return str(picked)


def _summary(row: pd.Series) -> None:
    st.caption(f"conversation {sidebar.md_escape(str(row['conversation_id']))} · started "
               f"{row['started'].strftime('%Y-%m-%d %H:%M:%S')} UTC")
    tiles = [
        ("Turns", f"{row['turns']}"),
        ("Tokens in → out", f"{row['prompt_tokens']:,} → {row['completion_tokens']:,}"),
        ("Cost", f"${row['cost']:.6f}"),
        ("Total latency", f"{row['total_ms']:,.0f} ms"),
        ("p95 latency", "n/a" if math.isnan(row["p95_ms"]) else f"{row['p95_ms']:,.0f} ms"),
        ("Errors", f"{row['errors']}"),
    ]
    for column, (label, value) in zip(st.columns(_TILE_WIDTHS), tiles, strict=True):
        column.metric(label, value)


def _turn(number: int, turn: SessionTurn) -> None:
    trace = turn.trace
    started = pd.Timestamp(trace.start_time, unit="ms", tz="UTC").strftime("%H:%M:%S")
    duration = f"{trace.duration:,.0f} ms" if trace.duration is not None else "running"
    with st.container(border=True):
        st.markdown(f"**Turn {number}** · {started} UTC · {duration} · {trace.status}")
        with st.chat_message("user"):
            if turn.question is None:
                st.caption("The question was not recorded (message contents were off).")
            else:
                draw_text(turn.question)
        with st.chat_message("assistant"):
            if turn.answer:
                draw_text(turn.answer)
            elif turn.answer is None and turn.error is None:
                st.caption("The answer was not recorded (message contents were off).")
            if turn.error:
                st.error(sidebar.md_escape(turn.error), icon=":material/error:")
            elif turn.request is not None:
                st.caption(sidebar.md_escape(answer_caption(turn.request)))
            st.page_link(
                state.TRACES_PAGE, label=f"Trace {trace.id[:12]}…", icon=":material/account_tree:",
                query_params={state.QUERY_TRACE: trace.id,
                              state.QUERY_SESSION: st.session_state.get(state.SESSION_ID, "")},
            )
        st.plotly_chart(charts.waterfall(charts.waterfall_frame(trace), title=f"Turn {number} waterfall"),
                        key=f"chart_turn_{trace.id}", config={"displaylogo": False})


def main() -> None:
    """Draw the page."""
    app = state.get_app()
    st.title("Sessions")
    st.caption("One row per conversation: each chat turn is a trace of its own, and the turns that share "
               "a conversation id (gen\\_ai.conversation.id, session.id) make a session.")
    linked = _take_link()
    _take_table_selection()
    assert app.queries is not None
    app.flush(2.0)  # this session's finished turns are in the file before it is read
    queries = app.queries
    view = history.choose_view(app, queries)
    search, model, errors_only = _filters(queries.models())
    conversation = view.scope.get("conversation")
    page_index = _page_number()
    page = queries.sessions(
        limit=PAGE_SIZE, offset=page_index * PAGE_SIZE, since=view.since, text=search.strip() or None,
        model=model or view.model, service=view.service, errors_only=errors_only, conversation=conversation,
    )
    rows = conversations.summary_rows(page.items)
    filtered = bool(search.strip()) or model is not None or errors_only
    if linked is not None and not queries.session(linked):
        st.warning("That conversation has no stored turn yet (sampling may have dropped its turns).",
                   icon=":material/search_off:")
    elif linked is not None and linked not in set(rows["conversation_id"]):
        st.info("The linked conversation is hidden by the filters.", icon=":material/filter_alt:")
    if rows.empty:
        if page_index > 0:
            st.info("No sessions on this page: it is past the last one.")
            _pager(page_index, len(rows), page.has_more)
        elif filtered:
            st.warning("No session matches these filters.")
        elif view.this_session:
            st.info("No sessions yet in this browser session: chat with the model, and each conversation "
                    "appears here with its turns. Choose the scope Everything to see every session and "
                    "program.")
        else:
            st.info("No sessions yet in this time range and scope.")
        return
    selected = st.session_state.get(state.W_SESSION_PICK)
    _table(rows, selected if selected in set(rows["conversation_id"]) else rows["conversation_id"].iloc[0])
    _pager(page_index, len(rows), page.has_more)
    picked = _picker(rows)
    row = rows[rows["conversation_id"] == picked].iloc[0]
    _summary(row)
    traces = queries.session_traces(picked)
    downloads.render_session(traces, picked)
    for number, turn in enumerate(conversations.session_turns(traces, picked), start=1):
        _turn(number, turn)


def _page_number() -> int:
    state.init_widget(state.W_SESSION_PAGE, 1)
    return int(st.session_state[state.W_SESSION_PAGE]) - 1


def _pager(page_index: int, shown: int, has_more: bool) -> None:
    st.columns([1, 4])[0].number_input("Page", min_value=1, step=1, key=state.W_SESSION_PAGE,
                    help=f"{PAGE_SIZE} sessions a page, the most recently active first.")
    first = page_index * PAGE_SIZE
    more = "; more on the next page" if has_more else ""
    st.caption(f"Sessions {f'{first + 1}-{first + shown}' if shown else 'none'} of those in range{more}.")


main()
