"""Traces shaped like the client's (LLM request spans with GenAI attributes), and what a brute-force
computation over them says the dashboard's queries must answer."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from obs import semconv
from obs.metrics.quantiles import exact_quantile
from obs.trace.spans import Span
from obs.trace.traces import Trace

BASE_MS = 1_700_000_000_000.0
SERVICES = ("chat-app", "batch-job", "obs")
MODELS = ("smollm2", "qwen", "llama")


def request_span(
    trace_id: str, span_id: str, start: float, latency: float, *, parent: str | None = None,
    model: str | None = "smollm2", conversation: str | None = None, error: bool = False,
    inputs: int | None = 10, outputs: int | None = 5, cost: float | None = 0.001, ttft: float | None = None,
    cache: bool = False, question: str | None = None, answer: str | None = None,
    service: str | None = None, response_model: str | None = None,
) -> Span:  # fmt: skip
    """An ended client span as InstrumentedClient records one call."""
    attrs: dict[str, Any] = {
        semconv.GEN_AI_OPERATION_NAME: "chat", semconv.GEN_AI_PROVIDER_NAME: "llama.cpp",
        semconv.OBS_LATENCY_MS: latency, semconv.OBS_CACHE_HIT: cache,
        semconv.LLAMA_CPP_TIMINGS_PROMPT_MS: latency * 0.25,
        semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS: latency * 0.5,
    }  # fmt: skip
    optional = {
        semconv.GEN_AI_REQUEST_MODEL: model, semconv.GEN_AI_RESPONSE_MODEL: response_model,
        semconv.GEN_AI_USAGE_INPUT_TOKENS: inputs, semconv.GEN_AI_USAGE_OUTPUT_TOKENS: outputs,
        semconv.OBS_COST_USD: cost, semconv.OBS_TTFT_MS: ttft, semconv.SERVICE_NAME: service,
    }  # fmt: skip
    attrs.update({k: v for k, v in optional.items() if v is not None})
    if conversation is not None:
        attrs[semconv.GEN_AI_CONVERSATION_ID] = attrs[semconv.SESSION_ID] = conversation
    if question is not None:
        history = [{"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
                   {"role": "user", "parts": [{"type": "text", "content": question}]}]  # fmt: skip
        attrs[semconv.GEN_AI_INPUT_MESSAGES] = json.dumps(history)
    if answer is not None:
        attrs[semconv.GEN_AI_OUTPUT_MESSAGES] = json.dumps([{"role": "assistant", "parts": [
            {"type": "text", "content": answer}]}])  # fmt: skip
    if error:
        attrs[semconv.ERROR_TYPE] = "ServerError"
    return Span(
        id=span_id, trace_id=trace_id, parent_id=parent, name=f"chat {model}", start_time=start,
        end_time=start + latency, duration=latency, status="error" if error else "success",
        attributes=attrs, kind="client",
    )  # fmt: skip


def trace_of(trace_id: str, name: str, spans: Sequence[Span], service: str | None = "obs") -> Trace:
    """An ended trace holding `spans` (its times span theirs; error if one failed)."""
    start = min(s.start_time for s in spans)
    end = max(s.end_time or s.start_time for s in spans)
    metadata = {} if service is None else {semconv.SERVICE_NAME: service}
    status = "error" if any(s.status == "error" for s in spans) else "success"
    return Trace(trace_id, name, start, end, end - start, status, metadata, tuple(spans))


def random_traces(n: int, seed: int = 7, span_ms: float = 3 * 3_600_000.0) -> list[Trace]:
    """`n` traces over `span_ms` after BASE_MS: chats in conversations, turns with child calls, jobs."""
    rng = random.Random(seed)
    traces = []
    for i in range(n):
        trace_id, start = f"{i + 1:032x}", BASE_MS + rng.random() * span_ms
        service = rng.choice(SERVICES)
        conversation = f"conv-{rng.randrange(n // 4 + 1)}" if rng.random() < 0.8 else None
        kind = rng.random()
        common = dict(
            model=rng.choice(MODELS), conversation=conversation, error=rng.random() < 0.1,
            inputs=rng.choice([None, rng.randrange(2000)]), outputs=rng.randrange(500),
            cost=rng.choice([None, 0.0, rng.random() / 100]), ttft=rng.choice([None, rng.random() * 400]),
            cache=rng.random() < 0.2, question=f"question {i} about cats" if rng.random() < 0.5 else None,
            answer=f"answer {i}" if rng.random() < 0.5 else None,
        )  # fmt: skip
        latency = rng.choice([0.0, rng.lognormvariate(6, 1), rng.lognormvariate(6, 1)])
        if kind < 0.6:
            span = request_span(trace_id, f"{2 * i + 1:016x}", start, latency, **common)  # type: ignore[arg-type]
            traces.append(trace_of(trace_id, span.name, [span], service))
        elif kind < 0.9:  # a turn: a root span with the conversation, and the call under it
            root_id = f"{2 * i + 1:016x}"
            call = request_span(trace_id, f"{2 * i + 2:016x}", start + 1.5, latency, parent=root_id, **common)  # type: ignore[arg-type]
            attrs = {} if conversation is None else {semconv.GEN_AI_CONVERSATION_ID: conversation}
            root = Span(root_id, trace_id, None, "turn", start, start + latency + 3.0, latency + 3.0,
                        call.status, attrs)  # fmt: skip
            traces.append(trace_of(trace_id, "turn", [root, call], service))
        else:  # no LLM request at all
            job = Span(f"{2 * i + 1:016x}", trace_id, None, "job", start, start + latency, latency, "success")
            traces.append(trace_of(trace_id, "job", [job], service))
    return traces


@dataclass(frozen=True)
class Request:
    """One request span as the brute force sees it."""

    trace: Trace
    span: Span

    @property
    def attrs(self) -> Any:
        return self.span.attributes

    @property
    def service(self) -> str | None:
        return self.attrs.get(semconv.SERVICE_NAME) or self.trace.metadata.get(semconv.SERVICE_NAME)

    @property
    def model(self) -> str | None:
        return self.attrs.get(semconv.GEN_AI_REQUEST_MODEL) or self.attrs.get(semconv.GEN_AI_RESPONSE_MODEL)

    @property
    def conversation(self) -> str | None:
        return self.attrs.get(semconv.GEN_AI_CONVERSATION_ID) or self.attrs.get(semconv.SESSION_ID)

    @property
    def latency(self) -> float:
        value = self.attrs.get(semconv.OBS_LATENCY_MS)
        return self.span.duration if value is None else value  # type: ignore[return-value]


def requests(
    traces: Iterable[Trace], since: float | None = None, until: float | None = None, *,
    service: str | None = None, model: str | None = None, conversation: Sequence[str] | None = None,
) -> list[Request]:  # fmt: skip
    """The request spans that started in [since, until) (epoch s) within the scope."""
    lo = -math.inf if since is None else since * 1000.0
    hi = math.inf if until is None else until * 1000.0
    found = []
    for trace in traces:
        for span in trace.spans:
            if semconv.GEN_AI_OPERATION_NAME not in span.attributes or not lo <= span.start_time < hi:
                continue
            request = Request(trace, span)
            if service is not None and request.service != service:
                continue
            if model is not None and request.model != model:
                continue
            if conversation is not None and request.conversation not in conversation:
                continue
            found.append(request)
    return found


def sums(found: Sequence[Request]) -> dict[str, Any]:
    """What tiles and buckets sum, computed one request at a time."""
    ttfts = [r.attrs[semconv.OBS_TTFT_MS] for r in found if semconv.OBS_TTFT_MS in r.attrs]
    latencies = [r.latency for r in found]
    return {
        "requests": len(found),
        "errors": sum(r.span.status == "error" for r in found),
        "inputs": sum(r.attrs.get(semconv.GEN_AI_USAGE_INPUT_TOKENS, 0) for r in found),
        "outputs": sum(r.attrs.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, 0) for r in found),
        "cost": sum(r.attrs.get(semconv.OBS_COST_USD, 0.0) for r in found),
        "cache_hits": sum(r.attrs[semconv.OBS_CACHE_HIT] is True for r in found),
        "avg_latency": sum(latencies) / len(latencies) if latencies else 0.0,
        "p50": exact_quantile(latencies, 0.5),
        "p95": exact_quantile(latencies, 0.95),
        "avg_ttft": sum(ttfts) / len(ttfts) if ttfts else 0.0,
        "p95_ttft": exact_quantile(ttfts, 0.95),
        "first": min((r.span.start_time for r in found), default=None),
        "last": max((r.span.start_time for r in found), default=None),
    }
