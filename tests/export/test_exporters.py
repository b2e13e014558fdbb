"""OtlpHttpExporter and ZipkinExporter against real loopback receivers that answer well and badly."""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from pathlib import Path

import jsonschema
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from obs.export import OtlpHttpExporter, ZipkinExporter, from_otlp, to_otlp, to_zipkin
from obs.trace.processors import BatchProcessor, ExportResult
from obs.trace.spans import Span
from obs.trace.tracer import Tracer
from obs.trace.traces import Trace
from tests.export.receivers import FakeTime, Reply, receive, refused_url
from tests.export.support import sample_traces

SECRET = "Bearer s3cr3t-t0ken-value"


def _exporter(url: str, clock: FakeTime | None = None, **kwargs: object) -> OtlpHttpExporter:
    clock = clock or FakeTime()
    return OtlpHttpExporter(url, env={}, sleep=clock.sleep, monotonic=clock.monotonic, random=lambda: 0.5,
                            **kwargs)  # type: ignore[arg-type]


def _status(code: int, message: str) -> bytes:
    """A google.rpc.Status in protobuf: field 1 code (varint), field 2 message (bytes)."""
    text = message.encode()
    return bytes([0x08, code, 0x12, len(text)]) + text


def test_the_receiver_decodes_exactly_what_to_otlp_makes_gzip_protobuf_with_headers() -> None:
    traces = sample_traces()
    with receive() as receiver:
        exporter = _exporter(receiver.url, headers={"authorization": SECRET})
        assert exporter.export(traces) is ExportResult.SUCCESS
    [request] = receiver.requests
    assert request.path == "/v1/traces"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert request.headers["content-encoding"] == "gzip" and request.body[:2] == b"\x1f\x8b"
    assert request.headers["authorization"] == SECRET
    assert request.headers["user-agent"].startswith("obs-otlp-exporter/")
    assert request.message == to_otlp(traces)
    assert from_otlp(request.message) == traces
    stats = exporter.stats()
    assert (stats.exported, stats.exported_spans, stats.failed, stats.retries) == (4, 8, 0, 0)
    assert stats.last_error is None


def test_http_json_without_compression_parses_with_protobufs_json_parser() -> None:
    traces = sample_traces()
    with receive() as receiver:
        exporter = _exporter(receiver.url, protocol="http/json", compression="none")
        assert exporter.export(traces) is ExportResult.SUCCESS
    [request] = receiver.requests
    assert request.headers["content-type"] == "application/json" and "content-encoding" not in request.headers
    assert request.json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] == traces[0].id
    assert request.message == to_otlp(traces)


def test_receiver_down_retries_with_backoff_within_the_timeout_then_fails() -> None:
    clock = FakeTime()
    exporter = _exporter(refused_url(), clock)
    assert exporter.export(sample_traces()) is ExportResult.FAILURE
    # 1, 2, 4 s (jitter factor 1.0 with random() = 0.5); the next wait, 8 s, would pass 10 s.
    assert clock.sleeps == [1.0, 2.0, 4.0]
    stats = exporter.stats()
    assert (stats.exported, stats.failed, stats.failed_spans, stats.retries) == (0, 4, 8, 3)
    assert stats.last_error.startswith("ConnectError") and "would pass the export timeout" in stats.last_error


def test_503_then_200_is_retried_and_nothing_is_lost() -> None:
    traces = sample_traces()
    clock = FakeTime()
    with receive(Reply(503)) as receiver:
        exporter = _exporter(receiver.url, clock)
        assert exporter.export(traces) is ExportResult.SUCCESS
    assert clock.sleeps == [1.0]
    first, second = receiver.requests
    assert first.body == second.body and second.message == to_otlp(traces)
    stats = exporter.stats()
    assert (stats.exported, stats.exported_spans, stats.failed, stats.retries) == (4, 8, 0, 1)


@pytest.mark.parametrize("status", [502, 504])
def test_502_and_504_are_retried(status: int) -> None:
    clock = FakeTime()
    with receive(Reply(status), Reply(status)) as receiver:
        assert _exporter(receiver.url, clock).export(sample_traces()) is ExportResult.SUCCESS
    assert len(receiver.requests) == 3 and clock.sleeps == [1.0, 2.0]


def test_a_dropped_connection_is_retried() -> None:
    clock = FakeTime()
    with receive(Reply(drop=True)) as receiver:
        assert _exporter(receiver.url, clock).export(sample_traces()) is ExportResult.SUCCESS
    assert len(receiver.requests) == 2 and clock.sleeps == [1.0]


def test_429_with_retry_after_in_seconds_waits_that_long() -> None:
    clock = FakeTime()
    with receive(Reply(429, headers={"Retry-After": "3"})) as receiver:
        assert _exporter(receiver.url, clock).export(sample_traces()) is ExportResult.SUCCESS
    assert clock.sleeps == [3.0] and len(receiver.requests) == 2


def test_retry_after_as_an_http_date() -> None:
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    clock = FakeTime()
    with receive(Reply(503, headers={"Retry-After": past})) as receiver:
        assert _exporter(receiver.url, clock).export(sample_traces()) is ExportResult.SUCCESS
    assert clock.sleeps == [0.0]
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)
    clock = FakeTime()
    with receive(Reply(429, headers={"Retry-After": later})) as receiver:
        exporter = _exporter(receiver.url, clock)
        assert exporter.export(sample_traces()) is ExportResult.FAILURE
    assert clock.sleeps == [] and len(receiver.requests) == 1
    error = exporter.stats().last_error
    assert "HTTP 429" in error and "would pass the export timeout" in error


def test_retry_after_beyond_the_timeout_is_not_waited() -> None:
    clock = FakeTime()
    with receive(Reply(503, headers={"Retry-After": "30"})) as receiver:
        exporter = _exporter(receiver.url, clock, timeout_s=10.0)
        assert exporter.export(sample_traces()) is ExportResult.FAILURE
    assert clock.sleeps == [] and len(receiver.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 413, 500])
def test_other_errors_are_not_retried_and_the_reason_is_kept(status: int) -> None:
    clock = FakeTime()
    reply = Reply(status, _status(3, "bad span name"), {"Content-Type": "application/x-protobuf"})
    with receive(reply) as rx:
        exporter = _exporter(rx.url, clock)
        assert exporter.export(sample_traces()) is ExportResult.FAILURE
    assert len(rx.requests) == 1 and clock.sleeps == []
    assert exporter.stats().last_error == f"HTTP {status}: bad span name"
    assert exporter.stats().failed == 4


def test_a_hanging_receiver_fails_the_export_at_the_timeout() -> None:
    with receive(Reply(hang=True)) as receiver:
        exporter = OtlpHttpExporter(receiver.url, timeout_s=0.5, env={})
        assert exporter.export(sample_traces()) is ExportResult.FAILURE
    assert len(receiver.requests) == 1
    assert "export timeout (0.5 s)" in exporter.stats().last_error


def test_a_trickling_receiver_is_cut_off_at_the_timeout() -> None:
    with receive(Reply(trickle=True)) as receiver:
        exporter = OtlpHttpExporter(receiver.url, timeout_s=0.6, env={})
        assert exporter.export(sample_traces()) is ExportResult.FAILURE
    assert "within the export timeout (0.6 s)" in exporter.stats().last_error


def test_partial_success_is_logged_and_counted_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    answer = ExportTraceServiceResponse()
    answer.partial_success.rejected_spans = 2
    answer.partial_success.error_message = "span name too long"
    with receive(Reply(200, answer.SerializeToString())) as receiver, caplog.at_level(logging.WARNING):
        exporter = _exporter(receiver.url)
        assert exporter.export(sample_traces()) is ExportResult.SUCCESS
    assert len(receiver.requests) == 1
    stats = exporter.stats()
    assert (stats.exported, stats.exported_spans, stats.rejected_spans, stats.retries) == (4, 6, 2, 0)
    assert "rejected 2 of 8 span(s): span name too long" in caplog.text


def test_partial_success_in_json() -> None:
    body = b'{"partialSuccess": {"rejectedSpans": "3", "errorMessage": "no"}}'
    with receive(Reply(200, body, {"Content-Type": "application/json"})) as receiver:
        exporter = _exporter(receiver.url, protocol="http/json")
        assert exporter.export(sample_traces()) is ExportResult.SUCCESS
    assert exporter.stats().rejected_spans == 3


def test_header_values_never_show_in_errors_logs_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    echo = f"denied: you sent {SECRET!r}, and {SECRET[:12]}...".encode()
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cr3t-t0ken-value,x-team=ml"}
    reply = Reply(401, echo, {"Content-Type": "text/plain"})
    with receive(reply) as receiver, caplog.at_level(logging.DEBUG):
        exporter = OtlpHttpExporter(receiver.url, env=env)
        assert exporter.export(sample_traces()) is ExportResult.FAILURE
    assert receiver.requests[0].headers["authorization"] == SECRET  # URL-decoded from the variable
    assert receiver.requests[0].headers["x-team"] == "ml"
    shown = [exporter.stats().last_error, caplog.text, repr(exporter), repr(exporter.config),
             str(exporter.stats())]
    assert "HTTP 401: denied" in shown[0]
    for text in shown:
        assert "s3cr3t" not in text
    assert "authorization" in repr(exporter)


def test_a_trace_that_cannot_be_encoded_fails_the_export_without_raising() -> None:
    good = sample_traces()[3]
    bad = Trace(good.id, "bad", 1.0, 2.0, 1.0, "success", {}, [
        Span("not-hex-at-all!!", good.id, None, "s", 1.0, 2.0, 1.0, "success")])
    with receive() as receiver:
        exporter = _exporter(receiver.url)
        assert exporter.export([good, bad]) is ExportResult.FAILURE
        error = exporter.stats().last_error
        assert exporter.export(object()) is ExportResult.FAILURE  # type: ignore[arg-type]
    assert receiver.requests == [] and exporter.stats().failed == 2
    assert error.startswith("could not encode the traces: ValueError: to_otlp: span 's' has span id")


def test_shutdown_cuts_a_retry_wait_short_and_refuses_later_exports() -> None:
    with receive(Reply(503, headers={"Retry-After": "8"})) as receiver:
        exporter = OtlpHttpExporter(receiver.url, env={})
        results: list[ExportResult] = []
        worker = threading.Thread(target=lambda: results.append(exporter.export(sample_traces())))
        worker.start()
        assert receiver.wait_for(1)
        exporter.shutdown()
        worker.join(5)
        assert not worker.is_alive() and results == [ExportResult.FAILURE]
        assert exporter.export(sample_traces()) is ExportResult.FAILURE
    assert len(receiver.requests) == 1 and "shut down" in exporter.stats().last_error


def test_behind_a_batch_processor_the_tracers_traces_arrive() -> None:
    with receive() as receiver:
        exporter = OtlpHttpExporter(receiver.url, env={"OTEL_SERVICE_NAME": "chat-api"})
        tracer = Tracer(processors=[BatchProcessor(exporter, schedule_delay_s=60.0)])
        for name in ("a", "b"):
            with tracer.start_span(name), tracer.start_span(name + ".child"):
                pass
        assert tracer.shutdown(timeout_s=10.0)
    [request] = receiver.requests
    [resource_spans] = request.message.resource_spans
    assert {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes} == {
        "service.name": "chat-api"}
    assert [s.name for s in resource_spans.scope_spans[0].spans] == ["a", "a.child", "b", "b.child"]
    assert exporter.stats().exported == 2


def test_zipkin_exporter_sends_spans_the_schema_accepts_and_retries_503() -> None:
    traces = sample_traces()
    schema = yaml.safe_load(Path(__file__).with_name("zipkin2-api.yaml").read_text(encoding="utf-8"))
    validator = jsonschema.Draft4Validator({"$ref": "#/definitions/ListOfSpans",
                                            "definitions": schema["definitions"]})
    clock = FakeTime()
    with receive(Reply(503), Reply(202, b"")) as receiver:
        exporter = ZipkinExporter(receiver.base + "/api/v2/spans", sleep=clock.sleep,
                                  monotonic=clock.monotonic, random=lambda: 0.5, env={},
                                  headers={"x-api-key": "k3y-value-secret"})
        assert exporter.export(traces) is ExportResult.SUCCESS
    assert clock.sleeps == [1.0]
    request = receiver.requests[1]
    assert request.path == "/api/v2/spans" and request.headers["content-type"] == "application/json"
    validator.validate(request.json)
    assert request.json == to_zipkin(traces)
    assert "k3y-value-secret" not in repr(exporter)
    assert exporter.stats().exported_spans == 8


def test_the_zipkin_endpoint_comes_from_the_variable_and_a_down_zipkin_fails_quietly() -> None:
    url = refused_url().replace("/v1/traces", "/api/v2/spans")
    clock = FakeTime()
    exporter = ZipkinExporter(env={"OTEL_EXPORTER_ZIPKIN_ENDPOINT": url}, sleep=clock.sleep,
                              monotonic=clock.monotonic, random=lambda: 0.5, max_retries=1)
    assert exporter.endpoint == url
    assert exporter.export(sample_traces()) is ExportResult.FAILURE
    assert clock.sleeps == [1.0] and "gave up after 1 retries" in exporter.stats().last_error
    with pytest.raises(ValueError, match="ZipkinExporter: endpoint must be an http"):
        ZipkinExporter("ftp://zipkin", env={})
    with pytest.raises(ValueError, match="ZipkinExporter: timeout_s"):
        ZipkinExporter(timeout_s=0, env={})


def test_short_header_values_do_not_mask_the_message() -> None:
    with receive(Reply(401, b"denied", {"Content-Type": "text/plain"})) as receiver:
        exporter = _exporter(receiver.url, headers={"x-version": "1", "authorization": SECRET})
        assert exporter.export(sample_traces()) is ExportResult.FAILURE
    assert exporter.stats().last_error == "HTTP 401: denied"
