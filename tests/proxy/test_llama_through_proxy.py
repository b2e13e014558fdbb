"""The proxy in front of the real embedded llama-server, spoken to by the official OpenAI client.

What a program gets through the proxy is what it gets directly (fixed seed,
temperature 0), streamed or not, for chat, text completions and the native
`/completion`; what the proxy stores in the SQLite file carries the tokens
and timings the server itself reported; a caller's `traceparent` is honoured;
32 streams at once all arrive whole and are all recorded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from obs import semconv
from obs.llm.llama.server import EmbeddedServer
from obs.proxy import ProxyHandle
from obs.trace.spans import Span
from tests.proxy.support import PARENT_ID, TRACE_ID, TRACEPARENT, only_span, recording_proxy, stored_traces

MESSAGES = [{"role": "user", "content": "Name one colour."}]
FIXED = {"seed": 42, "temperature": 0.0, "max_tokens": 12}


@pytest.fixture
def proxy(embedded_server: EmbeddedServer, db: Path) -> Iterator[ProxyHandle]:
    with recording_proxy(embedded_server.url, db, capture_content=True) as handle:
        yield handle


def _openai(base: str) -> OpenAI:
    return OpenAI(base_url=base + "/v1", api_key="not-needed", timeout=120)


def _timing_attributes(timings: dict[str, Any]) -> dict[str, Any]:
    return {f"llama_cpp.timings.{name}": timings[name]
            for name in ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "cache_n")}


def _span_timings(span: Span) -> dict[str, Any]:
    return {key: span.attributes.get(key) for key in _timing_attributes(dict.fromkeys(
        ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "cache_n"), 0))}


def test_openai_chat_gets_the_same_answer_through_the_proxy(
    embedded_server: EmbeddedServer, proxy: ProxyHandle, db: Path
) -> None:
    direct, relayed = _openai(embedded_server.url), _openai(proxy.url)
    answers = [client.chat.completions.create(model="smollm2", messages=MESSAGES, **FIXED)
               for client in (direct, relayed)]
    assert answers[1].choices[0].message.content == answers[0].choices[0].message.content
    assert answers[1].choices[0].finish_reason == answers[0].choices[0].finish_reason
    assert answers[1].usage is not None and answers[0].usage is not None
    assert answers[1].usage.completion_tokens == answers[0].usage.completion_tokens
    assert answers[1].usage.prompt_tokens == answers[0].usage.prompt_tokens

    streams = []
    for client in (direct, relayed):
        text = ""
        for chunk in client.chat.completions.create(model="smollm2", messages=MESSAGES, stream=True, **FIXED):
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        streams.append(text)
    assert streams[1] == streams[0] == answers[0].choices[0].message.content
    traces = stored_traces(db, proxy, 2)
    assert [t.spans[0].attributes.get(semconv.GEN_AI_REQUEST_STREAM) for t in traces] == [None, True]
    # The stream asked for no usage (the OpenAI client's default): its tokens come from llama.cpp's timings.
    streamed = traces[1].spans[0].attributes
    assert streamed[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == answers[0].usage.completion_tokens
    assert all(t.spans[0].status == "success" for t in traces)


def test_openai_text_completions_get_the_same_answer_through_the_proxy(
    embedded_server: EmbeddedServer, proxy: ProxyHandle, db: Path
) -> None:
    texts = []
    for client in (_openai(embedded_server.url), _openai(proxy.url)):
        plain = client.completions.create(model="smollm2", prompt="The sky is", **FIXED)
        streamed = "".join(c.choices[0].text for c in client.completions.create(
            model="smollm2", prompt="The sky is", stream=True, **FIXED) if c.choices)
        texts.append((plain.choices[0].text, streamed))
    assert texts[1] == texts[0] and texts[0][0] == texts[0][1]
    traces = stored_traces(db, proxy, 2)
    assert {t.spans[0].name for t in traces} == {"text_completion smollm2"}
    outputs = [json.loads(t.spans[0].attributes[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["parts"][0]["content"]
               for t in traces]
    assert outputs == [texts[0][0], texts[0][0]]


def _sse_objects(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def test_the_native_completion_gets_the_same_answer_and_its_own_numbers_are_stored(
    embedded_server: EmbeddedServer, proxy: ProxyHandle, db: Path
) -> None:
    body = {"prompt": "Once upon a time", "n_predict": 10, "seed": 42, "temperature": 0.0}
    with httpx.Client(timeout=120) as client:
        direct = client.post(embedded_server.url + "/completion", json=body).json()
        relayed = client.post(proxy.url + "/completion", json=body).json()
        streamed = client.post(proxy.url + "/completion", json={**body, "stream": True}).text
    assert relayed["content"] == direct["content"]
    objects = _sse_objects(streamed)
    assert "".join(o["content"] for o in objects) == direct["content"]
    assert objects[-1]["stop"] is True
    traces = stored_traces(db, proxy, 2)
    for trace, answer in zip(traces, (relayed, objects[-1]), strict=True):
        span = trace.spans[0]
        assert span.status == "success"
        assert span.attributes[semconv.GEN_AI_OPERATION_NAME] == "text_completion"
        assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == answer["tokens_evaluated"]
        assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == answer["tokens_predicted"]
        assert _span_timings(span) == _timing_attributes(answer["timings"])


def test_stored_chat_spans_carry_the_servers_own_tokens_and_timings(proxy: ProxyHandle, db: Path) -> None:
    body = {"messages": MESSAGES, **FIXED}
    with httpx.Client(timeout=120) as client:
        plain = client.post(proxy.url + "/v1/chat/completions", json=body).json()
        stream = client.post(proxy.url + "/v1/chat/completions",
                             json={**body, "stream": True, "stream_options": {"include_usage": True}}).text
    last = _sse_objects(stream)[-1]
    assert "usage" in last and "timings" in last
    traces = stored_traces(db, proxy, 2)
    for trace, answer in zip(traces, (plain, last), strict=True):
        span = trace.spans[0]
        usage = answer["usage"]
        assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage["prompt_tokens"]
        assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == usage["completion_tokens"]
        assert (span.attributes[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS]
                == usage["prompt_tokens_details"]["cached_tokens"])
        assert _span_timings(span) == _timing_attributes(answer["timings"])
        assert span.attributes[semconv.GEN_AI_RESPONSE_ID] == answer["id"]
        # What is not the model (queueing, HTTP, the proxy) is the latency minus llama.cpp's own time.
        model_ms = answer["timings"]["prompt_ms"] + answer["timings"]["predicted_ms"]
        assert span.attributes[semconv.OBS_NON_MODEL_MS] == pytest.approx(
            max(0.0, span.attributes[semconv.OBS_LATENCY_MS] - model_ms))
    streamed = traces[1].spans[0].attributes
    assert 0 < streamed[semconv.OBS_TTFT_MS] <= streamed[semconv.OBS_LATENCY_MS]


def test_a_traceparent_sent_in_is_honoured(proxy: ProxyHandle, db: Path) -> None:
    raw = _openai(proxy.url).chat.completions.with_raw_response.create(
        model="smollm2", messages=MESSAGES, user="conversation-9", extra_headers={"traceparent": TRACEPARENT},
        **FIXED)
    assert raw.parse().choices[0].message.content
    span = only_span(db, proxy)
    assert (span.trace_id, span.parent_id) == (TRACE_ID, PARENT_ID)
    assert raw.headers["traceparent"] == f"00-{TRACE_ID}-{span.id}-01"
    assert span.attributes[semconv.GEN_AI_CONVERSATION_ID] == "conversation-9"


def test_32_concurrent_streams_all_arrive_whole_and_are_recorded(proxy: ProxyHandle, db: Path) -> None:
    count = 32

    async def stream_all() -> list[tuple[str, int]]:
        client = AsyncOpenAI(base_url=proxy.url + "/v1", api_key="not-needed", timeout=300, max_retries=0)

        async def one(i: int) -> tuple[str, int]:
            text, tokens = "", -1
            stream = await client.chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": f"Count to {i % 5 + 2}."}],
                stream=True, stream_options={"include_usage": True}, user=f"caller-{i}",
                seed=i, temperature=0.0, max_tokens=8)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
            return text, tokens

        try:
            return await asyncio.gather(*(one(i) for i in range(count)))
        finally:
            await client.close()

    results = asyncio.run(stream_all())
    assert all(text and tokens > 0 for text, tokens in results)
    traces = stored_traces(db, proxy, count, timeout_s=60)
    by_caller = {t.spans[0].attributes[semconv.GEN_AI_CONVERSATION_ID]: t.spans[0] for t in traces}
    assert set(by_caller) == {f"caller-{i}" for i in range(count)}
    for i, (text, tokens) in enumerate(results):
        span = by_caller[f"caller-{i}"]
        assert span.status == "success"
        assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == tokens
        output = json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["parts"][0]["content"]
        assert output == text
    assert proxy.stats.client_gone == proxy.stats.broken == proxy.stats.no_answer == 0


def _stream_port(client: httpx.Client, base: str) -> int:
    """Read one streamed chat to its end, then pause 0.3 s; the client's local port it went on."""
    body = {"messages": MESSAGES, "stream": True, **FIXED}
    with client.stream("POST", base + "/v1/chat/completions", json=body) as response:
        port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
        response.read()
    time.sleep(0.3)
    return int(port)


def test_after_a_stream_the_next_call_goes_out_on_a_connection_the_proxy_already_opened(
    embedded_server: EmbeddedServer, proxy: ProxyHandle
) -> None:
    with httpx.Client(timeout=120) as client:
        # llama-server closes its connection after every streamed answer, kept-alive or not...
        assert len({_stream_port(client, embedded_server.url) for _ in range(2)}) == 2
        # ... so the proxy opens the next one as soon as an answer ends: no call waits to connect.
        _stream_port(client, proxy.url)
        waited = proxy.app.stats.connects_waited
        ports = {_stream_port(client, proxy.url) for _ in range(3)}
    assert proxy.app.stats.connects_waited == waited
    assert len(ports) == 1  # the caller's own connection to the proxy is kept


def test_with_keep_ready_0_every_stream_waits_for_a_new_connection(
    embedded_server: EmbeddedServer, db: Path
) -> None:
    with recording_proxy(embedded_server.url, db, keep_ready_s=0) as proxy, \
            httpx.Client(timeout=120) as client:  # fmt: skip
        _stream_port(client, proxy.url)  # may go on the connection the proxy's first /props read left open
        waited = proxy.app.stats.connects_waited
        for _ in range(3):
            _stream_port(client, proxy.url)
        assert proxy.app.stats.connects_waited == waited + 3  # llama-server closed each stream's connection


def test_streams_relayed_by_the_connections_threads_bring_the_same_text_and_the_servers_numbers(
    embedded_server: EmbeddedServer, proxy: ProxyHandle, db: Path
) -> None:
    """Each stream's connection is served by a relay thread (`obs.proxy._kept`; the OpenAI client
    closes its connection after a stream, so each call comes on a new one): same text as direct, and
    the tokens and timings the server reported."""
    direct, relayed = _openai(embedded_server.url), _openai(proxy.url)
    options = {"stream": True, "stream_options": {"include_usage": True}, **FIXED}
    texts: list[list[str]] = [[], []]
    usages: list[Any] = []
    for _ in range(3):
        for side, client in enumerate((direct, relayed)):
            text, usage = "", None
            for chunk in client.chat.completions.create(model="smollm2", messages=MESSAGES, **options):
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
                usage = chunk.usage or usage
            texts[side].append(text)
            if side:
                usages.append(usage)
    assert texts[1] == texts[0] and all(texts[0])
    traces = stored_traces(db, proxy, 3)  # a call is counted once recorded, after its answer
    assert (proxy.stats.kept, proxy.stats.requests) == (3, 3), proxy.stats
    for trace, usage in zip(traces, usages, strict=True):
        span = trace.spans[0]
        assert span.status == "success"
        assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage.prompt_tokens
        assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == usage.completion_tokens
        assert 0 < span.attributes[semconv.OBS_TTFT_MS] <= span.attributes[semconv.OBS_LATENCY_MS]
        assert span.attributes["llama_cpp.timings.predicted_n"] == usage.completion_tokens
