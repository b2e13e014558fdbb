"""The SQLite file: how fast traces go in, and how fast the dashboard's queries come back.

Writes: traces per second into the in-memory `TraceStore`, into
`SqliteTraceStore.add` (one transaction per trace) and through
`SqliteExporter.export` in batches of 512 (one transaction per batch: what
`obs.config.configure` and a `BatchProcessor` do), side by side, in
interleaved rounds. Each trace is a chat turn: a root span and an LLM call
span with the client's attributes and three events.

Reads: a file of 100,000 traces (7 days at about 10 a minute, the default
retention's worth; three services, three models, conversations of about five
turns, one trace in five a turn with two spans, 100,000 log entries), and
each dashboard query on it, the median of several runs against the 50 ms goal.
"""

from __future__ import annotations

import gc
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from obs import semconv
from obs.logs import LogEntry
from obs.storage.exporter import SqliteExporter
from obs.storage.memory import TraceStore
from obs.storage.queries import DashboardQueries
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.spans import Span, SpanEvent
from obs.trace.traces import Trace

WRITE_TRACES = 2048
WRITE_ROUNDS = 5
STORED = 100_000
QUERY_RUNS = 9
GOAL_MS = 50.0
DAY_MS = 86_400_000.0
SERVICES = ("chat-app", "rag-service", "batch")
MODELS = ("smollm2", "qwen2.5-0.5b", "llama-3.2-1b")


def _trace(i: int, start: float, rng: random.Random, conversation: str) -> Trace:
    trace_id = f"{i + 1:032x}"
    latency = rng.lognormvariate(6.5, 0.8)
    ttft = latency * 0.1
    model = MODELS[i % 3]
    error = rng.random() < 0.03
    attrs: dict[str, Any] = {
        semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_CHAT,
        semconv.GEN_AI_PROVIDER_NAME: semconv.PROVIDER_LLAMA_CPP,
        semconv.GEN_AI_REQUEST_MODEL: model,
        semconv.GEN_AI_RESPONSE_MODEL: model,
        semconv.GEN_AI_REQUEST_MAX_TOKENS: 256,
        semconv.SERVER_ADDRESS: "127.0.0.1",
        semconv.SERVER_PORT: 8033,
        semconv.GEN_AI_USAGE_INPUT_TOKENS: rng.randrange(20, 2000),
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS: rng.randrange(1, 400),
        semconv.LLAMA_CPP_TIMINGS_PROMPT_MS: latency * 0.2,
        semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS: latency * 0.7,
        semconv.OBS_LATENCY_MS: latency,
        semconv.OBS_TTFT_MS: ttft,
        semconv.OBS_COST_USD: latency * 2.5e-7,
        semconv.OBS_CACHE_HIT: rng.random() < 0.1,
        semconv.GEN_AI_CONVERSATION_ID: conversation,
        semconv.SESSION_ID: conversation,
    }
    events = (
        SpanEvent(semconv.EVENT_REQUEST_START, start + 1.0),
        SpanEvent(semconv.EVENT_FIRST_TOKEN, start + 1.0 + ttft),
        SpanEvent(semconv.EVENT_RESPONSE_RECEIVED, start + 1.0 + latency),
    )
    status = "error" if error else "success"
    call = Span(f"{2 * i + 2:016x}", trace_id, f"{2 * i + 1:016x}", f"chat {model}", start + 1.0,
                start + 1.0 + latency, latency, status, attrs, events, "client")  # fmt: skip
    spans: tuple[Span, ...]
    if i % 5 == 0:  # a turn: a root span with the call under it
        root = Span(f"{2 * i + 1:016x}", trace_id, None, "turn", start, start + latency + 2.0, latency + 2.0,
                    status, {semconv.GEN_AI_CONVERSATION_ID: conversation})  # fmt: skip
        spans = (root, call)
    else:
        alone = Span(call.id, trace_id, None, call.name, start, start + latency, latency, status, attrs,
                     events, "client")  # fmt: skip
        spans = (alone,)
    end = max(s.end_time for s in spans)  # type: ignore[type-var]
    return Trace(trace_id, spans[0].name, start, end, end - start, status,
                 {semconv.SERVICE_NAME: SERVICES[i % 3]}, spans)  # fmt: skip


def _traces(n: int, now_ms: float, span_ms: float, seed: int = 11) -> list[Trace]:
    rng = random.Random(seed)
    starts = sorted(now_ms - rng.random() * span_ms for _ in range(n))
    return [_trace(i, start, rng, f"conv-{i // 5}") for i, start in enumerate(starts)]


# -- writes ---------------------------------------------------------------------------------------


def _into_memory(traces: list[Trace], folder: Path, round_: int) -> None:
    memory = TraceStore(max_traces=WRITE_TRACES)
    for trace in traces:
        memory.add(trace)


def _one_by_one(traces: list[Trace], folder: Path, round_: int) -> None:
    with SqliteTraceStore(folder / f"add{round_}.db") as store:
        for trace in traces:
            store.add(trace)


def _in_batches(traces: list[Trace], folder: Path, round_: int) -> None:
    exporter = SqliteExporter(folder / f"export{round_}.db")
    for i in range(0, len(traces), 512):
        exporter.export(traces[i : i + 512])
    exporter.shutdown()


_WRITERS: dict[str, Callable[[list[Trace], Path, int], None]] = {
    "in-memory TraceStore.add": _into_memory,
    "SqliteTraceStore.add (1 transaction each)": _one_by_one,
    "SqliteExporter.export, batches of 512": _in_batches,
}


def _writes(folder: Path) -> None:
    now = time.time() * 1000.0
    rows: dict[str, list[float]] = {name: [] for name in _WRITERS}
    for round_ in range(WRITE_ROUNDS):
        traces = _traces(WRITE_TRACES, now, 3_600_000.0, seed=round_)
        for name, write in _WRITERS.items():
            gc.collect()
            started = time.perf_counter()
            write(traces, folder, round_)
            rows[name].append(len(traces) / (time.perf_counter() - started))
    memory_rate = statistics.median(rows["in-memory TraceStore.add"])
    print(f"writes: {WRITE_TRACES} traces (2-span turns and 1-span calls), median of {WRITE_ROUNDS} rounds")
    for name, rates in rows.items():
        rate = statistics.median(rates)
        print(f"  {name:44s} {rate:>10,.0f} traces/s  ({rate / memory_rate:.3f}x in-memory)")


# -- reads ----------------------------------------------------------------------------------------


def _build(path: Path, now_ms: float) -> None:
    traces = _traces(STORED, now_ms, 7 * DAY_MS - 60_000.0)
    started = time.perf_counter()
    with SqliteTraceStore(path) as store:
        for i in range(0, STORED, 1000):
            store.add_many(traces[i : i + 1000])
        rng = random.Random(5)
        for i in range(0, STORED, 5000):
            levels = ("info", "info", "warn", "error")
            store.add_logs(
                LogEntry(now_ms - rng.random() * 7 * DAY_MS, rng.choice(levels),
                         f"chat {MODELS[j % 3]} finished", {"latency_ms": rng.random() * 900},
                         f"{j + 1:032x}")
                for j in range(i, i + 5000)
            )  # fmt: skip
        info = store.file_info()
    print(f"\nreads: {info.trace_count:,} traces ({info.request_count:,} requests), "
          f"{info.log_count:,} log entries, {info.size_bytes / 2**20:.0f} MB, "
          f"written in {time.perf_counter() - started:.0f} s")  # fmt: skip


def _median_ms(query: Callable[[], Any]) -> float:
    query()  # warm the page cache and the connection
    times = []
    for _ in range(QUERY_RUNS):
        started = time.perf_counter()
        query()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def _reads(path: Path, now_ms: float) -> None:
    with SqliteTraceStore(path) as store:
        q = DashboardQueries(store)
        now = now_ms / 1000.0
        minutes15, hour, day, week = now - 900, now - 3600, now - 86400, now - 7 * 86400
        some = q.sessions(limit=1).items[0].conversation_id
        queries: list[tuple[str, Callable[[], Any]]] = [
            ("tiles, last 15 min", lambda: q.tiles(minutes15)),
            ("tiles, last 24 h", lambda: q.tiles(day)),
            ("tiles, all (7 days)", lambda: q.tiles()),
            ("tiles, all, one service", lambda: q.tiles(service="rag-service")),
            ("tiles, all, one model", lambda: q.tiles(model="qwen2.5-0.5b")),
            ("tiles, one conversation", lambda: q.tiles(conversation=some)),
            ("series, 1 s buckets, last 15 min", lambda: q.series(1, minutes15)),
            ("series, 60 s buckets, last 1 h", lambda: q.series(60, hour)),
            ("series, 60 s buckets, last 24 h", lambda: q.series(60, day)),
            ("series, 3600 s buckets, 7 days", lambda: q.series(3600, week)),
            ("series, 60 s, 24 h, one model", lambda: q.series(60, day, model="smollm2")),
            ("latency histogram, last 24 h", lambda: q.latency_histogram(day)),
            ("latency histogram, all", lambda: q.latency_histogram()),
            ("traces, first page (50)", lambda: q.traces(limit=50)),
            ("traces, first page, errors only", lambda: q.traces(limit=50, status="error")),
            ("traces, first page, text 'turn'", lambda: q.traces(limit=50, text="turn")),
            ("traces, page 20 (offset 950)", lambda: q.traces(limit=50, offset=950)),
            ("one trace, whole", lambda: q.trace(f"{STORED // 2:032x}")),
            ("sessions, first page (50)", lambda: q.sessions(limit=50)),
            ("sessions, first page, one model", lambda: q.sessions(limit=50, model="llama-3.2-1b")),
            ("sessions, first page, errors only", lambda: q.sessions(limit=50, errors_only=True)),
            ("one session's turns", lambda: q.session(some)),
            ("one session's traces, whole", lambda: q.session_traces(some)),
            ("logs, first page (100)", lambda: q.logs()),
            ("logs, first page, errors only", lambda: q.logs(min_level="error")),
            ("services and models (scope pickers)", lambda: (q.services(), q.models())),
        ]
        print(f"each query: median of {QUERY_RUNS} runs; goal under {GOAL_MS:.0f} ms")
        missed = 0
        for name, query in queries:
            ms = _median_ms(query)
            verdict = "met" if ms < GOAL_MS else "MISSED"
            missed += ms >= GOAL_MS
            print(f"  {name:40s} {ms:8.2f} ms  {verdict}")
        print(f"  {len(queries) - missed} of {len(queries)} queries under {GOAL_MS:.0f} ms")


def main() -> None:
    """Print write rates side by side, then each dashboard query's median on 100,000 stored traces."""
    with tempfile.TemporaryDirectory() as folder:
        _writes(Path(folder))
        now_ms = time.time() * 1000.0
        path = Path(folder) / "obs.db"
        _build(path, now_ms)
        _reads(path, now_ms)


if __name__ == "__main__":
    main()
