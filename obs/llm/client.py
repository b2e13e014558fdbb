"""InstrumentedClient: chat with llama-server (or any OpenAI-compatible server), observed.

Every call becomes a client span named `chat {model}` that follows the
OpenTelemetry GenAI conventions and carries llama.cpp's own timings; it is
recorded in the MetricsCollector, logged to the LLMLogger with its trace and
span ids, and sent to the server as a W3C `traceparent` header. Failures end
in one small hierarchy of exceptions (`obs.llm.errors`) with messages that say
what to do, and the span, the metrics and the logs record them too.

The telemetry never breaks a chat: a failure while recording is logged and
counted in `telemetry_errors`, never raised. The application's own exceptions
(KeyboardInterrupt, say) are recorded on the span and pass through unchanged.

A streamed answer is an `obs.llm.stream.ChatStream` (importable from here too).
How one call is recorded (span, metrics, logs) lives in `obs.llm._recording`,
whose `CallRecorder` the client owns and hands to its streams; the errors that
failures become live in `obs.llm._server_errors`.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, NamedTuple

import httpx

from obs import semconv
from obs.clock import SYSTEM_CLOCK, Clock
from obs.llm._recording import Call, CallRecorder
from obs.llm._server_errors import ServerErrors
from obs.llm.cache import ResponseCache, cache_key
from obs.llm.errors import BadResponse
from obs.llm.llama.props import ServerProps, shared_ssl_context
from obs.llm.llama.responses import ChatCompletion
from obs.llm.stream import ChatStream
from obs.logs import LLMLogger
from obs.metrics.collector import MetricsCollector, MetricsSnapshot
from obs.storage.memory import TraceStore
from obs.trace.sampling.head import SAMPLER_ENV, sampler_from_env
from obs.trace.spans import Span
from obs.trace.tracer import TraceHandle, Tracer
from obs.trace.traces import Trace

__all__ = ["BASE_URL_ENV", "DEFAULT_BASE_URL", "ChatResult", "ChatStream", "InstrumentedClient"]

DEFAULT_BASE_URL = "http://127.0.0.1:8033"
BASE_URL_ENV = "LLAMA_SERVER_URL"
_PROPS_RETRY_MS = 30_000.0
_PROPS_TIMEOUT_S = 5.0


class ChatResult(NamedTuple):
    """What `chat` returns: unpacks as `response, span = client.chat(...)`."""

    response: ChatCompletion
    span: Span


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence) or not messages:
        raise ValueError(
            "messages must be a non-empty list of {'role': ..., 'content': ...} dicts, "
            f"got {type(messages).__name__}"
        )
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise ValueError(f"messages[{index}] must be a dict with a 'role' string, got {message!r}"[:200])
        checked.append(dict(message))
    return checked


def _public_url(url: httpx.URL) -> str:
    """The URL without user info, so credentials in it never reach a message."""
    return str(url.copy_with(username=None, password=None)).rstrip("/")


class InstrumentedClient:
    """A chat client for llama-server that traces, measures and logs every call.

    `base_url` defaults to the LLAMA_SERVER_URL environment variable, else
    http://127.0.0.1:8033. `api_key` is sent as a Bearer token and never
    recorded anywhere. `model` is sent when given (llama-server ignores it,
    other OpenAI-compatible servers need it); otherwise the name comes from
    the server's `/props`. `timeout` is seconds per connect/read/write.

    With no `tracer`, one is built on the given (or fresh) `store`,
    `collector` and `logger`, so every client works on its own; its head
    sampler then follows OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG when
    they are set (`obs.trace.sampling.head.sampler_from_env`). `cache_size`
    > 0 turns on an exact-match response cache (LRU, entries live
    `cache_ttl_s` seconds) whose hits skip the server. `capture_content`
    records message contents on spans (GenAI's opt-in content attributes).
    Thread-safe.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 60.0,
        *,
        collector: MetricsCollector | None = None,
        store: TraceStore | Any = None,
        logger: LLMLogger | None = None,
        tracer: Tracer | None = None,
        capture_content: bool = True,
        cache_size: int = 0,
        cache_ttl_s: float | None = 300.0,
        read_props: bool = True,
        clock: Clock | None = None,
    ) -> None:
        """Validate the configuration (ValueError names the bad argument) and open a connection pool."""
        raw_url = base_url if base_url is not None else os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        if not isinstance(raw_url, str) or not raw_url.strip():
            raise ValueError(f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL}, got {raw_url!r}")
        try:
            url = httpx.URL(raw_url.strip().rstrip("/"))
        except (httpx.InvalidURL, TypeError) as exc:
            raise ValueError(f"base_url {raw_url!r} is not a valid URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"base_url must be an http(s) URL with a host, such as {DEFAULT_BASE_URL}, got {raw_url!r}"
            )
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise ValueError("api_key must be None or a non-empty string")
        if model is not None and (not isinstance(model, str) or not model):
            raise ValueError(f"model must be None or a non-empty string, got {model!r}")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (timeout > 0 and math.isfinite(timeout))
        ):
            raise ValueError(f"timeout must be seconds > 0, got {timeout!r}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0 (0 = no response cache), got {cache_size!r}")
        if tracer is not None and not isinstance(tracer, Tracer):
            raise ValueError(f"tracer must be an obs.Tracer or None, got {type(tracer).__name__}")

        self._url = url
        self.base_url = _public_url(url)
        self.model = model
        self.timeout = float(timeout)
        clock = clock if clock is not None else (tracer.clock if tracer is not None else SYSTEM_CLOCK)
        if tracer is not None:
            store = store if store is not None else tracer.store
            collector = collector if collector is not None else tracer.collector
            logger = logger if logger is not None else tracer.logger
        collector = collector if collector is not None else MetricsCollector(clock=clock)
        self.store = store if store is not None else TraceStore()
        logger = logger if logger is not None else LLMLogger(clock=clock)
        if tracer is None:
            tracer = Tracer(
                store=self.store, collector=collector, logger=logger, clock=clock,
                # As OpenTelemetry SDKs do: OTEL_TRACES_SAMPLER (and _ARG) pick the head sampler.
                head_sampler=sampler_from_env() if os.environ.get(SAMPLER_ENV, "").strip() else None,
            )
        self._recorder = CallRecorder(
            tracer=tracer,
            collector=collector,
            logger=logger,
            clock=clock,
            capture_content=bool(capture_content),
            server_url=self.base_url,
            server_address=url.host,
            server_port=url.port or (443 if url.scheme == "https" else 80),
        )
        self._errors = ServerErrors(self.base_url, self.timeout, api_key)
        self.cache: ResponseCache[ChatCompletion] | None = (
            ResponseCache(cache_size, cache_ttl_s, clock=clock) if cache_size else None
        )
        self._read_props = read_props
        self._props: ServerProps | None = None
        self._props_tried_at: float | None = None
        self._props_lock = threading.Lock()
        self._chat_url = str(url) + "/v1/chat/completions"
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._headers = headers
        self._http = httpx.Client(timeout=httpx.Timeout(self.timeout), verify=shared_ssl_context())

    # -- what the recorder holds ----------------------------------------------------------------

    @property
    def tracer(self) -> Tracer:
        """The tracer every call's span is begun on."""
        return self._recorder.tracer

    @property
    def collector(self) -> MetricsCollector:
        """The MetricsCollector every call is recorded in."""
        return self._recorder.collector

    @property
    def logger(self) -> LLMLogger:
        """The LLMLogger every call is logged to."""
        return self._recorder.logger

    @property
    def clock(self) -> Clock:
        """The clock that times every call."""
        return self._recorder.clock

    @property
    def capture_content(self) -> bool:
        """Whether message contents go on spans; may be switched at any time, for the calls after."""
        return self._recorder.capture_content

    @capture_content.setter
    def capture_content(self, value: bool) -> None:
        self._recorder.capture_content = bool(value)

    @property
    def telemetry_errors(self) -> int:
        """How many times recording failed (each logged to the `obs` logger, none raised into a chat)."""
        return self._recorder.telemetry_errors

    # -- public API -----------------------------------------------------------------------------

    def chat(self, messages: Sequence[Mapping[str, Any]], *, parent: Any = None, **params: Any) -> ChatResult:
        """Send one chat request and return `(response, span)` once the whole answer is in.

        `params` go into the request body (temperature, max_tokens, seed, stop,
        top_p, model, ...). `parent` (a SpanHandle or TraceHandle) places the
        span explicitly; by default it nests under the current span or trace,
        else the trace begun with `start_trace`, else a trace of its own.
        Raises an `obs.llm.errors.LLMServerError` subclass when the server fails;
        ValueError for malformed messages.
        """
        call = self._start_call(messages, params, stream=False, parent=parent)
        hit = self._cache_get(call)
        if hit is not None:
            return ChatResult(hit, self._recorder.succeed(call, hit, cached=True))
        response = self._send(
            call,
            lambda: self._http.post(
                self._chat_url, content=self._payload(call), headers=self._request_headers(call)
            ),
        )
        self._recorder.event(
            call, semconv.EVENT_RESPONSE_RECEIVED, {semconv.HTTP_RESPONSE_STATUS_CODE: response.status_code}
        )
        if response.status_code >= 400:
            error = self._errors.status(response)
            self._recorder.fail(call, error, status=response.status_code)
            raise error
        try:
            completion = self._errors.parse_body(response)
        except BadResponse as error:
            self._recorder.fail(call, error, status=response.status_code)
            raise
        self._cache_put(call, completion)
        return ChatResult(completion, self._recorder.succeed(call, completion, status=response.status_code))

    def chat_stream(
        self, messages: Sequence[Mapping[str, Any]], *, parent: Any = None, **params: Any
    ) -> ChatStream:
        """Send a streamed chat request; iterate the returned ChatStream for text deltas.

        The request is sent now (so connection and HTTP errors raise here);
        the span is recorded when the stream ends: read to `[DONE]`, closed
        early (`close()`, leaving a `with` block, or dropping it), or broken
        (then iteration raises StreamInterrupted or ServerTimeout and the
        text received so far stays on the span). Usage is requested with
        `stream_options.include_usage` unless `stream_options` is given.
        """
        call = self._start_call(messages, params, stream=True, parent=parent)
        hit = self._cache_get(call)
        if hit is not None:
            return self._stream(call, cached=hit)
        request = self._http.build_request(
            "POST", self._chat_url, content=self._payload(call), headers=self._request_headers(call)
        )
        response = self._send(call, lambda: self._http.send(request, stream=True))
        if response.status_code >= 400:
            self._recorder.event(
                call,
                semconv.EVENT_RESPONSE_RECEIVED,
                {semconv.HTTP_RESPONSE_STATUS_CODE: response.status_code},
            )
            try:
                response.read()
            except httpx.HTTPError:
                pass  # the status alone is enough to report
            finally:
                response.close()
            error = self._errors.status(response)
            self._recorder.fail(call, error, status=response.status_code)
            raise error
        return self._stream(call, response=response)

    def start_trace(self, name: str, metadata: Mapping[str, Any] | None = None) -> TraceHandle:
        """Begin a trace (a conversation) that the following chats join until `end_current_trace`.

        It is active in the current context; chats made where no span or
        trace is current (another thread, a later request) join it too.
        """
        handle = self.tracer.begin_trace(name, metadata)
        self._recorder.open_conversation(handle)
        return handle

    def end_current_trace(self) -> Trace | None:
        """End the trace begun by `start_trace` (the one current here, else the latest); None if none."""
        handle = self._recorder.close_conversation(self.tracer.current_trace())
        if handle is None:
            return None
        return self.tracer.end_trace(handle)

    def get_metrics(self) -> MetricsSnapshot:
        """The collector's totals now (requests, tokens, cost, latency percentiles, ...)."""
        return self.collector.get_metrics()

    def get_metrics_summary(self) -> str:
        """A readable multi-line summary of the metrics so far."""
        m = self.collector.get_metrics()
        lookups = m.cache_hits + m.cache_misses
        return "\n".join(
            [
                f"Requests: {m.request_count} (errors: {m.error_count}, {m.error_rate:.1%})",
                f"Tokens: {m.total_tokens:,} "
                f"(prompt {m.prompt_tokens:,}, completion {m.completion_tokens:,})",
                f"Cost: ${m.total_cost:.4f}",
                f"Latency: avg {m.avg_latency_ms:.0f} ms, p50 {m.p50_latency_ms:.0f} ms, "
                f"p95 {m.p95_latency_ms:.0f} ms, p99 {m.p99_latency_ms:.0f} ms",
                f"Time to first token: avg {m.avg_ttft_ms:.0f} ms, p95 {m.p95_ttft_ms:.0f} ms",
                f"Cache: {m.cache_hits} hits of {lookups} ({m.cache_hit_rate:.1%})",
                f"Throughput: {m.requests_per_second:.2f} req/s, {m.tokens_per_second:.1f} tokens/s",
            ]
        )

    @property
    def server_props(self) -> ServerProps | None:
        """What `/props` said (read once, on the first request), or None if not read."""
        return self._props

    def refresh_props(self) -> ServerProps | None:
        """Read `/props` now (model name, context size, build); None if the server does not say."""
        self._props_tried_at = self.clock.monotonic_ms()
        try:
            response = self._http.get(
                str(self._url) + "/props", headers=self._headers, timeout=min(self.timeout, _PROPS_TIMEOUT_S)
            )
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            data = None
        if isinstance(data, Mapping):
            self._props = ServerProps.from_json(data)
        return self._props

    def close(self) -> None:
        """Close the connection pool; the client cannot send afterwards."""
        self._http.close()

    def __enter__(self) -> InstrumentedClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"InstrumentedClient(base_url={self.base_url!r}, model={self.model!r})"

    # -- request building -----------------------------------------------------------------------

    def _ensure_props(self) -> ServerProps | None:
        if not self._read_props or self._props is not None:
            return self._props
        tried = self._props_tried_at
        if tried is not None and self.clock.monotonic_ms() - tried < _PROPS_RETRY_MS:
            return None
        with self._props_lock:
            if self._props is None and (
                self._props_tried_at is None
                or self.clock.monotonic_ms() - self._props_tried_at >= _PROPS_RETRY_MS
            ):
                self.refresh_props()
        return self._props

    def _start_call(
        self, messages: Sequence[Mapping[str, Any]], params: dict[str, Any], *, stream: bool, parent: Any
    ) -> Call:
        checked = _check_messages(messages)
        body: dict[str, Any] = {"messages": checked}
        model = params.pop("model", None) or self.model
        if model:
            body["model"] = model
        body.update(params)
        if stream:
            body["stream"] = True
            body.setdefault("stream_options", {"include_usage": True})
        else:
            body.pop("stream", None)
        props = self._ensure_props()
        name = model or (props.model_name if props is not None else None)
        call = Call(name, body, checked, stream)
        self._recorder.begin(call, props, parent)
        return call

    def _payload(self, call: Call) -> bytes:
        return json.dumps(call.body, ensure_ascii=False).encode("utf-8")

    def _send(self, call: Call, send: Callable[[], httpx.Response]) -> httpx.Response:
        """Run `send`; a failure ends the call, an httpx one raised again as an `obs.llm.errors` error."""
        try:
            return send()
        except httpx.HTTPError as exc:
            error = self._errors.transport(exc)
            self._recorder.fail(call, error)
            raise error from exc
        except BaseException as exc:
            self._recorder.fail(call, exc)
            raise

    def _stream(
        self, call: Call, *, response: httpx.Response | None = None, cached: ChatCompletion | None = None
    ) -> ChatStream:
        return ChatStream(
            self._recorder,
            call,
            errors=self._errors,
            cache_put=self._cache_put,
            response=response,
            cached=cached,
        )

    def _request_headers(self, call: Call) -> dict[str, str]:
        headers = dict(self._headers)
        try:
            if call.handle is not None:
                headers["traceparent"] = call.handle.traceparent()
        except Exception as exc:  # ids that are not W3C ids: send without the header
            self._recorder.telemetry_error("traceparent", exc)
        call.t0 = self._recorder.clock.monotonic_ms()
        return headers

    # -- cache ----------------------------------------------------------------------------------

    def _cache_get(self, call: Call) -> ChatCompletion | None:
        if self.cache is None:
            return None
        try:
            shape = {k: v for k, v in call.body.items() if k not in ("stream", "stream_options")}
            call.key = cache_key(shape)
            call.t0 = self._recorder.clock.monotonic_ms()
            return self.cache.get(call.key)
        except Exception as exc:
            self._recorder.telemetry_error("response cache", exc)
            return None

    def _cache_put(self, call: Call, completion: ChatCompletion) -> None:
        if self.cache is None or call.key is None or completion.finish_reason is None:
            return
        try:
            self.cache.put(call.key, completion)
        except Exception as exc:
            self._recorder.telemetry_error("response cache", exc)
