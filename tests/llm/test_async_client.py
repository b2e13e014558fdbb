"""AsyncInstrumentedClient against real loopback servers: many calls at once in one event loop, each
in the right trace with the right tokens; contexts per task; cancellation; closing and dropping
streams; limits; configuration. (What it records for each kind of ending is compared with the sync
client's in test_async_parity.py.)"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from typing import Any

import pytest

from obs import semconv
from obs.llm.async_client import AsyncInstrumentedClient
from obs.llm.async_stream import AsyncChatStream
from obs.llm.client import ChatResult
from obs.llm.errors import ServerTimeout
from obs.trace.ids import format_traceparent
from tests.llm import servers
from tests.llm.async_support import make_async_rig
from tests.llm.client_support import MESSAGES


def _counting(handler: servers.Handler) -> None:
    """A server whose answer to `max_tokens: n` is the words w0 .. w(n-1), one chunk each, with
    usage saying n; streamed chunks come 2 ms apart, so concurrent streams interleave."""
    if handler.path == "/props":
        servers.good(handler)
        return
    request = json.loads(handler.body)
    words = tuple(f" w{i}" for i in range(request["max_tokens"]))
    if not request.get("stream"):
        body = servers.completion_body("".join(words))
        body["usage"]["completion_tokens"] = len(words)
        handler.send_json(200, body)
        return
    handler.start_stream()
    for line in servers.stream_lines(words):
        handler.send_event(line)
        time.sleep(0.002)
    handler.end_stream()


def _question(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question {i}"}]


def test_32_concurrent_streams_each_get_their_own_trace_and_tokens() -> None:
    count = 32

    async def run(url: str) -> tuple[Any, list[AsyncChatStream], list[str]]:
        rig = make_async_rig(url)
        async with rig.client:
            # Every stream is open before any is read: all 32 are in flight at once.
            streams = await asyncio.gather(
                *(rig.client.chat_stream(_question(i), max_tokens=i % 7 + 1) for i in range(count))
            )
            assert all(s.span is None and not s.finished for s in streams)

            async def read(stream: AsyncChatStream) -> str:
                return "".join([delta async for delta in stream])

            texts = await asyncio.gather(*(read(s) for s in streams))
        return rig, list(streams), list(texts)

    with servers.serve(_counting) as server:
        rig, streams, texts = asyncio.run(run(server.url))
    sent = {r.json["messages"][0]["content"]: r for r in server.requests if r.path != "/props"}
    assert len(sent) == count
    for i, (stream, text) in enumerate(zip(streams, texts, strict=True)):
        n = i % 7 + 1
        assert text == "".join(f" w{k}" for k in range(n))
        span = stream.span
        assert span is not None and span.status == "success" and span.parent_id is None
        assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == n
        output = json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["parts"][0]["content"]
        assert output == text
        # The request this stream sent carried this stream's own span: no context leaked between tasks.
        request = sent[f"question {i}"]
        assert request.headers["traceparent"] == format_traceparent(span.trace_id, span.id)
        assert json.loads(span.attributes[semconv.GEN_AI_INPUT_MESSAGES])[0]["parts"][0]["content"] == (
            f"question {i}"
        )
    assert len({s.span.trace_id for s in streams if s.span}) == count
    assert len(rig.store) == count
    metrics = rig.client.get_metrics()
    assert (metrics.request_count, metrics.error_count) == (count, 0)
    assert metrics.completion_tokens == sum(i % 7 + 1 for i in range(count))


def test_hundreds_of_concurrent_chats_in_one_loop() -> None:
    count = 300

    async def run(url: str) -> tuple[Any, list[ChatResult]]:
        rig = make_async_rig(url)
        async with rig.client:
            results = await asyncio.gather(
                *(rig.client.chat(_question(i), max_tokens=i % 5 + 1) for i in range(count))
            )
        return rig, list(results)

    with servers.serve(_counting) as server:
        rig, results = asyncio.run(run(server.url))
    for i, (response, span) in enumerate(results):
        assert response.content == "".join(f" w{k}" for k in range(i % 5 + 1))
        assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == i % 5 + 1
    assert len({span.trace_id for _, span in results}) == count
    assert [r.path for r in server.requests].count("/props") == 1  # concurrent first calls wait for one read
    assert {span.name for _, span in results} == {"chat test-model"}
    metrics = rig.client.get_metrics()
    assert (metrics.request_count, metrics.error_count) == (count, 0)
    assert len(rig.logger.get_logs()) == 2 * count


def test_each_task_nests_its_calls_under_its_own_span() -> None:
    async def run(url: str) -> list[tuple[Any, Any, Any]]:
        rig = make_async_rig(url)

        async def agent(i: int) -> tuple[Any, Any, Any]:
            with rig.tracer.start_span(f"agent {i}") as outer:
                _, first = await rig.client.chat(_question(i), max_tokens=2)
                await asyncio.sleep(0)  # let the other agents run in between
                stream = await rig.client.chat_stream(_question(i), max_tokens=3)
                [_ async for _ in stream]
            return outer, first, stream.span

        async with rig.client:
            return list(await asyncio.gather(*(agent(i) for i in range(12))))

    with servers.serve(_counting) as server:
        results = asyncio.run(run(server.url))
    for outer, first, second in results:
        assert first.trace_id == second.trace_id == outer.trace_id
        assert first.parent_id == second.parent_id == outer.span_id
    assert len({outer.trace_id for outer, _, _ in results}) == 12


def test_a_trace_or_conversation_begun_in_a_task_reaches_the_tasks_it_starts() -> None:
    async def run(url: str) -> tuple[Any, Any, list[ChatResult], list[ChatResult], str]:
        rig = make_async_rig(url)
        async with rig.client:
            rig.client.start_trace("fan out")
            inside = await asyncio.gather(*(rig.client.chat(_question(i), max_tokens=1) for i in range(6)))
            trace = rig.client.end_current_trace()
            with rig.client.conversation() as conversation:
                turns = await asyncio.gather(*(rig.client.chat(_question(i), max_tokens=1) for i in range(6)))
        return rig, trace, list(inside), list(turns), conversation.id

    with servers.serve(_counting) as server:
        rig, trace, inside, turns, conversation_id = asyncio.run(run(server.url))
    assert trace is not None and trace.name == "fan out"
    assert sorted(s.id for s in trace.spans) == sorted(span.id for _, span in inside)
    assert len({span.trace_id for _, span in turns}) == 6  # each turn its own trace...
    assert {span.attributes[semconv.GEN_AI_CONVERSATION_ID] for _, span in turns} == {conversation_id}
    assert len(rig.store) == 7


def test_ttft_and_gaps_follow_the_clock() -> None:
    async def run(url: str) -> tuple[Any, AsyncChatStream]:
        rig = make_async_rig(url)
        async with rig.client:
            stream = await rig.client.chat_stream(MESSAGES)
            for step, expected in zip((30.0, 40.0, 50.0, 60.0), servers.DELTAS, strict=True):
                rig.clock.advance(step)
                assert await anext(stream) == expected
            rig.clock.advance(5.0)
            assert [d async for d in stream] == []
        return rig, stream

    with servers.serve(servers.good) as server:
        rig, stream = asyncio.run(run(server.url))
    assert stream.span is not None and stream.response is not None
    attrs = stream.span.attributes
    assert attrs[semconv.OBS_TTFT_MS] == 30.0
    assert attrs[semconv.OBS_INTER_TOKEN_P95_MS] == 60.0
    assert attrs[semconv.OBS_LATENCY_MS] == 185.0
    assert [e.name for e in stream.span.events] == ["request_start", "first_token", "response_received"]
    assert stream.text == servers.CONTENT == stream.response.content and stream.finished
    assert rig.client.get_metrics().avg_ttft_ms == 30.0


def test_a_cancelled_stream_is_recorded_with_its_partial_text_and_the_cancellation_passes_on() -> None:
    async def run(url: str) -> tuple[Any, AsyncChatStream]:
        rig = make_async_rig(url, timeout=30)
        async with rig.client:
            stream = await rig.client.chat_stream(MESSAGES)
            assert await anext(stream) == "Hello"
            reading = asyncio.ensure_future(anext(stream))  # the server says nothing more
            await asyncio.sleep(0.2)
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
        return rig, stream

    with servers.serve(servers.hang_mid_stream(after=1)) as server:
        rig, stream = asyncio.run(run(server.url))
    span = rig.only_span()
    assert span is stream.span and stream.finished
    assert (span.status, span.attributes[semconv.ERROR_TYPE]) == ("error", "CancelledError")
    assert span.attributes[semconv.OBS_PARTIAL_OUTPUT] == "Hello"
    assert isinstance(stream.error, asyncio.CancelledError)
    assert rig.client.get_metrics().error_count == 1


def test_a_chat_cut_by_the_callers_timeout_is_recorded_as_cancelled() -> None:
    async def run(url: str) -> Any:
        rig = make_async_rig(url, timeout=30, read_props=False)
        async with rig.client:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(rig.client.chat(MESSAGES), 0.2)
        return rig

    with servers.serve(servers.hang) as server:
        rig = asyncio.run(run(server.url))
    span = rig.only_span()
    assert (span.status, span.attributes[semconv.ERROR_TYPE]) == ("error", "CancelledError")
    errors = rig.logger.get_logs_by_level("error")
    assert len(errors) == 1 and errors[0].trace_id == span.trace_id


def test_closing_early_and_leaving_a_block_record_a_successful_partial_span() -> None:
    async def run(url: str) -> tuple[Any, AsyncChatStream, AsyncChatStream]:
        rig = make_async_rig(url)
        async with rig.client:
            async with await rig.client.chat_stream(MESSAGES) as first:
                assert await anext(first) == "Hello"
            with pytest.raises(ZeroDivisionError):
                async with await rig.client.chat_stream(MESSAGES) as second:
                    await anext(second)
                    1 / 0  # noqa: B018
            await first.aclose()  # closing again changes nothing
        return rig, first, second

    with servers.serve(servers.hang_mid_stream(after=2)) as server:
        rig, first, second = asyncio.run(run(server.url))
    for stream in (first, second):
        span = stream.span
        assert span is not None and span.status == "success"
        assert span.attributes[semconv.OBS_STREAM_CLOSED_EARLY] is True
        assert span.attributes[semconv.OBS_PARTIAL_OUTPUT] == "Hello"
    assert len(rig.store) == 2
    assert rig.client.get_metrics().completion_tokens == 2


def test_a_dropped_stream_is_recorded_and_its_connection_given_back() -> None:
    async def run(url: str) -> tuple[Any, Any]:
        # One connection only: the call after the drop gets it only if the dropped stream let go.
        rig = make_async_rig(url, max_connections=1, timeout=5)
        async with rig.client:
            stream = await rig.client.chat_stream(MESSAGES)
            assert await anext(stream) == "Hello"
            del stream
            gc.collect()
            _, span = await rig.client.chat(MESSAGES)
        return rig, span

    with servers.serve(servers.good) as server:
        rig, span = asyncio.run(run(server.url))
    assert span.status == "success"
    dropped = [t.spans[0] for t in rig.store.all() if t.spans[0].id != span.id]
    assert len(dropped) == 1 and dropped[0].attributes[semconv.OBS_STREAM_CLOSED_EARLY] is True


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "chat_stream"])
def test_a_trickling_answer_ends_at_the_deadline(stream: bool) -> None:
    async def run(url: str) -> tuple[Any, ServerTimeout]:
        rig = make_async_rig(url, timeout=1, deadline_s=1.5, stream_idle_timeout_s=30, read_props=False)
        async with rig.client:
            with pytest.raises(ServerTimeout) as caught:
                if stream:
                    [_ async for _ in await rig.client.chat_stream(MESSAGES)]
                else:
                    await rig.client.chat(MESSAGES)
        return rig, caught.value

    with servers.serve(servers.trickle(0.5)) as server:
        rig, error = asyncio.run(run(server.url))
    assert "deadline of 1.5 s" in str(error) and "deadline_s=" in str(error)
    span = rig.only_span()
    assert (span.status, span.attributes[semconv.ERROR_TYPE]) == ("error", "ServerTimeout")
    assert span.attributes[semconv.ERROR_MESSAGE] == str(error)
    assert rig.client.get_metrics().error_count == 1


def test_a_stream_of_pings_only_ends_at_the_idle_timeout() -> None:
    async def run(url: str) -> tuple[Any, ServerTimeout]:
        rig = make_async_rig(url, timeout=5, stream_idle_timeout_s=0.6, read_props=False)
        async with rig.client:
            stream = await rig.client.chat_stream(MESSAGES)
            assert await anext(stream) == "Hello"
            with pytest.raises(ServerTimeout) as caught:
                await anext(stream)
        return rig, caught.value

    with servers.serve(servers.pings_only(0.1, after=1)) as server:
        rig, error = asyncio.run(run(server.url))
    assert "no event for 0.6 s" in str(error)
    span = rig.only_span()
    assert span.attributes[semconv.ERROR_TYPE] == "ServerTimeout"
    assert span.attributes[semconv.OBS_PARTIAL_OUTPUT] == "Hello"


def test_a_server_that_ignores_stream_true_and_a_cached_answer_still_stream() -> None:
    def json_only(handler: servers.Handler) -> None:
        handler.send_json(200, servers.completion_body())

    async def run(url: str) -> tuple[Any, list[str], list[str]]:
        rig = make_async_rig(url, read_props=False, cache_size=4)
        async with rig.client:
            whole = [d async for d in await rig.client.chat_stream(MESSAGES)]
            cached = [d async for d in await rig.client.chat_stream(MESSAGES)]
        return rig, whole, cached

    with servers.serve(json_only) as server:
        rig, whole, cached = asyncio.run(run(server.url))
    assert whole == cached == [servers.CONTENT]
    assert [t.spans[0].attributes[semconv.OBS_CACHE_HIT] for t in rig.store.all()] == [False, True]
    assert len([r for r in server.requests if r.path == "/v1/chat/completions"]) == 1


def test_refresh_props_reads_the_server_now() -> None:
    async def run(url: str) -> Any:
        async with AsyncInstrumentedClient(url, read_props=False) as client:
            assert client.server_props is None
            return await client.refresh_props()

    with servers.serve(servers.good) as server:
        props = asyncio.run(run(server.url))
    assert props is not None and props.model_name == "test-model" and props.n_ctx == 1024


def test_standalone_client_builds_its_own_sinks() -> None:
    async def run(url: str) -> tuple[AsyncInstrumentedClient, Any]:
        async with AsyncInstrumentedClient(url, max_connections=4) as client:
            _, span = await client.chat(MESSAGES)
        return client, span

    with servers.serve(servers.good) as server:
        client, span = asyncio.run(run(server.url))
    assert client.store.get(span.trace_id) is not None
    assert client.tracer.store is client.store
    assert client.get_metrics().request_count == 1
    assert len(client.logger.get_logs_for_trace(span.trace_id)) == 2
    assert client.max_connections == 4
    assert repr(client) == f"AsyncInstrumentedClient(base_url={server.url!r}, model=None)"
    assert "Requests: 1 (errors: 0, 0.0%)" in client.get_metrics_summary()


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"max_connections": 0}, "max_connections must be an int >= 1 (None = no cap), got 0"),
        ({"max_connections": 2.5}, "max_connections must be an int >= 1"),
        ({"max_connections": True}, "max_connections must be an int >= 1"),
        ({"timeout": 0}, "timeout must be seconds > 0, got 0"),
        ({"deadline_s": -1}, "deadline_s must be None (no deadline) or seconds > 0"),
        ({"base_url": "ftp://host"}, "base_url must be an http(s) URL with a host"),
        ({"api_key": ""}, "api_key must be None or a non-empty string"),
        ({"tracer": object()}, "tracer must be an obs.Tracer"),
    ],
)
def test_construction_validates(kwargs: dict[str, Any], says: str) -> None:
    kwargs.setdefault("base_url", "http://127.0.0.1:8033")
    with pytest.raises(ValueError) as caught:
        AsyncInstrumentedClient(**kwargs)
    assert says in str(caught.value)


def test_bad_messages_are_refused_before_anything_is_recorded() -> None:
    async def run(url: str) -> Any:
        rig = make_async_rig(url)
        async with rig.client:
            with pytest.raises(ValueError, match="messages"):
                await rig.client.chat([{"content": "no role"}])
            with pytest.raises(ValueError, match="messages"):
                await rig.client.chat_stream("hello")  # type: ignore[arg-type]
        return rig

    with servers.serve(servers.good) as server:
        rig = asyncio.run(run(server.url))
    assert len(rig.store) == 0 and rig.client.get_metrics().request_count == 0
    assert server.requests == []
