"""The recording seam the proxy drives (obs.llm.exchange), exact with a fake clock and no sockets.

An Exchange is fed what goes by on the wire and must record what
InstrumentedClient records: span name and attributes, llama.cpp timings,
time to first token and gaps, tokens and cost, errors, log entries.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from obs import semconv
from obs.clock import FakeClock
from obs.llm._limits import Limits
from obs.llm._recording import CallRecorder
from obs.llm._redaction import Redactor
from obs.llm._server_errors import ServerErrors
from obs.llm.exchange import Exchange, conversation_of, route_of
from obs.llm.llama.completions import (
    parse_native_completion,
    parse_text_completion,
    usage_from_timings,
)
from obs.llm.llama.props import ServerProps
from obs.llm.llama.responses import ResponseFormatError, Timings
from obs.logs import LLMLogger
from obs.metrics.collector import MetricsCollector
from obs.storage.memory import TraceStore
from obs.trace.ids import SequentialIdGenerator
from obs.trace.spans import Span
from tests.llm.servers import (
    CACHED_TOKENS,
    COMPLETION_TOKENS,
    CONTENT,
    DELTAS,
    MODEL,
    PROMPT_TOKENS,
    TIMINGS,
    completion_body,
    llama_error,
    stream_lines,
)
from tests.proxy.support import API_KEY, PARENT_ID, TRACE_ID, TRACEPARENT

URL = "http://127.0.0.1:8080"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}], "temperature": 0.0, "seed": 7,
        "max_tokens": 16}
SSE = "text/event-stream"
JSON = "application/json"


@dataclass
class Rig:
    clock: FakeClock
    store: TraceStore
    collector: MetricsCollector
    logger: LLMLogger
    recorder: CallRecorder
    errors: ServerErrors

    def begin(self, path: str, body: Any, headers: dict[str, str] | None = None,
              props: ServerProps | None = None) -> Exchange:
        route = route_of("POST", path)
        assert route is not None
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        exchange = Exchange.begin(self.recorder, self.errors, route, raw, headers or {}, props)
        exchange.sent()
        return exchange

    def span(self) -> Span:
        traces = self.store.all()
        assert len(traces) == 1 and len(traces[0].spans) == 1
        return traces[0].spans[0]

    def everything(self) -> str:
        return json.dumps({"traces": [t.to_dict() for t in self.store.all()],
                           "logs": [e.to_dict() for e in self.logger.get_logs()]}, default=str)


@pytest.fixture
def rig() -> Rig:
    return make_rig()


def make_rig(secrets: tuple[str, ...] = (), max_bytes: int = 64 * 1024 * 1024) -> Rig:
    from obs.trace.tracer import Tracer

    clock = FakeClock()
    store = TraceStore()
    collector = MetricsCollector(clock=clock)
    logger = LLMLogger(clock=clock)
    tracer = Tracer(store=store, collector=collector, logger=logger, clock=clock,
                    id_generator=SequentialIdGenerator())
    redactor = Redactor(secrets)
    recorder = CallRecorder(tracer=tracer, collector=collector, logger=logger, clock=clock,
                            capture_content=True, max_content_chars=65_536, redact=redactor, server_url=URL,
                            server_address="127.0.0.1", server_port=8080)
    errors = ServerErrors(URL, Limits.validated(60.0, None, None, max_bytes), redactor,
                          api_key_given=bool(secrets))
    return Rig(clock, store, collector, logger, recorder, errors)


def _sse(lines: list[str]) -> list[bytes]:
    return [(line + "\n\n").encode() for line in lines]


# -- routes and request side ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "operation"), [
    ("POST", "/v1/chat/completions", "chat"), ("POST", "/chat/completions", "chat"),
    ("POST", "/v1/completions", "text_completion"), ("POST", "/completions", "text_completion"),
    ("POST", "/completion", "text_completion"), ("POST", "/v1/chat/completions/", "chat"),
    ("GET", "/v1/chat/completions", None), ("POST", "/v1/embeddings", None), ("GET", "/health", None),
    ("POST", "/tokenize", None),
])
def test_which_requests_are_model_calls(method: str, path: str, operation: str | None) -> None:
    route = route_of(method, path)
    assert (route.operation if route is not None else None) == operation


def test_the_conversation_comes_from_the_header_then_open_webui_then_the_user_field() -> None:
    body = {"user": "alice"}
    assert conversation_of({"x-conversation-id": "c-1", "x-openwebui-chat-id": "w-1"}, body) == "c-1"
    assert conversation_of({"x-openwebui-chat-id": "w-1"}, body) == "w-1"
    assert conversation_of({}, body) == "alice"
    assert conversation_of({}, {}) is None
    # Unusable ids are skipped, as a malformed traceparent is: never an error for the caller.
    assert conversation_of({"x-conversation-id": "bad\x00id"}, {"user": "x" * 300}) is None
    assert conversation_of({"x-conversation-id": "  "}, {"user": 42}) is None


def test_a_traceparent_makes_the_span_a_child_of_the_callers_span(rig: Rig) -> None:
    headers = {"traceparent": TRACEPARENT, "x-conversation-id": "c-7"}
    exchange = rig.begin("/v1/chat/completions", CHAT, headers)
    assert exchange.traceparent() is not None and exchange.traceparent().startswith(f"00-{TRACE_ID}-")
    exchange.response(200, JSON)
    exchange.feed(json.dumps(completion_body()).encode())
    exchange.end()
    span = rig.span()
    assert (span.trace_id, span.parent_id) == (TRACE_ID, PARENT_ID)
    assert span.attributes[semconv.GEN_AI_CONVERSATION_ID] == "c-7"
    assert span.attributes[semconv.SESSION_ID] == "c-7"


def test_a_malformed_traceparent_starts_a_trace_of_its_own(rig: Rig) -> None:
    exchange = rig.begin("/v1/chat/completions", CHAT, {"traceparent": "00-zz-yy-01"})
    exchange.response(200, JSON)
    exchange.feed(json.dumps(completion_body()).encode())
    exchange.end()
    span = rig.span()
    assert span.parent_id is None and span.trace_id != TRACE_ID


# -- answers ----------------------------------------------------------------------------------------


def test_a_chat_answer_is_recorded_as_the_client_records_it(rig: Rig) -> None:
    exchange = rig.begin("/v1/chat/completions", CHAT)
    rig.clock.advance(75)
    exchange.response(200, "application/json; charset=utf-8")
    body = json.dumps(completion_body()).encode()
    exchange.feed(body[:40])
    exchange.feed(body[40:])
    assert not exchange.ended  # recorded only when the relay says the answer is complete
    span = exchange.end()
    assert span is rig.span()
    attrs = span.attributes
    assert span.name == f"chat {MODEL}" and span.kind == "client" and span.status == "success"
    assert attrs[semconv.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[semconv.GEN_AI_REQUEST_TEMPERATURE] == 0.0 and attrs[semconv.GEN_AI_REQUEST_SEED] == 7
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == COMPLETION_TOKENS
    assert attrs[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == CACHED_TOKENS
    assert attrs[semconv.LLAMA_CPP_TIMINGS_PROMPT_MS] == TIMINGS["prompt_ms"]
    assert attrs[semconv.LLAMA_CPP_TIMINGS_PREDICTED_N] == TIMINGS["predicted_n"]
    assert attrs[semconv.OBS_LATENCY_MS] == 75.0
    assert attrs[semconv.OBS_NON_MODEL_MS] == 75.0 - TIMINGS["prompt_ms"] - TIMINGS["predicted_ms"]
    assert attrs[semconv.HTTP_RESPONSE_STATUS_CODE] == 200
    assert json.loads(attrs[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["parts"][0]["content"] == CONTENT
    assert [e.name for e in span.events] == ["request_start", "response_received"]
    metrics = rig.collector.get_metrics()
    assert (metrics.request_count, metrics.prompt_tokens, metrics.completion_tokens) == (1, 21, 4)
    assert [e.message for e in reversed(rig.logger.get_logs())] == [f"chat {MODEL} request started",
                                                                    f"chat {MODEL} finished"]


def test_the_model_comes_from_props_when_the_body_names_none(rig: Rig) -> None:
    body = {k: v for k, v in CHAT.items() if k != "model"}
    exchange = rig.begin("/v1/chat/completions", body, props=ServerProps(model_alias="smol", n_ctx=512))
    exchange.response(200, JSON)
    exchange.feed(json.dumps(completion_body()).encode())
    span = exchange.end()
    assert span is not None and span.name == "chat smol"
    assert span.attributes[semconv.LLAMA_CPP_N_CTX] == 512


def test_a_stream_is_timed_chunk_by_chunk(rig: Rig) -> None:
    exchange = rig.begin("/v1/chat/completions", {**CHAT, "stream": True})
    rig.clock.advance(10)
    exchange.response(200, SSE)
    lines = stream_lines()
    chunks = _sse(lines)
    exchange.feed(chunks[0])  # the role chunk, at 10 ms: first chunk, no token
    for i, chunk in enumerate(chunks[1:1 + len(DELTAS)]):
        rig.clock.advance(20 if i == 0 else 5)
        exchange.feed(chunk)
    rig.clock.advance(5)
    for chunk in chunks[1 + len(DELTAS):]:
        exchange.feed(chunk)
    span = exchange.end()
    assert span is not None
    attrs = span.attributes
    assert attrs[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == 0.010
    assert attrs[semconv.OBS_TTFT_MS] == 30.0
    assert attrs[semconv.OBS_INTER_TOKEN_MEAN_MS] == 5.0
    assert attrs[semconv.OBS_LATENCY_MS] == 50.0
    assert attrs[semconv.OBS_STREAM_CHUNKS] == len(lines) - 1
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == len(DELTAS)
    assert attrs[semconv.GEN_AI_REQUEST_STREAM] is True
    assert json.loads(attrs[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["parts"][0]["content"] == CONTENT
    assert [e.name for e in span.events] == ["request_start", "first_token", "response_received"]
    # Read when the call ended, each chunk still counts at the time it arrived.
    assert span.events[1].timestamp == span.start_time + 30.0


def test_a_stream_past_the_byte_cap_is_recorded_as_too_large_while_it_runs() -> None:
    rig = make_rig(max_bytes=2048)
    exchange = rig.begin("/v1/chat/completions", {**CHAT, "stream": True})
    exchange.response(200, SSE)
    chunk = _sse(stream_lines()[1:2])[0]
    for _ in range(2048 // len(chunk) + 1):
        exchange.feed(chunk)
    assert exchange.ended  # at the cap, not at the end: nothing more is kept
    span = rig.span()
    assert span.attributes[semconv.ERROR_TYPE] == "BadResponse"
    assert "(2,048 bytes)" in span.attributes[semconv.ERROR_MESSAGE]


def test_sse_lines_split_anywhere_are_read_whole(rig: Rig) -> None:
    exchange = rig.begin("/v1/chat/completions", {**CHAT, "stream": True})
    exchange.response(200, SSE)
    for byte in b"".join(_sse(stream_lines())):
        exchange.feed(bytes([byte]))
    span = exchange.end()
    assert span is not None and span.status == "success"
    assert json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["parts"][0]["content"] == CONTENT


def test_a_stream_without_usage_counts_tokens_from_the_timings(rig: Rig) -> None:
    # OpenAI clients stream without stream_options.include_usage; llama.cpp's timings still come.
    lines = stream_lines(usage=False)
    last = json.loads(lines[-2].removeprefix("data: "))
    last["timings"] = dict(TIMINGS)
    lines[-2] = "data: " + json.dumps(last)
    exchange = rig.begin("/v1/chat/completions", {**CHAT, "stream": True})
    exchange.response(200, SSE)
    for chunk in _sse(lines):
        exchange.feed(chunk)
    span = exchange.end()
    assert span is not None
    assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == TIMINGS["prompt_n"] + TIMINGS["cache_n"]
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == TIMINGS["predicted_n"]
    assert span.attributes[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == TIMINGS["cache_n"]


def _native_lines() -> list[str]:
    lines = [json.dumps({"index": 0, "content": d, "stop": False, "tokens_predicted": i + 1,
                         "tokens_evaluated": 9}) for i, d in enumerate(DELTAS)]
    last = {"index": 0, "content": "", "stop": True, "model": MODEL, "stop_type": "limit",
            "tokens_predicted": len(DELTAS), "tokens_evaluated": 9, "timings": dict(TIMINGS)}
    return ["data: " + line for line in [*lines, json.dumps(last)]]


def test_a_native_completion_stream_ends_at_its_stop_object_without_done(rig: Rig) -> None:
    exchange = rig.begin("/completion", {"prompt": "Once upon", "n_predict": 4, "stream": True})
    exchange.response(200, SSE)
    for chunk in _sse(_native_lines()):
        exchange.feed(chunk)
    span = exchange.end()
    assert span is not None and span.status == "success"
    attrs = span.attributes
    assert span.name == "text_completion"  # no model in the body, no /props known
    assert attrs[semconv.GEN_AI_OPERATION_NAME] == "text_completion"
    assert attrs[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 4
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 9
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == len(DELTAS)
    assert attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ["length"]
    assert json.loads(attrs[semconv.GEN_AI_INPUT_MESSAGES])[0]["parts"][0]["content"] == "Once upon"
    assert json.loads(attrs[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["parts"][0]["content"] == CONTENT


def test_a_native_stream_cut_before_its_stop_object_is_interrupted(rig: Rig) -> None:
    exchange = rig.begin("/completion", {"prompt": "Once upon", "stream": True})
    exchange.response(200, SSE)
    for chunk in _sse(_native_lines()[:2]):
        exchange.feed(chunk)
    span = exchange.end()
    assert span is not None and span.status == "error"
    assert span.attributes[semconv.ERROR_TYPE] == "StreamInterrupted"


def test_text_completions_streamed_and_not(rig: Rig) -> None:
    body = {"id": "cmpl-1", "model": MODEL, "object": "text_completion",
            "choices": [{"text": CONTENT, "index": 0, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
            "timings": dict(TIMINGS)}
    exchange = rig.begin("/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 4})
    exchange.response(200, JSON)
    exchange.feed(json.dumps(body).encode())
    span = exchange.end()
    assert span is not None and span.name == f"text_completion {MODEL}"
    assert span.attributes[semconv.GEN_AI_RESPONSE_ID] == "cmpl-1"
    assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 3

    other = make_rig()
    chunks = [{"id": "cmpl-2", "model": MODEL, "choices": [{"text": d, "index": 0, "finish_reason": None}]}
              for d in DELTAS]
    chunks.append({"id": "cmpl-2", "model": MODEL,
                   "choices": [{"text": "", "index": 0, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
    exchange = other.begin("/v1/completions", {"prompt": "Hi", "stream": True})
    exchange.response(200, SSE)
    for chunk in _sse([*("data: " + json.dumps(c) for c in chunks), "data: [DONE]"]):
        exchange.feed(chunk)
    span = exchange.end()
    assert span is not None and span.status == "success"
    assert json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["parts"][0]["content"] == CONTENT
    assert span.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ["stop"]


def test_a_gzip_answer_is_read_through_its_encoding(rig: Rig) -> None:
    exchange = rig.begin("/v1/chat/completions", CHAT)
    exchange.response(200, JSON, "gzip")
    packed = gzip.compress(json.dumps(completion_body()).encode())
    exchange.feed(packed[:10])
    exchange.feed(packed[10:])
    span = exchange.end()
    assert span is not None and span.status == "success"
    assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS


# -- failures ---------------------------------------------------------------------------------------


def test_an_error_status_is_recorded_with_the_servers_message(rig: Rig) -> None:
    exchange = rig.begin("/v1/chat/completions", CHAT)
    exchange.response(500, JSON)
    exchange.feed(json.dumps(llama_error(500, "slot crashed", "server_error")).encode())
    span = exchange.end()
    assert span is not None and span.status == "error"
    assert span.attributes[semconv.ERROR_TYPE] == "500"
    assert span.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 500
    assert "slot crashed" in span.attributes[semconv.ERROR_MESSAGE]
    assert rig.collector.get_metrics().error_count == 1
    assert rig.logger.get_logs()[0].level == "error"


def test_a_body_that_is_not_json_is_recorded_as_an_empty_request_refused(rig: Rig) -> None:
    exchange = rig.begin("/v1/chat/completions", b"{garbage")
    exchange.response(400, JSON)
    exchange.feed(json.dumps(llama_error(400, "parse error", "invalid_request_error")).encode())
    span = exchange.end()
    assert span is not None and span.name == "chat" and span.attributes[semconv.ERROR_TYPE] == "400"
    assert semconv.GEN_AI_REQUEST_MODEL not in span.attributes


@pytest.mark.parametrize("body", [b"<html>surprise</html>", b'{"object": "chat.completion"}'])
def test_a_success_that_is_not_a_completion_is_a_bad_response(rig: Rig, body: bytes) -> None:
    exchange = rig.begin("/v1/chat/completions", CHAT)
    exchange.response(200, "text/html")
    exchange.feed(body)
    span = exchange.end()
    assert span is not None and span.attributes[semconv.ERROR_TYPE] == "BadResponse"


def test_a_stream_that_ends_before_done_or_is_cut_keeps_its_partial_text(rig: Rig) -> None:
    exchange = rig.begin("/v1/chat/completions", {**CHAT, "stream": True})
    exchange.response(200, SSE)
    for chunk in _sse(stream_lines()[:3]):
        exchange.feed(chunk)
    span = exchange.end()
    assert span is not None and span.attributes[semconv.ERROR_TYPE] == "StreamInterrupted"
    assert span.attributes[semconv.OBS_PARTIAL_OUTPUT] == "".join(DELTAS[:2])

    other = make_rig()
    exchange = other.begin("/v1/chat/completions", {**CHAT, "stream": True})
    exchange.response(200, SSE)
    for chunk in _sse(stream_lines()[:2]):
        exchange.feed(chunk)
    exchange.cut(httpx.RemoteProtocolError("peer closed connection"))
    span = exchange.end()  # the relay may still say "end": the first ending stands
    assert span is not None and span.attributes[semconv.ERROR_TYPE] == "StreamInterrupted"
    assert "was cut after 2 chunks" in span.attributes[semconv.ERROR_MESSAGE]


def test_an_error_event_mid_stream_is_the_servers_error(rig: Rig) -> None:
    exchange = rig.begin("/v1/chat/completions", {**CHAT, "stream": True})
    exchange.response(200, SSE)
    lines = [*stream_lines()[:2], "error: " + json.dumps(llama_error(500, "slot crashed", "server_error"))]
    for chunk in _sse(lines):
        exchange.feed(chunk)
    span = exchange.end()
    assert span is not None and span.attributes[semconv.ERROR_TYPE] == "500"


def test_a_caller_that_leaves_mid_stream_closes_it_early_and_before_any_answer_fails(rig: Rig) -> None:
    exchange = rig.begin("/v1/chat/completions", {**CHAT, "stream": True})
    exchange.response(200, SSE)
    for chunk in _sse(stream_lines()[:3]):
        exchange.feed(chunk)
    span = exchange.client_gone()
    assert span is not None and span.status == "success"
    assert span.attributes[semconv.OBS_STREAM_CLOSED_EARLY] is True
    assert rig.collector.get_metrics().completion_tokens == 2  # the tokens seen, as ChatStream.close counts

    other = make_rig()
    exchange = other.begin("/v1/chat/completions", CHAT)
    other.clock.advance(30_000)
    span = exchange.client_gone()
    assert span is not None and span.status == "error"
    assert span.attributes[semconv.ERROR_TYPE] == "ClientDisconnected"
    assert "after 30 s, before any answer came" in span.attributes[semconv.ERROR_MESSAGE]


def test_a_caller_that_leaves_after_the_last_byte_is_still_a_success(rig: Rig) -> None:
    exchange = rig.begin("/v1/chat/completions", {**CHAT, "stream": True})
    exchange.response(200, SSE)
    for chunk in _sse(stream_lines()):
        exchange.feed(chunk)
    span = exchange.client_gone()
    assert span is not None and span.status == "success"
    assert semconv.OBS_STREAM_CLOSED_EARLY not in span.attributes


def test_an_unreadable_encoding_is_recorded_not_raised(rig: Rig) -> None:
    exchange = rig.begin("/v1/chat/completions", CHAT)
    exchange.response(200, JSON, "br")
    exchange.feed(b"\x00\x01")
    span = exchange.end()
    assert span is not None and span.attributes[semconv.ERROR_TYPE] == "BadResponse"
    assert rig.recorder.telemetry_errors == 1


def test_a_broken_gzip_body_is_recorded_not_raised(rig: Rig) -> None:
    exchange = rig.begin("/v1/chat/completions", CHAT)
    exchange.response(200, JSON, "gzip")
    exchange.feed(b"this is not gzip at all")
    exchange.feed(b"more")
    span = exchange.end()
    assert span is not None and span.status == "error"
    assert rig.recorder.telemetry_errors == 1


def test_the_api_key_never_reaches_what_is_recorded() -> None:
    rig = make_rig((f"Bearer {API_KEY}", API_KEY))
    echo = completion_body(f"you sent Bearer {API_KEY}", model=API_KEY)
    exchange = rig.begin("/v1/chat/completions", {**CHAT, "user": API_KEY})
    exchange.response(200, JSON)
    exchange.feed(json.dumps(echo).encode())
    exchange.end()
    failing = rig.begin("/v1/chat/completions", CHAT)
    failing.response(401, JSON)
    failing.feed(json.dumps(llama_error(401, f"bad key {API_KEY[:12]}", "authentication_error")).encode())
    failing.end()
    recorded = rig.everything()
    assert "you sent" in recorded and API_KEY[:8] not in recorded


# -- the shapes of text completions -----------------------------------------------------------------


def test_text_completion_parsers_refuse_other_shapes() -> None:
    with pytest.raises(ResponseFormatError, match="no choices"):
        parse_text_completion({"object": "x"})
    with pytest.raises(ResponseFormatError, match="no text"):
        parse_text_completion({"choices": [{"message": {}}]})
    with pytest.raises(ResponseFormatError, match="no content"):
        parse_native_completion({"choices": []})
    native = parse_native_completion({"content": "hi", "stop_type": "eos", "tokens_evaluated": 5,
                                      "tokens_predicted": 2})
    assert native.usage is not None
    assert (native.content, native.finish_reason, native.usage.prompt_tokens) == ("hi", "stop", 5)


def test_usage_from_timings_adds_the_cached_prompt_and_flags_nonsense() -> None:
    usage = usage_from_timings(Timings(prompt_n=1, prompt_ms=1.0, predicted_n=5, predicted_ms=2.0,
                                       cache_n=30))
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (31, 5, 30)
    odd = usage_from_timings(Timings(prompt_n=-4, prompt_ms=1.0, predicted_n=5, predicted_ms=2.0))
    assert odd is not None and odd.invalid == ("prompt_tokens",)
