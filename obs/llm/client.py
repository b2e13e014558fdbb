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
Every call is held to limits (`obs.llm._limits`): a timeout per read, a
deadline per call, a longest gap between stream events and a byte cap. No
secret (the API key, URL credentials, query values) reaches anything recorded
(`obs.llm._redaction`).

A streamed answer is an `obs.llm.stream.ChatStream` (importable from here too).
How one call is recorded (span, metrics, logs) lives in `obs.llm._recording`,
whose `CallRecorder` the client owns and hands to its streams; the errors that
failures become live in `obs.llm._server_errors`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, NamedTuple, NoReturn

import httpx

from obs import semconv
from obs.clock import Clock
from obs.llm._config import (
    BASE_URL_ENV,
    CAPTURE_CONTENT_ENV,
    DEFAULT_BASE_URL,
    Endpoint,
    capture_content_from_env,
    check_count,
    wire_sinks,
)
from obs.llm._limits import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_RESPONSE_BYTES,
    Budget,
    DeadlinePassed,
    Limits,
    read_body,
)
from obs.llm._props import PropsReader
from obs.llm._recording import Call, CallRecorder
from obs.llm._redaction import Redactor
from obs.llm._request import build_body, check_messages, encode_body
from obs.llm._server_errors import ServerErrors
from obs.llm._summary import metrics_summary
from obs.llm.cache import ResponseCache, cache_key
from obs.llm.conversation import Conversation, check_conversation_id, conversation, current_conversation_id
from obs.llm.errors import BadResponse
from obs.llm.llama.props import ServerProps, shared_ssl_context
from obs.llm.llama.responses import ChatCompletion
from obs.llm.stream import ChatStream
from obs.logs import LLMLogger
from obs.metrics.collector import MetricsCollector, MetricsSnapshot
from obs.storage.memory import TraceStore
from obs.trace.core import TraceHandle
from obs.trace.spans import Span
from obs.trace.tracer import Tracer
from obs.trace.traces import Trace

__all__ = [
    "BASE_URL_ENV",
    "CAPTURE_CONTENT_ENV",
    "DEFAULT_BASE_URL",
    "ChatResult",
    "ChatStream",
    "InstrumentedClient",
]

DEFAULT_MAX_CONTENT_CHARS = 65_536
# An error body is quoted, not parsed whole: this much of it is enough.
_ERROR_BODY_BYTES = 64 * 1024


class ChatResult(NamedTuple):
    """What `chat` returns: unpacks as `response, span = client.chat(...)`."""

    response: ChatCompletion
    span: Span


class InstrumentedClient:
    """A chat client for llama-server that traces, measures and logs every call.

    `base_url` defaults to the LLAMA_SERVER_URL environment variable, else
    http://127.0.0.1:8033; its user info and query string are sent with every
    request but shown (in `base_url`, messages, spans and logs) without user
    info and with every query value as `***`. `api_key` is sent as a Bearer
    token and never recorded anywhere, not even when a server echoes it.
    `model` is sent when given (llama-server ignores it, other
    OpenAI-compatible servers need it); otherwise the name comes from the
    server's `/props`.

    Limits: `timeout` is seconds per connect/read/write; `deadline_s` bounds a
    whole call, streams included (None: no deadline); `stream_idle_timeout_s`
    is the longest a stream may go without an event, keep-alive comments
    aside (None: the timeout); `max_response_bytes` caps an answer's size.
    Past a limit the call ends in ServerTimeout or BadResponse, recorded like
    any failure.

    With no `tracer`, one is built on the given (or fresh) `store`,
    `collector` and `logger`, so every client works on its own; its head
    sampler then follows OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG when
    they are set (`obs.trace.sampling.head.sampler_from_env`; an unknown
    sampler is logged and the default used). `cache_size` > 0 turns on an
    exact-match response cache (LRU, entries live `cache_ttl_s` seconds)
    whose hits skip the server. `capture_content` records message contents
    on spans (GenAI's opt-in content attributes), each cut to
    `max_content_chars`; when not given it follows
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT (default off).
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
        capture_content: bool | None = None,
        cache_size: int = 0,
        cache_ttl_s: float | None = 300.0,
        read_props: bool = True,
        clock: Clock | None = None,
        deadline_s: float | None = DEFAULT_DEADLINE_S,
        stream_idle_timeout_s: float | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS,
    ) -> None:
        """Validate the configuration (ValueError names the bad argument) and open a connection pool."""
        endpoint = Endpoint.parse(base_url)
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise ValueError("api_key must be None or a non-empty string")
        if model is not None and (not isinstance(model, str) or not model):
            raise ValueError(f"model must be None or a non-empty string, got {model!r}")
        limits = Limits.validated(timeout, deadline_s, stream_idle_timeout_s, max_response_bytes)
        check_count("max_content_chars", max_content_chars, 1, "message characters per span attribute")
        check_count("cache_size", cache_size, 0, "0 = no response cache")
        if capture_content is None:
            capture_content = capture_content_from_env()
        if tracer is not None and not isinstance(tracer, Tracer):
            raise ValueError(f"tracer must be an obs.Tracer or None, got {type(tracer).__name__}")

        self._root = endpoint.root
        self.base_url = endpoint.shown
        self.model = model
        self._limits = limits
        redactor = Redactor([api_key, *endpoint.secrets])
        tracer, self.store, collector, logger, clock = wire_sinks(tracer, store, collector, logger, clock)
        self._recorder = CallRecorder(
            tracer=tracer,
            collector=collector,
            logger=logger,
            clock=clock,
            capture_content=bool(capture_content),
            max_content_chars=max_content_chars,
            redact=redactor,
            server_url=self.base_url,
            server_address=endpoint.address,
            server_port=endpoint.port,
        )
        self._errors = ServerErrors(self.base_url, limits, redactor, api_key_given=api_key is not None)
        self.cache: ResponseCache[ChatCompletion] | None = (
            ResponseCache(cache_size, cache_ttl_s, clock=clock) if cache_size else None
        )
        self._chat_url = self._root + "/v1/chat/completions"
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._headers = headers
        self._http = httpx.Client(
            timeout=httpx.Timeout(limits.timeout_s), verify=shared_ssl_context(), params=endpoint.params
        )
        self._read_props = read_props
        self._props = PropsReader(self._http, self._root + "/props", headers, limits, clock)

    # -- what the recorder holds ----------------------------------------------------------------

    @property
    def timeout(self) -> float:
        """Seconds allowed for each connect, read or write."""
        return self._limits.timeout_s

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

    def chat(
        self, messages: Sequence[Mapping[str, Any]], *, parent: Any = None,
        conversation_id: str | None = None, **params: Any,
    ) -> ChatResult:
        """Send one chat request and return `(response, span)` once the whole answer is in.

        `params` go into the request body (temperature, max_tokens, seed, stop,
        top_p, model, ...). `parent` (a SpanHandle or TraceHandle) places the
        span explicitly; by default it nests under the span or trace current
        in this context, else it is a trace of its own. `conversation_id`
        (else the id of the `conversation` active here, if any) goes on the
        span as `gen_ai.conversation.id` and `session.id`.
        Raises an `obs.llm.errors.LLMServerError` subclass when the server fails
        or a limit is passed; ValueError for malformed messages or conversation
        id (nothing recorded) and for a body that cannot be sent as JSON (that
        call is recorded as failed).
        """
        call = self._start_call(
            messages, params, stream=False, parent=parent, conversation_id=conversation_id
        )
        payload = self._encode(call)
        hit = self._cache_get(call)
        if hit is not None:
            return ChatResult(hit, self._recorder.succeed(call, hit, cached=True))
        budget, response = self._open(call, payload, stream=False)
        status = response.status_code
        if status >= 400:
            self._fail_status(call, budget, response)
        try:
            body = read_body(response, budget, self._limits.max_response_bytes)
        except BaseException as exc:
            error = self._errors.reading(exc, budget) or exc
            self._recorder.fail(call, error, status=status)
            if error is exc:
                raise
            raise error from None
        finally:
            response.close()
        self._received(call, status)
        try:
            completion = self._errors.completion(
                body, response.headers.get("content-type"), response.charset_encoding
            )
        except BadResponse as error:
            self._recorder.fail(call, error, status=status)
            raise
        self._cache_put(call, completion)
        return ChatResult(completion, self._recorder.succeed(call, completion, status=status))

    def chat_stream(
        self, messages: Sequence[Mapping[str, Any]], *, parent: Any = None,
        conversation_id: str | None = None, **params: Any,
    ) -> ChatStream:
        """Send a streamed chat request; iterate the returned ChatStream for text deltas.

        The request is sent now (so connection and HTTP errors raise here);
        the span is recorded when the stream ends: read to `[DONE]`, closed
        early (`close()`, leaving a `with` block, or dropping it), or broken
        (then iteration raises StreamInterrupted or ServerTimeout and the
        text received so far stays on the span). Usage is requested with
        `stream_options.include_usage` unless `stream_options` is given.
        `parent`, `conversation_id` and ValueError as for `chat`.
        """
        call = self._start_call(messages, params, stream=True, parent=parent, conversation_id=conversation_id)
        payload = self._encode(call)
        hit = self._cache_get(call)
        if hit is not None:
            return self._stream(call, cached=hit)
        budget, response = self._open(call, payload, stream=True)
        if response.status_code >= 400:
            self._fail_status(call, budget, response)
        return self._stream(call, budget=budget, response=response)

    def start_trace(self, name: str, metadata: Mapping[str, Any] | None = None) -> TraceHandle:
        """Begin a trace that groups the following calls (an agent's steps) until `end_current_trace`.

        It is active in this context only, as OpenTelemetry's context is: in
        asyncio tasks and copied contexts made from here, not in another
        thread or in a request served in a context of its own (those calls
        get traces of their own). Carry it elsewhere with `parent=handle` or
        `client.tracer.activate(handle)`. For chat turns, which are traces of
        their own, see `conversation`.
        """
        handle = self.tracer.begin_trace(name, metadata)
        self._recorder.open_trace(handle)
        return handle

    def end_current_trace(self) -> Trace | None:
        """End the trace begun by `start_trace` that is current here and return it; None if there is none.

        A trace begun in another context is ended with `handle.end()`.
        """
        handle = self._recorder.close_trace(self.tracer.current_trace())
        if handle is None:
            return None
        return self.tracer.end_trace(handle)

    def conversation(self, id: str | None = None) -> AbstractContextManager[Conversation]:
        """`with client.conversation() as conv:` groups the chats made in the block as one conversation.

        Each chat stays a trace of its own, sampled and stored when its answer
        is in; every one carries `gen_ai.conversation.id` and `session.id` =
        `conv.id` (new when `id` is None; give an id to continue a
        conversation in a later request). Active in this context as
        `start_trace` is; `conv.turn()` adds a root span per turn. ValueError
        for an id that is not 1 to 256 printable characters.
        """
        return conversation(self.tracer, id)

    def get_metrics(self) -> MetricsSnapshot:
        """The collector's totals now (requests, tokens, cost, latency percentiles, ...)."""
        return self.collector.get_metrics()

    def get_metrics_summary(self) -> str:
        """A readable multi-line summary of the metrics so far."""
        return metrics_summary(self.collector.get_metrics())

    @property
    def server_props(self) -> ServerProps | None:
        """What `/props` said (read once, on the first request), or None if not read."""
        return self._props.props

    def refresh_props(self) -> ServerProps | None:
        """Read `/props` now (model name, context size, build); None if the server does not say."""
        return self._props.read()

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

    def _start_call(
        self, messages: Sequence[Mapping[str, Any]], params: dict[str, Any], *, stream: bool, parent: Any,
        conversation_id: str | None,
    ) -> Call:
        checked = check_messages(messages)
        if conversation_id is None:
            conversation_id = current_conversation_id()
        else:
            conversation_id = check_conversation_id(conversation_id)
        model = params.pop("model", None) or self.model
        body = build_body(checked, params, model=model, stream=stream)
        props = self._props.get() if self._read_props else self._props.props
        name = model or (props.model_name if props is not None else None)
        call = Call(name, body, checked, stream)
        self._recorder.begin(call, props, parent, conversation_id)
        return call

    def _encode(self, call: Call) -> bytes:
        """The body's bytes; a body that cannot be sent ends the call (recorded) with a ValueError."""
        try:
            return encode_body(call.body)
        except ValueError as error:
            self._recorder.fail(call, error)
            raise

    def _open(self, call: Call, payload: bytes, *, stream: bool) -> tuple[Budget, httpx.Response]:
        """Send the request and return its budget and response (body unread); a failure ends the call."""
        budget = self._limits.start()
        try:
            request = self._http.build_request(
                "POST",
                self._chat_url,
                content=payload,
                headers=self._request_headers(call),
                timeout=budget.timeout(stream=stream),
            )
            return budget, self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            error = self._errors.transport(exc, budget, stream=stream)
            self._recorder.fail(call, error)
            raise error from exc
        except BaseException as exc:
            self._recorder.fail(call, exc)
            raise

    def _received(self, call: Call, status: int) -> None:
        attrs = {semconv.HTTP_RESPONSE_STATUS_CODE: status}
        self._recorder.event(call, semconv.EVENT_RESPONSE_RECEIVED, attrs)

    def _fail_status(self, call: Call, budget: Budget, response: httpx.Response) -> NoReturn:
        """End the call with the error its HTTP error status means, and raise it."""
        status = response.status_code
        self._received(call, status)
        try:
            body = read_body(response, budget, _ERROR_BODY_BYTES, truncate=True)
        except (httpx.HTTPError, DeadlinePassed):
            body = b""  # the status alone is enough to report
        except BaseException as exc:
            self._recorder.fail(call, exc, status=status)
            raise
        finally:
            response.close()
        error = self._errors.status(status, body, response.charset_encoding)
        self._recorder.fail(call, error, status=status)
        raise error

    def _stream(
        self,
        call: Call,
        *,
        budget: Budget | None = None,
        response: httpx.Response | None = None,
        cached: ChatCompletion | None = None,
    ) -> ChatStream:
        return ChatStream(
            self._recorder,
            call,
            errors=self._errors,
            cache_put=self._cache_put,
            budget=budget,
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
