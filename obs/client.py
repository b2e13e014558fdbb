"""InstrumentedClient: chat with llama-server (or any OpenAI-compatible server), observed.

Every call becomes a client span named `chat {model}` that follows the
OpenTelemetry GenAI conventions and carries llama.cpp's own timings; it is
recorded in the MetricsCollector, logged to the LLMLogger with its trace and
span ids, and sent to the server as a W3C `traceparent` header. Failures end
in one small hierarchy of exceptions (`obs.errors`) with messages that say
what to do, and the span, the metrics and the logs record them too.

The telemetry never breaks a chat: a failure while recording is logged and
counted in `telemetry_errors`, never raised. The application's own exceptions
(KeyboardInterrupt, say) are recorded on the span and pass through unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, NamedTuple

import httpx

from obs import semconv
from obs.cache import ResponseCache, cache_key
from obs.clock import SYSTEM_CLOCK, Clock
from obs.errors import (
    AuthenticationError,
    BadResponse,
    HTTPStatusError,
    LLMServerError,
    ServerLoading,
    ServerTimeout,
    ServerUnavailable,
    StreamInterrupted,
)
from obs.ids import RandomIdGenerator
from obs.llama.attributes import (
    derived_attributes,
    input_messages_json,
    output_messages_json,
    request_attributes,
    response_attributes,
)
from obs.llama.props import ServerProps, shared_ssl_context
from obs.llama.responses import (
    DONE,
    ChatCompletion,
    ResponseFormatError,
    StreamAccumulator,
    StreamError,
    parse_chat_response,
    parse_error_body,
    parse_sse_line,
)
from obs.log import LLMLogger
from obs.metrics import MetricsCollector, MetricsSnapshot
from obs.spans import Span, create_span, end_span, set_span_attributes
from obs.store import TraceStore
from obs.tracer import SpanHandle, TraceHandle, Tracer
from obs.traces import Trace

__all__ = ["BASE_URL_ENV", "DEFAULT_BASE_URL", "ChatResult", "ChatStream", "InstrumentedClient"]

DEFAULT_BASE_URL = "http://127.0.0.1:8033"
BASE_URL_ENV = "LLAMA_SERVER_URL"
_START_HINT = "start one with `python -m obs.llama.server` or set LLAMA_SERVER_URL"
_URL_HINT = "check that LLAMA_SERVER_URL points at a llama-server (or another OpenAI-compatible API)"
_PROPS_RETRY_MS = 30_000.0
_PROPS_TIMEOUT_S = 5.0
_SNIPPET = 120
_log = logging.getLogger("obs.client")
_FALLBACK_IDS = RandomIdGenerator()


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


class _Call:
    """One request's telemetry from start to end: span, times, stream state. Ended exactly once."""

    __slots__ = (
        "acc",
        "body",
        "ended",
        "fallback",
        "first_chunk_ms",
        "gaps",
        "handle",
        "key",
        "last_token",
        "messages",
        "model",
        "span",
        "stream",
        "t0",
        "ttft_ms",
    )

    def __init__(
        self, model: str | None, body: dict[str, Any], messages: list[dict[str, Any]], stream: bool
    ) -> None:
        self.model = model
        self.body = body
        self.messages = messages
        self.stream = stream
        self.handle: SpanHandle | None = None
        self.fallback: Span | None = None
        self.span: Span | None = None
        self.key: str | None = None
        self.t0: float | None = None
        self.ttft_ms: float | None = None
        self.first_chunk_ms: float | None = None
        self.last_token: float | None = None
        self.gaps: list[float] = []
        self.acc = StreamAccumulator()
        self.ended = False

    @property
    def trace_id(self) -> str | None:
        if self.handle is not None:
            return self.handle.trace_id
        return self.fallback.trace_id if self.fallback is not None else None

    @property
    def span_id(self) -> str | None:
        if self.handle is not None:
            return self.handle.span_id
        return self.fallback.id if self.fallback is not None else None


class InstrumentedClient:
    """A chat client for llama-server that traces, measures and logs every call.

    `base_url` defaults to the LLAMA_SERVER_URL environment variable, else
    http://127.0.0.1:8033. `api_key` is sent as a Bearer token and never
    recorded anywhere. `model` is sent when given (llama-server ignores it,
    other OpenAI-compatible servers need it); otherwise the name comes from
    the server's `/props`. `timeout` is seconds per connect/read/write.

    With no `tracer`, one is built on the given (or fresh) `store`,
    `collector` and `logger`, so every client works on its own. `cache_size`
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
        self._api_key = api_key
        self.model = model
        self.timeout = float(timeout)
        self.capture_content = bool(capture_content)
        self.clock: Clock = (
            clock if clock is not None else (tracer.clock if tracer is not None else SYSTEM_CLOCK)
        )
        if tracer is not None:
            store = store if store is not None else tracer.store
            collector = collector if collector is not None else tracer.collector
            logger = logger if logger is not None else tracer.logger
        self.collector: MetricsCollector = (
            collector if collector is not None else MetricsCollector(clock=self.clock)
        )
        self.store = store if store is not None else TraceStore()
        self.logger: LLMLogger = logger if logger is not None else LLMLogger(clock=self.clock)
        self.tracer: Tracer = (
            tracer
            if tracer is not None
            else Tracer(store=self.store, collector=self.collector, logger=self.logger, clock=self.clock)
        )
        self.cache: ResponseCache[ChatCompletion] | None = (
            ResponseCache(cache_size, cache_ttl_s, clock=self.clock) if cache_size else None
        )
        self._read_props = read_props
        self._props: ServerProps | None = None
        self._props_tried_at: float | None = None
        self._props_lock = threading.Lock()
        self._chat_url = str(url) + "/v1/chat/completions"
        self._server_address = url.host
        self._server_port = url.port or (443 if url.scheme == "https" else 80)
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._headers = headers
        self._http = httpx.Client(timeout=httpx.Timeout(self.timeout), verify=shared_ssl_context())
        self._traces: list[TraceHandle] = []
        self._traces_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.telemetry_errors = 0

    # -- public API -----------------------------------------------------------------------------

    def chat(self, messages: Sequence[Mapping[str, Any]], *, parent: Any = None, **params: Any) -> ChatResult:
        """Send one chat request and return `(response, span)` once the whole answer is in.

        `params` go into the request body (temperature, max_tokens, seed, stop,
        top_p, model, ...). `parent` (a SpanHandle or TraceHandle) places the
        span explicitly; by default it nests under the current span or trace,
        else the trace begun with `start_trace`, else a trace of its own.
        Raises an `obs.errors.LLMServerError` subclass when the server fails;
        ValueError for malformed messages.
        """
        call = self._start_call(messages, params, stream=False, parent=parent)
        hit = self._cache_get(call)
        if hit is not None:
            return ChatResult(hit, self._succeed(call, hit, cached=True))
        try:
            response = self._http.post(
                self._chat_url, content=self._payload(call), headers=self._request_headers(call)
            )
        except httpx.HTTPError as exc:
            error = self._transport_error(exc)
            self._fail(call, error)
            raise error from exc
        except BaseException as exc:
            self._fail(call, exc)
            raise
        self._event(
            call, semconv.EVENT_RESPONSE_RECEIVED, {semconv.HTTP_RESPONSE_STATUS_CODE: response.status_code}
        )
        if response.status_code >= 400:
            error = self._status_error(response)
            self._fail(call, error, status=response.status_code)
            raise error
        try:
            completion = self._parse_body(response)
        except BadResponse as error:
            self._fail(call, error, status=response.status_code)
            raise
        self._cache_put(call, completion)
        return ChatResult(completion, self._succeed(call, completion, status=response.status_code))

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
            return ChatStream(self, call, cached=hit)
        request = self._http.build_request(
            "POST", self._chat_url, content=self._payload(call), headers=self._request_headers(call)
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            error = self._transport_error(exc)
            self._fail(call, error)
            raise error from exc
        except BaseException as exc:
            self._fail(call, exc)
            raise
        if response.status_code >= 400:
            self._event(
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
            error = self._status_error(response)
            self._fail(call, error, status=response.status_code)
            raise error
        return ChatStream(self, call, response=response)

    def start_trace(self, name: str, metadata: Mapping[str, Any] | None = None) -> TraceHandle:
        """Begin a trace (a conversation) that the following chats join until `end_current_trace`.

        It is active in the current context; chats made where no span or
        trace is current (another thread, a later request) join it too.
        """
        handle = self.tracer.begin_trace(name, metadata)
        with self._traces_lock:
            self._traces.append(handle)
        return handle

    def end_current_trace(self) -> Trace | None:
        """End the trace begun by `start_trace` (the one current here, else the latest); None if none."""
        current = self.tracer.current_trace()
        with self._traces_lock:
            self._traces = [t for t in self._traces if not t.ended]
            if current is not None and current in self._traces:
                handle = current
            elif self._traces:
                handle = self._traces[-1]
            else:
                return None
            self._traces.remove(handle)
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
    ) -> _Call:
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
        call = _Call(name, body, checked, stream)
        self._begin_span(call, props, parent)
        return call

    def _payload(self, call: _Call) -> bytes:
        return json.dumps(call.body, ensure_ascii=False).encode("utf-8")

    def _request_headers(self, call: _Call) -> dict[str, str]:
        headers = dict(self._headers)
        try:
            if call.handle is not None:
                headers["traceparent"] = call.handle.traceparent()
        except Exception as exc:  # ids that are not W3C ids: send without the header
            self._telemetry_error("traceparent", exc)
        call.t0 = self.clock.monotonic_ms()
        return headers

    # -- telemetry ------------------------------------------------------------------------------

    def _telemetry_error(self, where: str, exc: BaseException) -> None:
        with self._count_lock:
            self.telemetry_errors += 1
        _log.warning("obs: telemetry failed in %s: %s: %s", where, type(exc).__name__, exc)

    def _resolve_parent(self, parent: Any) -> Any:
        if parent is not None:
            return parent
        if self.tracer.current_span() is not None or self.tracer.current_trace() is not None:
            return None  # the tracer finds it in the context
        with self._traces_lock:
            for handle in reversed(self._traces):
                if not handle.ended:
                    return handle
        return None

    def _begin_span(self, call: _Call, props: ServerProps | None, parent: Any) -> None:
        name = f"{semconv.OPERATION_CHAT} {call.model}" if call.model else semconv.OPERATION_CHAT
        try:
            attrs = request_attributes(
                call.body,
                model=call.model,
                server_address=self._server_address,
                server_port=self._server_port,
                props=props,
                stream=call.stream,
            )
            if self.capture_content:
                attrs[semconv.GEN_AI_INPUT_MESSAGES] = input_messages_json(call.messages)
        except Exception as exc:
            self._telemetry_error("request attributes", exc)
            attrs = {semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_CHAT}
        try:
            resolved = self._resolve_parent(parent)
            call.handle = self.tracer.begin_span(name, attrs, kind="client", parent=resolved)
            trace = call.handle.trace_handle
            with self._traces_lock:
                conversation = trace in self._traces
            if conversation:
                call.handle.set_attribute(semconv.GEN_AI_CONVERSATION_ID, trace.trace_id)
            call.handle.add_event(semconv.EVENT_REQUEST_START)
        except Exception as exc:
            if isinstance(exc, ValueError) and parent is not None and call.handle is None:
                raise  # a bad `parent` argument is the caller's mistake, not a telemetry failure
            self._telemetry_error("begin span", exc)
            if call.handle is None:
                call.fallback = create_span(name, _fallback_trace_id(), attributes=attrs, kind="client")
        self._log("info", f"{name} request started", call, {"stream": call.stream, "server": self.base_url})

    def _event(self, call: _Call, name: str, attrs: Mapping[str, Any] | None = None) -> None:
        if call.handle is None:
            return
        try:
            call.handle.add_event(name, attrs)
        except Exception as exc:
            self._telemetry_error("span event", exc)

    def _log(self, level: str, message: str, call: _Call, data: Mapping[str, Any]) -> None:
        try:
            self.logger.log(level, message, data, trace_id=call.trace_id, span_id=call.span_id)
        except Exception as exc:
            self._telemetry_error("logger", exc)

    def _record(
        self, call: _Call, latency_ms: float, prompt: int, completion: int, *, cached: bool, error: bool
    ) -> float | None:
        try:
            return self.collector.record_request(
                latency_ms,
                prompt,
                completion,
                cached=cached,
                error=error,
                model=call.model,
                ttft_ms=call.ttft_ms,
                timestamp=self.clock.time_ms() / 1000.0,
            )
        except Exception as exc:
            self._telemetry_error("metrics", exc)
            return None

    def _end_span(self, call: _Call, attrs: dict[str, Any], error: BaseException | None) -> Span:
        span: Span | None = None
        if call.handle is not None:
            try:
                call.handle.set_attributes(attrs)
                span = call.handle.end(error=error) if error is not None else call.handle.end()
            except Exception as exc:
                self._telemetry_error("end span", exc)
                span = call.handle.span
        if span is None:
            base = call.fallback or create_span("chat", _fallback_trace_id(), kind="client")
            span = end_span(set_span_attributes(base, attrs), error=error)
        call.span = span
        return span

    def _succeed(
        self,
        call: _Call,
        completion: ChatCompletion,
        *,
        cached: bool = False,
        status: int | None = None,
        closed_early: bool = False,
    ) -> Span:
        call.ended = True
        latency_ms = 0.0 if call.t0 is None else max(0.0, self.clock.monotonic_ms() - call.t0)
        usage = completion.usage
        prompt = usage.prompt_tokens if usage is not None and not cached else 0
        completion_tokens = usage.completion_tokens if usage is not None and not cached else 0
        if usage is None and closed_early:
            completion_tokens = len(call.gaps) + (1 if call.ttft_ms is not None else 0)
        attrs: dict[str, Any] = {}
        try:
            attrs = response_attributes(completion) if not cached else {}
            if cached:
                attrs.update(response_attributes(_without_usage(completion)))
                attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] = 0
                attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = 0
            attrs.update(
                derived_attributes(
                    latency_ms,
                    None if usage is None and not closed_early else completion_tokens,
                    None if cached else completion.timings,
                    ttft_ms=call.ttft_ms,
                    first_chunk_ms=call.first_chunk_ms,
                    gaps_ms=call.gaps,
                )
            )
            attrs[semconv.OBS_CACHE_HIT] = cached
            if call.stream:
                attrs[semconv.OBS_STREAM_CHUNKS] = call.acc.chunks
            if status is not None:
                attrs[semconv.HTTP_RESPONSE_STATUS_CODE] = status
            if closed_early:
                attrs[semconv.OBS_STREAM_CLOSED_EARLY] = True
                if self.capture_content:
                    attrs[semconv.OBS_PARTIAL_OUTPUT] = completion.content
            if self.capture_content:
                attrs[semconv.GEN_AI_OUTPUT_MESSAGES] = output_messages_json(
                    completion.content, completion.finish_reason, completion.role
                )
        except Exception as exc:
            self._telemetry_error("response attributes", exc)
        cost = self._record(call, latency_ms, prompt, completion_tokens, cached=cached, error=False)
        if cost is not None:
            attrs[semconv.OBS_COST_USD] = cost
        span = self._end_span(call, attrs, None)
        what = "closed early" if closed_early else ("answered from cache" if cached else "finished")
        self._log(
            "info",
            f"{span.name} {what}",
            call,
            {
                "latency_ms": latency_ms,
                "prompt_tokens": prompt,
                "completion_tokens": completion_tokens,
                "cost_usd": cost,
                "cached": cached,
            },
        )
        return span

    def _fail(self, call: _Call, error: BaseException, *, status: int | None = None) -> Span:
        call.ended = True
        latency_ms = 0.0 if call.t0 is None else max(0.0, self.clock.monotonic_ms() - call.t0)
        partial = call.acc.text
        usage = call.acc.usage
        prompt = usage.prompt_tokens if usage is not None else 0
        completion_tokens = (
            usage.completion_tokens if usage is not None else len(call.gaps) + (call.ttft_ms is not None)
        )
        attrs: dict[str, Any] = {}
        try:
            if isinstance(error, LLMServerError):
                attrs[semconv.ERROR_TYPE] = error.error_type
            attrs[semconv.OBS_CACHE_HIT] = False
            if status is not None:
                attrs[semconv.HTTP_RESPONSE_STATUS_CODE] = status
            if call.stream and call.acc.chunks:
                attrs.update(response_attributes(call.acc.to_completion()))
                attrs[semconv.OBS_STREAM_CHUNKS] = call.acc.chunks
            attrs.update(
                derived_attributes(
                    latency_ms,
                    None,
                    None,
                    ttft_ms=call.ttft_ms,
                    first_chunk_ms=call.first_chunk_ms,
                    gaps_ms=call.gaps,
                )
            )
            if partial and self.capture_content:
                attrs[semconv.OBS_PARTIAL_OUTPUT] = partial
                attrs[semconv.GEN_AI_OUTPUT_MESSAGES] = output_messages_json(partial, None)
        except Exception as exc:
            self._telemetry_error("error attributes", exc)
        self._record(call, latency_ms, prompt, completion_tokens, cached=False, error=True)
        span = self._end_span(call, attrs, error)
        message = str(error) or type(error).__name__
        self._log(
            "error",
            f"{span.name} failed: {message}",
            call,
            {
                "error_type": attrs.get(semconv.ERROR_TYPE, type(error).__name__),
                "latency_ms": latency_ms,
                "server": self.base_url,
                "partial_chars": len(partial),
            },
        )
        return span

    # -- cache ----------------------------------------------------------------------------------

    def _cache_get(self, call: _Call) -> ChatCompletion | None:
        if self.cache is None:
            return None
        try:
            shape = {k: v for k, v in call.body.items() if k not in ("stream", "stream_options")}
            call.key = cache_key(shape)
            call.t0 = self.clock.monotonic_ms()
            return self.cache.get(call.key)
        except Exception as exc:
            self._telemetry_error("response cache", exc)
            return None

    def _cache_put(self, call: _Call, completion: ChatCompletion) -> None:
        if self.cache is None or call.key is None or completion.finish_reason is None:
            return
        try:
            self.cache.put(call.key, completion)
        except Exception as exc:
            self._telemetry_error("response cache", exc)

    # -- errors ---------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, "***")
        return text

    def _transport_error(self, exc: httpx.HTTPError) -> LLMServerError:
        url = self.base_url
        detail = self._redact(str(exc) or type(exc).__name__)
        if isinstance(exc, httpx.TimeoutException):
            phase = "connecting" if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) else "waiting"
            return ServerTimeout(
                f"llama-server at {url} did not answer within {self.timeout:g} s ({phase}): it may be busy "
                "or stuck; raise the client's timeout or check the server",
                url=url,
            )
        if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol | httpx.InvalidURL):
            return ServerUnavailable(f"no llama-server answers at {url}: {_START_HINT} ({detail})", url=url)
        return ServerUnavailable(
            f"the connection to llama-server at {url} broke ({detail}): check that the server is running",
            url=url,
        )

    def _status_error(self, response: httpx.Response) -> HTTPStatusError:
        url = self.base_url
        status = response.status_code
        parsed = parse_error_body(response.content)
        said = self._redact(parsed.message if parsed is not None else response.text[:_SNIPPET].strip())
        what = f"{status}: {said}" if said else str(status)
        kwargs: dict[str, Any] = {
            "status_code": status,
            "url": url,
            "server_message": said or None,
            "server_error_type": parsed.type if parsed is not None else None,
        }
        if status == 503:
            return ServerLoading(
                f"llama-server at {url} is not ready ({what}): it is still loading its model; retry shortly",
                **kwargs,
            )
        if status in (401, 403):
            hint = (
                "pass api_key= matching the server's --api-key"
                if not self._api_key
                else "the API key given to the client is not one the server accepts"
            )
            return AuthenticationError(
                f"llama-server at {url} refused the request ({what}): {hint}", **kwargs
            )
        if status < 500:
            return HTTPStatusError(
                f"llama-server at {url} rejected the request ({what}): check the messages and parameters",
                **kwargs,
            )
        return HTTPStatusError(
            f"llama-server at {url} failed with HTTP {what}: see the server's log", **kwargs
        )

    def _parse_body(self, response: httpx.Response) -> ChatCompletion:
        url = self.base_url
        try:
            data = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            snippet = self._redact(response.text[:_SNIPPET])
            raise BadResponse(
                f"the server at {url} answered with something that is not JSON "
                f"({kind}: {snippet!r}): {_URL_HINT}",
                url=url,
            ) from None
        try:
            return parse_chat_response(data)
        except ResponseFormatError as exc:
            raise BadResponse(
                f"the server at {url} answered JSON that is not a chat completion ({exc}): {_URL_HINT}",
                url=url,
            ) from None


def _without_usage(completion: ChatCompletion) -> ChatCompletion:
    return dataclasses.replace(completion, usage=None, timings=None)


def _fallback_trace_id() -> str:
    return _FALLBACK_IDS.trace_id()


class ChatStream:
    """The text deltas of a streamed answer, as they arrive; the span is recorded when it ends.

    Iterate it (or hand it to `st.write_stream`). It ends by being read to
    the server's `[DONE]`, by `close()` (also on leaving a `with` block or
    when dropped), or by breaking: then iteration raises StreamInterrupted,
    ServerTimeout, HTTPStatusError or BadResponse, and the text received so
    far stays on the span. Afterwards `span` is the recorded Span and
    `response` the assembled ChatCompletion (None if it broke).
    """

    def __init__(
        self,
        client: InstrumentedClient,
        call: _Call,
        *,
        response: httpx.Response | None = None,
        cached: ChatCompletion | None = None,
    ) -> None:
        """Internal: made by `InstrumentedClient.chat_stream`."""
        self._client = client
        self._call = call
        self._response = response
        self._cached = cached
        self._lines: Iterator[str] | None = None
        self._sse = True
        if response is not None:
            kind = response.headers.get("content-type", "")
            self._sse = "event-stream" in kind or not kind
            self._lines = response.iter_lines()
        self.response: ChatCompletion | None = None
        self.error: BaseException | None = None

    @property
    def span(self) -> Span | None:
        """The recorded span once the stream has ended, else None."""
        return self._call.span

    @property
    def trace_id(self) -> str | None:
        """The id of the trace this request belongs to."""
        return self._call.trace_id

    @property
    def span_id(self) -> str | None:
        """The id of this request's span."""
        return self._call.span_id

    @property
    def text(self) -> str:
        """The text received so far."""
        if self._cached is not None:
            return self._cached.content if self._call.ended else ""
        return self._call.acc.text

    @property
    def finished(self) -> bool:
        """True once the stream has ended one way or another."""
        return self._call.ended

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        call = self._call
        if call.ended:
            raise StopIteration
        if self._cached is not None:
            return self._deliver_whole(self._cached, cached=True)
        if not self._sse:
            return self._deliver_json()
        client = self._client
        clock = client.clock
        assert self._lines is not None
        try:
            for line in self._lines:
                item = parse_sse_line(line)
                if item is None:
                    continue
                if item is DONE:
                    self._finish_done()
                    raise StopIteration
                if isinstance(item, StreamError):
                    raise self._stream_error(item)
                now = clock.monotonic_ms()
                assert call.t0 is not None  # set when the request was sent
                if call.first_chunk_ms is None:
                    call.first_chunk_ms = now - call.t0
                delta = call.acc.feed(item)
                if delta:
                    if call.last_token is None:
                        call.ttft_ms = now - call.t0
                        client._event(call, semconv.EVENT_FIRST_TOKEN)
                    else:
                        call.gaps.append(now - call.last_token)
                    call.last_token = now
                    return delta
            raise StreamInterrupted(
                f"the stream from {client.base_url} ended before [DONE] after {call.acc.chunks} chunks; "
                "the partial answer is kept on the span",
                url=client.base_url,
                partial_text=call.acc.text,
            )
        except StopIteration:
            raise
        except httpx.TimeoutException:
            error: BaseException = ServerTimeout(
                f"llama-server at {client.base_url} stopped sending mid-stream (nothing for "
                f"{client.timeout:g} s after {call.acc.chunks} chunks): it may be stuck; "
                "the partial answer is kept on the span",
                url=client.base_url,
            )
        except httpx.HTTPError as exc:
            error = StreamInterrupted(
                f"the stream from {client.base_url} was cut after {call.acc.chunks} chunks "
                f"({client._redact(str(exc) or type(exc).__name__)}); the partial answer is kept on the span",
                url=client.base_url,
                partial_text=call.acc.text,
            )
        except ResponseFormatError as exc:
            error = BadResponse(
                f"the stream from {client.base_url} carried a line that is not a chat chunk "
                f"({exc}): {_URL_HINT}",
                url=client.base_url,
            )
        except LLMServerError as exc:
            error = exc
        except BaseException as exc:
            self._abort(exc)
            raise
        self._abort(error)
        raise error

    def _stream_error(self, item: StreamError) -> HTTPStatusError:
        client = self._client
        said = client._redact(item.message)
        status = item.code if item.code is not None and 400 <= item.code <= 599 else 500
        return HTTPStatusError(
            f"llama-server at {client.base_url} reported an error mid-stream ({status}: {said}): "
            "see the server's log; the partial answer is kept on the span",
            status_code=status,
            url=client.base_url,
            server_message=said,
            server_error_type=item.type,
        )

    def _close_response(self) -> None:
        if self._response is not None:
            try:
                self._response.close()
            except Exception as exc:  # closing a broken connection may fail again; nothing to save
                _log.debug("obs: closing a stream response failed: %s", exc)

    def _finish_done(self) -> None:
        call = self._call
        client = self._client
        self._close_response()
        client._event(call, semconv.EVENT_RESPONSE_RECEIVED, {semconv.HTTP_RESPONSE_STATUS_CODE: 200})
        completion = call.acc.to_completion()
        self.response = completion
        client._cache_put(call, completion)
        client._succeed(call, completion, status=200)

    def _deliver_whole(self, completion: ChatCompletion, *, cached: bool) -> str:
        self.response = completion
        if not cached:
            self._client._cache_put(self._call, completion)
        self._client._succeed(self._call, completion, cached=cached, status=None if cached else 200)
        if not completion.content:
            raise StopIteration
        return completion.content

    def _deliver_json(self) -> str:
        """A server that ignored `stream: true` and sent one JSON body: take it whole."""
        client = self._client
        assert self._response is not None
        try:
            self._response.read()
            client._event(
                self._call, semconv.EVENT_RESPONSE_RECEIVED, {semconv.HTTP_RESPONSE_STATUS_CODE: 200}
            )
            completion = client._parse_body(self._response)
        except httpx.HTTPError as exc:
            error = client._transport_error(exc)
            self._abort(error)
            raise error from exc
        except BadResponse as error:
            self._abort(error)
            raise
        except BaseException as exc:
            self._abort(exc)
            raise
        finally:
            self._close_response()
        return self._deliver_whole(completion, cached=False)

    def _abort(self, error: BaseException) -> None:
        self.error = error
        self._close_response()
        if not self._call.ended:
            self._client._fail(self._call, error, status=200)

    def close(self) -> None:
        """Stop reading: the connection is closed and the span recorded with what arrived."""
        call = self._call
        if call.ended:
            return
        self._close_response()
        completion = self._cached if self._cached is not None else call.acc.to_completion()
        self.response = completion
        self._client._succeed(
            call, completion, cached=self._cached is not None, closed_early=self._cached is None
        )

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # An exception in the caller's block is the caller's: the request itself ended early.
        self.close()

    def __del__(self) -> None:
        # Nothing may escape a finalizer; close() already guards its telemetry.
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        state = "ended" if self._call.ended else "open"
        return f"ChatStream({state}, chunks={self._call.acc.chunks})"
