"""The checks of the dashboard queries' arguments: time range, scope, page and search text.

Each raises ValueError naming the argument and what it accepts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from obs._validate import is_finite_number
from obs.storage._aggregate import Scope

__all__ = ["MAX_LIMIT", "check_page", "check_range", "check_scope", "like"]

MAX_LIMIT = 1000


def check_range(since: Any, until: Any) -> tuple[float, float]:
    """[since, until) in epoch seconds (None: unbounded) as epoch ms; ValueError names a bad bound."""
    bounds = []
    for name, value in (("since", since), ("until", until)):
        if value is not None and not is_finite_number(value):
            raise ValueError(f"{name} must be None or epoch seconds (a finite number), got {value!r}")
        bounds.append(value)
    lo = -math.inf if since is None else float(since) * 1000.0
    hi = math.inf if until is None else float(until) * 1000.0
    if lo > hi:
        raise ValueError(f"since ({since!r}) must not be after until ({until!r})")
    return lo, hi


def check_scope(service: Any, model: Any, conversation: Any) -> Scope:
    """The scope of a query; ValueError names an argument that is not None or text."""
    for name, value in (("service", service), ("model", model)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{name} must be None (every {name}) or a non-empty string, got {value!r}")
    conversations: tuple[str, ...] | None = None
    if isinstance(conversation, str):
        conversations = (conversation,)
    elif conversation is not None:
        if not isinstance(conversation, Sequence | set | frozenset) or not all(
            isinstance(item, str) for item in conversation
        ):
            raise ValueError(
                "conversation must be None, a conversation id or a collection of ids (str), "
                f"got {conversation!r}"
            )
        conversations = tuple(conversation)
    return Scope(service, model, conversations)


def check_page(limit: Any, offset: Any) -> tuple[int, int]:
    """(limit, offset) of a page; ValueError unless limit is an int in [1, MAX_LIMIT] and offset one >= 0."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an int in [1, {MAX_LIMIT}], got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be an int >= 0, got {offset!r}")
    return limit, offset


def like(text: Any, name: str = "text") -> str | None:
    """A LIKE pattern (escape character backslash) matching text that contains `text`; None for no text."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise ValueError(f"{name} must be None or a string to search for, got {text!r}")
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
