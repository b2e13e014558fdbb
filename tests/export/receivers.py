"""Real OTLP/HTTP and Zipkin receivers on loopback, answering as scripted, for the exporter tests.

`receive(*replies)` runs a threaded HTTP server on a free port. Each POST is
recorded (path, headers, raw body) and decoded the way a real OTLP receiver
does it, independently of obs: gzip undone, `application/x-protobuf` parsed
into the `ExportTraceServiceRequest` of opentelemetry-proto, `application/json`
turned into the same message by protobuf's JSON parser after its hex ids
are converted to base64. It then answers with the next scripted `Reply`
(by default: 200 with an empty `ExportTraceServiceResponse` in the request's
content type). Replies can hang until the server stops, trickle their
status line a byte at a time, or close the connection without answering.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: bytes | None = None  # None: an empty ExportTraceServiceResponse in the request's content type
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the server stops)
    trickle: bool = False  # send the answer a byte at a time, slowly, for as long as the server runs
    drop: bool = False  # close the connection without answering


@dataclass
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes  # as sent (maybe gzip)
    payload: bytes  # after gzip
    message: ExportTraceServiceRequest | None
    json: Any


@dataclass
class Receiver:
    """A running receiver: its address, what it got, and its script."""

    base: str
    replies: list[Reply]
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        """The OTLP traces endpoint."""
        return self.base + "/v1/traces"

    def wait_for(self, count: int, timeout_s: float = 10.0) -> bool:
        """Wait until `count` requests have arrived; False if they did not within `timeout_s`."""
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.requests) >= count, timeout_s)


def json_to_message(data: Any) -> ExportTraceServiceRequest:
    """An OTLP/JSON request as the protobuf message: hex ids to base64 first, then protobuf's parser."""
    for resource_spans in data.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return json_format.ParseDict(data, ExportTraceServiceRequest())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `requests`."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        payload = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
        content_type = headers.get("content-type", "")
        message, data = None, None
        if content_type == "application/x-protobuf":
            message = ExportTraceServiceRequest.FromString(payload)
        elif content_type == "application/json":
            data = json.loads(payload)
            if self.path == "/v1/traces":
                message = json_to_message(json.loads(payload))
        state = self.server.state
        with state.arrived:
            index = len(state.requests)
            state.requests.append(Received(self.path, headers, body, payload, message, data))
            state.arrived.notify_all()
        reply = state.replies[index] if index < len(state.replies) else Reply()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._answer(reply, content_type)

    def _answer(self, reply: Reply, content_type: str) -> None:
        state = self.server.state
        if reply.hang:
            state.release.wait(30)
            return
        if reply.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = reply.body
        answer_type = reply.headers.get("Content-Type", content_type or "application/json")
        if body is None:
            empty = ExportTraceServiceResponse()
            body = b"{}" if answer_type == "application/json" else empty.SerializeToString()
        head = f"HTTP/1.1 {reply.status} Scripted\r\nContent-Type: {answer_type}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items() if k != "Content-Type")
        head += f"Content-Length: {len(body)}\r\n\r\n"
        raw = head.encode() + body
        if reply.trickle:
            for byte in raw:
                if state.release.wait(0.2):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            return
        self.wfile.write(raw)
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: Receiver) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@contextmanager
def receive(*replies: Reply) -> Iterator[Receiver]:
    """Run a receiver answering with `replies` in order (then 200s) for the duration of the block."""
    state = Receiver(base="", replies=list(replies))
    server = _Server(state)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def refused_url() -> str:
    """A loopback URL where nothing listens (a port that was just free)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/traces"


class FakeTime:
    """A clock that moves only when slept on: the exporter's `monotonic` and `sleep`, for exact waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
