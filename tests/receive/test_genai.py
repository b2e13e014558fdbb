"""Tests for obs.receive.genai: which received spans count as model calls, and what the collector gets."""

from __future__ import annotations

from dataclasses import replace

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
