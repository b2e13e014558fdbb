"""InstrumentedClient against the real embedded llama-server: tokens, timings, TTFT, cache, threads."""

from __future__ import annotations

import threading
import uuid

import pytest

from obs import semconv
from obs.llm.client import InstrumentedClient
from obs.llm.llama.props import fetch_metrics
from obs.llm.llama.server import EmbeddedServer

pytestmark = pytest.mark.integration

PARAMS = {"max_tokens": 8, "temperature": 0, "seed": 1}


def _question(text: str) -> list[dict[str, str]]:
    # A unique tag keeps other tests' prompt cache from changing what this one measures.
    return [{"role": "user", "content": f"[{uuid.uuid4().hex[:8]}] {text}"}]


def test_chat_tokens_timings_and_metrics_match_the_server(
    client: InstrumentedClient, embedded_server: EmbeddedServer
) -> None:
    before = fetch_metrics(embedded_server.url)
    response, span = client.chat(_question("Name a colour."), **PARAMS)
    after = fetch_metrics(embedded_server.url)
    usage, timings = response.usage, response.timings
    assert usage is not None and timings is not None
    assert 1 <= usage.completion_tokens <= 8
    attrs = span.attributes
    assert span.name == "chat SmolLM2-135M-Instruct.Q4_1" and span.status == "success"
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage.prompt_tokens
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == usage.completion_tokens
    assert attrs[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == usage.cached_tokens == timings.cache_n
    assert attrs[semconv.LLAMA_CPP_TIMINGS_PREDICTED_N] == usage.completion_tokens
    assert attrs[semconv.LLAMA_CPP_TIMINGS_PROMPT_N] + timings.cache_n == usage.prompt_tokens  # type: ignore[operator]
    assert (
        attrs[semconv.LLAMA_CPP_TIMINGS_PROMPT_MS] > 0 and attrs[semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS] > 0
    )
    assert attrs[semconv.OBS_LATENCY_MS] >= timings.model_ms
    assert attrs[semconv.OBS_NON_MODEL_MS] == pytest.approx(attrs[semconv.OBS_LATENCY_MS] - timings.model_ms)
    assert attrs[semconv.LLAMA_CPP_N_CTX] == 1024
    assert attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS][0] in ("stop", "length")
    # The server's own counters moved by exactly this request's numbers.
    assert before is not None and after is not None
    assert after.tokens_predicted_total - before.tokens_predicted_total == usage.completion_tokens  # type: ignore[operator]
    assert after.prompt_tokens_total - before.prompt_tokens_total == timings.prompt_n  # type: ignore[operator]
    metrics = client.get_metrics()
    assert (metrics.request_count, metrics.error_count) == (1, 0)
    assert (metrics.prompt_tokens, metrics.completion_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert metrics.total_cost == attrs[semconv.OBS_COST_USD] > 0
    assert client.store.get(span.trace_id) is not None


def test_a_compute_price_is_applied_to_the_real_servers_timings(client: InstrumentedClient) -> None:
    client.collector.set_compute_price(3.6)  # dollars per hour of server time: $0.000001 per ms
    response, span = client.chat(_question("Name a fruit."), **PARAMS)
    stream = client.chat_stream(_question("Name a tree."), **PARAMS)
    list(stream)
    assert response.timings is not None and stream.response is not None
    assert stream.response.timings is not None and stream.span is not None
    server_ms = [response.timings.prompt_ms + response.timings.predicted_ms]
    server_ms.append(stream.response.timings.prompt_ms + stream.response.timings.predicted_ms)
    costs = []
    for ms, recorded in zip(server_ms, (span, stream.span), strict=True):
        attrs = recorded.attributes
        timed = attrs[semconv.LLAMA_CPP_TIMINGS_PROMPT_MS] + attrs[semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS]
        assert ms == timed
        assert attrs[semconv.OBS_COST_PRICING] == "compute"
        assert attrs[semconv.OBS_COST_USD] == pytest.approx(ms / 1_000_000, abs=1e-12) and ms > 0
        costs.append(attrs[semconv.OBS_COST_USD])
    assert client.get_metrics().total_cost == pytest.approx(sum(costs), abs=1e-12)
    (model_cost,) = client.collector.cost_by_model().values()
    assert (model_cost.requests, model_cost.pricing) == (2, "compute")
    assert model_cost.cost_usd == pytest.approx(sum(costs), abs=1e-12)
    assert model_cost.server_ms == pytest.approx(sum(server_ms))


def test_stream_gives_the_same_tokens_and_a_time_to_first_token(client: InstrumentedClient) -> None:
    # ignore_eos: the answer runs to max_tokens, so there are gaps between tokens to measure
    stream = client.chat_stream(_question("Count to five."), **PARAMS, ignore_eos=True)
    deltas = list(stream)
    assert stream.response is not None and stream.span is not None
    usage = stream.response.usage
    assert usage is not None and stream.response.timings is not None
    assert "".join(deltas) == stream.response.content and deltas
    attrs = stream.span.attributes
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == usage.completion_tokens
    assert attrs[semconv.LLAMA_CPP_TIMINGS_PREDICTED_N] == usage.completion_tokens
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage.prompt_tokens
    assert 0 < attrs[semconv.OBS_TTFT_MS] <= attrs[semconv.OBS_LATENCY_MS]
    assert 0 < attrs[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] * 1000 <= attrs[semconv.OBS_TTFT_MS]
    assert len(deltas) > 1
    assert attrs[semconv.OBS_INTER_TOKEN_P95_MS] >= attrs[semconv.OBS_INTER_TOKEN_P50_MS] > 0
    assert [e.name for e in stream.span.events] == ["request_start", "first_token", "response_received"]
    metrics = client.get_metrics()
    assert metrics.request_count == 1 and metrics.completion_tokens == usage.completion_tokens
    assert metrics.avg_ttft_ms > 0


def test_multi_turn_conversation_reuses_the_prompt_cache(client: InstrumentedClient) -> None:
    messages = _question("Tell me about cats.")
    spans = []
    with client.conversation() as conversation:
        for follow_up in ("And dogs?", "And birds?", "And fish?"):
            response, span = client.chat(messages, **PARAMS)
            spans.append(span)
            # Each turn is a trace of its own, stored as soon as its answer is in.
            assert client.store.get(span.trace_id) is not None
            messages = [*messages, {"role": "assistant", "content": response.content}]
            messages.append({"role": "user", "content": follow_up})
    assert len({s.trace_id for s in spans}) == 3
    assert {s.attributes[semconv.GEN_AI_CONVERSATION_ID] for s in spans} == {conversation.id}
    assert {s.attributes[semconv.SESSION_ID] for s in spans} == {conversation.id}
    cache_n = [s.attributes[semconv.LLAMA_CPP_TIMINGS_CACHE_N] for s in spans]
    ratios = [s.attributes[semconv.LLAMA_CPP_PROMPT_CACHE_RATIO] for s in spans]
    assert cache_n[0] < cache_n[1] < cache_n[2], cache_n
    assert ratios[0] < ratios[2] and ratios[1] < ratios[2], ratios
    assert ratios[2] > 0.5


def test_concurrent_calls_land_in_their_own_traces(client: InstrumentedClient) -> None:
    client.capture_content = True  # content is opt-in; this test tells the workers apart by it
    barrier = threading.Barrier(4)
    roots: dict[int, str] = {}
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait()
            with client.tracer.start_span(f"worker {index}") as root:
                roots[index] = root.span_id
                for turn in range(2):
                    client.chat(
                        _question(f"Worker {index}, turn {turn}: say hi."), max_tokens=2, temperature=0
                    )
        except BaseException as exc:  # surfaced in the main thread below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures
    traces = client.store.all()
    assert len(traces) == 4
    for trace in traces:
        (root,) = [s for s in trace.spans if s.parent_id is None]
        index = int(root.name.split()[1])
        assert root.id == roots[index]
        chats = [s for s in trace.spans if s.parent_id == root.id]
        assert len(chats) == 2 and len(trace.spans) == 3
        for chat in chats:
            assert f"Worker {index}," in chat.attributes[semconv.GEN_AI_INPUT_MESSAGES]
            assert chat.trace_id == trace.id and chat.status == "success"
    assert client.get_metrics().request_count == 8


def test_closing_a_real_stream_early_leaves_the_server_usable(client: InstrumentedClient) -> None:
    with client.chat_stream(_question("Write a long story."), max_tokens=32, temperature=0) as stream:
        first = next(stream)
    assert first
    assert stream.span is not None and stream.span.attributes[semconv.OBS_STREAM_CLOSED_EARLY] is True
    response, span = client.chat(_question("Say yes."), max_tokens=2, temperature=0)
    assert span.status == "success" and response.usage is not None
