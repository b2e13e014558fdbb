"""AppTest of the router and the per-session state: every page runs, a reload in the same browser keeps the
session's data, and a session link opens nothing in another browser."""

from __future__ import annotations

import inspect
import re

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app import state
from tests.app.conftest import APP_SCRIPT, ROOT, RUN_TIMEOUT_S, open_app, record_request
from tests.app.test_sessions import xsrf_cookie

PAGES = [state.CHAT_PAGE, state.DASHBOARD_PAGE, state.TRACES_PAGE, state.LOGS_PAGE, state.ALERTS_PAGE]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_and_draws_the_server_sidebar(page: str, dead_url: str) -> None:
    at = open_app(page)  # Chat first, then the page
    assert not at.exception
    assert at.sidebar.subheader[0].value == "Server"
    # The field shows the URL in use, after a page switch too (not an empty field and an error).
    assert at.sidebar.text_input(key=state.W_SERVER_URL).value == dead_url
    assert at.session_state[state.APP].settings.server_url == dead_url
    assert not [e.value for e in at.sidebar.error]
    at.run()  # and on the page's next run
    assert at.sidebar.text_input(key=state.W_SERVER_URL).value == dead_url


def _query(at: AppTest, name: str) -> str:
    """The one value of query parameter `name` (older AppTests give it as a one-element list)."""
    value = at.query_params[name]
    if isinstance(value, list):
        assert len(value) == 1, value
        return value[0]
    return value


def test_the_session_id_rides_in_the_url() -> None:
    at = open_app()
    sid = at.session_state[state.SESSION_ID]
    assert _query(at, state.QUERY_SESSION) == sid
    at.switch_page(state.TRACES_PAGE).run()
    assert _query(at, state.QUERY_SESSION) == sid


def _as_browser(monkeypatch: pytest.MonkeyPatch, token: bytes) -> None:
    """The next runs come from the browser whose XSRF token is `token` (a fresh mask each time, as sent)."""
    monkeypatch.setattr(state, "_cookies", lambda: xsrf_cookie(token))


def _reload(sid: str) -> AppTest:
    at = AppTest.from_file(str(APP_SCRIPT), default_timeout=RUN_TIMEOUT_S)
    at.query_params[state.QUERY_SESSION] = sid
    at.run()
    return at


def test_a_reload_in_the_same_browser_finds_the_same_data(monkeypatch: pytest.MonkeyPatch) -> None:
    _as_browser(monkeypatch, b"alice's browser!")
    first = open_app()
    app = first.session_state[state.APP]
    record_request(app, latency_ms=50.0)
    reload = _reload(first.session_state[state.SESSION_ID])
    assert reload.session_state[state.APP] is app
    reload.switch_page(state.DASHBOARD_PAGE).run()
    tiles = {m.label: m.value for m in reload.metric}
    assert tiles["Total Requests"] == "1"


def test_a_session_link_opened_in_another_browser_starts_a_fresh_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _as_browser(monkeypatch, b"alice's browser!")
    alice = open_app()
    app, sid = alice.session_state[state.APP], alice.session_state[state.SESSION_ID]
    record_request(app, latency_ms=50.0)
    _as_browser(monkeypatch, b"bob's own browser")
    bob = _reload(sid)
    assert bob.session_state[state.APP] is not app
    assert bob.session_state[state.SESSION_ID] != sid
    assert _query(bob, state.QUERY_SESSION) == bob.session_state[state.SESSION_ID]
    assert bob.session_state[state.APP].collector.get_metrics().request_count == 0
    assert "not open in this browser" in bob.toast[0].value
    # Alice's link still opens Alice's session, for Alice.
    _as_browser(monkeypatch, b"alice's browser!")
    assert _reload(sid).session_state[state.APP] is app


def test_without_a_browser_secret_a_session_id_opens_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    _as_browser(monkeypatch, b"alice's browser!")
    alice = open_app()
    monkeypatch.setattr(state, "_cookies", dict)
    stranger = _reload(alice.session_state[state.SESSION_ID])
    assert stranger.session_state[state.APP] is not alice.session_state[state.APP]


def test_an_unknown_session_id_gets_a_fresh_session() -> None:
    at = AppTest.from_file(str(APP_SCRIPT), default_timeout=RUN_TIMEOUT_S)
    at.query_params[state.QUERY_SESSION] = "not-a-session"
    at.run()
    assert at.session_state[state.SESSION_ID] != "not-a-session"
    assert at.session_state[state.APP].collector.get_metrics().request_count == 0


# Streamlit APIs the app calls, with the release that introduced them (checked against each release's
# own source): the oldest Streamlit requirements.txt allows must have all of them.
NEWEST_APIS = {
    ("dataframe", "selection_default"): (1, 56),
    ("page_link", "query_params"): (1, 52),
    ("button", "width"): (1, 48),
}


def test_requirements_allow_no_streamlit_older_than_the_apis_the_app_calls() -> None:
    sources = "\n".join(p.read_text(encoding="utf-8") for p in [APP_SCRIPT, *(ROOT / "app").rglob("*.py")])
    for function, parameter in NEWEST_APIS:
        assert parameter in inspect.signature(getattr(st, function)).parameters
        call = rf"st\.{function}\((?:[^()]|\([^()]*\))*\b{parameter}="
        assert re.search(call, sources), f"the app no longer calls st.{function}({parameter}=...)"
    requirement = re.search(r"^streamlit>=([0-9.]+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert requirement is not None
    floor = tuple(int(part) for part in requirement.group(1).split("."))[:2]
    assert floor >= max(NEWEST_APIS.values())
