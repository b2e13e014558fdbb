"""What a trace costs when sampling keeps it and when it drops it.

Each trace is one request as the client records it: a root span with an LLM
child span carrying the usual attributes and three events. The tracer runs
with a bounded in-memory store (and, in one row, a SQLite store) and an exporter
that encodes the trace to JSON as an exporter would. A trace that sampling
drops skips the store and the exporter; the head decision itself is timed apart.
Medians of several runs, per trace, in microseconds.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

from obs import semconv
from obs.storage.memory import TraceStore
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.processors import ExportResult, SimpleProcessor
from obs.trace.sampling.head import AlwaysOff, AlwaysOn, HeadSampler, ParentBased, TraceIdRatio
from obs.trace.sampling.tail import TailSampler
from obs.trace.tracer import Tracer
from obs.trace.traces import Trace

TRACES_PER_RUN = 2000
RUNS = 7

_ATTRIBUTES = {
    semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_CHAT,
    semconv.GEN_AI_PROVIDER_NAME: semconv.PROVIDER_LLAMA_CPP,
    semconv.GEN_AI_REQUEST_MODEL: "smollm2",
    semconv.GEN_AI_REQUEST_TEMPERATURE: 0.7,
    semconv.GEN_AI_REQUEST_MAX_TOKENS: 256,
    semconv.SERVER_ADDRESS: "127.0.0.1",
    semconv.SERVER_PORT: 8080,
}
_RESULT = {
    semconv.GEN_AI_RESPONSE_MODEL: "smollm2",
    semconv.GEN_AI_USAGE_INPUT_TOKENS: 42,
    semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 128,
    semconv.LLAMA_CPP_TIMINGS_PROMPT_MS: 12.5,
    semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS: 812.0,
    semconv.OBS_LATENCY_MS: 850.0,
    semconv.OBS_TTFT_MS: 30.0,
    semconv.OBS_TOKENS_PER_SECOND: 157.6,
    semconv.OBS_COST_USD: 0.0003,
}


class _EncodingExporter:
    """Stands in for a real exporter: every kept trace is encoded once."""

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        for trace in traces:
            json.dumps(trace.to_dict())
        return ExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _encoding() -> list[SimpleProcessor]:
    return [SimpleProcessor(_EncodingExporter())]


def _one_request(tracer: Tracer) -> None:
    with tracer.start_span("chat turn"), tracer.start_span("chat smollm2", _ATTRIBUTES, "client") as span:
        span.add_event(semconv.EVENT_REQUEST_START)
        span.add_event(semconv.EVENT_FIRST_TOKEN)
        span.set_attributes(_RESULT)
        span.add_event(semconv.EVENT_RESPONSE_RECEIVED)


def _per_trace_us(make_tracer: Callable[[], Tracer], traces: int = TRACES_PER_RUN) -> float:
    """Median over RUNS of the time per trace, in microseconds."""
    samples = []
    for _ in range(RUNS):
        tracer = make_tracer()
        gc.collect()
        start = time.perf_counter()
        for _ in range(traces):
            _one_request(tracer)
        samples.append((time.perf_counter() - start) / traces * 1e6)
    return statistics.median(samples)


def _untraced_us(traces: int) -> float:
    """The baseline: the dicts a request builds anyway, with no tracer."""
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        for _ in range(traces):
            attributes = dict(_ATTRIBUTES)
            attributes.update(_RESULT)
        samples.append((time.perf_counter() - start) / traces * 1e6)
    return statistics.median(samples)


def _decision_ns(sampler: HeadSampler, trace_ids: list[str]) -> float:
    samples = []
    for trace_id in trace_ids[:1000]:  # warm up
        sampler.should_sample(trace_id)
    for _ in range(RUNS):
        start = time.perf_counter()
        for trace_id in trace_ids:
            sampler.should_sample(trace_id)
        samples.append((time.perf_counter() - start) / len(trace_ids) * 1e9)
    return statistics.median(samples)


def main() -> None:
    """Print the per-trace cost of kept and dropped traces, and of one head decision."""
    tail = TailSampler(keep_errors=True, slow_threshold_ms=5000)
    with tempfile.TemporaryDirectory() as folder:
        db_path = os.path.join(folder, "traces.db")
        # The SQLite row runs fewer traces: each one is a committed write.
        rows = [
            ("kept (head AlwaysOn), memory store + JSON exporter", TRACES_PER_RUN,
             lambda: Tracer(store=TraceStore(1000), processors=_encoding(), head_sampler=AlwaysOn())),
            ("kept (head AlwaysOn), SQLite store + JSON exporter", TRACES_PER_RUN // 8,
             lambda: Tracer(store=SqliteTraceStore(db_path, max_traces=1000), processors=_encoding(),
                            head_sampler=AlwaysOn())),
            ("dropped by head (AlwaysOff)", TRACES_PER_RUN,
             lambda: Tracer(store=TraceStore(1000), processors=_encoding(), head_sampler=AlwaysOff())),
            ("dropped after tail rules (errors, slow)", TRACES_PER_RUN,
             lambda: Tracer(store=TraceStore(1000), processors=_encoding(), head_sampler=AlwaysOff(),
                            tail_sampler=tail)),
            ("no tracing (the same attribute work, no tracer)", TRACES_PER_RUN, None),
        ]
        results = [
            (label, _per_trace_us(make, count) if make is not None else _untraced_us(count))
            for label, count, make in rows
        ]
    kept_memory = results[0][1]
    print(f"bench_sampling: up to {TRACES_PER_RUN} traces x {RUNS} runs, median us per trace "
          "(2 spans, 16 attributes, 3 events)")
    for label, value in results:
        print(f"  {label:<50} {value:8.1f} us   {value / kept_memory:5.2f}x of kept in memory")
    dropped = results[2][1]
    print(f"  kept in memory / dropped by head: {kept_memory / dropped:.2f}x; "
          f"kept in SQLite / dropped by head: {results[1][1] / dropped:.2f}x")

    ids = [f"{(i * 0x9E3779B97F4A7C15) % (1 << 128):032x}" for i in range(1, 20001)]
    print("head decision, median ns per call:")
    for label, sampler in [
        ("AlwaysOn", AlwaysOn()),
        ("TraceIdRatio(0.1)", TraceIdRatio(0.1)),
        ("ParentBased(TraceIdRatio(0.1))", ParentBased(TraceIdRatio(0.1))),
    ]:
        print(f"  {label:<50} {_decision_ns(sampler, ids):8.0f} ns")


if __name__ == "__main__":
    main()
