"""Chat page: talk to the model; every answer streams in, and each turn is a trace of its own.

A turn's trace has a root span (`state.TURN_SPAN`) with the request's span
under it, both carrying the conversation's id; it is finished, sampled and
stored as soon as the answer is in. Under each answer a caption shows what
obs measured for that request, with a link to its trace; the page links to
the conversation on the Sessions page. A server error shows the client's
message, escaped so it reads exactly as sent, and leaves the chat usable.
Text from the user and the model is untrusted: it is drawn as Markdown with
HTML off and every image made inert (`app.messages`), so nothing in it makes
the browser fetch anything; fenced code is drawn as code. An answer still arriving when the
page's run stops (the user went to another page, or changed a setting) keeps
arriving in the background and lands in the history; the page shows it
growing until it is complete (`app.answers`), and the chat input waits for it.
"""

from __future__ import annotations

import streamlit as st

from app import answers, sidebar, state
from app.messages import draw_text
from app.state import AppSession, ChatTurn
from obs.llm.client import ChatStream
from obs.llm.errors import LLMServerError

_CURSOR = " ▌"
_POLL_S = 0.5


def _trace_link(trace_id: str) -> None:
    st.page_link(
        state.TRACES_PAGE, label=f"Trace {trace_id[:12]}…", icon=":material/account_tree:",
        query_params={state.QUERY_TRACE: trace_id,
                      state.QUERY_SESSION: st.session_state.get(state.SESSION_ID, "")},
    )


def _session_link(app: AppSession) -> None:
    st.page_link(
        state.SESSIONS_PAGE, label="This conversation on the Sessions page", icon=":material/forum:",
        query_params={state.QUERY_CONVERSATION: app.conversation_id(),
                      state.QUERY_SESSION: st.session_state.get(state.SESSION_ID, "")},
    )


def _draw_footer(turn: ChatTurn) -> None:
    if turn.error:
        st.error(sidebar.md_escape(turn.error), icon=":material/error:")
    if turn.caption:
        st.caption(sidebar.md_escape(turn.caption))
    if turn.trace_id and not turn.pending:  # a turn's trace is stored once its answer is in
        _trace_link(turn.trace_id)


def _show_turn(turn: ChatTurn) -> None:
    with st.chat_message(turn.role):
        if turn.content:
            draw_text(turn.content + (_CURSOR if turn.pending else ""))
        if turn.pending:
            st.caption("The answer is still arriving…")
        _draw_footer(turn)


def _arriving(app: AppSession) -> None:
    # A fragment that redraws the answers still arriving; once none is, the whole page reruns
    # to draw them finished and to open the chat input again.
    arriving = [turn for turn in app.history() if turn.pending]
    if not arriving:
        st.rerun()
    for turn in arriving:
        _show_turn(turn)


def _answer(app: AppSession) -> None:
    with st.chat_message("assistant"):
        body = st.empty()
        turn = answers.begin(app)
        stream: ChatStream | None = None
        try:
            stream = app.stream_reply(turn.trace_id or "")
            for _ in stream:
                answers.note_progress(app, turn, stream)
                with body.container():
                    draw_text(turn.content + _CURSOR)
            answers.finish(app, turn, stream)
        except LLMServerError as exc:
            answers.finish(app, turn, stream, error=str(exc))
        except BaseException:
            # Streamlit stopped this run (the user left the page or changed a setting): the answer
            # goes on without the page, into the history.
            answers.finish_later(app, turn, stream)
            raise
        with body.container():
            if turn.content:
                draw_text(turn.content)
        _draw_footer(turn)


def main() -> None:
    """Draw the page."""
    app = state.get_app()
    st.title("Chat")
    st.caption(f"Talking to {sidebar.md_escape(app.settings.server_url)}. Each turn is a trace of its own; "
               "the turns of this conversation share its id.")
    # Filled last, so that it also appears in the run that answers the first question.
    session_link = st.empty()
    history = app.history()
    for turn in history:
        if not turn.pending:
            _show_turn(turn)
    arriving = any(turn.pending for turn in history)
    if arriving:
        st.fragment(run_every=_POLL_S)(_arriving)(app)
    prompt = st.chat_input("Waiting for the answer…" if arriving else "Ask the model something",
                           disabled=arriving)
    if prompt:
        app.add_turn(ChatTurn("user", prompt))
        _show_turn(ChatTurn("user", prompt))
        _answer(app)
    if any(turn.role == "assistant" and not turn.pending for turn in app.history()):
        with session_link.container():
            _session_link(app)


main()
