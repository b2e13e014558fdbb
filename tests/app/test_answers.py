"""Tests of app.answers: an answer begun, streamed, and settled, also after the page that asked has gone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app import answers
from app.state import TURN_SPAN, AppSession, ChatTurn, Settings
from tests.app.fake_server import FakeLlamaServer


@pytest.fixture
def fake() -> Iterator[FakeLlamaServer]:
    with FakeLlamaServer("Fine, thanks.") as server:
        yield server


def _session(url: str) -> AppSession:
    return AppSession(Settings(server_url=url))


def test_an_answer_left_mid_stream_is_read_to_the_end_into_the_history(fake) -> None:
    fake.reply = "one two three four five six"
    fake.chunk_delay_s = 0.02
    app = _session(fake.url)
    app.add_turn(ChatTurn("user", "count"))
    turn = answers.begin(app)
    assert turn.trace_id is not None
    stream = app.stream_reply(turn.trace_id)
    assert next(stream) == "one"
    answers.note_progress(app, turn, stream)
    assert app.answering() and app.history()[-1].content == "one"
    # The page's run stops here; the rest arrives without it.
    worker = answers.finish_later(app, turn, stream)
    worker.join(timeout=30)
    assert not app.answering()
    (settled,) = [t for t in app.history() if t.role == "assistant"]
    assert settled.content == "one two three four five six"
    assert settled.error is None and "latency" in settled.caption
    # The turn's trace ended with its answer, stored whole: the root span and the request under it.
    (stored,) = app.store.all()
    assert settled.trace_id == stored.id and stored.status == "success"
    assert sorted(s.name for s in stored.spans) == sorted([TURN_SPAN, stream.span.name])
    assert app.collector.get_metrics().request_count == 1
    assert app.request_messages()[-1] == {"role": "assistant", "content": "one two three four five six"}


def test_an_answer_stopped_before_its_request_was_sent_is_settled_with_an_error(fake) -> None:
    app = _session(fake.url)
    app.add_turn(ChatTurn("user", "hi"))
    turn = answers.begin(app)
    assert answers.finish_later(app, turn, None) is None
    assert not app.answering() and "stopped before it was asked for" in app.history()[-1].error
    (stored,) = app.store.all()  # the turn's trace is finished, as failed
    assert stored.id == turn.trace_id and stored.status == "error"
