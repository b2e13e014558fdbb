"""Traces for the export tests, made by obs's Tracer, and the same spans made by OpenTelemetry's SDK.

`sample_traces()` records a few traces with a fake clock and counting ids:
a RAG request (an internal root, a retrieval, a streamed GenAI client span
with events and every attribute type), a failed call, a trace continuing
a remote `traceparent`, and one from a second service. `otel_spans(traces)`
replays those spans through OpenTelemetry's SDK (TracerProvider, Tracer,
SimpleSpanProcessor, InMemorySpanExporter) with the same ids, times,
attributes, events, kinds and statuses, so both encoders get the same spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

import obs
from obs import semconv
from obs.clock import FakeClock
from obs.trace.ids import SequentialIdGenerator, parse_traceparent
from obs.trace.processors import InMemoryExporter, SimpleProcessor
from obs.trace.tracer import Tracer
from obs.trace.traces import Trace

REMOTE_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
LONG_TEXT = "x" * 300  # longer than the 128 characters OpenTelemetry's Zipkin encoder keeps

_KINDS = {
    "internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT, "server": SpanKind.SERVER,
    "producer": SpanKind.PRODUCER, "consumer": SpanKind.CONSUMER,
}


def _tracer(service: str, clock: FakeClock, ids: SequentialIdGenerator) -> tuple[Tracer, InMemoryExporter]:
    exporter = InMemoryExporter()
    return Tracer(processors=[SimpleProcessor(exporter)], clock=clock, id_generator=ids,
                  service_name=service), exporter


def sample_traces() -> list[Trace]:
    """Four finished traces from two services (see the module docstring); times on exact binary fractions."""
    clock = FakeClock(start_ms=1_700_000_000_123.0)
    ids = SequentialIdGenerator()
    tracer, exporter = _tracer("chat-api", clock, ids)
    with tracer.start_span("rag", {"user.tier": "premium"}):
        clock.advance(2.5)
        with tracer.start_span("retrieve", {"docs": 3, "scores": [0.5, 0.25]}):
            clock.advance(10)
        with tracer.start_span("chat smollm2", kind="client") as llm:
            llm.set_attributes({
                semconv.GEN_AI_OPERATION_NAME: "chat",
                semconv.GEN_AI_PROVIDER_NAME: "llama.cpp",
                semconv.GEN_AI_REQUEST_MODEL: "smollm2",
                semconv.GEN_AI_REQUEST_TEMPERATURE: 0.75,
                semconv.GEN_AI_REQUEST_STREAM: True,
                semconv.GEN_AI_REQUEST_STOP_SEQUENCES: ["\n\n", "END"],
                semconv.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
                semconv.GEN_AI_USAGE_INPUT_TOKENS: 42,
                semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 17,
                "obs.flags": [True, False],
                "obs.token_ids": [1, 2, 3],
                "obs.empty": [],
                "obs.raw": b"\x00\xffbytes",
                "obs.big": 2**62,
                "obs.negative": -7,
                "obs.long_text": LONG_TEXT,
                "obs.long_list": ["y" * 60, "z" * 60, "w" * 60],
            })
            clock.advance(40)
            llm.add_event(semconv.EVENT_FIRST_TOKEN, {"obs.ttft_ms": 40.0, "note": LONG_TEXT})
            clock.advance(60.25)
            llm.add_event(semconv.EVENT_RESPONSE_RECEIVED)
        clock.advance(1)
    with tracer.start_span("chat smollm2", {semconv.GEN_AI_OPERATION_NAME: "chat"}, kind="client") as failing:
        clock.advance(5)
        failing.record_error("model overloaded")
        clock.advance(0.5)
    remote = parse_traceparent(REMOTE_TRACEPARENT)
    with tracer.start_span("handle request", {"http.route": "/chat"}, kind="server", parent=remote):
        clock.advance(3)
        with tracer.start_span("publish", kind="producer"):
            clock.advance(1)
        with tracer.start_span("consume", kind="consumer"):
            clock.advance(1)
    other, other_exporter = _tracer("Billing", clock, ids)
    with other.start_span("charge", {"amount.usd": 0.002}):
        clock.advance(7)
    return [*exporter.traces, *other_exporter.traces]


class _FixedIds(IdGenerator):
    """Hands out the ids the test sets next, as OpenTelemetry's id generators are asked for them."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


def _ns(ms: float) -> int:
    whole = int(ms)
    return whole * 1_000_000 + round((ms - whole) * 1e6)


def otel_spans(traces: Sequence[Trace]) -> list[ReadableSpan]:
    """The spans of `traces` made again by OpenTelemetry's SDK, in the same order (see the docstring)."""
    finished: list[ReadableSpan] = []
    for trace in traces:
        ids = _FixedIds()
        exporter = InMemorySpanExporter()
        provider = TracerProvider(
            resource=Resource({"service.name": trace.metadata["service.name"]}), id_generator=ids
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("obs", obs.__version__)
        live: dict[str, Any] = {}
        for span in trace.spans:
            if span.parent_id in live:
                context = otel_trace.set_span_in_context(live[span.parent_id])
            elif span.parent_id is not None:
                remote = SpanContext(int(span.trace_id, 16), int(span.parent_id, 16), is_remote=True,
                                     trace_flags=TraceFlags(TraceFlags.SAMPLED))
                context = otel_trace.set_span_in_context(NonRecordingSpan(remote))
            else:
                context = Context()
            ids.trace_id, ids.span_id = int(span.trace_id, 16), int(span.id, 16)
            handle = tracer.start_span(span.name, context=context, kind=_KINDS[span.kind],
                                       attributes=dict(span.attributes), start_time=_ns(span.start_time))
            for event in span.events:
                handle.add_event(event.name, dict(event.attributes), timestamp=_ns(event.timestamp))
            if span.status == "error":
                handle.set_status(Status(StatusCode.ERROR, span.attributes.get(semconv.ERROR_MESSAGE)))
            else:
                handle.set_status(Status(StatusCode.OK))
            live[span.id] = handle
        for span in trace.spans:
            live[span.id].end(end_time=_ns(span.end_time))
        by_id = {format(s.context.span_id, "016x"): s for s in exporter.get_finished_spans()}
        finished += [by_id[span.id] for span in trace.spans]
        provider.shutdown()
    return finished
