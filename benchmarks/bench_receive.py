"""Spans per second the OTLP/HTTP receiver stores, sent by OpenTelemetry's own SDK exporter.

`python -m obs.receiver` runs in its own process on a loopback port with a
fresh SQLite file. OpenTelemetry's SDK first records the spans of 2,560 RAG
traces (an internal root, a retrieval, a GenAI chat client span with 12
attributes and an event, a tool call: 10,240 spans) into memory; then the
clock starts, and its `OTLPSpanExporter` (protobuf, gzip, as configured by
default apart from compression) sends them in batches of 512, one request at
a time, as its `BatchSpanProcessor` does. The clock stops when the last
trace is readable, whole, from the SQLite file through a second connection
(polled every 5 ms), and every trace is then checked to be there. Goal: at
least 10,000 spans/s.

Each of the ROUNDS rounds also runs, side by side, two other ways of
sending the same spans: the same exporter to `benchmarks/otlp_sink.py`, a
receiver that stores nothing (how fast the sender itself goes here and
now: no receiver can make the first measure faster than that), and the
exporter's own request bodies, encoded beforehand, replayed to
`python -m obs.receiver` one at a time (the receiver's capacity when its
senders cost it nothing, as when many services send to one dashboard).
Each round uses a new file and a new receiver process. Printed: the medians,
the first measure as a share of the sender alone (the median of per-round
ratios), the spans per second of CPU time the receiver used (read from
/proc, the steadier figure on a busy machine), and a verdict for the goal
on the first measure and on the receiver's capacity. For scale, Arize
Phoenix 20.26 (`phoenix serve`, SQLite) stored about 60 spans/s measured
like the first, on the development machine.

    python -m benchmarks.bench_receive
"""

from __future__ import annotations

import gzip
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from benchmarks._process import cpu_seconds
from obs.llm.llama.server import find_free_port
from obs.storage.sqlite import SqliteTraceStore

ROUNDS = 5
TRACES = 2560
BATCH = 512
GOAL = 10_000.0
ROOT = Path(__file__).resolve().parents[1]


def _spans() -> tuple[list[ReadableSpan], list[str]]:
    """The SDK's finished spans of TRACES traces, in the order they ended, and the trace ids."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-app"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench", "1.0")
    trace_ids = []
    for i in range(TRACES):
        with tracer.start_as_current_span("rag", attributes={"user.tier": "premium", "request": i}) as root:
            with tracer.start_as_current_span("retrieve", attributes={"docs": 3, "scores": (0.9, 0.7, 0.4)}):
                pass
            with tracer.start_as_current_span("chat smollm2", kind=SpanKind.CLIENT, attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "llama.cpp",
                "gen_ai.request.model": "smollm2", "gen_ai.request.temperature": 0.7,
                "gen_ai.request.max_tokens": 256, "gen_ai.response.model": "smollm2",
                "gen_ai.response.finish_reasons": ("stop",), "gen_ai.usage.input_tokens": 412,
                "gen_ai.usage.output_tokens": 96, "server.address": "127.0.0.1", "server.port": 8080,
                "gen_ai.response.time_to_first_chunk": 0.042,
            }) as chat:
                chat.add_event("first_token", {"index": 0})
            with tracer.start_as_current_span("tool lookup", attributes={"tool": "weather"}):
                pass
            trace_ids.append(format(root.get_span_context().trace_id, "032x"))
    provider.shutdown()
    return list(memory.get_finished_spans()), trace_ids


def _start_receiver(db: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = find_free_port()
    env = {k: v for k, v in os.environ.items() if k != "OBS_ACCESS_TOKEN"}
    process = subprocess.Popen(
        [sys.executable, "-m", "obs.receiver", "--port", str(port), "--db", str(db)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1.0).status_code == 200:
                return process, port
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"the receiver did not start: {process.communicate()[1].decode()}")


def _sdk_sender(spans: list[ReadableSpan]) -> Callable[[str], None]:
    """Sends `spans` to an endpoint through OpenTelemetry's OTLPSpanExporter, a batch at a time."""

    def send(endpoint: str) -> None:
        exporter = OTLPSpanExporter(endpoint=endpoint, compression=Compression.Gzip, timeout=60)
        try:
            for at in range(0, len(spans), BATCH):
                if exporter.export(spans[at:at + BATCH]) is not SpanExportResult.SUCCESS:
                    raise RuntimeError(f"{endpoint} refused a batch")
        finally:
            exporter.shutdown()

    return send


def _sdk_bodies(spans: list[ReadableSpan]) -> list[bytes]:
    """The request bodies OTLPSpanExporter sends for `spans`: its own encoder's bytes, gzip-compressed."""
    return [gzip.compress(encode_spans(spans[at:at + BATCH]).SerializePartialToString())
            for at in range(0, len(spans), BATCH)]  # fmt: skip


def _replay_sender(bodies: list[bytes]) -> Callable[[str], None]:
    """Sends already encoded `bodies` on one keep-alive connection, each once the one before is answered."""

    def send(endpoint: str) -> None:
        url = httpx.URL(endpoint)
        connection = http.client.HTTPConnection(url.host, url.port, timeout=60)
        headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
        try:
            for body in bodies:
                connection.request("POST", url.path, body, headers)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"{endpoint} answered {response.status} to a batch")
        finally:
            connection.close()

    return send


def _round(send: Callable[[str], None], spans: int, trace_ids: list[str]) -> tuple[float, float | None]:
    """One round on a new file and receiver: spans per second from the first send to the last stored,
    and per second of the receiver's CPU time over that interval."""
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "bench.sqlite"
        process, port = _start_receiver(db)
        try:
            reader = SqliteTraceStore(db)
            last = trace_ids[-1]
            cpu_before = cpu_seconds(process.pid)
            started = time.perf_counter()
            send(f"http://127.0.0.1:{port}/v1/traces")
            while True:
                stored = reader.get(last)
                if stored is not None and len(stored.spans) == 4:
                    break
                time.sleep(0.005)
            elapsed = time.perf_counter() - started
            cpu_after = cpu_seconds(process.pid)
            stored_spans = sum(len(t.spans) for t in reader.all())
            reader.close()
            if stored_spans != spans:
                raise RuntimeError(f"{stored_spans} of {spans} spans were stored")
        finally:
            process.terminate()
            process.wait(30)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return spans / elapsed, (spans / cpu if cpu else None)


def _sink_round(send: Callable[[str], None], spans: int) -> float:
    """Spans per second `send` reaches against a receiver that stores nothing (`benchmarks.otlp_sink`)."""
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.otlp_sink", "--port", "0"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        line = process.stdout.readline().decode() if process.stdout is not None else ""
        if not line.startswith("listening on "):
            raise RuntimeError(f"the stand-in receiver did not start: {line!r}")
        url = line.split()[-1]
        started = time.perf_counter()
        send(f"{url}/v1/traces")
        return spans / (time.perf_counter() - started)
    finally:
        process.kill()
        process.wait(30)


def main() -> None:
    """Print each round's rates (three ways of sending, interleaved), their medians and the verdicts."""
    spans, trace_ids = _spans()
    sdk, replay = _sdk_sender(spans), _replay_sender(_sdk_bodies(spans))
    count = len(spans)
    print(f"{count:,} spans ({TRACES:,} traces) in batches of {BATCH}, one request at a time; in each round, "
          "side by side:\n"
          "  sdk:     OpenTelemetry's OTLPSpanExporter (protobuf, gzip) to python -m obs.receiver, stored "
          "into SQLite (the goal's measure)\n"
          "  alone:   the same exporter to a receiver that stores nothing: how fast the sender itself goes "
          "here and now\n"
          "  replay:  the exporter's own request bodies, encoded beforehand, to python -m obs.receiver: what "
          "the receiver takes when the sender costs (almost) nothing, as from many services at once")
    runs: dict[str, list[float]] = {"sdk": [], "alone": [], "replay": []}
    per_cpu: dict[str, list[float]] = {"sdk": [], "replay": []}
    for i in range(ROUNDS):
        runs["alone"].append(_sink_round(sdk, count))
        for name, send in (("sdk", sdk), ("replay", replay)):
            rate, cpu_rate = _round(send, count, trace_ids)
            runs[name].append(rate)
            if cpu_rate is not None:
                per_cpu[name].append(cpu_rate)
        sdk_rate, alone_rate, replay_rate = (runs[name][-1] for name in ("sdk", "alone", "replay"))
        print(f"  round {i + 1}:  sdk {sdk_rate:8,.0f} spans/s   alone {alone_rate:8,.0f} spans/s   "
              f"replay {replay_rate:8,.0f} spans/s")
    median = {name: statistics.median(rates) for name, rates in runs.items()}
    cpu = {name: f", {statistics.median(rates):,.0f} spans per CPU second of the receiver" if rates else ""
           for name, rates in per_cpu.items()}  # fmt: skip
    share = statistics.median(s / a for s, a in zip(runs["sdk"], runs["alone"], strict=True))
    print(f"  medians: sdk {median['sdk']:,.0f} spans/s{cpu['sdk']}; alone {median['alone']:,.0f} spans/s; "
          f"replay {median['replay']:,.0f} spans/s{cpu['replay']}")
    print(f"  sdk is {share:.0%} of alone (median of per-round ratios): the receiver's share of what the "
          "sender could reach without it")
    for name, what in (("sdk", "sent by OpenTelemetry's exporter"), ("replay", "the receiver's capacity")):
        verdict = "met" if median[name] >= GOAL else "MISSED"
        print(f"  goal >= {GOAL:,.0f} spans/s, {what}: {verdict} ({median[name]:,.0f})")
    if median["alone"] < GOAL:
        print(f"  (the exporter alone reaches {median['alone']:,.0f} spans/s here: no receiver can make the "
              "first measure reach the goal on this machine now)")
    print("  Arize Phoenix 20.26, measured like sdk: about 60 spans/s")


if __name__ == "__main__":
    main()
