"""The receiver over real loopback HTTP (uvicorn): answers, limits, tokens, faults and /metrics."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator, Sequence

import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client.parser import text_string_to_metric_families

from obs.export import to_otlp_json
from obs.metrics.collector import MetricsCollector
from obs.receive import make_receiver_app
from obs.trace.processors import ExportResult, InMemoryExporter
from obs.trace.traces import Trace

from .support import chat_trace, protobuf_body, serving, wait_until

PB = {"content-type": "application/x-protobuf"}
JS = {"content-type": "application/json"}
TOKEN = "s3cret-token-of-24-chars"
MiB = 1024 * 1024


@pytest.fixture
def exporter() -> InMemoryExporter:
    return InMemoryExporter()


@pytest.fixture
def base(exporter: InMemoryExporter) -> Iterator[str]:
    app = make_receiver_app(exporter, MetricsCollector())
    with serving(app) as url:
        app.state.test_exporter = exporter
        yield url


def _post(url: str, body: bytes, headers: dict[str, str], **kwargs: object) -> httpx.Response:
    return httpx.post(url + "/v1/traces", content=body, headers=headers, timeout=30.0, **kwargs)  # type: ignore[arg-type]


def _wait_for_spans(exporter: InMemoryExporter, count: int) -> list[Trace]:
    assert wait_until(lambda: sum(len(t.spans) for t in exporter.traces) >= count)
    return exporter.traces


def test_protobuf_is_answered_in_protobuf_and_stored(base: str, exporter: InMemoryExporter) -> None:
    trace = chat_trace()
    response = _post(base, protobuf_body([trace]), PB)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()
    assert _wait_for_spans(exporter, 2) == [trace]


def test_json_and_gzip_are_taken_on_the_same_path(base: str, exporter: InMemoryExporter) -> None:
    trace = chat_trace()
    body = json.dumps(to_otlp_json([trace])).encode()
    response = _post(base, gzip.compress(body), {**JS, "content-encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json" and response.json() == {}
    response = _post(base, gzip.compress(protobuf_body([chat_trace("aa" * 16)])),
                     {**PB, "content-encoding": "gzip"})
    assert response.status_code == 200
    traces = _wait_for_spans(exporter, 4)
    assert traces[0] == trace and traces[1].id == "aa" * 16


def test_an_empty_request_is_a_success(base: str, exporter: InMemoryExporter) -> None:
    assert _post(base, b"", PB).status_code == 200
    empty_json = _post(base, b"", JS)
    assert (empty_json.status_code, empty_json.json()) == (200, {})
    assert _post(base, b"{}", JS).json() == {}


def test_malformed_spans_come_back_as_partial_success(base: str, exporter: InMemoryExporter) -> None:
    data = to_otlp_json([chat_trace()])
    spans = data["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append({**spans[0], "spanId": "0000000000000000"})
    response = _post(base, json.dumps(data).encode(), JS)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "spans[2] has spanId '0000000000000000'" in partial["errorMessage"]
    assert len(_wait_for_spans(exporter, 2)[0].spans) == 2


@pytest.mark.parametrize(("body", "headers"), [
    (b"\x0a\xff\xff\xff\xff\x0f garbage", PB),
    (b"<html>not otlp</html>", JS),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}', JS),
    (b"\x1f\x8b\x08\x00 not really gzip", {**PB, "content-encoding": "gzip"}),
])
def test_bodies_that_do_not_parse_get_400_with_a_status(base: str, body: bytes, headers: dict[str, str]
                                                        ) -> None:
    response = _post(base, body, headers)
    assert response.status_code == 400
    if headers is PB or headers["content-type"] == PB["content-type"]:
        assert response.headers["content-type"] == "application/x-protobuf"
        status = Status.FromString(response.content)
    else:
        status = Status(**response.json())
    assert status.code == 3 and status.message


def test_unknown_content_types_and_encodings_get_415(base: str) -> None:
    response = _post(base, b"hello", {"content-type": "text/plain"})
    assert response.status_code == 415 and "text/plain" in response.json()["message"]
    assert _post(base, b"hello", {}).status_code == 415
    response = _post(base, b"hello", {**PB, "content-encoding": "br"})
    assert response.status_code == 415 and "br" in Status.FromString(response.content).message


def test_wrong_methods_and_paths_are_refused(base: str) -> None:
    assert httpx.get(base + "/v1/traces").status_code == 405
    assert httpx.post(base + "/v1/logs", content=b"", headers=PB).status_code == 404


def test_a_body_over_64_mib_gets_413_and_the_receiver_stays_up(base: str, exporter: InMemoryExporter) -> None:
    response = _post(base, b"\0" * (64 * MiB + 1), PB)
    assert response.status_code == 413
    assert "limit of 67108864 bytes" in Status.FromString(response.content).message

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is found while reading
        for _ in range(65):
            yield b"\0" * MiB

    assert _post(base, chunks(), PB).status_code == 413  # type: ignore[arg-type]
    assert _post(base, protobuf_body([chat_trace()]), PB).status_code == 200
    assert _wait_for_spans(exporter, 2)


def test_a_gzip_bomb_gets_413(base: str) -> None:
    bomb = gzip.compress(b"\0" * (64 * MiB + 1), compresslevel=9)
    assert len(bomb) < 200_000
    response = _post(base, bomb, {**PB, "content-encoding": "gzip"})
    assert response.status_code == 413
    assert "decompresses to more than the limit" in Status.FromString(response.content).message


def _send_traces(base: str, traces: Sequence[Trace], headers: dict[str, str] | None = None) -> httpx.Response:
    return _post(base, protobuf_body(traces), {**PB, **(headers or {})})


def test_with_a_token_every_request_needs_the_bearer_header(exporter: InMemoryExporter) -> None:
    app = make_receiver_app(exporter, token=TOKEN)
    with serving(app) as base:
        missing = _send_traces(base, [chat_trace()])
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert Status.FromString(missing.content).code == 16
        assert _send_traces(base, [chat_trace()], {"authorization": "Bearer wrong-token-wrong-token"}
                            ).status_code == 401
        assert _send_traces(base, [chat_trace()], {"authorization": TOKEN}).status_code == 401
        assert _send_traces(base, [chat_trace()], {"authorization": f"Basic {TOKEN}"}).status_code == 401
        assert httpx.get(base + "/metrics").status_code == 401
        assert httpx.get(base + "/metrics", headers={"authorization": "Bearer nope"}).status_code == 401
        assert _send_traces(base, [chat_trace()], {"authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert httpx.get(base + "/metrics", headers={"authorization": f"bearer {TOKEN}"}).status_code == 200
    assert len(exporter.traces) == 1


def test_a_token_that_is_too_short_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        make_receiver_app(InMemoryExporter(), token="short")
    with pytest.raises(ValueError, match="max_body_bytes must be an int >= 1"):
        make_receiver_app(InMemoryExporter(), max_body_bytes=0)
    with pytest.raises(ValueError, match="exporter must have export"):
        make_receiver_app(object())


def test_metrics_count_received_genai_spans_and_parse(exporter: InMemoryExporter) -> None:
    collector = MetricsCollector()
    app = make_receiver_app(exporter, collector)
    with serving(app) as base:
        assert _send_traces(base, [chat_trace(), chat_trace("bb" * 16, input_tokens=3000, status="error")]
                            ).status_code == 200
        assert wait_until(lambda: collector.get_metrics().request_count == 2)
        response = httpx.get(base + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("obs_llm_requests_total", ())] == 2
    assert samples[("obs_llm_errors_total", ())] == 1
    assert samples[("obs_llm_tokens_total", (("gen_ai_token_type", "input"),))] == 3042
    usage = "gen_ai_client_token_usage_bucket"
    assert samples[(usage, (("gen_ai_token_type", "input"), ("le", "64")))] == 1
    assert samples[(usage, (("gen_ai_token_type", "input"), ("le", "4096")))] == 2
    assert samples[("gen_ai_client_operation_duration_seconds_bucket", (("le", "0.64"),))] == 0
    assert samples[("gen_ai_client_operation_duration_seconds_bucket", (("le", "1.28"),))] == 2
    assert samples[("gen_ai_client_operation_time_to_first_chunk_seconds_bucket", (("le", "0.16"),))] == 2
    assert collector.get_metrics().total_cost > 0


class _Raising:
    def __init__(self) -> None:
        self.calls = 0

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        self.calls += 1
        raise OSError("disk full")

    def shutdown(self) -> None:
        pass


def test_an_exporter_that_raises_makes_the_receiver_answer_503_with_retry_after() -> None:
    exporter = _Raising()
    app = make_receiver_app(exporter, retry_after_s=30.0)
    ingest = app.state.ingest
    with serving(app) as base:
        assert _send_traces(base, [chat_trace()]).status_code == 200
        assert wait_until(lambda: ingest.stats().failed_exports >= 1)
        refused = _send_traces(base, [chat_trace("cc" * 16)])
        assert refused.status_code == 503 and refused.headers["retry-after"] == "30"
        assert Status.FromString(refused.content).code == 14
        assert ingest.stats().last_error == "OSError: disk full"


class _Hanging:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        self.entered.set()
        self.release.wait(60.0)
        return ExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def test_a_full_queue_gets_429_with_retry_after() -> None:
    exporter = _Hanging()
    app = make_receiver_app(exporter, max_queue_spans=4, export_timeout_s=60.0, retry_after_s=2.0)
    try:
        with serving(app) as base:
            assert _send_traces(base, [chat_trace()]).status_code == 200
            assert exporter.entered.wait(10.0)
            assert _send_traces(base, [chat_trace("dd" * 16)]).status_code == 200  # 2 + 2 spans: room left
            full = _send_traces(base, [chat_trace("ee" * 16)])
            assert full.status_code == 429 and full.headers["retry-after"] == "2"
            assert app.state.ingest.stats().refused_requests == 1
            exporter.release.set()
            assert app.state.ingest.flush(10.0) and app.state.ingest.stats().exported_spans == 4
    finally:
        exporter.release.set()


def test_metrics_count_every_answered_request_even_while_the_store_is_stuck() -> None:
    """Traces are built by the queue's worker, after the answer; /metrics builds what still waits first."""
    exporter = _Hanging()
    collector = MetricsCollector()
    app = make_receiver_app(exporter, collector, export_timeout_s=60.0)
    try:
        with serving(app) as base:
            assert _send_traces(base, [chat_trace()]).status_code == 200
            assert exporter.entered.wait(10.0)  # the worker is stuck in the first export
            assert _send_traces(base, [chat_trace("ab" * 16), chat_trace("cd" * 16)]).status_code == 200
            text = httpx.get(base + "/metrics").text
            assert "obs_llm_requests_total 3" in text.splitlines()
            assert collector.get_metrics().request_count == 3  # each built once: not counted again
            exporter.release.set()
            assert app.state.ingest.flush(10.0) and app.state.ingest.stats().exported_spans == 6
            assert "obs_llm_requests_total 3" in httpx.get(base + "/metrics").text.splitlines()
    finally:
        exporter.release.set()


def test_a_hanging_exporter_gets_503_and_never_holds_the_client() -> None:
    exporter = _Hanging()
    app = make_receiver_app(exporter, export_timeout_s=0.2, retry_after_s=1.0)
    try:
        with serving(app) as base:
            assert _send_traces(base, [chat_trace()]).status_code == 200
            assert exporter.entered.wait(10.0)
            answers: list[int] = []

            def refused() -> bool:  # every answer comes within the client's 2 s timeout, or httpx raises
                response = httpx.post(base + "/v1/traces", content=protobuf_body([chat_trace("ff" * 16)]),
                                      headers=PB, timeout=2.0)
                answers.append(response.status_code)
                return response.status_code == 503 and response.headers["retry-after"] == "1"

            assert wait_until(refused, 10.0)
            assert set(answers) <= {200, 503}
            exporter.release.set()
    finally:
        exporter.release.set()
