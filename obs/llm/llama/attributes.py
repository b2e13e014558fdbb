"""Span attributes of one chat request, computed from plain values.

Pure functions: the InstrumentedClient hands in the request body, the parsed
answer and the times it measured, and gets back the attribute dicts it puts
on the span (OpenTelemetry GenAI names plus llama.cpp timings and obs's own
derived numbers). Message content is clipped to a `ContentBudget` when one
is given, keeping the JSON valid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from obs import semconv
from obs._validate import is_finite_number
from obs.llm.llama.props import ServerProps
from obs.llm.llama.responses import ChatCompletion, Timings
from obs.metrics.quantiles import exact_quantile

__all__ = [
    "ContentBudget",
    "derived_attributes",
    "input_messages_json",
    "inter_token_stats",
    "output_messages_json",
    "request_attributes",
    "response_attributes",
    "timings_attributes",
]

# Request body key -> GenAI attribute; types are checked so a bad value never lands on a span.
_NUMBER_PARAMS = {
    "temperature": semconv.GEN_AI_REQUEST_TEMPERATURE,
    "top_p": semconv.GEN_AI_REQUEST_TOP_P,
    "frequency_penalty": semconv.GEN_AI_REQUEST_FREQUENCY_PENALTY,
    "presence_penalty": semconv.GEN_AI_REQUEST_PRESENCE_PENALTY,
}
_INT_PARAMS = {
    "top_k": semconv.GEN_AI_REQUEST_TOP_K,
    "seed": semconv.GEN_AI_REQUEST_SEED,
    "max_tokens": semconv.GEN_AI_REQUEST_MAX_TOKENS,
    "max_completion_tokens": semconv.GEN_AI_REQUEST_MAX_TOKENS,
    "n_predict": semconv.GEN_AI_REQUEST_MAX_TOKENS,
}


def request_attributes(
    body: Mapping[str, Any],
    *,
    model: str | None,
    server_address: str | None,
    server_port: int | None,
    props: ServerProps | None = None,
    stream: bool = False,
    operation: str = semconv.OPERATION_CHAT,
) -> dict[str, Any]:
    """The attributes known before the request is sent: operation, provider, model, parameters, server."""
    attrs: dict[str, Any] = {
        semconv.GEN_AI_OPERATION_NAME: operation,
        semconv.GEN_AI_PROVIDER_NAME: semconv.PROVIDER_LLAMA_CPP,
    }
    if model:
        attrs[semconv.GEN_AI_REQUEST_MODEL] = model
    for key, attr in _NUMBER_PARAMS.items():
        value = body.get(key)
        if is_finite_number(value):
            attrs[attr] = float(value)
    for key, attr in _INT_PARAMS.items():
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            attrs[attr] = value
    stop = body.get("stop")
    if isinstance(stop, str):
        attrs[semconv.GEN_AI_REQUEST_STOP_SEQUENCES] = [stop]
    elif isinstance(stop, list | tuple) and all(isinstance(s, str) for s in stop):
        attrs[semconv.GEN_AI_REQUEST_STOP_SEQUENCES] = list(stop)
    if stream:
        attrs[semconv.GEN_AI_REQUEST_STREAM] = True
    if server_address:
        attrs[semconv.SERVER_ADDRESS] = server_address
    if server_port is not None:
        attrs[semconv.SERVER_PORT] = server_port
    if props is not None:
        if props.n_ctx is not None:
            attrs[semconv.LLAMA_CPP_N_CTX] = props.n_ctx
        if props.build:
            attrs[semconv.LLAMA_CPP_BUILD] = props.build
        if props.model_path:
            attrs[semconv.LLAMA_CPP_MODEL_PATH] = props.model_path
    return attrs


class ContentBudget:
    """How much message content one attribute may still take; notes whether any was cut.

    Each message and part also costs a few characters, so a history of many
    empty messages is bounded too.
    """

    __slots__ = ("left", "truncated")

    _PER_ITEM = 16

    def __init__(self, max_chars: int) -> None:
        """Allow `max_chars` characters in all."""
        self.left = max_chars
        self.truncated = False

    def take(self, text: str) -> str:
        """As much of `text` as the budget allows (all of it, or its start)."""
        if len(text) <= self.left:
            self.left -= len(text)
            return text
        self.truncated = True
        kept = text[: self.left]
        self.left = 0
        return kept

    def item(self) -> bool:
        """Charge one message or part; False (and truncated) once nothing is left for it."""
        if self.left < self._PER_ITEM:
            self.truncated = True
            self.left = 0
            return False
        self.left -= self._PER_ITEM
        return True


def _parts(content: Any, budget: ContentBudget | None) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    elif not isinstance(content, list):
        content = [{"type": "text", "text": str(content)}]
    parts = []
    for part in content:
        if not isinstance(part, Mapping):
            continue
        if budget is not None and not budget.item():
            break
        if part.get("type") == "text":
            text = str(part.get("text", ""))
            parts.append({"type": "text", "content": budget.take(text) if budget is not None else text})
        else:
            parts.append({"type": str(part.get("type", "unknown"))})
    return parts


def input_messages_json(
    messages: Sequence[Mapping[str, Any]], budget: ContentBudget | None = None
) -> str:
    """`gen_ai.input.messages`: the chat history in GenAI's JSON shape (role + typed parts).

    With a `budget`, message texts past it are cut and later messages left out.
    """
    shaped = []
    for m in messages:
        if budget is not None and not budget.item():
            break
        shaped.append({"role": str(m.get("role", "user")), "parts": _parts(m.get("content"), budget)})
    return json.dumps(shaped, ensure_ascii=False)


def output_messages_json(
    content: str, finish_reason: str | None, role: str = "assistant", budget: ContentBudget | None = None
) -> str:
    """`gen_ai.output.messages`: the answer in GenAI's JSON shape, its text cut to the `budget` if given."""
    message: dict[str, Any] = {"role": role, "parts": _parts(content, budget)}
    if finish_reason:
        message["finish_reason"] = finish_reason
    return json.dumps([message], ensure_ascii=False)


def timings_attributes(timings: Timings | None) -> dict[str, Any]:
    """llama.cpp's timings under the `llama_cpp.` prefix, with the cache ratio and draft acceptance."""
    if timings is None:
        return {}
    attrs: dict[str, Any] = {
        semconv.LLAMA_CPP_TIMINGS_PROMPT_N: timings.prompt_n,
        semconv.LLAMA_CPP_TIMINGS_PROMPT_MS: timings.prompt_ms,
        semconv.LLAMA_CPP_TIMINGS_PREDICTED_N: timings.predicted_n,
        semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS: timings.predicted_ms,
    }
    optional = (
        (semconv.LLAMA_CPP_TIMINGS_PROMPT_PER_SECOND, timings.prompt_per_second),
        (semconv.LLAMA_CPP_TIMINGS_PREDICTED_PER_SECOND, timings.predicted_per_second),
        (semconv.LLAMA_CPP_TIMINGS_CACHE_N, timings.cache_n),
        (semconv.LLAMA_CPP_TIMINGS_DRAFT_N, timings.draft_n),
        (semconv.LLAMA_CPP_TIMINGS_DRAFT_N_ACCEPTED, timings.draft_n_accepted),
        (semconv.LLAMA_CPP_PROMPT_CACHE_RATIO, timings.prompt_cache_ratio),
        (semconv.LLAMA_CPP_DRAFT_ACCEPTANCE_RATE, timings.draft_acceptance_rate),
    )
    for key, value in optional:
        if value is not None:
            attrs[key] = value
    return attrs


def response_attributes(response: ChatCompletion) -> dict[str, Any]:
    """Response id, model, finish reasons, token usage and timings of a finished answer."""
    attrs: dict[str, Any] = {}
    if response.id:
        attrs[semconv.GEN_AI_RESPONSE_ID] = response.id
    if response.model:
        attrs[semconv.GEN_AI_RESPONSE_MODEL] = response.model
    if response.finish_reasons:
        attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = list(response.finish_reasons)
    usage = response.usage
    if usage is not None:
        # A count the server sent out of range is unknown: left off, and the fields named.
        if "prompt_tokens" not in usage.invalid:
            attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] = usage.prompt_tokens
        if "completion_tokens" not in usage.invalid:
            attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.completion_tokens
        if usage.invalid:
            attrs[semconv.OBS_USAGE_INVALID] = list(usage.invalid)
    cached = usage.cached_tokens if usage is not None else None
    if cached is None and response.timings is not None:
        cached = response.timings.cache_n
    if cached is not None:
        attrs[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = cached
    attrs.update(timings_attributes(response.timings))
    return attrs


def inter_token_stats(gaps_ms: Sequence[float]) -> tuple[float, float, float] | None:
    """(mean, p50, p95) of the gaps between streamed tokens in ms; None with no gap.

    The percentiles are nearest-rank values, as everywhere in obs (`obs.metrics.quantiles`).
    """
    if not gaps_ms:
        return None
    return sum(gaps_ms) / len(gaps_ms), exact_quantile(gaps_ms, 0.5), exact_quantile(gaps_ms, 0.95)


def derived_attributes(
    latency_ms: float,
    completion_tokens: int | None,
    timings: Timings | None = None,
    *,
    ttft_ms: float | None = None,
    first_chunk_ms: float | None = None,
    gaps_ms: Sequence[float] = (),
) -> dict[str, Any]:
    """obs's own numbers: latency, tokens/s, time not spent in the model, TTFT and inter-token gaps.

    Tokens per second are output tokens over the whole client latency; the
    non-model time is the latency minus llama.cpp's prompt and generation
    times (queueing, HTTP and parsing), floored at 0.
    """
    attrs: dict[str, Any] = {semconv.OBS_LATENCY_MS: latency_ms}
    if completion_tokens is not None and latency_ms > 0:
        attrs[semconv.OBS_TOKENS_PER_SECOND] = completion_tokens / (latency_ms / 1000.0)
    if timings is not None:
        attrs[semconv.OBS_NON_MODEL_MS] = max(0.0, latency_ms - timings.model_ms)
    if ttft_ms is not None:
        attrs[semconv.OBS_TTFT_MS] = ttft_ms
    if first_chunk_ms is not None:
        attrs[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = first_chunk_ms / 1000.0
    stats = inter_token_stats(gaps_ms)
    if stats is not None:
        attrs[semconv.OBS_INTER_TOKEN_MEAN_MS] = stats[0]
        attrs[semconv.OBS_INTER_TOKEN_P50_MS] = stats[1]
        attrs[semconv.OBS_INTER_TOKEN_P95_MS] = stats[2]
    return attrs
