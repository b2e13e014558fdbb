"""The recording proxy as an ASGI app: every request forwarded, model calls recorded on the way.

`ProxyApp(upstream, tracer=...)` is a plain ASGI application (serve it with
uvicorn, or mount it in Starlette). For each HTTP request it:

- reads the body, sends the request to `upstream` unchanged (hop-by-hop
  headers aside, `obs.proxy._wire`) on a pool of kept-alive connections
  (`obs.proxy._upstream`, a lean HTTP/1.1 client), and relays the answer
  back as it arrives, byte for byte: status, headers, body, server-sent
  events, errors; the only header it adds is `traceparent`, naming the
  recorded span. `relay(request, caller)` is that relay for any server:
  each piece of the body is handed to the caller's side from the callback
  that received it (`obs.proxy._caller`); `start_proxy` and `python -m
  obs.proxy` serve it with the proxy's own HTTP/1.1 server
  (`obs.proxy._serve`), which writes it straight to the caller's socket;
- records `POST /v1/chat/completions`, `/v1/completions` and `/completion`
  (and their aliases without `/v1`) through `obs.llm.exchange.Exchange`:
  the span, metrics record and log entries InstrumentedClient writes, into
  the tracer's processors (the SQLite file, with `start_proxy` or
  `python -m obs.proxy`). Other paths (`/health`, `/props`, `/v1/models`,
  `/metrics`, `/slots`, embeddings, tokenize, ...) are relayed and not
  recorded: health checks every few seconds would bury the model calls;
- answers 502 with llama-server's error JSON when nothing answers upstream
  (504 when connecting, or `timeout_s`, runs out), and records it;
- when the upstream connection breaks mid-answer, breaks the caller's
  connection the same way (so the caller sees what a direct call shows);
- when the caller disconnects, stops the upstream request at once (its
  connection is closed, which makes llama-server stop generating).

Everything runs on the event loop without blocking it, so concurrent
streams pass side by side, except a stream under the proxy's own server:
a kept thread relays it (`obs.proxy._pump`), a streamed model call's whole
answer from the moment its request is written (head included), and hands
the pieces to `RelayedCall.keep` from there; there, a caller's connection
waits for its requests in such a thread, which relays a streamed model
call itself from its arrival (`obs.proxy._kept`, recorded by
`record_kept`). Each chunk is sent on to the caller first
and only then kept (with its arrival time). A model call is recorded once
its answer has passed (`obs.proxy._call`): as the request goes out only its
span begins (its ids go back in the `traceparent` header); the rest
(reading the request, the attributes, the log entry, reading the answer)
is done afterwards, from what was kept and stamped when it happened, so it
takes no CPU from the model while it computes; sooner past
`max_response_bytes`, and at once on a failure or when the caller leaves.
llama-server closes its connection after every streamed answer (while
announcing keep-alive), so after each answer the pool opens a connection in
the background and keeps one ready for `keep_ready_s` (30 s): the next call
goes out at once instead of first waiting to connect; meanwhile it holds one
of llama-server's HTTP threads (`--threads-http`). A pooled upstream connection that the
server closed while the request was on its way is retried once on a new
connection; a request that a new connection failed to get an answer for is
never sent twice. Once no request is in flight, the proxy asks recording to
write what it queued (`Tracer.flush_soon`) while the model rests, not on the
writers' one-second schedule, which lands in the middle of the next call and
takes CPU from the model there (when it runs on every core). The API key and any other credential header
reach nothing recorded. Telemetry never breaks the relay: a failure in
recording is logged and counted in `stats.telemetry_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

import httpx

from obs.clock import Clock
from obs.llm._config import Endpoint, capture_content_from_env, check_count
from obs.llm._limits import DEFAULT_MAX_RESPONSE_BYTES, Limits
from obs.llm._recording import CallRecorder
from obs.llm._redaction import Redactor
from obs.llm._server_errors import ServerErrors
from obs.llm.errors import ServerTimeout
from obs.llm.exchange import Exchange, Route, open_span
from obs.llm.llama.props import ServerProps
from obs.logs import LLMLogger
from obs.metrics.collector import MetricsCollector
from obs.proxy._call import AnswerHead, CallHooks, RelayedCall
from obs.proxy._caller import (
    Caller,
    CallerRequest,
    Receive,
    Scope,
    Send,
    UpstreamBroke,
    quiet_uvicorn,
    relay_asgi,
)
from obs.proxy._failures import no_answer_error, upstream_timeout
from obs.proxy._http1 import header_value
from obs.proxy._kept import Handback, KeptHost, Outcome
from obs.proxy._props import PropsReader
from obs.proxy._pump import CallerLeft
from obs.proxy._spares import Spares
from obs.proxy._upstream import UpstreamPool, UpstreamResponse
from obs.proxy._wire import charset_of, error_body, header_map, request_headers, response_headers, secrets_of
from obs.proxy.stats import ProxyStats
from obs.trace.handles import SpanHandle
from obs.trace.tracer import Tracer

__all__ = ["DEFAULT_MAX_CONTENT_CHARS", "CallerRequest", "ProxyApp", "ProxyStats", "UpstreamBroke"]

_log = logging.getLogger(__name__)

DEFAULT_MAX_CONTENT_CHARS = 65_536


def _seconds(owner: str, name: str, value: Any, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        none = " or None (no limit)" if allow_none else ""
        raise ValueError(f"{owner}: {name} must be seconds > 0{none}, got {value!r}")
    return float(value)


class ProxyApp:
    """An ASGI app relaying every request to `upstream` and recording its model calls (module docstring).

    `tracer` receives the spans (its processors decide where they go: the
    SQLite file with `start_proxy` or `python -m obs.proxy`) and its logger
    the log entries; `collector` counts requests, tokens and cost (the
    tracer's, else a new one). `capture_content` puts prompts and answers on
    spans, each attribute cut to `max_content_chars` (default: follow
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT). `connect_timeout_s`
    bounds connecting upstream; `timeout_s` bounds each wait for upstream
    bytes (None, the default: wait as long as the caller does, as a direct
    call would). `max_response_bytes` caps what recording reads of one
    answer (the relay itself has no cap). `keep_ready_s` keeps an upstream
    connection open and ready that long after each answer (0: never; module
    docstring). ValueError names a bad argument.
    """

    def __init__(
        self,
        upstream: str,
        *,
        tracer: Tracer,
        collector: MetricsCollector | None = None,
        capture_content: bool | None = None,
        max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS,
        connect_timeout_s: float = 10.0,
        timeout_s: float | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        clock: Clock | None = None,
        keep_ready_s: float = 30.0,
    ) -> None:
        """Check the configuration (ValueError names the argument); no connection is opened yet."""
        if not isinstance(tracer, Tracer):
            raise ValueError(f"ProxyApp: tracer must be an obs.Tracer, got {type(tracer).__name__}")
        try:
            self.endpoint = Endpoint.parse(upstream)
        except ValueError as exc:
            raise ValueError(f"ProxyApp: upstream {str(exc).removeprefix('base_url ')}") from None
        check_count("max_content_chars", max_content_chars, 1, "message characters per span attribute")
        self.connect_timeout_s = _seconds("ProxyApp", "connect_timeout_s", connect_timeout_s, False)
        self.timeout_s = _seconds("ProxyApp", "timeout_s", timeout_s, True)
        ready_s = keep_ready_s
        if isinstance(ready_s, bool) or not isinstance(ready_s, int | float) or not 0 <= ready_s < 1e9:
            raise ValueError(f"ProxyApp: keep_ready_s must be seconds >= 0 (0: never), got {ready_s!r}")
        self.keep_ready_s = float(ready_s)
        each_s = self.timeout_s or self.connect_timeout_s
        self._limits = Limits.validated(each_s, None, None, max_response_bytes)
        self.tracer = tracer
        self.collector = collector or getattr(tracer, "collector", None) or MetricsCollector()
        logger = tracer.logger if tracer.logger is not None else LLMLogger()
        self.clock = clock if clock is not None else tracer.clock
        if capture_content is None:
            capture_content = capture_content_from_env()
        self.capture_content = bool(capture_content)
        self._recording = {
            "tracer": tracer, "collector": self.collector, "logger": logger, "clock": self.clock,
            "max_content_chars": max_content_chars, "server_url": self.endpoint.shown,
            "server_address": self.endpoint.address, "server_port": self.endpoint.port,
        }  # fmt: skip
        self.upstream = self.endpoint.shown
        self.stats = ProxyStats()
        self._props = PropsReader(self.clock.monotonic_ms, self._get_props)
        self._in_flight = 0  # requests being relayed
        base = httpx.URL(self.endpoint.root)
        self._scheme, self._host = base.scheme, base.host
        self._prefix = base.raw_path.decode("ascii").rstrip("/")  # an upstream under a path prefix
        self._pool: UpstreamPool | None = None
        self.spares = Spares(self._host, self.endpoint.port, self.connect_timeout_s, self.keep_ready_s)
        self._kept_host: KeptHost | None = None
        self._kept_lock = threading.Lock()
        self._kept_in_flight = 0  # calls kept connections' threads relay, not yet recorded
        self._hooks = CallHooks(self.clock.monotonic_ms, self._open, self._begin, self._answer_began,
                                self._telemetry_failed, self._limits.max_response_bytes)  # fmt: skip
        quiet_uvicorn()

    def __repr__(self) -> str:
        return f"ProxyApp(upstream={self.upstream!r})"

    # -- serving ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point: HTTP requests are relayed; lifespan reads `/props` and closes the pool."""
        kind = scope["type"]
        if kind == "http":
            await relay_asgi(self.relay, scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        else:  # websockets: llama-server speaks none
            await send({"type": "websocket.close", "code": 1003})

    async def startup(self) -> None:
        """Read the upstream's `/props` (model name, context size), giving it at most 2 s."""
        await self._props.startup()

    async def aclose(self) -> None:
        """Close the upstream connection pool (the next request opens a new one)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()
        self.spares.close()

    def _upstream(self) -> UpstreamPool:
        if self._pool is None:
            self._pool = UpstreamPool(self._scheme, self._host, self.endpoint.port,
                                      connect_timeout_s=self.connect_timeout_s, read_timeout_s=self.timeout_s,
                                      keep_ready_s=self.keep_ready_s)  # fmt: skip
            self._pool.spares = self.spares
        return self._pool

    @property
    def props(self) -> ServerProps | None:
        """The upstream's `/props` (model name, context size), once read; None until then."""
        return self._props.props

    async def _get_props(self, headers: list[tuple[bytes, bytes]], timeout_s: float) -> UpstreamResponse:
        return await self._upstream().send("GET", self._upstream_target("/props"), headers, b"",
                                           read_timeout_s=timeout_s)  # fmt: skip

    def _count_retry(self) -> None:
        self.stats.retried += 1

    def _count_connect(self) -> None:
        self.stats.connects_waited += 1

    # -- one request ------------------------------------------------------------------------------

    async def relay(self, request: CallerRequest, caller: Caller, kept: Handback | None = None) -> None:
        """Relay `request` upstream and its answer to `caller`, recording a model call on the way.

        A model call's span begins as its request goes out (timed from
        then); the call is recorded once its answer has passed. Cancel
        the relay when the caller leaves (after setting `caller.gone`: the
        upstream request is stopped and the call recorded as left) or when
        the proxy stops (the call is recorded as cut, the caller's answer
        broken). `kept` is a request a kept connection's thread wrote
        upstream, or could not, and left to the loop (`obs.proxy._kept`):
        relayed from where the thread was, with its call. Never raises but
        CancelledError.
        """
        self.stats.requests += 1
        self._in_flight += 1
        if kept is not None and kept.call is not None:
            self._kept_ended()
            call = kept.call
            self.stats.connects_waited += kept.connected
        else:
            call = RelayedCall(self._hooks, request)
        try:
            await self._forward(request, caller, call, kept)
        except CallerLeft:  # noticed while streaming (obs.proxy._pump)
            caller.gone = True
            self._caller_left(call.begin())
        except asyncio.CancelledError:
            if caller.gone:
                self._caller_left(call.begin())
            else:
                self._stopped(call)
                caller.abort()
            raise
        finally:
            self._finished(call)

    def record_kept(self, call: RelayedCall, outcome: Outcome, failure: BaseException | None,
                    connected: bool) -> None:  # fmt: skip
        """Record a call a kept connection's thread relayed (`obs.proxy._kept`), as `relay` would have:
        `outcome` is "ok" (its answer passed whole), "left" (the caller left), "broken" (the upstream
        broke midway, `failure` how), "stopped" (the proxy stopped it) or "failed" (inside the proxy:
        recorded as whatever it got to); `connected` if it waited for a new upstream connection."""
        self.stats.requests += 1
        self.stats.kept += 1
        self.stats.connects_waited += connected
        self._kept_ended()
        self._in_flight += 1
        try:
            if outcome == "left":
                self._caller_left(call.begin())
            elif outcome == "broken" and isinstance(failure, httpx.HTTPError):
                self._broke(call, failure)
            elif outcome == "stopped":
                self._stopped(call)
            elif outcome == "ok" and (exchange := call.begin()) is not None:
                exchange.end()
        finally:
            self._finished(call)

    def kept_host(self) -> KeptHost | None:
        """What a kept connection's thread relays its calls with (on the running loop); None where the
        upstream speaks TLS (its calls stay on the loop)."""
        if self._scheme != "http":
            return None
        if self._kept_host is None:
            self._kept_host = KeptHost(asyncio.get_running_loop(), self._kept_call, self._wire,
                                       self.record_kept, self._count_retry, self.spares, self.timeout_s,
                                       self.clock.monotonic_ms)  # fmt: skip
        if self._pool is not None and self.keep_ready_s > 0:
            self._pool.ready_to_spares()
        return self._kept_host

    def _kept_call(self, request: CallerRequest) -> RelayedCall:
        """A streamed model call's recording, made in a kept connection's thread (counted in flight until
        recorded or handed back)."""
        call = RelayedCall(self._hooks, request, self._kept_host.loop)  # type: ignore[union-attr]
        with self._kept_lock:
            self._kept_in_flight += 1
        return call

    def _kept_ended(self) -> None:
        with self._kept_lock:
            self._kept_in_flight -= 1

    def _wire(self, request: CallerRequest) -> bytes:
        """`request` as it is written upstream (any thread)."""
        return self._upstream().request_bytes(request.method.encode("ascii"),
                                              self._upstream_target(request.target).encode("latin-1"),
                                              request_headers(request.headers), request.body)  # fmt: skip

    def _stopped(self, call: RelayedCall) -> None:
        """The proxy stopped the call before its answer was complete: recorded as cut."""
        exchange = call.begin()
        if exchange is not None:
            exchange.cut(httpx.ReadError("the proxy was stopped before the answer was complete"))

    def _finished(self, call: RelayedCall) -> None:
        """The relay of `call` is over: recorded now if not yet (while the model rests), counted."""
        exchange = call.begin()
        if exchange is not None:
            self._settle(exchange)
        self._in_flight -= 1
        if self._in_flight == 0 and self._kept_in_flight == 0:
            self.tracer.flush_soon()  # written while the model rests (never raises)

    def _caller_left(self, exchange: Exchange | None) -> None:
        """The caller left before the whole answer was relayed: counted, and recorded so."""
        self.stats.client_gone += 1
        if exchange is not None:
            exchange.client_gone()

    def _open(self, route: Route, raw: list[tuple[bytes, bytes]]) -> SpanHandle | None:
        """Begin a model call's span as its request goes out (`RelayedCall.sent`); None if that fails."""
        try:
            traceparent = header_value(raw, b"traceparent")
            return open_span(self.tracer, route, traceparent.decode("latin-1") if traceparent else None)
        except Exception as exc:
            self._telemetry_failed("the span of a call", exc)
            return None

    def _begin(
        self, route: Route, raw: list[tuple[bytes, bytes]], body: bytes, opened: SpanHandle | None,
        at_ms: float,
    ) -> Exchange | None:
        """Record a model call sent at `at_ms` (its span `opened` then, if it was); None (and counted) if
        even beginning that fails: the relay goes on."""
        try:
            secrets = secrets_of(raw)
            redactor = Redactor([*self.endpoint.secrets, *secrets])
            recorder = CallRecorder(**self._recording, capture_content=self.capture_content, redact=redactor)
            errors = ServerErrors(self.upstream, self._limits, redactor, api_key_given=bool(secrets))
            headers = header_map(raw)
            self._props.refresh(headers.get("authorization"))
            exchange = Exchange.begin(recorder, errors, route, body, headers, self._props.props,
                                      opened=opened, at_ms=at_ms)  # fmt: skip
        except Exception as exc:
            self._telemetry_failed("the recording of a call", exc)
            if opened is not None:
                with contextlib.suppress(Exception):
                    opened.end("error", "obs.proxy could not record this call")
            return None
        self.stats.recorded += 1
        return exchange

    def _telemetry_failed(self, what: str, exc: BaseException) -> None:
        """Recording failed somewhere (never the relay): counted and logged."""
        self.stats.telemetry_errors += 1
        _log.warning("obs.proxy: could not record %s: %s", what, type(exc).__name__)

    def _settle(self, exchange: Exchange) -> None:
        """The call is over: make sure it is recorded, and count its telemetry failures."""
        if not exchange.ended:
            exchange.client_gone()
        self.stats.telemetry_errors += exchange.recorder.telemetry_errors

    async def _forward(self, request: CallerRequest, caller: Caller, call: RelayedCall,
                       kept: Handback | None) -> None:  # fmt: skip
        """Send the request upstream (unless `kept` did) and stream the answer to `caller` (the body from
        push callbacks)."""
        feed = call.keep if call.recording else None
        try:
            if kept is not None and kept.call is not None:
                if kept.upstream is None:
                    raise kept.failure or httpx.ConnectError("no connection upstream")
                response = await self._upstream().adopt(kept.upstream, kept.answer, request.method)
            else:
                # A streamed model call's answer is relayed by a thread from the moment its request is out.
                early = caller.relay_early(call.traceparent, feed, self.clock.monotonic_ms) if call.streamed \
                    else None  # fmt: skip
                response = await self._upstream().send(request.method, self._upstream_target(request.target),
                                                       request_headers(request.headers), request.body,
                                                       on_retry=self._count_retry, on_sent=call.sent,
                                                       on_connect=self._count_connect, early=early,
                                                       on_answer=call.answered)  # fmt: skip
        except httpx.HTTPError as exc:
            status, headers, payload = self._no_answer(exc, call.begin())
            caller.start(status, headers)
            caller.write(payload)
            caller.end()
            return
        call.answered(response)
        try:
            if not response.relayed:
                caller.start(response.status,
                             response_headers(response.headers, call.traceparent(), response.chunked))
                # The hot path: each piece goes to the caller first; recording only keeps it, timed.
                await caller.stream(response, feed, self.clock.monotonic_ms)
            elif response.failure is not None:
                raise response.failure
        except httpx.HTTPError as exc:
            self._broke(call, exc)
            caller.abort()
            return
        finally:
            await response.aclose()
        exchange = call.begin()  # the answer has passed: the call is recorded now
        if exchange is not None:
            exchange.end()

    def _broke(self, call: RelayedCall, exc: httpx.HTTPError) -> None:
        """The upstream's answer broke after its head was relayed: counted, and recorded so."""
        self.stats.broken += 1
        exchange = call.begin()
        if exchange is not None:
            if isinstance(exc, httpx.TimeoutException):
                exchange.fail(self._timeout_error(mid_answer=True))
            else:
                exchange.cut(exc)

    def _answer_began(self, exchange: Exchange, response: AnswerHead) -> None:
        headers = response.headers
        content_type = header_value(headers, b"content-type")
        encoding = header_value(headers, b"content-encoding")
        text_type = content_type.decode("latin-1") if content_type is not None else None
        exchange.response(response.status, text_type,
                          encoding.decode("latin-1") if encoding is not None else None,
                          charset_of(text_type))  # fmt: skip

    def _upstream_target(self, target: str) -> str:
        """The path and query the upstream is asked for: `target` below the upstream's own prefix, if any."""
        target = self._prefix + target
        if self.endpoint.params:  # the upstream URL's own query (an api-version, say) goes on every request
            url = httpx.URL(self.endpoint.root + target).copy_merge_params(self.endpoint.params)
            target = url.raw_path.decode("ascii")
        return target

    def _timeout_error(self, *, mid_answer: bool = False, connecting: bool = False) -> ServerTimeout:
        return upstream_timeout(self.upstream, self.timeout_s, self.connect_timeout_s, mid_answer=mid_answer,
                                connecting=connecting)  # fmt: skip

    def _no_answer(
        self, exc: httpx.HTTPError, exchange: Exchange | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Nothing answered upstream: 502 (504 for a timeout) with llama-server's error JSON, recorded."""
        self.stats.no_answer += 1
        status, kind, error = no_answer_error(exc, self.upstream, self.endpoint.secrets, self.timeout_s,
                                              self.connect_timeout_s)  # fmt: skip
        payload = error_body(status, f"obs.proxy: {error}", kind)
        headers = [(b"content-type", b"application/json; charset=utf-8"),
                   (b"content-length", str(len(payload)).encode("ascii"))]
        if exchange is not None:
            exchange.fail(error)
            headers.append((b"traceparent", exchange.traceparent().encode("ascii")))
        return status, headers, payload
