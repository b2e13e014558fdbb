"""AsyncInstrumentedClient against the real embedded llama-server: tokens as the server counts them,
16 streams at once each in its own trace, the same attributes as the sync client, a real refusal."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from obs import semconv
from obs.llm.async_client import AsyncInstrumentedClient
from obs.llm.async_stream import AsyncChatStream
from obs.llm.client import InstrumentedClient
from obs.llm.errors import HTTPStatusError
from obs.llm.llama.props import ServerMetrics, fetch_metrics
from obs.llm.llama.server import EmbeddedServer

pytestmark = pytest.mark.integration

PARAMS = {"max_tokens": 8, "temperature": 0, "seed": 1}


def _question(text: str) -> list[dict[str, str]]:
    # A unique tag keeps other tests' prompt cache from changing what this one measures.
    return [{"role": "user", "content": f"[{uuid.uuid4().hex[:8]}] {text}"}]


def _moved(before: ServerMetrics | None, after: ServerMetrics | None, name: str) -> float:
    assert before is not None and after is not None
    then, now = before.get(name), after.get(name)
    assert then is not None and now is not None
    return now - then


def test_chat_and_stream_count_the_tokens_the_server_counted(embedded_server: EmbeddedServer) -> None:
    async def run() -> tuple[AsyncInstrumentedClient, Any, AsyncChatStream, list[str]]:
        async with AsyncInstrumentedClient(embedded_server.url, capture_content=True) as client:
            result = await client.chat(_question("Name a colour."), **PARAMS)
            stream = await client.chat_stream(_question("Count to five."), **PARAMS, ignore_eos=True)
            deltas = [delta async for delta in stream]
        return client, result, stream, deltas

    before = fetch_metrics(embedded_server.url)
    client, (response, span), stream, deltas = asyncio.run(run())
    after = fetch_metrics(embedded_server.url)
    assert stream.response is not None and stream.span is not None
    answers = [(response, span), (stream.response, stream.span)]
    for answer, recorded in answers:
        usage, timings = answer.usage, answer.timings
        assert usage is not None and timings is not None
        attrs = recorded.attributes
        assert recorded.name == "chat SmolLM2-135M-Instruct.Q4_1" and recorded.status == "success"
        assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage.prompt_tokens
        assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == usage.completion_tokens == timings.predicted_n
        assert attrs[semconv.LLAMA_CPP_TIMINGS_PROMPT_N] == timings.prompt_n
        assert 1 <= usage.completion_tokens <= 8
    assert "".join(deltas) == stream.text == stream.response.content and len(deltas) > 1
    assert 0 < stream.span.attributes[semconv.OBS_TTFT_MS] <= stream.span.attributes[semconv.OBS_LATENCY_MS]
    # The server's own counters moved by exactly these two requests' numbers.
    outputs = sum(recorded.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] for _, recorded in answers)
    prompts = sum(recorded.attributes[semconv.LLAMA_CPP_TIMINGS_PROMPT_N] for _, recorded in answers)
    assert _moved(before, after, "tokens_predicted_total") == outputs
    assert _moved(before, after, "prompt_tokens_total") == prompts
    metrics = client.get_metrics()
    assert (metrics.request_count, metrics.error_count, metrics.completion_tokens) == (2, 0, outputs)
    assert span.trace_id != stream.span.trace_id
    assert {t.id for t in client.store.all()} == {span.trace_id, stream.span.trace_id}


def test_16_concurrent_streams_each_in_its_own_trace_with_the_right_tokens(
    embedded_server: EmbeddedServer,
) -> None:
    count = 16

    async def run() -> tuple[AsyncInstrumentedClient, list[AsyncChatStream], list[list[str]]]:
        # A stream's headers come when its turn at one of the server's 2 slots comes: the last of
        # 16 may wait a long time on a loaded machine, so the timeout is generous.
        async with AsyncInstrumentedClient(embedded_server.url, timeout=300, capture_content=True) as client:

            async def one(i: int) -> tuple[AsyncChatStream, list[str]]:
                question = _question(f"Stream {i}: count to {i % 4 + 2}.")
                stream = await client.chat_stream(question, max_tokens=i % 5 + 4, temperature=0, seed=i)
                return stream, [delta async for delta in stream]

            done = await asyncio.gather(*(one(i) for i in range(count)))
        return client, [s for s, _ in done], [d for _, d in done]

    before = fetch_metrics(embedded_server.url)
    client, streams, deltas = asyncio.run(run())
    after = fetch_metrics(embedded_server.url)
    outputs = prompts = 0
    for i, (stream, pieces) in enumerate(zip(streams, deltas, strict=True)):
        span, answer = stream.span, stream.response
        assert span is not None and answer is not None and answer.usage is not None
        assert answer.timings is not None
        assert span.status == "success" and span.parent_id is None
        assert f"Stream {i}:" in span.attributes[semconv.GEN_AI_INPUT_MESSAGES]
        assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == answer.usage.completion_tokens
        assert answer.usage.completion_tokens == answer.timings.predicted_n
        assert 1 <= answer.usage.completion_tokens <= i % 5 + 4
        assert "".join(pieces) == answer.content and len(pieces) <= answer.usage.completion_tokens
        outputs += answer.usage.completion_tokens
        prompts += answer.timings.prompt_n
    assert len({s.span.trace_id for s in streams if s.span is not None}) == count
    assert len(client.store) == count
    assert _moved(before, after, "tokens_predicted_total") == outputs
    assert _moved(before, after, "prompt_tokens_total") == prompts
    metrics = client.get_metrics()
    assert (metrics.request_count, metrics.error_count, metrics.completion_tokens) == (count, 0, outputs)


def test_sync_and_async_record_the_same_attributes_for_the_same_request(
    embedded_server: EmbeddedServer,
) -> None:
    question = _question("Name a fruit.")

    async def run_async() -> tuple[Any, Any, AsyncInstrumentedClient]:
        async with AsyncInstrumentedClient(embedded_server.url, capture_content=True) as client:
            _, chat_span = await client.chat(question, **PARAMS)
            stream = await client.chat_stream(question, **PARAMS)
            [_ async for _ in stream]
        return chat_span, stream.span, client

    with InstrumentedClient(embedded_server.url, capture_content=True) as sync_client:
        _, sync_chat = sync_client.chat(question, **PARAMS)
        sync_stream = sync_client.chat_stream(question, **PARAMS)
        list(sync_stream)
    async_chat, async_stream, async_client = asyncio.run(run_async())
    assert set(async_chat.attributes) == set(sync_chat.attributes)
    assert sync_stream.span is not None and async_stream is not None
    assert set(async_stream.attributes) == set(sync_stream.span.attributes)
    for sync_span, async_span in ((sync_chat, async_chat), (sync_stream.span, async_stream)):
        assert async_span.name == sync_span.name
        assert [e.name for e in async_span.events] == [e.name for e in sync_span.events]
        for key in (semconv.GEN_AI_USAGE_INPUT_TOKENS, semconv.GEN_AI_REQUEST_MODEL, semconv.LLAMA_CPP_N_CTX):
            assert async_span.attributes[key] == sync_span.attributes[key]
    sync_metrics, async_metrics = sync_client.get_metrics(), async_client.get_metrics()
    assert (async_metrics.request_count, async_metrics.prompt_tokens) == (
        sync_metrics.request_count,
        sync_metrics.prompt_tokens,
    )
    assert [(e.level, e.message) for e in async_client.logger.get_logs()] == [
        (e.level, e.message) for e in sync_client.logger.get_logs()
    ]


def test_a_request_the_server_refuses_is_recorded(embedded_server: EmbeddedServer) -> None:
    too_long = [{"role": "user", "content": "cat " * 3000}]  # far past the 1024 tokens of a slot

    async def run() -> tuple[AsyncInstrumentedClient, HTTPStatusError]:
        async with AsyncInstrumentedClient(embedded_server.url) as client:
            with pytest.raises(HTTPStatusError) as caught:
                await client.chat(too_long, max_tokens=4)
        return client, caught.value

    client, error = asyncio.run(run())
    assert error.status_code == 400 and error.server_message
    (trace,) = client.store.all()
    (span,) = trace.spans
    assert (span.status, span.attributes[semconv.ERROR_TYPE]) == ("error", "400")
    assert span.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 400
    assert client.get_metrics().error_count == 1
    (logged,) = client.logger.get_logs_by_level("error")
    assert logged.trace_id == span.trace_id and error.server_message in logged.message
