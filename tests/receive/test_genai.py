"""Tests for obs.receive.genai: which received spans count as model calls, and what the collector gets."""

from __future__ import annotations

from dataclasses import replace

import numpy
import pytest

from obs.clock import FakeClock
from obs.metrics.collector import MetricsCollector
from obs.receive import genai_call, record_genai_spans
from obs.trace.spans import Span

from .support import T0_MS, chat_trace


def _span(attributes: dict[str, object], status: str = "success") -> Span:
    return Span(id="00f067aa0ba902b8", trace_id="ab" * 16, parent_id=None, name="x", start_time=T0_MS,
                end_time=T0_MS + 250.0, duration=250.0, status=status, attributes=attributes,  # type: ignore[arg-type]
                kind="client")


def test_a_chat_span_gives_every_number() -> None:
    call = genai_call(chat_trace().spans[1])
    assert call is not None
    assert (call.latency_ms, call.prompt_tokens, call.completion_tokens) == (800.0, 42, 7)
    assert (call.model, call.ttft_ms, call.error, call.cached) == ("smollm2", 125.0, False, False)
    assert call.timestamp == (T0_MS + 810.0) / 1000.0 and call.server_ms is None


@pytest.mark.parametrize(("attributes", "counts"), [
    ({"gen_ai.operation.name": "chat"}, True),
    ({"gen_ai.operation.name": "embeddings"}, True),
    ({"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 9}, False),
    ({"gen_ai.operation.name": "execute_tool"}, False),
    ({"gen_ai.usage.output_tokens": 3}, True),
    ({"gen_ai.usage.prompt_tokens": 3}, True),
    ({"http.request.method": "GET"}, False),
    ({}, False),
])
def test_which_spans_are_model_calls(attributes: dict[str, object], counts: bool) -> None:
    assert (genai_call(_span(attributes)) is not None) is counts


def test_odd_values_are_read_safely() -> None:
    call = genai_call(_span({
        "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": "12", "gen_ai.usage.output_tokens": -4,
        "gen_ai.response.time_to_first_chunk": True, "gen_ai.request.model": 5, "error.type": "timeout",
        "llama_cpp.timings.prompt_ms": 12.5, "llama_cpp.timings.predicted_ms": 100.0, "obs.cache_hit": True,
        "obs.ttft_ms": 40.0,
    }))
    assert call is not None
    assert (call.prompt_tokens, call.completion_tokens, call.model) == (0, 0, None)
    assert (call.ttft_ms, call.error, call.server_ms, call.cached) == (40.0, True, 112.5, True)
    old = genai_call(_span({"gen_ai.usage.prompt_tokens": 8, "gen_ai.usage.completion_tokens": 2}, "error"))
    assert old is not None and (old.prompt_tokens, old.completion_tokens, old.error) == (8, 2, True)


def test_record_counts_calls_and_places_a_bad_timestamp_at_now() -> None:
    collector = MetricsCollector(clock=FakeClock(start_ms=T0_MS + 5000.0))
    trace = chat_trace()
    ancient = replace(trace.spans[1], start_time=0.0, end_time=800.0)  # a client with its clock at 1970
    assert record_genai_spans(collector, [trace, replace(trace, spans=(ancient,))]) == 2
    snapshot = collector.get_metrics()
    assert (snapshot.request_count, snapshot.prompt_tokens, snapshot.completion_tokens) == (2, 84, 14)
    assert snapshot.first_request_at == (T0_MS + 810.0) / 1000.0
    assert snapshot.last_request_at == (T0_MS + 5000.0) / 1000.0


def test_record_never_raises_for_a_collector_that_fails() -> None:
    class Broken:
        def record_request(self, *args: object, **kwargs: object) -> float:
            raise RuntimeError("boom")

    assert record_genai_spans(Broken(), [chat_trace()]) == 0


ODD_SPANS = [
    {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 3,
     "gen_ai.response.model": "m1", "gen_ai.response.time_to_first_chunk": 0.042, "obs.cache_hit": True},
    {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "m2", "error.type": "timeout",
     "llama_cpp.timings.prompt_ms": 12.5, "llama_cpp.timings.predicted_ms": 40.0},
    {"gen_ai.usage.prompt_tokens": 8, "gen_ai.usage.completion_tokens": 2, "obs.ttft_ms": 30},
    {"gen_ai.operation.name": "text_completion", "gen_ai.response.time_to_first_chunk": float("nan"),
     "obs.ttft_ms": 15.5, "gen_ai.usage.input_tokens": True},
    {"gen_ai.operation.name": "execute_tool", "gen_ai.usage.input_tokens": 99},
    {"http.request.method": "GET"},
    {"gen_ai.operation.name": ["chat"]},
]


def test_record_counts_exactly_what_genai_call_says() -> None:
    spans = [_span(attributes, status) for attributes in ODD_SPANS for status in ("success", "error")]
    trace = replace(chat_trace(), spans=tuple(spans))
    recorded = MetricsCollector(clock=FakeClock(start_ms=T0_MS + 5000.0))
    by_hand = MetricsCollector(clock=FakeClock(start_ms=T0_MS + 5000.0))
    calls = [call for call in map(genai_call, spans) if call is not None]
    for call in calls:
        by_hand.record_request(call.latency_ms, call.prompt_tokens, call.completion_tokens,
                               cached=call.cached, error=call.error, model=call.model, ttft_ms=call.ttft_ms,
                               timestamp=call.timestamp, server_ms=call.server_ms)
    assert record_genai_spans(recorded, [trace]) == len(calls) == 8
    assert recorded.get_metrics() == by_hand.get_metrics()
    assert recorded.cost_by_model() == by_hand.cost_by_model()


@pytest.mark.parametrize("operation", [["chat"], {"name": "chat"}, 5, b"chat"])
def test_an_operation_name_that_is_not_text_is_not_a_model_call(operation: object) -> None:
    span = _span({"gen_ai.operation.name": operation, "gen_ai.usage.input_tokens": 4})
    assert genai_call(span) is None
    trace = replace(chat_trace(), spans=(span,))
    assert record_genai_spans(MetricsCollector(clock=FakeClock(start_ms=T0_MS)), [trace]) == 0


@pytest.mark.parametrize(("attributes", "prompt_tokens"), [
    ({"gen_ai.usage.prompt_tokens": 8}, 8),
    ({"gen_ai.usage.input_tokens": None, "gen_ai.usage.prompt_tokens": 8}, 0),  # the current key wins
    ({"gen_ai.usage.input_tokens": 3, "gen_ai.usage.prompt_tokens": 8}, 3),
    ({"gen_ai.usage.input_tokens": 10**12}, 10**12),
    ({"gen_ai.usage.input_tokens": 10**12 + 1}, 0),
    ({"gen_ai.usage.input_tokens": -1}, 0),
    ({"gen_ai.usage.input_tokens": 4.0}, 0),
])
def test_token_counts_are_whole_numbers_in_range_from_the_current_key_first(
        attributes: dict[str, object], prompt_tokens: int) -> None:
    call = genai_call(_span({"gen_ai.operation.name": "chat", **attributes}))
    assert call is not None and call.prompt_tokens == prompt_tokens


@pytest.mark.parametrize(("start", "end", "latency_ms", "timestamp"), [
    (T0_MS, T0_MS + 250.0, 250.0, (T0_MS + 250.0) / 1000.0),
    (T0_MS, T0_MS - 5.0, 0.0, (T0_MS - 5.0) / 1000.0),  # an end before the start
    (T0_MS, None, 0.0, T0_MS / 1000.0),  # no end: recorded at its start
    (T0_MS, T0_MS + 2 * 86_400_000.0, 86_400_000.0, (T0_MS + 2 * 86_400_000.0) / 1000.0),  # capped at a day
    (1_700_000_000_000, 1_700_000_000_300, 300.0, 1_700_000_000.3),  # whole milliseconds as ints
])
def test_latency_is_the_duration_within_the_collectors_range(
        start: float, end: float | None, latency_ms: float, timestamp: float) -> None:
    span = replace(_span({"gen_ai.operation.name": "chat"}), start_time=start, end_time=end)
    call = genai_call(span)
    assert call is not None
    assert (call.latency_ms, call.timestamp) == (latency_ms, timestamp) and type(call.latency_ms) is float


@pytest.mark.parametrize(("attributes", "ttft_ms"), [
    ({"gen_ai.response.time_to_first_chunk": 0.042}, 0.042 * 1000.0),
    ({"gen_ai.response.time_to_first_chunk": 2}, 2000.0),
    ({"gen_ai.response.time_to_first_chunk": numpy.float64(0.5)}, 500.0),
    ({"gen_ai.response.time_to_first_chunk": True, "obs.ttft_ms": 40.0}, 40.0),
    ({"gen_ai.response.time_to_first_chunk": float("nan"), "obs.ttft_ms": 40.0}, 40.0),
    ({"gen_ai.response.time_to_first_chunk": float("inf"), "obs.ttft_ms": 7}, 7.0),
    ({"gen_ai.response.time_to_first_chunk": -0.5}, None),
    ({"gen_ai.response.time_to_first_chunk": 100_000.0}, None),  # more than a day
    ({"obs.ttft_ms": "40"}, None),
    ({}, None),
])
def test_time_to_first_token_comes_from_seconds_else_from_obs_milliseconds(
        attributes: dict[str, object], ttft_ms: float | None) -> None:
    call = genai_call(_span({"gen_ai.operation.name": "chat", **attributes}))
    assert call is not None and call.ttft_ms == ttft_ms
    assert ttft_ms is None or type(call.ttft_ms) is float


@pytest.mark.parametrize(("prompt_ms", "predicted_ms", "server_ms"), [
    (12.5, 100.0, 112.5),
    (12, 100, 112.0),
    (12.5, None, None),
    (None, 100.0, None),
    (float("nan"), 100.0, None),
    (50_000_000.0, 50_000_000.0, None),  # the sum is more than a day
    (True, 100.0, None),
])
def test_server_time_needs_both_llama_cpp_timings(
        prompt_ms: object, predicted_ms: object, server_ms: float | None) -> None:
    timings = {"llama_cpp.timings.prompt_ms": prompt_ms, "llama_cpp.timings.predicted_ms": predicted_ms}
    given = {key: value for key, value in timings.items() if value is not None}
    call = genai_call(_span({"gen_ai.operation.name": "chat", **given}))
    assert call is not None and call.server_ms == server_ms
