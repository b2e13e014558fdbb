"""A real peer: OpenTelemetry's own SDK and OTLP/HTTP exporter send to the receiver, which stores in SQLite.

In process (uvicorn on a loopback port) and as `python -m obs.receiver` in
its own process; the exporter is configured as any OpenTelemetry program
would be, through `OTEL_EXPORTER_OTLP_ENDPOINT`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from obs.metrics.collector import MetricsCollector
from obs.receive import MergingStoreExporter, make_receiver_app
from obs.storage.exporter import SqliteExporter
from obs.storage.queries import DashboardQueries
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.traces import Trace
from tests.storage._rollups import assert_sums_exact, request_count

from .support import free_port, serving, wait_until

ROOT = Path(__file__).resolve().parents[2]
GENAI = {
    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "llama.cpp",
    "gen_ai.request.model": "smollm2", "gen_ai.usage.input_tokens": 31, "gen_ai.usage.output_tokens": 12,
    "gen_ai.response.finish_reasons": ("stop",), "gen_ai.request.temperature": 0.2,
}


def _send_one_trace(processor: SpanProcessor, service: str = "otel-app") -> tuple[str, dict[str, str]]:
    """A RAG-like trace made by OpenTelemetry's SDK: its trace id and each span's name -> span id."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test-app", "1.2.3")
    ids: dict[str, str] = {}
    with tracer.start_as_current_span("answer question", kind=SpanKind.SERVER) as root:
        with tracer.start_as_current_span("retrieve", attributes={"docs": 3}) as retrieve:
            ids["retrieve"] = format(retrieve.get_span_context().span_id, "016x")
        with tracer.start_as_current_span("chat smollm2", kind=SpanKind.CLIENT, attributes=GENAI) as chat:
            chat.add_event("first_token", {"gen_ai.response.time_to_first_chunk": 0.05})
            chat.set_status(Status(StatusCode.ERROR, "server overloaded"))
            ids["chat smollm2"] = format(chat.get_span_context().span_id, "016x")
        ids["answer question"] = format(root.get_span_context().span_id, "016x")
        trace_id = format(root.get_span_context().trace_id, "032x")
    assert provider.force_flush(10_000)
    provider.shutdown()
    return trace_id, ids


def _check_trace(stored: Trace | None, ids: dict[str, str], service: str = "otel-app") -> None:
    assert stored is not None
    spans = {s.name: s for s in stored.spans}
    assert set(spans) == set(ids) and stored.name == "answer question"
    assert {name: s.id for name, s in spans.items()} == ids
    assert spans["answer question"].parent_id is None
    assert spans["retrieve"].parent_id == ids["answer question"]
    assert spans["chat smollm2"].parent_id == ids["answer question"]
    chat = spans["chat smollm2"]
    assert chat.kind == "client" and spans["answer question"].kind == "server"
    assert chat.attributes["gen_ai.usage.input_tokens"] == 31
    assert chat.attributes["gen_ai.usage.output_tokens"] == 12
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert chat.status == "error" and chat.attributes["error.message"] == "server overloaded"
    assert [e.name for e in chat.events] == ["first_token"]
    assert spans["retrieve"].attributes == {"docs": 3}
    assert stored.status == "error" and stored.metadata["service.name"] == service


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteTraceStore]:
    with SqliteTraceStore(tmp_path / "received.sqlite") as opened:
        yield opened


@pytest.mark.parametrize("processor", ["batch", "simple"])
def test_the_sdk_exporter_sends_a_genai_trace_that_is_stored_whole(
    processor: str, store: SqliteTraceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = MetricsCollector()
    app = make_receiver_app(MergingStoreExporter(store), collector)
    with serving(app) as base:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base)  # what any OpenTelemetry program reads
        exporter = OTLPSpanExporter(compression=Compression.Gzip)
        # "simple" sends each span in its own request as it ends: the receiver puts the parts together.
        chosen = BatchSpanProcessor(exporter) if processor == "batch" else SimpleSpanProcessor(exporter)
        trace_id, ids = _send_one_trace(chosen)
        assert app.state.ingest.flush(10.0)
    _check_trace(store.get(trace_id), ids)
    snapshot = collector.get_metrics()
    assert (snapshot.request_count, snapshot.prompt_tokens, snapshot.completion_tokens) == (1, 31, 12)
    assert snapshot.error_count == 1


def test_traces_split_across_requests_are_stored_whole_and_summed_once(
    store: SqliteTraceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 7 spans cut the 4-span traces anywhere; parts meet in the file, each request summed once."""
    app = make_receiver_app(MergingStoreExporter(SqliteExporter(store)))
    with serving(app) as base:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base)
        provider = TracerProvider(resource=Resource.create({"service.name": "split-app"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), max_export_batch_size=7,
                                                       schedule_delay_millis=50))  # fmt: skip
        tracer = provider.get_tracer("test-app")
        expected: dict[str, set[str]] = {}
        for i in range(60):
            with tracer.start_as_current_span("rag") as root:
                spans = {format(root.get_span_context().span_id, "016x")}
                for name in ("retrieve", "chat smollm2", "chat qwen"):
                    call = name.startswith("chat")
                    attrs = {**GENAI, "gen_ai.request.model": name[5:], "gen_ai.usage.input_tokens": i}
                    kind, attrs = (SpanKind.CLIENT, attrs) if call else (SpanKind.INTERNAL, {})
                    with tracer.start_as_current_span(name, kind=kind, attributes=attrs) as span:
                        spans.add(format(span.get_span_context().span_id, "016x"))
                expected[format(root.get_span_context().trace_id, "032x")] = spans
        assert provider.force_flush(30_000)
        provider.shutdown()
        assert app.state.ingest.flush(30.0)
    assert {t.id: {s.id for s in t.spans} for t in store.all()} == expected
    with store.database().read() as conn:
        assert_sums_exact(conn)
        assert request_count(conn) == 120
    assert DashboardQueries(store).tiles().request_count == 120


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> bool:
    def up() -> bool:
        if process.poll() is not None:
            return True
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    return wait_until(up, 30.0) and process.poll() is None


def test_python_m_obs_receiver_stores_what_the_sdk_sends(tmp_path: Path) -> None:
    db = tmp_path / "standalone.sqlite"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "OBS_ACCESS_TOKEN"}
    process = subprocess.Popen(
        [sys.executable, "-m", "obs.receiver", "--port", str(port), "--db", str(db)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert _wait_listening(port, process), process.communicate(timeout=10)
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
        trace_id, ids = _send_one_trace(BatchSpanProcessor(exporter), service="standalone-app")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "obs_llm_requests_total 1" in metrics
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: what is queued is stored, then it stops
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert b"listening on http://127.0.0.1:" in err
    with SqliteTraceStore(db) as reopened:
        _check_trace(reopened.get(trace_id), ids, service="standalone-app")


def test_python_m_obs_receiver_refuses_a_wide_address_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OBS_ACCESS_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "obs.receiver", "--host", "0.0.0.0", "--port", str(free_port()),
         "--db", str(tmp_path / "x.sqlite")],
        cwd=ROOT, env=env, capture_output=True, timeout=60,
    )
    assert done.returncode == 2 and b"refusing to listen on 0.0.0.0 without a token" in done.stderr
    assert not (tmp_path / "x.sqlite").exists()
    short = subprocess.run(
        [sys.executable, "-m", "obs.receiver", "--db", str(tmp_path / "x.sqlite"), "--token-env", "MY_TOKEN"],
        cwd=ROOT, env={**env, "MY_TOKEN": "short"}, capture_output=True, timeout=60,
    )
    assert short.returncode == 2 and b"MY_TOKEN must be at least 16 characters" in short.stderr
