"""What the synchronous and the asyncio client share: everything but the I/O.

`ClientBase` validates the configuration, wires the sinks, and holds each
step of a call that does not touch the network: the request checked and
built, the span begun, the body encoded, the response cache asked, the
request's headers and timeouts, and every ending (an answer read, an HTTP
error status, a transport failure, a body that broke off) turned into the
same errors and recorded the same way through the `CallRecorder`.
`InstrumentedClient` (`obs.llm.client`) and `AsyncInstrumentedClient`
(`obs.llm.async_client`) add only the sending and reading, as httpx's
`Client` and `AsyncClient` do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, NamedTuple, TypeVar

import httpx

from obs import semconv
from obs.clock import Clock
from obs.llm._call_state import Call
from obs.llm._config import Endpoint, capture_content_from_env, check_count, wire_sinks
from obs.llm._limits import DEFAULT_DEADLINE_S, DEFAULT_MAX_RESPONSE_BYTES, Budget, Limits
from obs.llm._props import AsyncPropsReader, PropsReader
from obs.llm._recording import CallRecorder
from obs.llm._redaction import Redactor
from obs.llm._request import build_body, check_messages, encode_body
from obs.llm._server_errors import ServerErrors
from obs.llm._stream_state import StreamState
from obs.llm._summary import metrics_summary
from obs.llm.cache import ResponseCache, cache_key
from obs.llm.conversation import Conversation, check_conversation_id, conversation, current_conversation_id
from obs.llm.errors import BadResponse, HTTPStatusError
from obs.llm.llama.props import ServerProps
from obs.llm.llama.responses import ChatCompletion
from obs.logs import LLMLogger
from obs.metrics.collector import MetricsCollector, MetricsSnapshot
from obs.storage.memory import TraceStore
from obs.trace.core import TraceHandle
from obs.trace.spans import Span
from obs.trace.tracer import Tracer
from obs.trace.traces import Trace

DEFAULT_MAX_CONTENT_CHARS = 65_536
# An error body is quoted, not parsed whole: this much of it is enough.
ERROR_BODY_BYTES = 64 * 1024


class ChatResult(NamedTuple):
    """What `chat` returns: unpacks as `response, span = client.chat(...)`."""

    response: ChatCompletion
    span: Span


class Plan(NamedTuple):
    """A request checked and built, before its span begins (and before `/props` is read)."""

    messages: list[dict[str, Any]]
    body: dict[str, Any]
    model: str | None
    stream: bool
    conversation_id: str | None


StreamT = TypeVar("StreamT", bound=StreamState)


class ClientBase(Generic[StreamT]):
    """The configuration, sinks and I/O-free steps of a call; subclasses send and read.

    See `InstrumentedClient` for what every argument means. A subclass's
    `_connect` opens its connection pool and `/props` reader once the rest
    is set up.
    """

    _http: httpx.Client | httpx.AsyncClient
    _props: PropsReader | AsyncPropsReader
    _stream_type: type[StreamT]  # the stream class `chat_stream` returns

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
        self._read_props = read_props
        self._connect(endpoint, self._root + "/props")

    def _connect(self, endpoint: Endpoint, props_url: str) -> None:
        """Open the connection pool (`_http`) and the `/props` reader (`_props`): the subclass's I/O."""
        raise NotImplementedError

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

    @property
    def server_props(self) -> ServerProps | None:
        """What `/props` said (read once, on the first request), or None if not read."""
        return self._props.props

    # -- traces, conversations, metrics ----------------------------------------------------------

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"

    # -- a call, before it is sent ----------------------------------------------------------------

    def _plan(
        self, messages: Sequence[Mapping[str, Any]], params: dict[str, Any], *, stream: bool,
        conversation_id: str | None,
    ) -> Plan:
        """Check the arguments (ValueError, nothing recorded) and build the body."""
        checked = check_messages(messages)
        if conversation_id is None:
            conversation_id = current_conversation_id()
        else:
            conversation_id = check_conversation_id(conversation_id)
        model = params.pop("model", None) or self.model
        body = build_body(checked, params, model=model, stream=stream)
        return Plan(checked, body, model, stream, conversation_id)

    def _begin(
        self, plan: Plan, props: ServerProps | None, parent: Any
    ) -> tuple[Call, bytes, ChatCompletion | None]:
        """Begin the call's span; return it, the body's bytes and the cached answer if there is one.

        A body that cannot be sent as JSON ends the call (recorded) with a ValueError.
        """
        name = plan.model or (props.model_name if props is not None else None)
        call = Call(name, plan.body, plan.messages, plan.stream)
        self._recorder.begin(call, props, parent, plan.conversation_id)
        try:
            payload = encode_body(call.body)
        except ValueError as error:
            self._recorder.fail(call, error)
            raise
        return call, payload, self._cache_get(call)

    def _request(self, call: Call, payload: bytes, budget: Budget) -> httpx.Request:
        """The POST of `payload`, with the call's `traceparent` and timeouts; starts the call's clock."""
        return self._http.build_request(
            "POST",
            self._chat_url,
            content=payload,
            headers=self._request_headers(call),
            timeout=budget.timeout(stream=call.stream),
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

    # -- how a call ends ---------------------------------------------------------------------------

    def _cached_result(self, call: Call, hit: ChatCompletion) -> ChatResult:
        return ChatResult(hit, self._recorder.succeed(call, hit, cached=True))

    def _send_failed(self, call: Call, exc: BaseException, budget: Budget) -> BaseException:
        """Record a request that got no answer; the error to raise (`exc` itself if it is the app's)."""
        error: BaseException = exc
        if isinstance(exc, httpx.HTTPError):
            error = self._errors.transport(exc, budget, stream=call.stream)
        self._recorder.fail(call, error)
        return error

    def _stream(
        self,
        call: Call,
        *,
        budget: Budget | None = None,
        response: httpx.Response | None = None,
        cached: ChatCompletion | None = None,
    ) -> StreamT:
        """The subclass's stream for `call`: over `response` within `budget`, or delivering `cached`."""
        return self._stream_type(
            self._recorder, call, errors=self._errors, cache_put=self._cache_put, budget=budget,
            response=response, cached=cached,
        )

    def _received(self, call: Call, status: int) -> None:
        attrs = {semconv.HTTP_RESPONSE_STATUS_CODE: status}
        self._recorder.event(call, semconv.EVENT_RESPONSE_RECEIVED, attrs)

    def _status_failed(self, call: Call, status: int, body: bytes, encoding: str | None) -> HTTPStatusError:
        """Record the error an HTTP error status (with the start of its body) means; return it."""
        error = self._errors.status(status, body, encoding)
        self._recorder.fail(call, error, status=status)
        return error

    def _read_failed(self, call: Call, exc: BaseException, budget: Budget, status: int) -> BaseException:
        """Record a body that broke off while read; the error to raise (`exc` itself if it is the app's)."""
        error = self._errors.reading(exc, budget) or exc
        self._recorder.fail(call, error, status=status)
        return error

    def _answered(self, call: Call, response: httpx.Response, body: bytes) -> ChatResult:
        """Record a whole answer: its completion and span (BadResponse, recorded, if it is none)."""
        status = response.status_code
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
