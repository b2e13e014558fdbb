"""Tests for obs.receive.wire and obs.receive.decode: content types, capped gzip, answers, partial success."""

from __future__ import annotations

import gzip
import json

import pytest
from google.rpc.status_pb2 import Status
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from obs.export import to_otlp, to_otlp_json
from obs.receive.decode import BadRequest, decode_request
from obs.receive.wire import (
    TooLarge,
    UnsupportedEncoding,
    decompress,
    media_kind,
    status_body,
    success_body,
)

from .support import chat_trace


def test_media_kind_reads_the_two_otlp_types_and_nothing_else() -> None:
    assert media_kind("application/x-protobuf") == "protobuf"
    assert media_kind("Application/JSON; charset=utf-8") == "json"
    assert media_kind("application/protobuf") is None
    assert media_kind("text/plain") is None
    assert media_kind(None) is None and media_kind("") is None


def test_gzip_is_undone_whole_with_several_members_and_padding() -> None:
    assert decompress(gzip.compress(b"abc"), "gzip", 10) == b"abc"
    assert decompress(gzip.compress(b"ab") + gzip.compress(b"cd") + b"\0\0", "GZIP", 10) == b"abcd"
    assert decompress(b"plain", None, 10) == b"plain" and decompress(b"plain", "identity", 10) == b"plain"


def test_a_gzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))  # 8 MiB of zeros in about 8 KiB
    assert len(bomb) < 64 * 1024
    with pytest.raises(TooLarge, match="more than the limit of 1048576 bytes"):
        decompress(bomb, "gzip", 1024 * 1024)
    assert len(decompress(bomb, "gzip", 8 * 1024 * 1024)) == 8 * 1024 * 1024


def test_damaged_gzip_unknown_encodings_and_oversized_plain_bodies_are_refused() -> None:
    whole = gzip.compress(b"x" * 1000)
    with pytest.raises(ValueError, match="cut short"):
        decompress(whole[:-12], "gzip", 10_000)
    with pytest.raises(ValueError, match="damaged"):
        decompress(b"not gzip at all", "gzip", 10_000)
    with pytest.raises(ValueError, match="damaged"):
        decompress(whole + b"trailing junk", "gzip", 10_000)
    with pytest.raises(UnsupportedEncoding, match="'br'"):
        decompress(b"x", "br", 10)
    with pytest.raises(TooLarge):
        decompress(b"x" * 11, None, 10)


def test_success_bodies_in_both_formats() -> None:
    assert success_body("protobuf") == b"" and success_body("json") == b"{}"
    parsed = ExportTraceServiceResponse.FromString(success_body("protobuf", 3, "3 span(s) rejected"))
    assert parsed.partial_success.rejected_spans == 3
    assert parsed.partial_success.error_message == "3 span(s) rejected"
    assert json.loads(success_body("json", 2, "why")) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": "why"}
    }


def test_status_bodies_parse_as_google_rpc_status() -> None:
    message = "the body is not ✓ " + "x" * 300
    status = Status.FromString(status_body("protobuf", 3, message))
    assert (status.code, status.message) == (3, message)
    assert Status.FromString(status_body("protobuf", 0, "")) == Status()
    assert json.loads(status_body("json", 14, "retry")) == {"code": 14, "message": "retry"}


def test_decode_takes_protobuf_and_otlp_json_alike() -> None:
    trace = chat_trace()
    from_pb = decode_request(to_otlp([trace]).SerializeToString(), "protobuf")
    from_json = decode_request(json.dumps(to_otlp_json([trace])).encode(), "json")
    assert from_pb.traces == from_json.traces
    assert (from_pb.spans, from_pb.accepted, from_pb.rejected, from_pb.error_message) == (2, 2, 0, "")
    assert from_pb.traces[0].spans[1].parent_id == "00f067aa0ba902b7"
    assert decode_request(b"", "protobuf").spans == 0 and decode_request(b"", "json").spans == 0


def test_malformed_spans_are_rejected_with_their_reason_and_the_rest_kept() -> None:
    message = to_otlp([chat_trace()])
    spans = message.resource_spans[0].scope_spans[0].spans
    bad = spans.add()
    bad.CopyFrom(spans[0])
    bad.span_id = b"\0" * 8
    late = spans.add()
    late.CopyFrom(spans[1])
    late.span_id = bytes.fromhex("00000000000000aa")
    late.end_time_unix_nano = late.start_time_unix_nano - 1
    decoded = decode_request(message.SerializeToString(), "protobuf")
    assert (decoded.spans, decoded.accepted, decoded.rejected) == (4, 2, 2)
    assert len(decoded.traces) == 1 and len(decoded.traces[0].spans) == 2
    assert decoded.error_message.startswith(
        "2 span(s) rejected: resourceSpans[0].scopeSpans[0].spans[2] has spanId")
    assert "spans[3] ends (endTimeUnixNano" in decoded.error_message


def test_many_rejections_name_three_and_count_the_rest() -> None:
    message = to_otlp([chat_trace()])
    spans = message.resource_spans[0].scope_spans[0].spans
    for span in spans:
        span.trace_id = b"short"
    for _ in range(4):
        spans.add().CopyFrom(spans[0])
    decoded = decode_request(message.SerializeToString(), "protobuf")
    assert (decoded.accepted, decoded.rejected, decoded.traces) == (0, 6, [])
    assert decoded.error_message.endswith("; and 3 more")


@pytest.mark.parametrize(("payload", "kind", "match"), [
    (b"\xff\xfe garbage", "protobuf", "not a protobuf ExportTraceServiceRequest"),
    (b"{not json", "json", "not JSON"),
    (b"[1, 2]", "json", "must be an object"),
    (b"\xff\xfe", "json", "not UTF-8"),
    (b'{"resourceSpans": "many"}', "json", "not an OTLP/JSON"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 7}]}]}]}', "json", "must be hex"),
    (b"[" * 100_000 + b"]" * 100_000, "json", "nested too deeply|not JSON"),
])
def test_bodies_that_do_not_parse_raise_bad_request(payload: bytes, kind: str, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        decode_request(payload, kind)  # type: ignore[arg-type]


_VALID = to_otlp([chat_trace()]).SerializeToString()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.builds(
    lambda at, byte: _VALID[:at] + bytes([byte]) + _VALID[at + 1:],
    st.integers(0, len(_VALID) - 1), st.integers(0, 255)))
def test_any_bytes_decode_or_raise_bad_request_and_nothing_else(payload: bytes) -> None:
    for kind in ("protobuf", "json"):
        try:
            decoded = decode_request(payload, kind)  # type: ignore[arg-type]
        except BadRequest:
            continue
        assert decoded.accepted + decoded.rejected == decoded.spans
