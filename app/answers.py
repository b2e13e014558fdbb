"""An answer's life in the chat history: begun pending, filled as it streams in, settled at the end.

The Chat page streams an answer while it draws it. Streamlit stops a page's
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
    """Append an empty, pending assistant turn for the answer about to be asked for; return it."""
    turn = ChatTurn("assistant", "", pending=True)
    app.add_turn(turn)
    return turn


def note_progress(app: AppSession, turn: ChatTurn, stream: ChatStream) -> None:
    """Copy the text that `stream` has received so far into `turn`."""
    with app.lock:
        turn.content = stream.text


def finish(app: AppSession, turn: ChatTurn, stream: ChatStream | None, error: str | None = None) -> None:
    """Settle `turn`: its final text, the caption read from its span (unless `error`), its trace."""
    with app.lock:
        span = stream.span if stream is not None else None
        if stream is not None:
            turn.content = stream.text
        turn.caption = captions.answer_caption(span) if span is not None and error is None else None
        turn.trace_id = span.trace_id if span is not None else app.conversation_id()
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
