"""The OTLP/HTTP trace receiver as an ASGI app: `POST /v1/traces` and `GET /metrics`.

`make_receiver_app(exporter, collector=None, token=None, ...)` returns a
Starlette app, one call to mount in another app or to serve alone
(`python -m obs.receiver`). `POST /v1/traces` answers as the OTLP
specification (1.11) says a receiver must:

- a body in `application/x-protobuf` or `application/json`, gzip or not,
  that parses: 200 with an `ExportTraceServiceResponse` in the request's
  content type (an empty body too);
- some spans malformed (ids, times): 200 with
  `partial_success{rejected_spans, error_message}`; the rest are taken;
- a body that does not parse, or a damaged gzip stream: 400;
- another content type, or a `Content-Encoding` other than gzip: 415;
- a body, or what its gzip holds, over `max_body_bytes` (64 MiB): 413 (a
  gzip bomb is stopped at the limit);
- the queue in front of the exporter is full, or too many bodies are being
  decoded: 429 with `Retry-After`;
- the exporter is failing or stuck, or the receiver is shutting down: 503
  with `Retry-After`;
- no bearer token or another one, when a token is set: 401.

Error bodies are `google.rpc.Status` in the request's format (JSON when the
type is unknown). A body is parsed and checked on a worker thread, never on
the event loop, and answered then: building its traces waits for the
queue's worker (`Ingest`), so a client's next request is not held up by it.
An unexpected failure answers 500 and is logged. Nothing a client sends can
stop the app. Accepted spans with GenAI attributes are counted in `collector`
as requests (`obs.receive.genai`) as their traces are built. `GET /metrics`
builds whatever is still queued, then serves `to_prometheus(collector)`.
With a `token`, both routes require `Authorization: Bearer <token>`,
compared in constant time. `app.state.ingest` is the `Ingest` queue (stats,
flush); `app.state.collector` the collector. Shutting the app down (its
lifespan) exports what is queued.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from obs.export.prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from obs.export.prometheus import to_prometheus
from obs.metrics.collector import MetricsCollector
from obs.receive.decode import BadRequest, Checked, check_request
from obs.receive.genai import record_genai_spans
from obs.receive.ingest import Admission, Ingest
from obs.receive.wire import (
    DEFAULT_MAX_BODY_BYTES,
    Kind,
    TooLarge,
    UnsupportedEncoding,
    content_type,
    decompress,
    grpc_code,
    media_kind,
    status_body,
    success_body,
)
from obs.trace.processors import check_timeout
from obs.trace.traces import Trace

__all__ = ["MIN_TOKEN_LENGTH", "make_receiver_app"]

_log = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 16
# An oversized body is read on (and thrown away) up to 4x the limit, so the client gets to see its 413.
_DRAIN_FACTOR = 4


def _check_token(token: object) -> str | None:
    if token is None:
        return None
    if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH or token != token.strip():
        raise ValueError(
            f"make_receiver_app: token must be None or a string of at least {MIN_TOKEN_LENGTH} characters "
            "without surrounding spaces (make one with `python -c 'import secrets; "
            "print(secrets.token_urlsafe(24))'`)"
        )
    return token


class _Received:
    """A checked request body whose traces are built when the queue's worker gets to it (a `Deferred`).

    Building them also counts their GenAI spans in the collector. A span a
    check let through that the conversion refuses (which should not happen)
    makes `build` raise: the queue logs and counts the spans as dropped.
    """

    __slots__ = ("checked", "collector")

    def __init__(self, checked: Checked, collector: Any) -> None:
        self.checked = checked
        self.collector = collector

    @property
    def trace_count(self) -> int:
        return self.checked.trace_count

    def build(self) -> list[Trace]:
        traces = self.checked.traces()
        if traces:
            record_genai_spans(self.collector, traces)
        return traces


class _Receiver:
    """The request handlers and what they share."""

    def __init__(self, ingest: Ingest, collector: Any, token: str | None, max_body_bytes: int,
                 max_concurrent_decodes: int) -> None:
        self.ingest = ingest
        self.collector = collector
        self.token = token.encode() if token is not None else None
        self.max_body = max_body_bytes
        self.max_decodes = max_concurrent_decodes
        self.decoding = 0  # touched on the event loop only
        self.retry_after = str(max(1, math.ceil(ingest.retry_after_s)))

    def authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "replace"), self.token)

    def error(self, kind: Kind | None, status: int, message: str, retry: bool = False) -> Response:
        kind = kind or "json"
        headers = {"Retry-After": self.retry_after} if retry else {}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="obs"'
        return Response(status_body(kind, grpc_code(status), message), status, headers, content_type(kind))

    async def read_body(self, request: Request) -> bytes:
        """The body, or TooLarge once it passes the limit (read on, and thrown away, up to a bound)."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                chunks.clear()
                if size > self.max_body * _DRAIN_FACTOR:
                    break
                continue
            chunks.append(chunk)
        if size > self.max_body:
            raise TooLarge(f"the body is more than the limit of {self.max_body} bytes")
        return b"".join(chunks)

    def check(self, body: bytes, encoding: str | None, kind: Kind) -> Checked:
        return check_request(decompress(body, encoding, self.max_body), kind)

    async def traces(self, request: Request) -> Response:
        kind = media_kind(request.headers.get("content-type"))
        if not self.authorized(request):
            return self.error(kind, 401, "a valid bearer token is required: Authorization: Bearer <token>")
        if kind is None:
            return self.error(None, 415, f"Content-Type {request.headers.get('content-type')!r} is not "
                              "supported: send application/x-protobuf or application/json")
        encoding = request.headers.get("content-encoding")
        if (encoding or "").strip().lower() not in ("", "identity", "gzip", "x-gzip"):
            return self.error(kind, 415, f"Content-Encoding {encoding!r} is not supported: send gzip or none")
        try:
            body = await self.read_body(request)
        except TooLarge as exc:
            return self.error(kind, 413, str(exc))
        if self.decoding >= self.max_decodes:
            return self.error(kind, 429, "too many requests are being decoded: retry later", retry=True)
        self.decoding += 1
        try:
            checked = await run_in_threadpool(self.check, body, encoding, kind)
        except TooLarge as exc:
            return self.error(kind, 413, str(exc))
        except UnsupportedEncoding as exc:
            return self.error(kind, 415, str(exc))
        except (BadRequest, ValueError) as exc:
            return self.error(kind, 400, str(exc))
        finally:
            self.decoding -= 1
        # The traces are built (and their GenAI spans counted) off this request, by the queue's worker.
        admission = self.ingest.offer(_Received(checked, self.collector), checked.accepted)
        if admission is Admission.FULL:
            return self.error(kind, 429, "the receiver's queue is full: retry later", retry=True)
        if admission is Admission.UNAVAILABLE:
            return self.error(kind, 503, "the receiver cannot store traces now: retry later", retry=True)
        return Response(success_body(kind, checked.rejected, checked.error_message), 200,
                        media_type=content_type(kind))

    def prometheus_text(self) -> str:
        self.ingest.materialize()  # every request answered so far is counted
        return to_prometheus(self.collector)

    async def metrics(self, request: Request) -> Response:
        if not self.authorized(request):
            return Response("a valid bearer token is required: Authorization: Bearer <token>\n", 401,
                            {"WWW-Authenticate": 'Bearer realm="obs"'}, "text/plain; charset=utf-8")
        text = await run_in_threadpool(self.prometheus_text)
        return Response(text, 200, media_type=PROMETHEUS_CONTENT_TYPE)

    async def guarded_traces(self, request: Request) -> Response:
        try:
            return await self.traces(request)
        except Exception as exc:  # a bug, not the client's doing: answer and log, never stop serving
            _log.exception("obs: receiver failed on a request")
            return self.error(media_kind(request.headers.get("content-type")), 500,
                              f"internal error: {type(exc).__name__}")


def make_receiver_app(
    exporter: Any,
    collector: MetricsCollector | None = None,
    token: str | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_queue_spans: int = 20_000,
    export_timeout_s: float = 30.0,
    retry_after_s: float = 5.0,
    max_concurrent_decodes: int = 8,
    shutdown_timeout_s: float = 10.0,
) -> Starlette:
    """An ASGI app receiving OTLP/HTTP traces into `exporter` (see the module docstring).

    `exporter` is a TraceExporter (`MergingStoreExporter(store)` to store
    traces whose spans arrive in parts; `InMemoryExporter()` in tests);
    `collector` counts the GenAI spans and is served at `/metrics` (a new
    MetricsCollector when None); `token` (None, or 16+ characters) is the
    bearer token both routes then require. `max_body_bytes` bounds a body
    and what it decompresses to; `max_queue_spans`, `export_timeout_s` and
    `retry_after_s` configure the `Ingest` queue; `max_concurrent_decodes`
    bounds the bodies decoded at once. ValueError names any bad argument.
    """
    token = _check_token(token)
    check_timeout("make_receiver_app", "shutdown_timeout_s", shutdown_timeout_s)
    sizes = (("max_body_bytes", max_body_bytes), ("max_concurrent_decodes", max_concurrent_decodes))
    for name, value in sizes:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"make_receiver_app: {name} must be an int >= 1, got {value!r}")
    if collector is None:
        collector = MetricsCollector()
    elif not callable(getattr(collector, "record_request", None)):
        raise ValueError(f"make_receiver_app: collector must be a MetricsCollector, got {collector!r}")
    ingest = Ingest(exporter, max_queue_spans=max_queue_spans, export_timeout_s=export_timeout_s,
                    retry_after_s=retry_after_s)
    receiver = _Receiver(ingest, collector, token, max_body_bytes, max_concurrent_decodes)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(ingest.shutdown, shutdown_timeout_s)

    app = Starlette(
        routes=[
            Route("/v1/traces", receiver.guarded_traces, methods=["POST"]),
            Route("/metrics", receiver.metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.ingest = ingest
    app.state.collector = collector
    return app
