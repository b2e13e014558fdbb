"""Received spans that describe calls to a model, counted as requests in a MetricsCollector.

A span counts as one request when its `gen_ai.operation.name` is a call to a
model (`chat`, `text_completion`, `generate_content`, `embeddings`), or when
it has no operation name but reports token usage (`gen_ai.usage.*`, the
deprecated `prompt_tokens`/`completion_tokens` names included). Agent and tool
spans (`invoke_agent`, `execute_tool`, ...) are not requests themselves:
the model calls under them are, so their tokens are not counted twice; nor is
a span whose operation name is not text (a list, say).

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


_OPERATION = semconv.GEN_AI_OPERATION_NAME
_INPUT, _OUTPUT, _OLD_INPUT, _OLD_OUTPUT = _TOKEN_KEYS
# A span with none of these keys is not a model call: one C-level test for most received spans.
_CALL_KEYS = _TOKEN_KEY_SET | {_OPERATION}
_ABSENT = object()


def _ms(value: Any) -> float | None:
    """A duration in ms as the collector takes it, or None when `value` is not a usable number."""
    if type(value) is float:  # the usual case, decided without the general checks
        return value if 0.0 <= value <= _MAX_MS else None
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value):
        return None
    return float(value) if 0.0 <= value <= _MAX_MS else None


# latency, tokens in and out, cached, error, model, time to first token, timestamp, server time
_Arguments = tuple[float, int, int, bool, bool, str | None, float | None, float, float | None]


def _arguments(span: Span) -> _Arguments | None:
    """What `record_request` takes for `span`, or None when the span is not a call to a model."""
    attributes = span.attributes
    get = attributes.get
    operation = get(_OPERATION)
    if operation is None:
        if _TOKEN_KEY_SET.isdisjoint(attributes):
            return None
    # Only text can name an operation (a list there must not make the membership test raise).
    elif not isinstance(operation, str) or operation not in MODEL_OPERATIONS:
        return None
    start = span.start_time
    end = span.end_time if span.end_time is not None else start
    latency = end - start  # clamped to [0, _MAX_MS] as min(max(0.0, latency), _MAX_MS) would, NaN to 0
    if not latency > 0.0:
        latency = 0.0
    elif latency > _MAX_MS:
        latency = _MAX_MS
    model = get(semconv.GEN_AI_RESPONSE_MODEL) or get(semconv.GEN_AI_REQUEST_MODEL)
    first_chunk = get(semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)
    ttft = None
    if type(first_chunk) is float:  # what _ms would say, without the call
        ttft = first_chunk * 1000.0
        if not 0.0 <= ttft <= _MAX_MS:
            ttft = None
    elif isinstance(first_chunk, int | float) and not isinstance(first_chunk, bool):
        ttft = _ms(first_chunk * 1000.0)
    if ttft is None:
        ttft = _ms(get(semconv.OBS_TTFT_MS))
    server = None
    prompt_ms = get(semconv.LLAMA_CPP_TIMINGS_PROMPT_MS)
    if prompt_ms is not None:
        prompt_ms = _ms(prompt_ms)
        predicted_ms = _ms(get(semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS))
        if prompt_ms is not None and predicted_ms is not None:
            server = _ms(prompt_ms + predicted_ms)
    # A token count is an int in the collector's range, else 0; the current key wins when present.
    prompt = get(_INPUT, _ABSENT)
    if prompt is _ABSENT:
        prompt = get(_OLD_INPUT)
    if type(prompt) is not int or not 0 <= prompt <= _MAX_TOKENS:
        prompt = 0
    completion = get(_OUTPUT, _ABSENT)
    if completion is _ABSENT:
        completion = get(_OLD_OUTPUT)
    if type(completion) is not int or not 0 <= completion <= _MAX_TOKENS:
        completion = 0
    return (
        float(latency), prompt, completion, get(semconv.OBS_CACHE_HIT) is True,
        span.status == "error" or semconv.ERROR_TYPE in attributes, model if isinstance(model, str) else None,
        ttft, end / 1000.0, server,
    )


def genai_call(span: Span) -> GenAICall | None:
    """What the collector should record for `span`, or None when it is not a call to a model."""
    arguments = _arguments(span)
    if arguments is None:
        return None
    latency, prompt, completion, cached, error, model, ttft, timestamp, server = arguments
    return GenAICall(latency_ms=latency, prompt_tokens=prompt, completion_tokens=completion, error=error,
                     model=model, ttft_ms=ttft, timestamp=timestamp, server_ms=server, cached=cached)


def record_genai_spans(collector: Any, traces: Iterable[Trace]) -> int:
    """Record every model call among the spans of `traces` in `collector`; return how many were recorded.

    A span whose end lies outside what the collector takes (before 2000, or a
    day ahead of its clock) is recorded at the collector's time now. Never
    raises: a call the collector refuses anyway is logged and skipped.
    """
    recorded = 0
    for trace in traces:
        for span in trace.spans:
            if _CALL_KEYS.isdisjoint(span.attributes):
                continue
            arguments = _arguments(span)
            if arguments is None:
                continue
            latency, prompt, completion, cached, error, model, ttft, at, server = arguments
            for timestamp in (at, None):
                try:
                    collector.record_request(
                        latency, prompt, completion, cached=cached, error=error, model=model, ttft_ms=ttft,
                        timestamp=timestamp, server_ms=server,
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
