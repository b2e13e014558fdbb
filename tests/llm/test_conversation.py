"""Conversations: every turn its own trace, all carrying gen_ai.conversation.id and session.id."""

from __future__ import annotations

import asyncio
import contextvars
import re
import threading
from typing import Any

import pytest

from obs import semconv
from obs.llm.conversation import current_conversation_id
from obs.llm.errors import HTTPStatusError
from obs.trace.sampling.head import TraceIdRatio
from obs.trace.sampling.tail import TailSampler
from obs.trace.spans import Span
from tests.llm import servers
from tests.llm.client_support import MESSAGES, make_rig


def _ids(span: Span) -> tuple[Any, Any]:
    return span.attributes.get(semconv.GEN_AI_CONVERSATION_ID), span.attributes.get(semconv.SESSION_ID)


def _fails_on(word: str) -> servers.Behaviour:
    """A good server, except that chats whose body holds `word` get a 500."""

    def behaviour(handler: servers.Handler) -> None:
        if handler.path == "/v1/chat/completions" and word.encode() in handler.body:
            handler.send_json(500, servers.llama_error(500, "out of memory", "server_error"))
        else:
            servers.good(handler)

    return behaviour


def test_each_turn_is_a_trace_and_every_one_carries_the_conversation() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        with rig.client.conversation() as conv:
            assert current_conversation_id() == conv.id
            _, first = rig.client.chat(MESSAGES)
            assert len(rig.store) == 1  # the turn is finished, and stored, as soon as its answer is in
            stream = rig.client.chat_stream(MESSAGES)
            assert "".join(stream) == servers.CONTENT
            second = stream.span
        _, after = rig.client.chat(MESSAGES)
    assert re.fullmatch(r"[0-9a-f]{32}", conv.id)
    assert second is not None
    assert _ids(first) == _ids(second) == (conv.id, conv.id)
    assert first.trace_id != second.trace_id and first.parent_id is None and second.parent_id is None
    assert [t.id for t in rig.store.all()] == [first.trace_id, second.trace_id, after.trace_id]
    assert _ids(after) == (None, None) and current_conversation_id() is None


def test_a_given_id_continues_a_conversation_and_blocks_nest() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        with rig.client.conversation("chat-42") as outer:
            with rig.client.conversation("side-question"):
                _, inner = rig.client.chat(MESSAGES)
            _, back = rig.client.chat(MESSAGES)
    assert outer.id == "chat-42"
    assert _ids(inner) == ("side-question", "side-question")
    assert _ids(back) == ("chat-42", "chat-42")


def test_one_call_may_name_its_conversation() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        _, alone = rig.client.chat(MESSAGES, conversation_id="from-the-page")
        with rig.client.conversation("active"):
            stream = rig.client.chat_stream(MESSAGES, conversation_id="named")
            list(stream)
    assert _ids(alone) == ("from-the-page", "from-the-page")
    assert stream.span is not None and _ids(stream.span) == ("named", "named")  # the call's own id wins
    assert "conversation_id" not in server.requests[-1].json  # never sent to the server


@pytest.mark.parametrize("bad", ["", 42, "x" * 257, "line\nbreak"])
def test_an_unusable_conversation_id_is_refused_before_anything_happens(bad: Any) -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        with pytest.raises(ValueError, match="conversation_id must be a str of 1 to 256 printable"):
            rig.client.chat(MESSAGES, conversation_id=bad)
        with pytest.raises(ValueError, match="id must be a str of 1 to 256 printable"):
            rig.client.conversation(bad).__enter__()
    assert len(rig.store) == 0 and rig.collector.get_metrics().request_count == 0
    assert not [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert current_conversation_id() is None


def test_a_conversation_does_not_reach_another_thread_unless_its_context_is_copied() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        spans: list[Span] = []
        with rig.client.conversation("here") as conv:
            plain = threading.Thread(target=lambda: spans.append(rig.client.chat(MESSAGES).span))
            plain.start()
            plain.join()
            context = contextvars.copy_context()
            copied = threading.Thread(
                target=lambda: spans.append(context.run(rig.client.chat, MESSAGES).span)
            )
            copied.start()
            copied.join()
    assert [_ids(s) for s in spans] == [(None, None), (conv.id, conv.id)]


def test_concurrent_tasks_keep_their_own_conversations() -> None:
    async def main(client: Any) -> dict[str, Span]:
        inside = asyncio.Event()
        done = asyncio.Event()
        spans: dict[str, Span] = {}

        async def in_conversation() -> None:
            with client.conversation("task-a"):
                inside.set()
                await done.wait()  # the other task chats while this one is inside its block
                spans["a"] = (await asyncio.to_thread(client.chat, MESSAGES)).span

        async def without() -> None:
            await inside.wait()
            spans["b"] = (await asyncio.to_thread(client.chat, MESSAGES)).span
            done.set()

        await asyncio.gather(in_conversation(), without())
        return spans

    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        spans = asyncio.run(main(rig.client))
    assert _ids(spans["a"]) == ("task-a", "task-a")
    assert _ids(spans["b"]) == (None, None)


def test_a_turn_is_a_root_span_carrying_the_conversation_with_the_chat_under_it() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        with rig.client.conversation("c1") as conv:
            for question in ("hi", "why?"):
                with conv.turn("chat turn", {"app.question": question}) as root:
                    rig.client.chat([{"role": "user", "content": question}])
    traces = rig.store.all()
    assert len(traces) == 2
    for trace in traces:
        turn, chat = trace.spans
        assert (turn.name, turn.parent_id, chat.parent_id) == ("chat turn", None, turn.id)
        assert _ids(turn) == _ids(chat) == ("c1", "c1")
    assert [t.spans[0].attributes["app.question"] for t in traces] == ["hi", "why?"]
    assert root.ended
    assert conv.attributes == {semconv.GEN_AI_CONVERSATION_ID: "c1", semconv.SESSION_ID: "c1"}


def test_a_failing_turn_marks_its_root_span_and_the_error_passes_through() -> None:
    with servers.serve(_fails_on("boom")) as server:
        rig = make_rig(server.url)
        with rig.client.conversation("c1") as conv, pytest.raises(HTTPStatusError), conv.turn():
            rig.client.chat([{"role": "user", "content": "boom"}])
    (trace,) = rig.store.all()
    assert trace.status == "error"
    assert [(s.name, s.status) for s in trace.spans] == [("turn", "error"), ("chat test-model", "error")]


def test_sampling_decides_per_turn_an_error_turn_is_kept_and_the_others_are_not() -> None:
    with servers.serve(_fails_on("boom")) as server:
        rig = make_rig(server.url)
        rig.tracer.head_sampler = TraceIdRatio(0.0)  # a 0% head sampler
        rig.tracer.tail_sampler = TailSampler(keep_errors=True)
        with rig.client.conversation("c1"):
            rig.client.chat([{"role": "user", "content": "first"}])
            with pytest.raises(HTTPStatusError):
                rig.client.chat([{"role": "user", "content": "boom"}])
            rig.client.chat([{"role": "user", "content": "third"}])
    (kept,) = rig.store.all()
    (span,) = kept.spans
    assert span.status == "error" and _ids(span) == ("c1", "c1")
    metrics = rig.collector.get_metrics()
    assert (metrics.traces_seen, metrics.traces_kept_tail, metrics.traces_dropped) == (3, 1, 2)
    assert metrics.request_count == 3  # every turn is measured, sampled or not


def test_a_secret_in_a_conversation_id_is_not_recorded() -> None:
    secret = "sk-very-secret-123"
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url, api_key=secret)
        rig.client.chat(MESSAGES, conversation_id=f"user-{secret}")
    assert secret not in rig.everything_recorded()
