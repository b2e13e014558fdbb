"""What one traced request costs with obs, next to the OpenTelemetry Python SDK.

The request has the same shape on both sides: a root span and a child span
with four attributes and two events. On the obs side the finished trace goes
through a `BatchProcessor` into an `InMemoryExporter`; on the OpenTelemetry
side each span goes through a `BatchSpanProcessor` into an
`InMemorySpanExporter`. Both exporters are cleared every thousand traces so
memory stays bounded, and the CPU time counted includes both sides' export
threads. That pair gives the headline ratio. Two more obs rows show where
the time goes: the same request also recorded in a `MetricsCollector` (what
the client adds to every call; OpenTelemetry's side has no metrics), and the
spans alone with no processor. The two
sides run in alternating rounds of one process, and the figures are medians
of the rounds, in microseconds of CPU time per traced request (CPU time of
this process, so other programs on a busy machine do not inflate one side's
round); the headline ratio is the median of the per-round ratios.

    python -m benchmarks.bench_tracing
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from obs import semconv
from obs.metrics.collector import MetricsCollector
from obs.trace.processors import BatchProcessor, InMemoryExporter
from obs.trace.tracer import Tracer

ROUNDS = 15
PER_ROUND = 2000
CLEAR_EVERY = 1000
TARGET_RATIO = 1 / 3

_MODEL = "smollm2"
_LATENCY_MS = 412.5
_PROMPT_TOKENS = 42
_COMPLETION_TOKENS = 17


def _annotate(span: Any) -> None:
    """What both sides write on the child span: four attributes and two events (same method names).

    One function serves both sides, so its call costs each of them alike.
    """
    span.set_attribute(semconv.GEN_AI_REQUEST_MODEL, _MODEL)
    span.set_attribute(semconv.GEN_AI_USAGE_INPUT_TOKENS, _PROMPT_TOKENS)
    span.set_attribute(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, _COMPLETION_TOKENS)
    span.set_attribute(semconv.OBS_LATENCY_MS, _LATENCY_MS)
    span.add_event(semconv.EVENT_REQUEST_START)
    span.add_event(semconv.EVENT_RESPONSE_RECEIVED)


def obs_request() -> tuple[Callable[[], None], Tracer, InMemoryExporter]:
    """One traced request with obs: spans through a BatchProcessor into memory."""
    exporter = InMemoryExporter()
    tracer = Tracer(processors=[BatchProcessor(exporter)])
    start_span = tracer.start_span
    count = 0

    def request() -> None:
        nonlocal count
        with start_span("request"), start_span(f"chat {_MODEL}", kind="client") as span:
            _annotate(span)
        count += 1
        if count % CLEAR_EVERY == 0:
            exporter.clear()

    return request, tracer, exporter


def obs_request_with_metrics() -> tuple[Callable[[], None], Tracer, MetricsCollector]:
    """The same, and the request recorded in a MetricsCollector, as the client records every call."""
    collector = MetricsCollector()
    request, tracer, _ = obs_request()
    record = collector.record_request

    def request_and_record() -> None:
        request()
        record(_LATENCY_MS, _PROMPT_TOKENS, _COMPLETION_TOKENS, model=_MODEL)

    return request_and_record, tracer, collector


def obs_spans_only() -> Callable[[], None]:
    """The same spans with a tracer that has no store and no collector (where the time goes)."""
    start_span = Tracer().start_span

    def request() -> None:
        with start_span("request"), start_span(f"chat {_MODEL}", kind="client") as span:
            _annotate(span)

    return request


def otel_request() -> tuple[Callable[[], None], TracerProvider, InMemorySpanExporter]:
    """The same request with the OpenTelemetry SDK: BatchSpanProcessor into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    start_span = provider.get_tracer("bench").start_as_current_span
    count = 0

    def request() -> None:
        nonlocal count
        with start_span("request"), start_span(f"chat {_MODEL}", kind=SpanKind.CLIENT) as span:
            _annotate(span)
        count += 1
        if count % CLEAR_EVERY == 0:
            exporter.clear()

    return request, provider, exporter


def _time_us(fn: Callable[[], None], n: int) -> float:
    """Microseconds of this process's CPU time per call of `fn`, over `n` calls."""
    gc.collect()
    started = time.process_time_ns()
    for _ in range(n):
        fn()
    return (time.process_time_ns() - started) / n / 1000.0


def _check_shapes(ours_exported: InMemoryExporter, exporter: InMemorySpanExporter) -> str:
    """Say whether both sides recorded the same shape (so the comparison is fair)."""
    trace = ours_exported.traces[-1]
    child = trace.spans[1]
    ours = (len(trace.spans), len(child.attributes), len(child.events))
    spans = exporter.get_finished_spans()
    theirs_child = spans[-2]  # the child ends first
    theirs = (2, len(theirs_child.attributes or {}), len(theirs_child.events))
    same = "same" if ours == theirs else "DIFFERENT"
    return f"shape per request (spans, child attributes, child events): obs {ours}, OTel {theirs}: {same}"


def run(rounds: int = ROUNDS, per_round: int = PER_ROUND) -> dict[str, list[float]]:
    """Time every variant in alternating rounds; return microseconds per request, per round."""
    ours, tracer, ours_exported = obs_request()
    with_metrics, metrics_tracer, collector = obs_request_with_metrics()
    spans_only = obs_spans_only()
    theirs, provider, exporter = otel_request()
    # obs and OpenTelemetry stay neighbours in either order, so each round pairs them closely.
    variants = {
        "obs": ours, "OpenTelemetry SDK": theirs, "obs + metrics": with_metrics, "obs spans only": spans_only,
    }
    for fn in variants.values():  # warm up caches, allocators and the metrics sketch
        _time_us(fn, per_round // 4)
    results: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for index in range(rounds):
        # Alternate the order so neither side always runs right after a collection by the other.
        for name in order if index % 2 == 0 else reversed(order):
            results[name].append(_time_us(variants[name], per_round))
    tracer.force_flush()
    provider.force_flush()
    print(_check_shapes(ours_exported, exporter))
    recorded = collector.get_metrics().request_count
    (processor,) = tracer.processors
    print(f"obs batch processor: {processor.stats()}; metrics recorded: {recorded} requests")
    for done in (tracer, metrics_tracer, provider):
        done.shutdown()
    return results


def main() -> None:
    """Print the per-request medians, the spread, and the ratio against the target."""
    print(
        f"one traced request: root + child span, 4 attributes, 2 events; "
        f"{ROUNDS} alternating rounds of {PER_ROUND} requests, medians"
    )
    results = run()
    width = max(len(name) for name in results)
    for name, values in results.items():
        print(
            f"  {name:<{width}}  {statistics.median(values):8.2f} µs CPU per request"
            f"   (min {min(values):.2f}, max {max(values):.2f})"
        )
    ours = statistics.median(results["obs"])
    theirs = statistics.median(results["OpenTelemetry SDK"])
    # Each round's two figures were taken back to back, so their ratio cancels most of the drift
    # of a busy machine; the median of those ratios is the headline figure.
    pairs = zip(results["obs"], results["OpenTelemetry SDK"], strict=True)
    ratio = statistics.median(o / t for o, t in pairs)
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(
        f"  ratio obs / OpenTelemetry = {ratio:.3f} (median of per-round ratios; "
        f"ratio of medians {ours / theirs:.3f}); target <= one third: {verdict}"
    )
    print(f"  OpenTelemetry takes {theirs / ours:.1f}x the time obs takes for the same request")
    pairs = zip(results["obs + metrics"], results["OpenTelemetry SDK"], strict=True)
    print(
        f"  with the request also recorded in the metrics: {statistics.median(o / t for o, t in pairs):.3f}"
        " of OpenTelemetry's tracing alone"
    )


if __name__ == "__main__":
    main()
