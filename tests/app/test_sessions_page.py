"""AppTest of the Sessions page: one row per conversation, filters, and an opened session's turns in order."""

from __future__ import annotations

from urllib.parse import parse_qs

from app import state
from tests.app.conftest import open_app, plain
from tests.app.fake_server import FakeLlamaServer
from tests.app.plotly_spec import figures

REPLY = "Hello from the fake server."  # five words: five completion tokens per answer


def _chat(at, *questions: str) -> None:
    for question in questions:
        at.chat_input[0].set_value(question).run()
        assert not at.exception, at.exception


def _two_conversations():
    """Chat twice ("hi", "and then?"), start a new conversation, chat once ("a new topic")."""
    at = open_app()
    _chat(at, "hi", "and then?")
    app = at.session_state[state.APP]
    first = app.conversation_id()
    at.sidebar.button[0].click().run()
    _chat(at, "a new topic")
    return at, app, first, app.conversation_id()


def _messages(at) -> list[tuple[str, str]]:
    """(role, first Markdown text) of every chat message drawn, in order."""
    return [(m.name, m.markdown[0].value if m.markdown else "") for m in at.chat_message]


def _trace_links(at) -> list[str]:
    return [parse_qs(link.proto.query_string)[state.QUERY_TRACE][0]
            for link in at.get("page_link") if link.proto.page == "traces"]


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_no_sessions_yet_says_so() -> None:
    at = open_app(state.SESSIONS_PAGE)
    assert not at.exception
    assert at.title[0].value == "Sessions"
    assert "No sessions yet" in at.info[0].value


def test_one_row_per_conversation_with_its_numbers_and_the_newest_open(fake_server: FakeLlamaServer) -> None:
    at, app, first, second = _two_conversations()
    at.switch_page(state.SESSIONS_PAGE).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["conversation_id"]) == [second, first]  # the most recently active first
    assert list(table["first_message"]) == ["a new topic", "hi"]
    assert list(table["turns"]) == [1, 2]
    assert list(table["prompt_tokens"]) == [12, 24]
    assert list(table["completion_tokens"]) == [5, 10]
    assert list(table["errors"]) == [0, 0]
    durations = {t.id: t.duration for t in app.store.all()}
    assert table["total_ms"].iloc[1] == sum(durations[t.id] for t in app.store.all()[:2])
    assert [list(models) for models in table["models"]] == [["fake-model"], ["fake-model"]]
    # With no link and no pick, the newest session is open.
    assert _messages(at) == [("user", "a new topic"), ("assistant", REPLY)]
    assert _metrics(at)["Turns"] == "1"


def test_the_chat_link_opens_its_conversation_with_every_turn_in_order(fake_server: FakeLlamaServer) -> None:
    at, app, first, _ = _two_conversations()
    turns = app.store.all()[:2]
    at.query_params[state.QUERY_CONVERSATION] = first
    at.switch_page(state.SESSIONS_PAGE).run()
    assert not at.exception
    assert at.selectbox(key=state.W_SESSION_PICK).value == first
    assert _messages(at) == [
        ("user", "hi"), ("assistant", REPLY), ("user", "and then?"), ("assistant", REPLY)]
    captions = [plain(c.value) for m in at.chat_message if m.name == "assistant" for c in m.caption]
    assert len(captions) == 2 and all("latency" in c and "tokens 12 → 5" in c for c in captions)
    assert _trace_links(at) == [t.id for t in turns]
    waterfalls = figures(at)
    assert [f.layout.title.text for f in waterfalls] == ["Turn 1 waterfall", "Turn 2 waterfall"]
    for figure in waterfalls:
        assert [label.strip("\u00a0") for label in figure.layout.yaxis.ticktext] == [state.TURN_SPAN,
                                                                                     "chat fake-model"]
    metrics = _metrics(at)
    assert (metrics["Turns"], metrics["Tokens in → out"], metrics["Errors"]) == ("2", "24 → 10", "0")
    # The box opens another session; the link is not taken again.
    at.selectbox(key=state.W_SESSION_PICK).set_value(at.dataframe[0].value["conversation_id"].iloc[0]).run()
    assert _messages(at) == [("user", "a new topic"), ("assistant", REPLY)]


def test_a_link_to_a_conversation_without_stored_turns_says_so(fake_server: FakeLlamaServer) -> None:
    at, _, _, _ = _two_conversations()
    at.query_params[state.QUERY_CONVERSATION] = "never-stored"
    at.switch_page(state.SESSIONS_PAGE).run()
    assert not at.exception
    assert "no stored turn" in at.warning[0].value
    assert len(at.dataframe[0].value) == 2


def test_filters_by_text_model_and_errors(fake_server: FakeLlamaServer) -> None:
    at, _, first, second = _two_conversations()
    fake_server.fail_status = 500
    _chat(at, "this one fails")
    fake_server.fail_status = None
    at.switch_page(state.SESSIONS_PAGE).run()
    assert list(at.dataframe[0].value["errors"]) == [1, 0]
    at.text_input(key=state.W_SESSION_SEARCH).set_value("THEN").run()  # a later turn's: not searched
    assert "No session matches" in at.warning[0].value
    at.text_input(key=state.W_SESSION_SEARCH).set_value("HI").run()  # the first message (ids are hex)
    assert list(at.dataframe[0].value["conversation_id"]) == [first]
    assert _messages(at)[0] == ("user", "hi")  # the only session shown is the one open
    at.text_input(key=state.W_SESSION_SEARCH).set_value("").run()
    at.toggle(key=state.W_SESSION_ERRORS).set_value(True).run()
    assert list(at.dataframe[0].value["conversation_id"]) == [second]
    failed = [m for m in at.chat_message if m.name == "assistant"][-1]
    assert "the fake server failed on purpose" in plain(failed.error[0].value)
    at.toggle(key=state.W_SESSION_ERRORS).set_value(False).run()
    model = at.selectbox(key=state.W_SESSION_MODEL)
    assert model.options == ["All models", "fake-model"]
    model.set_value("fake-model").run()
    assert len(at.dataframe[0].value) == 2
    at.text_input(key=state.W_SESSION_SEARCH).set_value("nothing like this").run()
    assert "No session matches" in at.warning[0].value


def test_questions_and_answers_are_drawn_with_html_off_and_images_inert(fake_server: FakeLlamaServer) -> None:
    fake_server.reply = '<img src=x onerror="alert(1)"> ![x](http://127.0.0.1:9/track.png?leak=1) done'
    at = open_app()
    _chat(at, "<b>bold?</b> ![y](http://127.0.0.1:9/q.png)")
    at.switch_page(state.SESSIONS_PAGE).run()
    question, answer = (m.markdown[0] for m in at.chat_message)
    assert question.value == "<b>bold?</b> !\\[y](http://127.0.0.1:9/q.png)"
    assert answer.value == '<img src=x onerror="alert(1)"> !\\[x](http://127.0.0.1:9/track.png?leak=1) done'
    assert question.allow_html is False and answer.allow_html is False
    assert at.dataframe[0].value["first_message"].iloc[0] == "<b>bold?</b> ![y](http://127.0.0.1:9/q.png)"


def test_without_recorded_contents_the_session_still_counts_its_turns(fake_server: FakeLlamaServer) -> None:
    at = open_app()
    at.sidebar.toggle(key=state.W_CAPTURE).set_value(False).run()
    _chat(at, "a secret")
    at.switch_page(state.SESSIONS_PAGE).run()
    table = at.dataframe[0].value
    assert (table["turns"].iloc[0], table["prompt_tokens"].iloc[0]) == (1, 12)
    assert table["first_message"].iloc[0] == "(not recorded)"
    notes = [plain(c.value) for m in at.chat_message for c in m.caption]
    assert "The question was not recorded (message contents were off)." in notes
    assert all("a secret" not in m.markdown[0].value for m in at.chat_message if m.markdown)


def test_span_names_in_a_waterfall_are_text_not_plotly_markup() -> None:
    # Plotly reads <span style=...> in tick labels and hover text as markup, and a style's url(...) is
    # fetched by the browser; span names may come from a server or another program.
    name = '<span style="cursor:url(http://127.0.0.1:9/x.png),auto">tool</span> & co'
    at = open_app(state.SESSIONS_PAGE)
    app = at.session_state[state.APP]
    app.conversations.append("c1")  # as start_turn does: a conversation of this browser session
    root = app.tracer.begin_span(state.TURN_SPAN, {"gen_ai.conversation.id": "c1", "session.id": "c1"})
    app.tracer.begin_span(name, parent=root).end()
    root.end()
    at.run()
    (figure,) = figures(at)
    labels = [label.strip("\u00a0") for label in figure.layout.yaxis.ticktext]
    escaped = '&lt;span style="cursor:url(http://127.0.0.1:9/x.png),auto"&gt;tool&lt;/span&gt; &amp; co'
    assert labels == [state.TURN_SPAN, escaped]
    assert [row[0] for trace in figure.data for row in trace.customdata] == [state.TURN_SPAN, escaped]


def test_a_linked_conversation_hidden_by_the_filters_says_so(fake_server: FakeLlamaServer) -> None:
    at, _, first, second = _two_conversations()
    at.switch_page(state.SESSIONS_PAGE).run()
    at.text_input(key=state.W_SESSION_SEARCH).set_value("new topic").run()
    at.query_params[state.QUERY_CONVERSATION] = first
    at.run()
    assert not at.exception
    assert "hidden by the filters" in at.info[0].value
    assert list(at.dataframe[0].value["conversation_id"]) == [second]
    assert _messages(at)[0] == ("user", "a new topic")


def test_conversations_from_the_file_show_under_everything_and_page_by_page(history_db) -> None:
    from obs.storage.sqlite import SqliteTraceStore
    from obs.trace.tracer import Tracer

    at = open_app(state.SESSIONS_PAGE)
    with SqliteTraceStore(history_db) as other:  # an earlier run, or another program, on the same file
        tracer = Tracer(store=other, service_name="my-script")
        for n in range(55):
            cid = f"c{n:02d}"
            tracer.begin_span(state.TURN_SPAN, {"gen_ai.conversation.id": cid, "session.id": cid}).end()
    at.run()
    assert "No sessions yet in this browser session" in at.info[0].value
    at.selectbox(key=state.W_SCOPE).set_value("Everything").run()
    table = at.dataframe[0].value
    assert len(table) == 50 and table["conversation_id"].iloc[0] == "c54"
    assert any("Sessions 1-50 of those in range; more on the next page." in c.value for c in at.caption)
    at.number_input(key=state.W_SESSION_PAGE).set_value(2).run()
    assert list(at.dataframe[0].value["conversation_id"]) == ["c04", "c03", "c02", "c01", "c00"]
