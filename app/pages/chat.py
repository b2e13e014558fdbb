"""Chat page: talk to the model; every answer streams in and becomes a span of the conversation trace.

Under each answer a caption shows what obs measured for that request, with a
link to its trace. A server error shows the client's message and leaves the
chat usable. Text from the user and the model is drawn as Markdown with HTML
disabled, so markup in an answer is shown, never run.
"""

from __future__ import annotations

import streamlit as st

from app import captions, sidebar, state
from app.state import AppSession, ChatTurn
from obs.llm.client import ChatStream
from obs.llm.errors import LLMServerError


def _trace_link(trace_id: str) -> None:
    st.page_link(
        state.TRACES_PAGE, label=f"Trace {trace_id[:12]}…", icon=":material/account_tree:",
        query_params={state.QUERY_TRACE: trace_id,
                      state.QUERY_SESSION: st.session_state.get(state.SESSION_ID, "")},
    )


def _show_turn(turn: ChatTurn) -> None:
    with st.chat_message(turn.role):
        if turn.content:
            st.markdown(turn.content, unsafe_allow_html=False)
        if turn.error:
            st.error(turn.error, icon=":material/error:")
        if turn.caption:
            st.caption(sidebar.md_escape(turn.caption))
        if turn.trace_id:
            _trace_link(turn.trace_id)


def _answer(app: AppSession) -> None:
    with st.chat_message("assistant"):
        stream: ChatStream | None = None
        error: str | None = None
        text = ""
        try:
            stream = app.stream_reply()
            written = st.write_stream(stream)
            text = written if isinstance(written, str) else stream.text
        except LLMServerError as exc:
            error = str(exc)
            text = stream.text if stream is not None else ""
            st.error(error, icon=":material/error:")
        span = stream.span if stream is not None else None
        caption = captions.answer_caption(span) if span is not None and error is None else None
        trace_id = span.trace_id if span is not None else app.conversation_id()
        app.add_turn(ChatTurn("assistant", text, caption=caption, trace_id=trace_id, error=error))
        if caption:
            st.caption(sidebar.md_escape(caption))
        if trace_id:
            _trace_link(trace_id)


def main() -> None:
    """Draw the page."""
    app = state.get_app()
    st.title("Chat")
    st.caption(f"Talking to {sidebar.md_escape(app.settings.server_url)}. Each answer is a request span "
               "in this conversation's trace.")
    for turn in list(app.messages):
        _show_turn(turn)
    prompt = st.chat_input("Ask the model something")
    if prompt:
        app.add_turn(ChatTurn("user", prompt))
        _show_turn(ChatTurn("user", prompt))
        _answer(app)


main()
