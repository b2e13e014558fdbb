"""AppTest of the Chat page: sidebar validation, errors of a down server, the chat flow on the real model."""

from __future__ import annotations

import pytest

from app import state
from obs import semconv
from tests.app.conftest import open_app, plain
from tests.app.fake_server import FakeLlamaServer

HTML_REPLY = '<script>alert("x")</script><img src=x onerror="alert(1)"> done'


def _answers(at) -> list:
    return [m for m in at.chat_message if m.name == "assistant"]


def test_chat_page_draws_input_history_and_sidebar(dead_url: str) -> None:
    at = open_app()
    assert not at.exception
    assert at.title[0].value == "Chat"
    assert len(at.chat_input) == 1
    assert at.sidebar.text_input(key=state.W_SERVER_URL).value == dead_url
    sidebar_text = " ".join(m.value for m in at.sidebar.markdown)
    assert "unreachable" in sidebar_text
    assert "OBS_EMBEDDED_SERVER=0" in plain(" ".join(c.value for c in at.sidebar.caption))
    labels = [b.label for b in at.sidebar.button]
    assert labels == ["New conversation"]


def test_a_negative_price_is_refused_and_the_last_good_price_kept() -> None:
    at = open_app()
    app = at.session_state[state.APP]
    at.sidebar.number_input(key=state.W_PROMPT_PRICE).set_value(0.005).run()
    assert app.collector.prices_for() == (0.005, 0.002)
    at.sidebar.number_input(key=state.W_COMPLETION_PRICE).set_value(-1.0).run()
    assert not at.exception
    errors = [e.value for e in at.sidebar.error]
    assert len(errors) == 1
    assert "completion_token_cost" in errors[0] and "Still using $0.0050 / $0.0020" in errors[0]
    assert app.collector.prices_for() == (0.005, 0.002)
    at.sidebar.number_input(key=state.W_COMPLETION_PRICE).set_value(0.004).run()
    assert not at.sidebar.error
    assert app.collector.prices_for() == (0.005, 0.004)


@pytest.mark.parametrize(("url", "message"), [
    ("", "must not be empty"),
    ("ftp://127.0.0.1:8033", "must start with http:// or https://"),
    ("localhost:8033", "must start with http:// or https://"),
])
def test_a_bad_server_url_is_refused_and_the_last_good_one_kept(dead_url: str, url: str,
                                                                message: str) -> None:
    at = open_app()
    app = at.session_state[state.APP]
    at.sidebar.text_input(key=state.W_SERVER_URL).set_value(url).run()
    assert not at.exception
    assert message in at.sidebar.error[0].value
    assert f"Still using {dead_url}" in at.sidebar.error[0].value
    assert app.settings.server_url == dead_url
    assert app.client.base_url == dead_url


def test_server_down_shows_the_client_message_and_the_chat_stays_usable(dead_url: str) -> None:
    at = open_app()
    at.chat_input[0].set_value("Hello?").run()
    assert not at.exception
    assert len(at.error) == 1
    assert dead_url in plain(at.error[0].value)  # the client's message names the server it could not reach
    assert len(at.chat_input) == 1
    app = at.session_state[state.APP]
    assert app.collector.get_metrics().error_count == 1
    with FakeLlamaServer("Back again.") as fake:
        at.sidebar.text_input(key=state.W_SERVER_URL).set_value(fake.url).run()
        at.chat_input[0].set_value("And now?").run()
    assert not at.exception
    answers = _answers(at)
    assert [a.markdown[0].value for a in answers if a.markdown] == ["Back again."]
    assert "latency" in plain(answers[-1].caption[0].value)
    # The failed request and the answer are spans of the same conversation trace.
    running = app.running_trace()
    assert running is not None
    assert [s.status for s in running.spans] == ["error", "success"]
    # The failed turn is not sent again as context.
    assert [m["content"] for m in fake.requests[-1]["messages"] if m["role"] != "system"] == [
        "Hello?", "And now?"]


def test_html_in_a_reply_is_markdown_text_with_html_off(fake_server: FakeLlamaServer) -> None:
    fake_server.reply = HTML_REPLY
    at = open_app()
    at.chat_input[0].set_value("<b>user html</b>").run()
    assert not at.exception
    user, answer = at.chat_message
    assert user.markdown[0].value == "<b>user html</b>"
    assert answer.markdown[0].value == HTML_REPLY
    for element in (user.markdown[0], answer.markdown[0]):
        assert element.allow_html is False


def test_capture_off_keeps_contents_off_the_span(fake_server: FakeLlamaServer) -> None:
    at = open_app()
    at.sidebar.toggle(key=state.W_CAPTURE).set_value(False).run()
    at.chat_input[0].set_value("secret question").run()
    app = at.session_state[state.APP]
    span = app.running_trace().spans[-1]
    assert semconv.GEN_AI_INPUT_MESSAGES not in span.attributes
    at.sidebar.toggle(key=state.W_CAPTURE).set_value(True).run()
    at.chat_input[0].set_value("open question").run()
    span = app.running_trace().spans[-1]
    assert "open question" in span.attributes[semconv.GEN_AI_INPUT_MESSAGES]


def test_settings_go_into_the_request(fake_server: FakeLlamaServer) -> None:
    at = open_app()
    at.sidebar.text_area(key=state.W_SYSTEM_PROMPT).set_value("Be terse.")
    at.sidebar.slider(key=state.W_TEMPERATURE).set_value(0.2)
    at.sidebar.number_input(key=state.W_MAX_TOKENS).set_value(64)
    at.run()
    at.chat_input[0].set_value("hi").run()
    body = fake_server.requests[-1]
    assert body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert (body["temperature"], body["max_tokens"], body["stream"]) == (0.2, 64, True)


@pytest.mark.integration
def test_chat_with_the_real_model_streams_answers_into_one_conversation_trace(real_server: str) -> None:
    at = open_app()
    app = at.session_state[state.APP]
    assert app.settings.server_url == real_server
    at.sidebar.number_input(key=state.W_MAX_TOKENS).set_value(32).run()  # short answers keep the test quick
    at.chat_input[0].set_value("Say hello.").run()
    assert not at.exception, at.exception
    at.chat_input[0].set_value("Name a colour.").run()
    assert not at.exception, at.exception
    answers = _answers(at)
    assert len(answers) == 2
    for answer in answers:
        assert answer.markdown[0].value.strip()
        caption = plain(answer.caption[0].value)
        for part in ("latency", "TTFT", "tokens", "tok/s", "cost", "prompt cache"):
            assert part in caption
    conversation = app.conversation_id()
    links = at.get("page_link")
    assert len(links) == 2
    assert all(f"{state.QUERY_TRACE}={conversation}" in link.proto.query_string for link in links)
    assert app.collector.get_metrics().request_count == 2
    running = app.running_trace()
    assert [s.attributes[semconv.GEN_AI_REQUEST_STREAM] for s in running.spans] == [True, True]

    at.sidebar.button[0].click().run()
    assert not at.exception
    assert not at.chat_message
    stored = app.store.get(conversation)
    assert stored is not None and stored.status == "success"
    assert len(stored.spans) == 2
    assert app.conversation_id() is None


def test_images_in_a_reply_and_in_a_server_error_are_inert(fake_server: FakeLlamaServer) -> None:
    fake_server.reply = "Look ![x](http://127.0.0.1:9/track.png?leak=1) here:\n```rust\nlet v = vec![1];\n```"
    at = open_app()
    at.chat_input[0].set_value("a picture?").run()
    answer = _answers(at)[0]
    assert [m.value for m in answer.markdown] == ["Look !\\[x](http://127.0.0.1:9/track.png?leak=1) here:"]
    assert [(c.value, c.language) for c in answer.code] == [("let v = vec![1];", "rust")]
    fake_server.fail_status = 500
    fake_server.fail_message = "overloaded ![x](http://127.0.0.1:9/error.png?leak=1)"
    at.chat_input[0].set_value("again?").run()
    (error,) = at.error
    assert "![" not in error.value
    assert "overloaded ![x](http://127.0.0.1:9/error.png?leak=1)" in plain(error.value)
