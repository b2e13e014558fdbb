"""Received spans that describe calls to a model, counted as requests in a MetricsCollector.

A span counts as one request when its `gen_ai.operation.name` is a call to a
model (`chat`, `text_completion`, `generate_content`, `embeddings`), or when
it has no operation name but reports token usage (`gen_ai.usage.*`, the
deprecated `prompt_tokens`/`completion_tokens` names included). Agent and tool
spans (`invoke_agent`, `execute_tool`, ...) are not requests themselves:
the model calls under them are, so their tokens are not counted twice.

What is recorded (`genai_call`): latency = the span's duration; tokens =
`gen_ai.usage.input_tokens` / `output_tokens` (0 when absent or not an int);
error = the span's status is ERROR or it has `error.type`; model =
`gen_ai.response.model`, else `gen_ai.request.model`; time to first token =
`gen_ai.response.time_to_first_chunk` (seconds), else obs's `obs.ttft_ms`;
server time = llama.cpp's `prompt_ms + predicted_ms` when both are there
(for compute prices); cached = obs's `obs.cache_hit`; timestamp = the
span's end. The collector prices the request itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from obs import semconv
from obs.trace.spans import Span
from obs.trace.traces import Trace

__all__ = ["MODEL_OPERATIONS", "GenAICall", "genai_call", "record_genai_spans"]

_log = logging.getLogger(__name__)

MODEL_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
_TOKEN_KEYS = (
    semconv.GEN_AI_USAGE_INPUT_TOKENS, semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
    "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens",  # deprecated names
)
_TOKEN_KEY_SET = frozenset(_TOKEN_KEYS)
_MAX_MS = 86_400_000.0  # the collector's bound for a duration (one day)
_MAX_TOKENS = 10**12


@dataclass(frozen=True, slots=True)
class GenAICall:
    """The numbers one received model call gives `MetricsCollector.record_request`."""

    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    error: bool
    model: str | None
    ttft_ms: float | None
    timestamp: float
    server_ms: float | None
    cached: bool


def _tokens(attributes: dict[str, Any], key: str, old_key: str) -> int:
    value = attributes.get(key, attributes.get(old_key))
    if type(value) is int and 0 <= value <= _MAX_TOKENS:
        return value
    return 0


def _ms(value: Any) -> float | None:
    """A duration in ms as the collector takes it, or None when `value` is not a usable number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value) if 0.0 <= value <= _MAX_MS else None


def genai_call(span: Span) -> GenAICall | None:
    """What the collector should record for `span`, or None when it is not a call to a model."""
    attributes = span.attributes
    operation = attributes.get(semconv.GEN_AI_OPERATION_NAME)
    if operation is None:
        if _TOKEN_KEY_SET.isdisjoint(attributes):
            return None
    elif operation not in MODEL_OPERATIONS:
        return None
    end = span.end_time if span.end_time is not None else span.start_time
    latency = min(max(0.0, end - span.start_time), _MAX_MS)
    model = attributes.get(semconv.GEN_AI_RESPONSE_MODEL) or attributes.get(semconv.GEN_AI_REQUEST_MODEL)
    first_chunk = attributes.get(semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)
    seconds = isinstance(first_chunk, int | float) and not isinstance(first_chunk, bool)
    ttft = _ms(first_chunk * 1000.0) if seconds else None
    if ttft is None:
        ttft = _ms(attributes.get(semconv.OBS_TTFT_MS))
    prompt_ms = _ms(attributes.get(semconv.LLAMA_CPP_TIMINGS_PROMPT_MS))
    predicted_ms = _ms(attributes.get(semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS))
    server = None if prompt_ms is None or predicted_ms is None else _ms(prompt_ms + predicted_ms)
    return GenAICall(
        latency_ms=float(latency),
        prompt_tokens=_tokens(attributes, semconv.GEN_AI_USAGE_INPUT_TOKENS, _TOKEN_KEYS[2]),
        completion_tokens=_tokens(attributes, semconv.GEN_AI_USAGE_OUTPUT_TOKENS, _TOKEN_KEYS[3]),
        error=span.status == "error" or semconv.ERROR_TYPE in attributes,
        model=model if isinstance(model, str) else None,
        ttft_ms=ttft,
        timestamp=end / 1000.0,
        server_ms=server,
        cached=attributes.get(semconv.OBS_CACHE_HIT) is True,
    )


def record_genai_spans(collector: Any, traces: Iterable[Trace]) -> int:
    """Record every model call among the spans of `traces` in `collector`; return how many were recorded.

    A span whose end lies outside what the collector takes (before 2000, or a
    day ahead of its clock) is recorded at the collector's time now. Never
    raises: a call the collector refuses anyway is logged and skipped.
    """
    recorded = 0
    for trace in traces:
        for span in trace.spans:
            call = genai_call(span)
            if call is None:
                continue
            for timestamp in (call.timestamp, None):
                try:
                    collector.record_request(
                        call.latency_ms, call.prompt_tokens, call.completion_tokens, cached=call.cached,
                        error=call.error, model=call.model, ttft_ms=call.ttft_ms, timestamp=timestamp,
                        server_ms=call.server_ms,
                    )
                except ValueError as exc:
                    if timestamp is None:
                        _log.warning("obs: received span %s not counted in the metrics: %s", span.id, exc)
                    continue
                except Exception as exc:
                    _log.warning("obs: received span %s not counted in the metrics: %s: %s",
                                 span.id, type(exc).__name__, exc)
                    break
                recorded += 1
                break
    return recorded
