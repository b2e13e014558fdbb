"""AppTest of the sidebar across pages: every value the user set is there on every page, in any order."""

from __future__ import annotations

from app import state
from tests.app.conftest import open_app
from tests.app.fake_server import FakeLlamaServer

PAGES = [state.DASHBOARD_PAGE, state.TRACES_PAGE, state.LOGS_PAGE, state.ALERTS_PAGE, state.CHAT_PAGE]
NUMBER = "number_input"
SHARED = {state.W_SERVER_URL: "text_input", state.W_SAMPLE_PCT: "slider", state.W_KEEP_ERRORS: "toggle",
          state.W_KEEP_SLOW: "toggle", state.W_SLOW_MS: NUMBER, state.W_ALERT_ERROR_PCT: NUMBER,
          state.W_ALERT_P95_MS: NUMBER, state.W_ALERT_MIN_REQUESTS: NUMBER}
CHAT = {state.W_SYSTEM_PROMPT: "text_area", state.W_TEMPERATURE: "slider", state.W_MAX_TOKENS: NUMBER,
        state.W_PROMPT_PRICE: NUMBER, state.W_COMPLETION_PRICE: NUMBER, state.W_CAPTURE: "toggle"}


def _values(at, chat: bool) -> dict:
    fields = {**SHARED, **(CHAT if chat else {})}
    return {key: getattr(at.sidebar, kind)(key=key).value for key, kind in fields.items()}


def _choose(at, url: str) -> None:
    chosen = {state.W_SERVER_URL: url, state.W_SAMPLE_PCT: 40, state.W_KEEP_ERRORS: False,
              state.W_KEEP_SLOW: True, state.W_SLOW_MS: 1500.0, state.W_ALERT_ERROR_PCT: 12.5,
              state.W_ALERT_P95_MS: 3000.0, state.W_ALERT_MIN_REQUESTS: 3,
              state.W_SYSTEM_PROMPT: "Answer in French.", state.W_TEMPERATURE: 0.3, state.W_MAX_TOKENS: 100,
              state.W_PROMPT_PRICE: 0.003, state.W_COMPLETION_PRICE: 0.004, state.W_CAPTURE: False}
    for key, value in chosen.items():
        kind = {**SHARED, **CHAT}[key]
        getattr(at.sidebar, kind)(key=key).set_value(value)


def test_every_sidebar_value_is_kept_on_every_page_in_any_order() -> None:
    at = open_app()
    with FakeLlamaServer() as other:
        _choose(at, other.url)
        at.run()
        chosen = _values(at, chat=True)
        for page in [*PAGES, *reversed(PAGES), state.TRACES_PAGE, state.CHAT_PAGE]:
            at.switch_page(page).run()
            assert not at.exception
            shown = _values(at, chat=page == state.CHAT_PAGE)
            assert shown == {key: chosen[key] for key in shown}, page
        app = at.session_state[state.APP]
        assert app.settings.server_url == other.url and app.settings.max_tokens == 100


def test_chat_settings_changed_just_before_leaving_the_page_are_kept() -> None:
    # The user changes a chat setting and switches page before a run of the Chat page has applied
    # it: the next run draws another page, which has no chat settings in its sidebar.
    at = open_app()
    with FakeLlamaServer() as other:
        _choose(at, other.url)
        at.switch_page(state.DASHBOARD_PAGE).run()
        at.switch_page(state.CHAT_PAGE).run()
        shown = _values(at, chat=True)
    assert shown[state.W_SYSTEM_PROMPT] == "Answer in French."
    assert (shown[state.W_MAX_TOKENS], shown[state.W_PROMPT_PRICE], shown[state.W_CAPTURE]) == (
        100, 0.003, False)
    settings = at.session_state[state.APP].settings
    assert (settings.temperature, settings.completion_price, settings.capture_content) == (0.3, 0.004, False)
