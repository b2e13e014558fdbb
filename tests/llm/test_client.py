"""InstrumentedClient against a well-behaved loopback llama-server: spans, metrics, logs, traces."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from obs import semconv
from obs.llm.client import DEFAULT_BASE_URL, ChatResult, InstrumentedClient
from obs.llm.llama.responses import ChatCompletion
from obs.logs import LLMLogger
from obs.metrics.collector import MetricsCollector
from obs.storage.memory import TraceStore
from obs.trace.ids import format_traceparent
from obs.trace.tracer import Tracer
from tests.llm import servers
from tests.llm.client_support import MESSAGES, make_rig

TRACE_1 = f"{1:032x}"
SPAN_1 = f"{1:016x}"


def test_chat_records_a_complete_genai_span() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        result = rig.client.chat(MESSAGES, max_tokens=8, temperature=0, seed=42)
    response, span = result
    assert isinstance(result, ChatResult) and result.response is response and result.span is span
    assert isinstance(response, ChatCompletion)
    assert response.content == servers.CONTENT
    assert (span.name, span.kind, span.status) == ("chat test-model", "client", "success")
    assert (span.trace_id, span.id, span.parent_id) == (TRACE_1, SPAN_1, None)
    port = int(server.url.rsplit(":", 1)[1])
    cost = rig.collector.cost_for(servers.PROMPT_TOKENS, servers.COMPLETION_TOKENS, "test-model")
    assert span.attributes == {
        semconv.GEN_AI_OPERATION_NAME: "chat",
        semconv.GEN_AI_PROVIDER_NAME: "llama.cpp",
        semconv.GEN_AI_REQUEST_MODEL: "test-model",
        semconv.GEN_AI_REQUEST_MAX_TOKENS: 8,
        semconv.GEN_AI_REQUEST_TEMPERATURE: 0.0,
        semconv.GEN_AI_REQUEST_SEED: 42,
        semconv.SERVER_ADDRESS: "127.0.0.1",
        semconv.SERVER_PORT: port,
        semconv.LLAMA_CPP_N_CTX: 1024,
        semconv.LLAMA_CPP_BUILD: "b1234-test",
        semconv.LLAMA_CPP_MODEL_PATH: "/models/test-model.gguf",
        semconv.GEN_AI_INPUT_MESSAGES: json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": "Say hello"}]}]
        ),
        semconv.GEN_AI_OUTPUT_MESSAGES: json.dumps(
            [
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": servers.CONTENT}],
                    "finish_reason": "stop",
                }
            ]
        ),
        semconv.GEN_AI_RESPONSE_ID: "chatcmpl-test",
        semconv.GEN_AI_RESPONSE_MODEL: "test-model",
        semconv.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
        semconv.GEN_AI_USAGE_INPUT_TOKENS: servers.PROMPT_TOKENS,
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS: servers.COMPLETION_TOKENS,
        semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: servers.CACHED_TOKENS,
        semconv.LLAMA_CPP_TIMINGS_PROMPT_N: 16,
        semconv.LLAMA_CPP_TIMINGS_PROMPT_MS: 40.0,
        semconv.LLAMA_CPP_TIMINGS_PROMPT_PER_SECOND: 400.0,
        semconv.LLAMA_CPP_TIMINGS_PREDICTED_N: 4,
        semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS: 20.0,
        semconv.LLAMA_CPP_TIMINGS_PREDICTED_PER_SECOND: 200.0,
        semconv.LLAMA_CPP_TIMINGS_CACHE_N: 5,
        semconv.LLAMA_CPP_PROMPT_CACHE_RATIO: 5 / 21,
        semconv.OBS_LATENCY_MS: 0.0,
        semconv.OBS_NON_MODEL_MS: 0.0,
        semconv.OBS_CACHE_HIT: False,
        semconv.OBS_COST_USD: cost,
        semconv.OBS_COST_PRICING: "tokens",
        semconv.HTTP_RESPONSE_STATUS_CODE: 200,
    }
    assert [e.name for e in span.events] == ["request_start", "response_received"]
    chat_request = server.requests[-1]
    assert chat_request.path == "/v1/chat/completions"
    assert chat_request.headers["traceparent"] == format_traceparent(TRACE_1, SPAN_1)
    assert chat_request.json == {"messages": MESSAGES, "max_tokens": 8, "temperature": 0, "seed": 42}


def test_chat_feeds_store_metrics_and_logs() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        _, span = rig.client.chat(MESSAGES)
    trace = rig.only_trace()
    assert trace.id == span.trace_id and trace.spans == (span,) and trace.status == "success"
    metrics = rig.client.get_metrics()
    assert metrics.request_count == 1
    assert (metrics.prompt_tokens, metrics.completion_tokens) == (
        servers.PROMPT_TOKENS,
        servers.COMPLETION_TOKENS,
    )
    assert metrics.total_cost == span.attributes[semconv.OBS_COST_USD]
    assert (metrics.error_count, metrics.cache_hits, metrics.cache_misses) == (0, 0, 1)
    logs = rig.logger.get_logs_for_trace(span.trace_id)
    assert [(e.level, e.message, e.span_id) for e in reversed(logs)] == [
        ("info", "chat test-model request started", span.id),
        ("info", "chat test-model finished", span.id),
    ]
    assert logs[0].data["completion_tokens"] == servers.COMPLETION_TOKENS


def test_summary_is_readable() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        rig.client.chat(MESSAGES)
    lines = rig.client.get_metrics_summary().splitlines()
    assert lines[0] == "Requests: 1 (errors: 0, 0.0%)"
    assert lines[1] == f"Tokens: {servers.PROMPT_TOKENS + 4} (prompt {servers.PROMPT_TOKENS}, completion 4)"
    assert lines[2].startswith("Cost: $0.0000")
    assert lines[5] == "Cache: 0 hits of 1 (0.0%)"
    assert len(lines) == 7


def test_standalone_client_builds_its_own_sinks() -> None:
    with servers.serve(servers.good) as server, InstrumentedClient(server.url) as client:
        _, span = client.chat(MESSAGES)
        assert isinstance(client.store, TraceStore)
        assert isinstance(client.collector, MetricsCollector)
        assert isinstance(client.logger, LLMLogger)
        assert client.tracer.store is client.store
        assert client.store.get(span.trace_id) is not None
        assert client.get_metrics().request_count == 1
        assert len(client.logger.get_logs_for_trace(span.trace_id)) == 2


def test_standalone_client_samples_as_the_otel_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    with servers.serve(servers.good) as server, InstrumentedClient(server.url) as client:
        _, span = client.chat(MESSAGES)
        assert client.tracer.head_sampler.description == "AlwaysOffSampler"
        assert client.store.get(span.trace_id) is None  # not kept...
        metrics = client.get_metrics()
        assert (metrics.request_count, metrics.traces_dropped) == (1, 1)  # ...but counted


def test_unknown_otel_sampler_warns_and_uses_the_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The OpenTelemetry specification: an unknown OTEL_TRACES_SAMPLER is reported, never fatal.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "bogus")
    with caplog.at_level(logging.WARNING, logger="obs"):
        client = InstrumentedClient("http://127.0.0.1:9")
    assert client.tracer.head_sampler.description.startswith("ParentBased{root:AlwaysOnSampler")
    assert any("OTEL_TRACES_SAMPLER='bogus'" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("value", "captured"),
    [(None, False), ("true", True), ("TRUE", True), ("false", False), ("", False), ("span_only", True)],
)
def test_content_capture_follows_the_otel_opt_in_unless_given(
    monkeypatch: pytest.MonkeyPatch, value: str | None, captured: bool
) -> None:
    if value is None:
        monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    else:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", value)
    assert InstrumentedClient("http://127.0.0.1:9").capture_content is captured
    assert InstrumentedClient("http://127.0.0.1:9", capture_content=True).capture_content is True
    assert InstrumentedClient("http://127.0.0.1:9", capture_content=False).capture_content is False


def test_an_unreadable_capture_setting_warns_and_keeps_content_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "maybe")
    with caplog.at_level(logging.WARNING, logger="obs"):
        client = InstrumentedClient("http://127.0.0.1:9")
    assert client.capture_content is False
    assert any("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT" in r.getMessage() for r in caplog.records)


def test_by_default_no_message_content_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    with servers.serve(servers.good) as server, InstrumentedClient(server.url) as client:
        _, span = client.chat([{"role": "user", "content": "a private question"}])
        list(client.chat_stream(MESSAGES))
        recorded = json.dumps([t.to_dict() for t in client.store.all()])
    assert semconv.GEN_AI_INPUT_MESSAGES not in span.attributes
    assert "private question" not in recorded and servers.CONTENT not in recorded


def test_client_uses_the_tracers_sinks() -> None:
    store, collector = TraceStore(), MetricsCollector()
    tracer = Tracer(store=store, collector=collector)
    client = InstrumentedClient("http://127.0.0.1:9", tracer=tracer)
    assert client.store is store and client.collector is collector
    assert isinstance(client.logger, LLMLogger)
    other = TraceStore()
    assert InstrumentedClient("http://127.0.0.1:9", tracer=tracer, store=other).store is other


def test_base_url_from_environment_or_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_SERVER_URL", "http://example.test:9000/")
    assert InstrumentedClient().base_url == "http://example.test:9000"
    monkeypatch.delenv("LLAMA_SERVER_URL")
    assert InstrumentedClient().base_url == DEFAULT_BASE_URL
    assert InstrumentedClient("http://user:pw@host:1").base_url == "http://host:1"


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"base_url": "ftp://host"}, "base_url must be an http(s) URL with a host"),
        ({"base_url": "localhost:8033"}, "base_url"),
        ({"base_url": "   "}, "base_url must be an http(s) URL"),
        ({"timeout": 0}, "timeout must be seconds > 0, got 0"),
        ({"timeout": float("nan")}, "timeout must be seconds > 0"),
        ({"cache_size": -1}, "cache_size must be an int >= 0"),
        ({"cache_ttl_s": 0, "cache_size": 2}, "ttl_s must be None"),
        ({"api_key": ""}, "api_key must be None or a non-empty string"),
        ({"model": ""}, "model must be None or a non-empty string"),
        ({"tracer": object()}, "tracer must be an obs.Tracer"),
    ],
)
def test_construction_validates(kwargs: dict[str, Any], says: str) -> None:
    kwargs.setdefault("base_url", "http://127.0.0.1:8033")
    with pytest.raises(ValueError) as caught:
        InstrumentedClient(**kwargs)
    assert says in str(caught.value)


@pytest.mark.parametrize("messages", [[], "hello", [{"content": "no role"}], ["text"], None])
def test_bad_messages_are_refused_before_anything_is_recorded(messages: Any) -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        with pytest.raises(ValueError, match="messages"):
            rig.client.chat(messages)
    assert len(rig.store) == 0 and rig.client.get_metrics().request_count == 0
    assert [r.path for r in server.requests if r.path != "/props"] == []


def test_model_is_sent_when_given_and_props_read_once() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url, model="my-model")
        for _ in range(3):
            _, span = rig.client.chat(MESSAGES, top_p=0.5)
        rig.client.chat(MESSAGES, model="override")
    assert [r.path for r in server.requests].count("/props") == 1
    assert server.requests[1].json["model"] == "my-model"
    assert server.requests[-1].json["model"] == "override"
    assert span.name == "chat my-model"
    assert span.attributes[semconv.GEN_AI_REQUEST_MODEL] == "my-model"
    assert span.attributes[semconv.GEN_AI_REQUEST_TOP_P] == 0.5
    assert rig.client.server_props is not None and rig.client.server_props.n_ctx == 1024


def test_without_props_the_span_is_named_chat() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url, read_props=False)
        _, span = rig.client.chat(MESSAGES)
    assert span.name == "chat"
    assert semconv.GEN_AI_REQUEST_MODEL not in span.attributes
    assert "/props" not in [r.path for r in server.requests]
    assert "model" not in server.requests[0].json


def test_capture_content_off_keeps_messages_off_the_span() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url, capture_content=False)
        _, span = rig.client.chat([{"role": "user", "content": "a secret question"}])
    assert semconv.GEN_AI_INPUT_MESSAGES not in span.attributes
    assert semconv.GEN_AI_OUTPUT_MESSAGES not in span.attributes
    assert "secret question" not in rig.everything_recorded()
    assert servers.CONTENT not in rig.everything_recorded()


def test_requests_without_a_trace_get_one_each() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        _, first = rig.client.chat(MESSAGES)
        _, second = rig.client.chat(MESSAGES)
    assert first.trace_id != second.trace_id
    assert len(rig.store) == 2
    assert semconv.GEN_AI_CONVERSATION_ID not in first.attributes


def test_a_trace_begun_with_start_trace_gathers_its_chats() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        handle = rig.client.start_trace("agent", {"user": "ann"})
        _, first = rig.client.chat(MESSAGES)
        _, second = rig.client.chat(MESSAGES)
        assert len(rig.store) == 0  # nothing is finished until the conversation ends
        trace = rig.client.end_current_trace()
        assert rig.client.end_current_trace() is None
        _, after = rig.client.chat(MESSAGES)
    assert trace is not None and trace.id == handle.trace_id
    assert trace.name == "agent" and trace.metadata["user"] == "ann"
    assert [s.id for s in trace.spans] == [first.id, second.id]
    # A trace is not a conversation: conversations are ids over traces (tests/llm/test_conversation.py).
    assert semconv.GEN_AI_CONVERSATION_ID not in first.attributes
    assert after.trace_id != trace.id
    assert len(rig.store) == 2
    # Each request carried its own span as the traceparent parent, in the trace begun here.
    chat_requests = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert chat_requests[0].headers["traceparent"] == format_traceparent(trace.id, first.id)


def test_chat_nests_under_the_current_span_and_explicit_parent() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        with rig.tracer.start_span("answer question") as outer:
            _, inner = rig.client.chat(MESSAGES)
        other = rig.tracer.begin_trace("explicit")
        _, placed = rig.client.chat(MESSAGES, parent=other)
        rig.tracer.end_trace(other)
    assert inner.parent_id == outer.span_id and inner.trace_id == outer.trace_id
    assert placed.trace_id == other.trace_id
    assert server.requests[1].headers["traceparent"] == format_traceparent(inner.trace_id, inner.id)
    with pytest.raises(ValueError, match="parent"):
        rig.client.chat(MESSAGES, parent="not a handle")


def test_response_cache_hits_skip_the_server() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url, cache_size=8)
        first, miss = rig.client.chat(MESSAGES, temperature=0)
        second, hit = rig.client.chat(MESSAGES, temperature=0)
        _, other = rig.client.chat(MESSAGES, temperature=1)
        deltas = list(rig.client.chat_stream(MESSAGES, temperature=0))
    chat_calls = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert len(chat_calls) == 2
    assert second == first
    assert miss.attributes[semconv.OBS_CACHE_HIT] is False
    assert other.attributes[semconv.OBS_CACHE_HIT] is False
    assert hit.attributes[semconv.OBS_CACHE_HIT] is True
    assert hit.attributes[semconv.OBS_COST_USD] == 0.0
    assert hit.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 0
    assert hit.attributes[semconv.GEN_AI_RESPONSE_ID] == "chatcmpl-test"
    assert semconv.HTTP_RESPONSE_STATUS_CODE not in hit.attributes
    assert [e.name for e in hit.events] == ["request_start"]
    assert deltas == [servers.CONTENT]
    metrics = rig.client.get_metrics()
    assert (metrics.request_count, metrics.cache_hits, metrics.cache_misses) == (4, 2, 2)
    assert metrics.prompt_tokens == 2 * servers.PROMPT_TOKENS
    assert rig.client.cache is not None and (rig.client.cache.hits, rig.client.cache.misses) == (2, 2)


def test_cache_is_off_by_default() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        rig.client.chat(MESSAGES)
        rig.client.chat(MESSAGES)
    assert rig.client.cache is None
    assert [r.path for r in server.requests].count("/v1/chat/completions") == 2
    assert rig.client.get_metrics().cache_misses == 2


def test_api_key_is_sent_and_never_recorded() -> None:
    secret = "sk-very-secret-123"
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url, api_key=secret)
        rig.client.chat(MESSAGES)
        list(rig.client.chat_stream(MESSAGES))
    assert {r.headers["Authorization"] for r in server.requests} == {f"Bearer {secret}"}
    assert secret not in rig.everything_recorded()
    assert secret not in repr(rig.client)


class _Broken:
    """Stands in for a logger, collector or store that fails at every call."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        if name in ("log", "record_request", "add"):

            def fail(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError(f"{name} is broken")

            return fail
        return getattr(self._real, name)


def test_broken_telemetry_never_breaks_the_chat() -> None:
    store = _Broken(TraceStore())
    tracer = Tracer(store=store, collector=_Broken(MetricsCollector()), logger=_Broken(LLMLogger()))
    with servers.serve(servers.good) as server:
        client = InstrumentedClient(server.url, tracer=tracer)
        response, span = client.chat(MESSAGES)
        deltas = list(client.chat_stream(MESSAGES))
    assert response.content == servers.CONTENT
    assert "".join(deltas) == servers.CONTENT
    assert span.status == "success"
    assert semconv.OBS_COST_USD not in span.attributes  # the collector could not price it
    assert client.telemetry_errors == 6  # per call: the start log, the metrics, the end log
    (store_processor,) = tracer.processors  # the store failed twice: counted by its processor
    assert store_processor.stats().failed == 2  # type: ignore[attr-defined]
