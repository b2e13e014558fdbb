"""Conversations: chat turns grouped by an id, each turn a trace of its own.

OpenTelemetry's GenAI conventions give each operation its own trace and
group a conversation's traces by `gen_ai.conversation.id`; Phoenix calls the
group a session (`session.id`), Langfuse a session, Opik a thread. So a
conversation here is not a trace: it is an id that every chat made while it
is active carries, as both `gen_ai.conversation.id` and `session.id`, while
each turn is sampled, exported and stored as soon as its answer is in.

`conversation(tracer, id)` (what `InstrumentedClient.conversation` returns)
makes a conversation active in the current context, a `contextvars`
variable: it follows asyncio tasks created inside it and contexts copied
from it (`contextvars.copy_context().run`, `asyncio.to_thread`), never into
another thread or request, nor out of its `with` block. A single call may
name its conversation instead (`client.chat(..., conversation_id=...)`),
for a turn served in a context of its own. `Conversation.turn()` opens a
root span for a turn, carrying the same ids, under which the turn's chats
and any spans of your own nest.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from obs import semconv
from obs.trace.handles import SpanHandle
from obs.trace.tracer import Tracer

__all__ = [
    "MAX_CONVERSATION_ID_CHARS",
    "Conversation",
    "check_conversation_id",
    "conversation",
    "conversation_attributes",
    "current_conversation_id",
    "new_conversation_id",
]

MAX_CONVERSATION_ID_CHARS = 256

_CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("obs_conversation_id", default=None)


def new_conversation_id() -> str:
    """A fresh conversation id: 32 random lowercase hex characters."""
    return uuid.uuid4().hex


def check_conversation_id(value: Any, name: str = "conversation_id") -> str:
    """`value` if it is a usable conversation id, else ValueError naming `name`.

    A usable id is a str of 1 to 256 characters with no control characters
    (it is shown in tables and sent to other tools as an attribute value).
    """
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_CONVERSATION_ID_CHARS
        or not value.isprintable()
    ):
        raise ValueError(
            f"{name} must be a str of 1 to {MAX_CONVERSATION_ID_CHARS} printable characters "
            f"(or None for a new one), got {value!r}"
        )
    return value


def current_conversation_id() -> str | None:
    """The id of the conversation active in this context, or None."""
    return _CURRENT.get()


def conversation_attributes(conversation_id: str) -> dict[str, str]:
    """The span attributes that put a span in conversation `conversation_id`: both grouping keys."""
    return {semconv.GEN_AI_CONVERSATION_ID: conversation_id, semconv.SESSION_ID: conversation_id}


class Conversation:
    """An active conversation: its `id`, its span `attributes`, and `turn()` for a turn's root span."""

    __slots__ = ("_id", "_tracer")

    def __init__(self, conversation_id: str, tracer: Tracer) -> None:
        """Internal: made by `conversation()`."""
        self._id = conversation_id
        self._tracer = tracer

    @property
    def id(self) -> str:
        """The conversation id every span of its turns carries."""
        return self._id

    @property
    def attributes(self) -> dict[str, str]:
        """`gen_ai.conversation.id` and `session.id` set to the id: add them to spans of your own."""
        return conversation_attributes(self._id)

    @contextmanager
    def turn(self, name: str = "turn", attributes: Mapping[str, Any] | None = None) -> Iterator[SpanHandle]:
        """A span for one turn, carrying the conversation's ids, current inside the block.

        Started as `tracer.start_span` starts any span: with nothing current
        here it is the root of a new trace (the usual case: each turn is a
        trace); inside a span it nests. Chats inside the block nest under it;
        it ends, and with it the turn's trace, when the block exits (an
        exception marks it as an error and passes through). A stream read
        after the block still ends in the same trace.
        """
        attrs = dict(attributes) if attributes else {}
        attrs.update(conversation_attributes(self._id))
        with self._tracer.start_span(name, attrs) as span:
            yield span

    def __repr__(self) -> str:
        return f"Conversation(id={self._id!r})"


@contextmanager
def conversation(tracer: Tracer, conversation_id: str | None = None) -> Iterator[Conversation]:
    """Make a conversation active in this context for the block; yields it (`.id`).

    `conversation_id` None starts a new conversation (`new_conversation_id`);
    an id continues that conversation, for instance in the next request of
    the same chat. Blocks nest: the innermost conversation is the active one,
    and the outer one is active again after it. ValueError for an id that
    `check_conversation_id` refuses.
    """
    if conversation_id is None:
        conversation_id = new_conversation_id()
    else:
        conversation_id = check_conversation_id(conversation_id, "id")
    token = _CURRENT.set(conversation_id)
    try:
        yield Conversation(conversation_id, tracer)
    finally:
        try:
            _CURRENT.reset(token)
        except ValueError:  # exited in another context (a generator resumed elsewhere): restore by value
            previous = token.old_value
            _CURRENT.set(None if previous is contextvars.Token.MISSING else previous)
