"""AppTest of the Chat page: sidebar validation, errors of a down server, each turn a finished trace of its
conversation, the chat flow on the real model."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from app import state
from obs import semconv
from obs.trace.traces import Trace
from tests.app.conftest import open_app, plain
from tests.app.fake_server import FakeLlamaServer

HTML_REPLY = '<script>alert("x")</script><img src=x onerror="alert(1)"> done'


def _answers(at) -> list:
    return [m for m in at.chat_message if m.name == "assistant"]


def _conversation_ids(trace: Trace) -> set[tuple[str | None, str | None]]:
    """The (gen_ai.conversation.id, session.id) pairs the trace's spans carry."""
    return {(s.attributes.get(semconv.GEN_AI_CONVERSATION_ID), s.attributes.get(semconv.SESSION_ID))
            for s in trace.spans}


def _turn_shape(trace: Trace) -> list[tuple[str, str | None]]:
    """(span name, parent span name) of each span, in start order."""
    names = {s.id: s.name for s in trace.spans}
    return [(s.name, names.get(s.parent_id)) for s in sorted(trace.spans, key=lambda s: s.start_time)]


def _links(at, page: str) -> list[dict[str, str]]:
    """The query parameters of each link to `page` (its URL path, e.g. "traces"), in drawing order."""
    return [{key: values[0] for key, values in parse_qs(link.proto.query_string).items()}
            for link in at.get("page_link") if link.proto.page == page]


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
    assert labels == ["New conversation", "Clear history…"]


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
    # The failed turn and the answered one are finished traces of their own, in the same conversation.
    failed, answered = app.store.all()
    assert (failed.status, answered.status) == ("error", "success")
    assert [s.status for s in failed.spans] == ["error", "error"]  # the turn failed because its request did
    assert _conversation_ids(failed) == _conversation_ids(answered) == {(app.conversation_id(),) * 2}
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
    (secret,) = app.store.all()
    for span in secret.spans:  # the turn's root span as well as its request
        assert semconv.GEN_AI_INPUT_MESSAGES not in span.attributes
        assert semconv.GEN_AI_OUTPUT_MESSAGES not in span.attributes
    at.sidebar.toggle(key=state.W_CAPTURE).set_value(True).run()
    at.chat_input[0].set_value("open question").run()
    turn = app.store.all()[-1]
    root = next(s for s in turn.spans if s.parent_id is None)
    assert "open question" in root.attributes[semconv.GEN_AI_INPUT_MESSAGES]
    assert "secret question" not in root.attributes[semconv.GEN_AI_INPUT_MESSAGES]  # only its own question


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
    turns = app.store.all()
    assert [t.status for t in turns] == ["success", "success"]
    assert [link[state.QUERY_TRACE] for link in _links(at, "traces")] == [t.id for t in turns]
    assert app.collector.get_metrics().request_count == 2
    for turn in turns:
        (root, parent), (request_name, request_parent) = _turn_shape(turn)
        assert (root, parent, request_parent) == (state.TURN_SPAN, None, state.TURN_SPAN)
        assert request_name.startswith("chat ")
        assert _conversation_ids(turn) == {(conversation, conversation)}
        request = next(s for s in turn.spans if s.parent_id is not None)
        assert request.attributes[semconv.GEN_AI_REQUEST_STREAM] is True

    at.sidebar.button[0].click().run()
    assert not at.exception
    assert not at.chat_message
    assert app.conversation_id() not in (None, conversation)


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


def test_each_turn_is_a_finished_trace_carrying_the_conversation_id(fake_server: FakeLlamaServer) -> None:
    at = open_app()
    app = at.session_state[state.APP]
    at.chat_input[0].set_value("hi").run()
    first = app.store.all()
    assert len(first) == 1  # stored as soon as its answer is in, not when the conversation ends
    at.chat_input[0].set_value("and then?").run()
    assert not at.exception
    turns = app.store.all()
    assert len(turns) == 2 and turns[0].id != turns[1].id
    conversation = app.conversation_id()
    for turn in turns:
        assert turn.status == "success" and turn.end_time is not None and turn.duration is not None
        assert turn.name == state.TURN_SPAN
        assert _turn_shape(turn) == [(state.TURN_SPAN, None), ("chat fake-model", state.TURN_SPAN)]
        assert _conversation_ids(turn) == {(conversation, conversation)}
        root, request = sorted(turn.spans, key=lambda s: s.start_time)
        assert root.end_time >= request.end_time  # the turn's span lasts until its answer is in
    # Each answer links to its own turn's trace, in this browser session.
    links = _links(at, "traces")
    assert [link[state.QUERY_TRACE] for link in links] == [t.id for t in turns]
    assert {link[state.QUERY_SESSION] for link in links} == {at.session_state[state.SESSION_ID]}
    # The sampling counters count turns as they end: nothing is left running.
    metrics = app.collector.get_metrics()
    assert (metrics.traces_seen, metrics.traces_kept_head) == (2, 2)


def test_the_chat_links_to_its_conversation_on_the_sessions_page(fake_server: FakeLlamaServer) -> None:
    at = open_app()
    assert _links(at, "sessions") == []  # nothing to show before the first turn
    at.chat_input[0].set_value("hi").run()
    (link,) = _links(at, "sessions")
    assert link == {state.QUERY_CONVERSATION: at.session_state[state.APP].conversation_id(),
                    state.QUERY_SESSION: at.session_state[state.SESSION_ID]}


def test_new_conversation_starts_a_new_conversation_id(fake_server: FakeLlamaServer) -> None:
    at = open_app()
    app = at.session_state[state.APP]
    at.chat_input[0].set_value("hi").run()
    before = app.conversation_id()
    at.sidebar.button[0].click().run()
    assert not at.chat_message
    after = app.conversation_id()
    assert after != before
    at.chat_input[0].set_value("a new topic").run()
    old, new = app.store.all()
    assert _conversation_ids(old) == {(before, before)}
    assert _conversation_ids(new) == {(after, after)}
    (link,) = _links(at, "sessions")
    assert link[state.QUERY_CONVERSATION] == after


def test_sampling_decides_per_turn_and_counts_each_turn_as_it_ends(fake_server: FakeLlamaServer) -> None:
    at = open_app()
    app = at.session_state[state.APP]
    at.sidebar.slider(key=state.W_SAMPLE_PCT).set_value(0).run()
    at.chat_input[0].set_value("hi").run()
    at.chat_input[0].set_value("again").run()
    assert len(app.store) == 0
    metrics = app.collector.get_metrics()
    assert (metrics.traces_seen, metrics.traces_dropped) == (2, 2)
    at.sidebar.slider(key=state.W_SAMPLE_PCT).set_value(100).run()
    at.chat_input[0].set_value("kept?").run()
    (kept,) = app.store.all()
    assert _turn_shape(kept) == [(state.TURN_SPAN, None), ("chat fake-model", state.TURN_SPAN)]
    assert app.collector.get_metrics().traces_kept_head == 1
