"""Tests of app.conversations: traces grouped into sessions by conversation id, with exact numbers."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from app.conversations import SESSION_COLUMNS, conversation_of, session_rows, session_turns
from obs import semconv
from obs.clock import FakeClock
from obs.llm.conversation import conversation_attributes
from obs.storage.memory import TraceStore
from obs.trace.ids import SequentialIdGenerator
from obs.trace.tracer import Tracer
from obs.trace.traces import Trace

T0 = 1_700_000_000_000.0


class Rig:
    """A real Tracer on a fake clock: turns are built span by span with exact times."""

    def __init__(self) -> None:
        self.clock = FakeClock(T0)
        self.store = TraceStore()
        self.tracer = Tracer(store=self.store, clock=self.clock, id_generator=SequentialIdGenerator())

    def turn(self, conversation: str | None, question: str | None, answer: str | None, ms: float, *,
             model: str = "m1", tokens: tuple[int, int] = (10, 5), cost: float = 0.001,
             error: str | None = None, on_root: bool = True, gap_ms: float = 1000.0) -> Trace:
        """One turn: a root span (question on it when `on_root`) and a chat span lasting `ms`."""
        ids = conversation_attributes(conversation) if conversation else {}
        asked = _messages("user", question) if question is not None else None
        root_attrs = {**ids, **({semconv.GEN_AI_INPUT_MESSAGES: asked} if asked and on_root else {})}
        with self.tracer.start_span("chat turn", root_attrs) as root:
            request = {
                **ids, semconv.GEN_AI_OPERATION_NAME: "chat", semconv.GEN_AI_RESPONSE_MODEL: model,
                semconv.GEN_AI_USAGE_INPUT_TOKENS: tokens[0], semconv.GEN_AI_USAGE_OUTPUT_TOKENS: tokens[1],
                semconv.OBS_COST_USD: cost,
            }
            if asked:
                history = [{"role": "user", "parts": [{"type": "text", "content": "earlier"}]},
                           *json.loads(asked)]
                request[semconv.GEN_AI_INPUT_MESSAGES] = json.dumps(history) if not on_root else asked
            if answer is not None:
                request[semconv.GEN_AI_OUTPUT_MESSAGES] = _messages("assistant", answer)
            with self.tracer.start_span(f"chat {model}", request, kind="client") as chat:
                self.clock.advance(ms)
                if error:
                    chat.record_error(error)
            trace_id = root.trace_id
        self.clock.advance(gap_ms)
        stored = self.store.get(trace_id)
        assert stored is not None
        return stored


def _messages(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


def test_one_row_per_conversation_with_exact_numbers_newest_activity_first() -> None:
    rig = Rig()
    rig.turn("c-1", "hi", "hello", 100.0, tokens=(12, 3), cost=0.001)
    rig.turn("c-2", "other", "sure", 40.0, model="m2")
    rig.turn("c-1", "and then?", "then this", 300.0, tokens=(30, 7), cost=0.002)
    rig.turn(None, "no conversation", "left out", 10.0)
    rows = session_rows(rig.store.all())
    assert tuple(rows.columns) == SESSION_COLUMNS
    assert list(rows["conversation_id"]) == ["c-1", "c-2"]
    first = rows.iloc[0]
    assert first["first_message"] == "hi"
    assert (first["turns"], first["prompt_tokens"], first["completion_tokens"]) == (2, 42, 10)
    assert first["cost"] == pytest.approx(0.003)
    assert (first["total_ms"], first["p95_ms"], first["errors"]) == (400.0, 300.0, 0)
    assert first["models"] == ["m1"]
    assert first["started"] == pd.Timestamp(T0, unit="ms", tz="UTC")
    # c-1's last turn began after c-1's first (100 ms + 1 s gap) and c-2 (40 ms + 1 s gap), and lasted 300 ms.
    assert first["last_activity"] == pd.Timestamp(T0 + 1100 + 1040 + 300, unit="ms", tz="UTC")
    assert rows.iloc[1]["models"] == ["m2"]


def test_p95_is_the_nearest_rank_of_the_turn_durations() -> None:
    rig = Rig()
    for ms in range(1, 21):  # 20 turns of 10, 20, ... 200 ms
        rig.turn("c", "q", "a", ms * 10.0, gap_ms=0.0)
    row = session_rows(rig.store.all()).iloc[0]
    assert (row["turns"], row["p95_ms"], row["total_ms"]) == (20, 190.0, 2100.0)


def test_turns_come_in_order_with_question_answer_request_and_error() -> None:
    rig = Rig()
    first = rig.turn("c", "what?", "that", 50.0)
    failed = rig.turn("c", "and?", None, 20.0, error="the server failed")
    rig.turn("other", "x", "y", 5.0)
    turns = session_turns(rig.store.all(), "c")
    assert [t.trace.id for t in turns] == [first.id, failed.id]
    assert [(t.question, t.answer, t.error) for t in turns] == [
        ("what?", "that", None), ("and?", None, "the server failed")]
    assert turns[0].request is not None and turns[0].request.name == "chat m1"
    assert session_rows(rig.store.all()).set_index("conversation_id").loc["c", "errors"] == 1


def test_without_a_root_question_the_last_user_message_of_the_request_is_the_question() -> None:
    rig = Rig()
    rig.turn("c", "the new question", "an answer", 10.0, on_root=False)
    (turn,) = session_turns(rig.store.all(), "c")
    assert turn.question == "the new question"


def test_contents_not_recorded_read_as_none() -> None:
    rig = Rig()
    rig.turn("c", None, None, 10.0)
    (turn,) = session_turns(rig.store.all(), "c")
    assert (turn.question, turn.answer) == (None, None)
    row = session_rows(rig.store.all()).iloc[0]
    assert row["first_message"] is None and row["turns"] == 1


def test_a_broken_stream_answers_with_its_partial_output() -> None:
    rig = Rig()
    with rig.tracer.start_span("chat turn", conversation_attributes("c")) as root:
        with rig.tracer.start_span("chat m1", {semconv.GEN_AI_OPERATION_NAME: "chat",
                                               semconv.OBS_PARTIAL_OUTPUT: "half an ans"}) as chat:
            chat.record_error("stream cut")
        trace_id = root.trace_id
    (turn,) = session_turns(rig.store.all(), "c")
    assert (turn.trace.id, turn.answer, turn.error) == (trace_id, "half an ans", "stream cut")


def test_session_id_alone_also_groups_and_running_traces_are_left_out() -> None:
    rig = Rig()
    with rig.tracer.start_span("agent step", {semconv.SESSION_ID: "phoenix-style"}):
        rig.clock.advance(5.0)
    running = rig.tracer.begin_span("chat turn", conversation_attributes("still-running"))
    traces = rig.store.all()
    assert conversation_of(traces[0]) == "phoenix-style"
    assert list(session_rows(traces)["conversation_id"]) == ["phoenix-style"]
    assert session_turns([*traces, running.trace_handle.trace], "still-running") == []
    row = session_rows(traces).iloc[0]
    assert (row["turns"], row["prompt_tokens"], row["cost"], row["models"]) == (1, 0, 0.0, [])
    running.end()


def test_filters_by_text_model_and_errors() -> None:
    rig = Rig()
    rig.turn("alpha", "Tell me about Paris", "Paris is a city", 10.0, model="m1")
    rig.turn("beta", "Numbers?", "Forty-TWO", 10.0, model="m2")
    rig.turn("gamma", "Broken", None, 10.0, model="m2", error="boom")
    traces = rig.store.all()

    def ids(**filters: object) -> list[str]:
        return sorted(session_rows(traces, **filters)["conversation_id"])  # type: ignore[arg-type]

    assert ids(search="  paris ") == ["alpha"]  # questions, case-insensitive, trimmed
    assert ids(search="forty-two") == ["beta"]  # answers
    assert ids(search="gam") == ["gamma"]  # conversation ids
    assert ids(search="nowhere") == []
    assert ids(model="m2") == ["beta", "gamma"]
    assert ids(model="m2", errors_only=True) == ["gamma"]
    assert ids(errors_only=True, search="paris") == []


def test_no_traces_make_an_empty_frame_with_every_column() -> None:
    rows = session_rows([])
    assert rows.empty and tuple(rows.columns) == SESSION_COLUMNS
    assert str(rows["last_activity"].dtype) == "datetime64[ns, UTC]"
