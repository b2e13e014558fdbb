"""An answer's life in the chat history: begun pending, filled as it streams in, settled at the end.

Each answer is a chat turn with a trace of its own: begun with the answer
(so the pending turn already knows its trace) and ended when it is settled,
which is when the trace is sampled, stored and counted. The Chat page
streams an answer while it draws it. Streamlit stops a page's
run when the user leaves the page or changes a setting; the answer must not
be lost then, so `finish_later` hands the rest of the stream to a worker
thread that fills the same turn and settles it with its caption and trace,
as if the page had stayed. Turns change under the session's lock; pages read
copies (`AppSession.history`).
"""

from __future__ import annotations

import logging
import threading

from app import captions
from app.state import AppSession, ChatTurn
from obs.llm.client import ChatStream
from obs.llm.errors import LLMServerError

__all__ = ["begin", "finish", "finish_later", "note_progress"]

_log = logging.getLogger(__name__)


def begin(app: AppSession) -> ChatTurn:
    """Begin the turn's trace and append an empty, pending assistant turn for its answer; return it.

    The turn's `trace_id` is its trace (`AppSession.start_turn`); ask for the
    answer with `app.stream_reply(turn.trace_id)`.
    """
    turn = ChatTurn("assistant", "", trace_id=app.start_turn(), pending=True)
    app.add_turn(turn)
    return turn


def note_progress(app: AppSession, turn: ChatTurn, stream: ChatStream) -> None:
    """Copy the text that `stream` has received so far into `turn`."""
    with app.lock:
        turn.content = stream.text


def finish(app: AppSession, turn: ChatTurn, stream: ChatStream | None, error: str | None = None) -> None:
    """End the turn's trace, then settle `turn`: its final text, the caption from its span (unless `error`).

    The trace is ended first, so a settled answer's trace is already stored
    (unless sampling dropped it).
    """
    span = stream.span if stream is not None else None
    with app.lock:
        trace_id = turn.trace_id or (span.trace_id if span is not None else None)
    if trace_id is not None:
        app.end_turn(trace_id, error)
    with app.lock:
        if stream is not None:
            turn.content = stream.text
        turn.caption = captions.answer_caption(span) if span is not None and error is None else None
        turn.trace_id = trace_id
        turn.error = error
        turn.pending = False


def finish_later(app: AppSession, turn: ChatTurn, stream: ChatStream | None) -> threading.Thread | None:
    """Read the rest of `stream` into `turn` on a worker thread, the page that asked having gone.

    Returns the worker, or None without a stream: then there is nothing to
    wait for, and the turn is settled at once with an error saying so.
    """
    if stream is None:
        finish(app, turn, None, error="The answer was stopped before it was asked for.")
        return None

    def read_the_rest() -> None:
        error = None
        try:
            for _ in stream:
                note_progress(app, turn, stream)
        except LLMServerError as exc:
            error = str(exc)
        except Exception as exc:  # a worker must settle its turn whatever happens
            _log.exception("reading the rest of an answer failed")
            error = f"The answer broke off: {type(exc).__name__}."
        finally:
            finish(app, turn, stream, error)

    worker = threading.Thread(target=read_the_rest, name="obs-answer", daemon=True)
    worker.start()
    return worker
