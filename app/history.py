"""What part of the history file a page shows: a time range and a scope, the same on every page.

The history file holds the requests of every browser session of the
dashboard and of every program that writes to it (`obs.configure(db=...)`),
so each page that reads it offers the same two choices: a time range (last
15 minutes to all) and a scope (this browser session's conversations, one
service, one model, or everything). Both are per-user choices kept in
`st.session_state` under one key each, so they follow the user from page to
page. The default scope is this browser session: another person's
conversations show only when the user asks for them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from app import state
from app.state import AppSession
from obs.storage.queries import DashboardQueries

__all__ = ["DEFAULT_RANGE", "RANGE_CHOICES_S", "SCOPE_ALL", "SCOPE_SESSION", "View", "choose_view"]

RANGE_CHOICES_S: dict[str, float | None] = {
    "Last 15 minutes": 900.0, "Last hour": 3600.0, "Last 24 hours": 86400.0, "Last 7 days": 604800.0,
    "All": None,
}
DEFAULT_RANGE = "Last 24 hours"
SCOPE_ALL = "Everything"
SCOPE_SESSION = "This browser session"
_SERVICE = "Service: "
_MODEL = "Model: "


@dataclass(frozen=True, slots=True)
class View:
    """A time range (`since`, epoch s, None for all) and a scope (keyword arguments of the queries)."""

    since: float | None
    scope: dict[str, Any] = field(default_factory=dict)
    label: str = SCOPE_SESSION

    @property
    def this_session(self) -> bool:
        """True when only this browser session's conversations are shown."""
        return self.label == SCOPE_SESSION

    @property
    def service(self) -> str | None:
        """The one service shown, or None."""
        return self.scope.get("service")

    @property
    def model(self) -> str | None:
        """The one model shown, or None."""
        return self.scope.get("model")


def _options(queries: DashboardQueries) -> list[str]:
    options = [SCOPE_SESSION, SCOPE_ALL]
    options += [f"{_SERVICE}{name}" for name in queries.services()]
    options += [f"{_MODEL}{name}" for name in queries.models()]
    return options


def view_for(app: AppSession, range_label: str, scope_label: str, now: float | None = None) -> View:
    """The View that a range and a scope label (as the pickers show them) stand for."""
    seconds = RANGE_CHOICES_S.get(range_label, RANGE_CHOICES_S[DEFAULT_RANGE])
    since = None if seconds is None else (time.time() if now is None else now) - seconds
    if scope_label.startswith(_SERVICE):
        return View(since, {"service": scope_label.removeprefix(_SERVICE)}, scope_label)
    if scope_label.startswith(_MODEL):
        return View(since, {"model": scope_label.removeprefix(_MODEL)}, scope_label)
    if scope_label == SCOPE_ALL:
        return View(since, {}, scope_label)
    return View(since, {"conversation": tuple(app.conversations)}, SCOPE_SESSION)


def choose_view(app: AppSession, queries: DashboardQueries, *, with_range: bool = True) -> View:
    """Draw the range and scope pickers (seeded with the user's last choice) and return the View chosen."""
    state.init_widget(state.W_RANGE, DEFAULT_RANGE)
    state.init_widget(state.W_SCOPE, SCOPE_SESSION)
    options = _options(queries)
    if st.session_state[state.W_SCOPE] not in options:  # a service or model no longer in the file
        options.append(st.session_state[state.W_SCOPE])
    left, right, _ = st.columns([1, 2, 2], vertical_alignment="bottom")
    range_label = (left.selectbox("Time range", list(RANGE_CHOICES_S), key=state.W_RANGE)
                   if with_range else "All")
    scope_label = right.selectbox(
        "Scope", options, key=state.W_SCOPE,
        help="Whose requests: this browser session's conversations, every program and session writing the "
             "history file, one service (service.name) or one model.")
    return view_for(app, str(range_label), str(scope_label))
