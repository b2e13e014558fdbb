"""AppTest of the router and the per-session state: every page runs, a reload keeps the session's data."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app import state
from tests.app.conftest import APP_SCRIPT, RUN_TIMEOUT_S, open_app, record_request

PAGES = [state.CHAT_PAGE, state.DASHBOARD_PAGE, state.TRACES_PAGE, state.LOGS_PAGE, state.ALERTS_PAGE]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_and_draws_the_server_sidebar(page: str) -> None:
    at = open_app(page)
    assert not at.exception
    assert at.sidebar.text_input(key=state.W_SERVER_URL) is not None
    assert at.sidebar.subheader[0].value == "Server"


def test_the_session_id_rides_in_the_url() -> None:
    at = open_app()
    sid = at.session_state[state.SESSION_ID]
    assert at.query_params[state.QUERY_SESSION] == sid
    at.switch_page(state.TRACES_PAGE).run()
    assert at.query_params[state.QUERY_SESSION] == sid


def test_a_reload_with_the_session_id_finds_the_same_data() -> None:
    first = open_app()
    app = first.session_state[state.APP]
    record_request(app, latency_ms=50.0)
    reload = AppTest.from_file(str(APP_SCRIPT), default_timeout=RUN_TIMEOUT_S)
    reload.query_params[state.QUERY_SESSION] = first.session_state[state.SESSION_ID]
    reload.run()
    assert reload.session_state[state.APP] is app
    reload.switch_page(state.DASHBOARD_PAGE).run()
    tiles = {m.label: m.value for m in reload.metric}
    assert tiles["Total Requests"] == "1"


def test_an_unknown_session_id_gets_a_fresh_session() -> None:
    at = AppTest.from_file(str(APP_SCRIPT), default_timeout=RUN_TIMEOUT_S)
    at.query_params[state.QUERY_SESSION] = "not-a-session"
    at.run()
    assert at.session_state[state.SESSION_ID] != "not-a-session"
    assert at.session_state[state.APP].collector.get_metrics().request_count == 0
