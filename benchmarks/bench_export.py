"""Spans per second encoded to OTLP protobuf: obs's `to_otlp` next to OpenTelemetry's `encode_spans`.

Both sides encode the same 512 spans (128 traces of a RAG request: an
internal root, a retrieval, a GenAI client span with 15 attributes and two
events, and a tool call), and the benchmark first checks that the two
messages are equal, so both do the same work. obs starts from its finished
`Trace` values, OpenTelemetry from its `ReadableSpan`s, each what its
exporter is handed. Two rows: the message alone, and the message serialized
to the bytes that go on the wire. The sides run in alternating rounds of one
process; figures are medians of the rounds, in spans per second of CPU time
(so other programs on a busy machine do not favour one side), and the ratio
is the median of the per-round ratios. Goal: at least as fast.

    python -m benchmarks.bench_export
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

import obs
from obs import semconv
from obs.clock import FakeClock
from obs.export import to_otlp
from obs.trace.ids import RandomIdGenerator
from obs.trace.processors import InMemoryExporter, SimpleProcessor
from obs.trace.tracer import Tracer
from obs.trace.traces import Trace

ROUNDS = 15
TRACES = 128
REPEAT = 8  # encodes of the whole batch per timed round
_KINDS = {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT}


def _traces() -> list[Trace]:
    clock = FakeClock()
    exporter = InMemoryExporter()
    tracer = Tracer(processors=[SimpleProcessor(exporter)], clock=clock, id_generator=RandomIdGenerator(),
                    service_name="chat-api")
    for i in range(TRACES):
        with tracer.start_span("rag", {"user.tier": "premium", "obs.request": i}):
            clock.advance(1.5)
            with tracer.start_span("retrieve", {"docs": 3, "scores": [0.9, 0.7, 0.4]}):
                clock.advance(8)
            with tracer.start_span("chat smollm2", kind="client") as llm:
                llm.set_attributes({
                    semconv.GEN_AI_OPERATION_NAME: "chat",
                    semconv.GEN_AI_PROVIDER_NAME: "llama.cpp",
                    semconv.GEN_AI_REQUEST_MODEL: "smollm2",
                    semconv.GEN_AI_REQUEST_TEMPERATURE: 0.7,
                    semconv.GEN_AI_REQUEST_MAX_TOKENS: 256,
                    semconv.GEN_AI_REQUEST_STREAM: True,
                    semconv.GEN_AI_RESPONSE_ID: f"chatcmpl-{i}",
                    semconv.GEN_AI_RESPONSE_MODEL: "smollm2-135m-instruct",
                    semconv.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
                    semconv.GEN_AI_USAGE_INPUT_TOKENS: 412,
                    semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 96,
                    semconv.SERVER_ADDRESS: "127.0.0.1",
                    semconv.SERVER_PORT: 8033,
                    semconv.OBS_LATENCY_MS: 812.25,
                    semconv.OBS_TTFT_MS: 95.5,
                })
                clock.advance(95.5)
                llm.add_event(semconv.EVENT_FIRST_TOKEN, {"obs.ttft_ms": 95.5})
                clock.advance(700)
                llm.add_event(semconv.EVENT_RESPONSE_RECEIVED)
            with tracer.start_span("tool: search", {"tool.name": "search", "query": "weather in Paris"}):
                clock.advance(12)
    tracer.shutdown()
    return exporter.traces


def _ns(ms: float) -> int:
    whole = int(ms)
    return whole * 1_000_000 + round((ms - whole) * 1e6)


def _readable_spans(traces: list[Trace]) -> list[ReadableSpan]:
    """The same spans as OpenTelemetry's SDK hands them to its exporters."""
    resource = Resource({"service.name": "chat-api"})
    scope = InstrumentationScope("obs", obs.__version__)
    out = []
    flags = TraceFlags(TraceFlags.SAMPLED)
    for trace in traces:
        for span in trace.spans:
            trace_id = int(span.trace_id, 16)
            context = SpanContext(trace_id, int(span.id, 16), is_remote=False, trace_flags=flags)
            parent = None if span.parent_id is None else SpanContext(
                trace_id, int(span.parent_id, 16), is_remote=False, trace_flags=flags)
            out.append(ReadableSpan(
                name=span.name, context=context, parent=parent, resource=resource,
                attributes=dict(span.attributes),
                events=[Event(e.name, dict(e.attributes), _ns(e.timestamp)) for e in span.events],
                kind=_KINDS[span.kind], status=Status(StatusCode.OK),
                start_time=_ns(span.start_time), end_time=_ns(span.end_time),  # type: ignore[arg-type]
                instrumentation_scope=scope,
            ))
    return out


def _cpu_per_batch(work: Callable[[], Any]) -> float:
    gc.collect()
    started = time.process_time()
    for _ in range(REPEAT):
        work()
    return (time.process_time() - started) / REPEAT


def main() -> None:
    """Print spans/s for both encoders, message alone and serialized, and their ratios."""
    traces = _traces()
    spans = _readable_spans(traces)
    count = len(spans)
    if to_otlp(traces) != encode_spans(spans):
        raise SystemExit("the two encoders do not make the same message; the comparison would not be fair")
    cases = {
        "message": (lambda: to_otlp(traces), lambda: encode_spans(spans)),
        "serialized": (lambda: to_otlp(traces).SerializeToString(),
                       lambda: encode_spans(spans).SerializeToString()),
    }
    print(f"{count} spans per batch ({TRACES} traces), {ROUNDS} rounds of {REPEAT} batches, CPU time")
    print(f"{'encode':<12}{'obs to_otlp':>18}{'OTel encode_spans':>22}{'obs / OTel':>14}")
    for label, (ours, theirs) in cases.items():
        ours(), theirs()  # warm up
        mine, other, ratios = [], [], []
        for _ in range(ROUNDS):
            a = _cpu_per_batch(ours)
            b = _cpu_per_batch(theirs)
            mine.append(count / a)
            other.append(count / b)
            ratios.append(b / a)
        print(f"{label:<12}{statistics.median(mine):>14,.0f} /s{statistics.median(other):>18,.0f} /s"
              f"{statistics.median(ratios):>13.2f}x")
    print("goal: at least as fast (ratio >= 1.00)")


if __name__ == "__main__":
    main()
