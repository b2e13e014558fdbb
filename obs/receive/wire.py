"""OTLP/HTTP on the wire, as a receiver speaks it (OTLP specification 1.11): types, gzip, answers.

Pure functions and constants, no sockets:

- `media_kind(content_type)`: "protobuf" for `application/x-protobuf`,
  "json" for `application/json` (parameters and case ignored), else None.
- `decompress(body, encoding, limit)`: the body after `Content-Encoding`
  (`gzip`, or none / `identity`), never more than `limit` bytes: a gzip bomb
  raises `TooLarge` as soon as its output passes the limit, so it never
  takes more memory than the limit; an unknown encoding raises
  `UnsupportedEncoding`, a damaged gzip stream `ValueError`.
- `success_body(kind, rejected, message)`: an `ExportTraceServiceResponse`
  (with `partial_success` when spans were rejected) in the request's format.
- `status_body(kind, code, message)`: a `google.rpc.Status` for the error
  answers (encoded here by hand: its message has two fields, and the package
  that defines it is not a runtime requirement of obs).
"""

from __future__ import annotations

import json
import zlib
from typing import Literal

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "JSON",
    "PROTOBUF",
    "Kind",
    "TooLarge",
    "UnsupportedEncoding",
    "content_type",
    "decompress",
    "grpc_code",
    "media_kind",
    "status_body",
    "success_body",
]

Kind = Literal["protobuf", "json"]
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024  # what the OTLP specification recommends
_CHUNK = 256 * 1024

# google.rpc.Code of each HTTP status the receiver answers with.
_GRPC_CODES = {400: 3, 401: 16, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}


class TooLarge(ValueError):
    """The body, or what it decompresses to, is larger than the limit."""


class UnsupportedEncoding(ValueError):
    """A `Content-Encoding` other than gzip or identity."""


def media_kind(content_type_header: str | None) -> Kind | None:
    """"protobuf" or "json" for the two OTLP/HTTP content types (parameters ignored), else None."""
    if not content_type_header:
        return None
    media = content_type_header.split(";", 1)[0].strip().lower()
    if media == PROTOBUF:
        return "protobuf"
    if media == JSON:
        return "json"
    return None


def content_type(kind: Kind) -> str:
    """The `Content-Type` of an answer in `kind`'s format."""
    return PROTOBUF if kind == "protobuf" else JSON


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """`body` decoded per its `Content-Encoding`, at most `limit` bytes (see the module docstring)."""
    name = (encoding or "").strip().lower()
    if name in ("", "identity"):
        if len(body) > limit:
            raise TooLarge(f"the body is {len(body)} bytes, more than the limit of {limit}")
        return body
    if name not in ("gzip", "x-gzip"):
        raise UnsupportedEncoding(f"Content-Encoding {encoding!r} is not supported: send gzip or none")
    out = bytearray()
    data = body
    while True:  # a gzip body may hold several members, one after the other
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = data
        while True:
            try:
                chunk = inflater.decompress(pending, _CHUNK)
            except zlib.error as exc:
                raise ValueError(f"the gzip body is damaged ({exc})") from None
            out += chunk
            if len(out) > limit:
                raise TooLarge(f"the body decompresses to more than the limit of {limit} bytes")
            pending = inflater.unconsumed_tail
            if inflater.eof or (not pending and not chunk):
                break
        if not inflater.eof:
            raise ValueError("the gzip body is cut short")
        data = inflater.unused_data
        if not data.strip(b"\0"):  # trailing zero padding is allowed after the last member
            return bytes(out)


def success_body(kind: Kind, rejected: int = 0, message: str = "") -> bytes:
    """An `ExportTraceServiceResponse`, with `partial_success` when `rejected` > 0 or a message is given."""
    if kind == "json":
        if not rejected and not message:
            return b"{}"
        partial: dict[str, object] = {"rejectedSpans": str(rejected)}  # int64 as a string in OTLP/JSON
        if message:
            partial["errorMessage"] = message
        return json.dumps({"partialSuccess": partial}).encode()
    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return response.SerializeToString()


def grpc_code(status: int) -> int:
    """The `google.rpc.Code` that goes with an HTTP error status (UNKNOWN, 2, for others)."""
    return _GRPC_CODES.get(status, 2)


def status_body(kind: Kind, code: int, message: str) -> bytes:
    """A `google.rpc.Status{code, message}` in `kind`'s format."""
    if kind == "json":
        return json.dumps({"code": code, "message": message}).encode()
    text = message.encode("utf-8", "replace")
    out = bytearray()
    if code:
        out += b"\x08" + _varint(code)
    if text:
        out += b"\x12" + _varint(len(text)) + text
    return bytes(out)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
