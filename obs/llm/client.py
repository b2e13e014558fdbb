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
Everything but the I/O (configuration, building the request, the cache, how
each ending is turned into an error and recorded) lives in
`obs.llm._client_base` and is shared with `obs.llm.async_client`'s
`AsyncInstrumentedClient`. How one call is recorded (span, metrics, logs)
lives in `obs.llm._recording`, whose `CallRecorder` the client owns and
hands to its streams; the errors that failures become live in
`obs.llm._server_errors`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, NoReturn

import httpx

from obs.llm._call_state import Call
from obs.llm._client_base import DEFAULT_MAX_CONTENT_CHARS, ERROR_BODY_BYTES, ChatResult, ClientBase
from obs.llm._config import BASE_URL_ENV, CAPTURE_CONTENT_ENV, DEFAULT_BASE_URL, Endpoint
from obs.llm._limits import Budget, DeadlinePassed, read_body
from obs.llm._props import PropsReader
from obs.llm.llama.props import ServerProps, shared_ssl_context
from obs.llm.stream import ChatStream

__all__ = [
    "BASE_URL_ENV",
    "CAPTURE_CONTENT_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_CONTENT_CHARS",
    "ChatResult",
    "ChatStream",
    "InstrumentedClient",
]


class InstrumentedClient(ClientBase[ChatStream]):
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
    Thread-safe. For asyncio, `obs.llm.async_client.AsyncInstrumentedClient`
    takes the same arguments and records the same things.
    """

    _http: httpx.Client
    _stream_type = ChatStream
    _props: PropsReader

    def _connect(self, endpoint: Endpoint, props_url: str) -> None:
        self._http = httpx.Client(
            timeout=httpx.Timeout(self._limits.timeout_s), verify=shared_ssl_context(), params=endpoint.params
        )
        self._props = PropsReader(self._http, props_url, self._headers, self._limits, self.clock)

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
        plan = self._plan(messages, params, stream=False, conversation_id=conversation_id)
        call, payload, hit = self._begin(plan, self._props_now(), parent)
        if hit is not None:
            return self._cached_result(call, hit)
        budget, response = self._send(call, payload)
        status = response.status_code
        if status >= 400:
            self._fail_status(call, budget, response)
        try:
            body = read_body(response, budget, self._limits.max_response_bytes)
        except BaseException as exc:
            error = self._read_failed(call, exc, budget, status)
            if error is exc:
                raise
            raise error from None
        finally:
            response.close()
        return self._answered(call, response, body)

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
        plan = self._plan(messages, params, stream=True, conversation_id=conversation_id)
        call, payload, hit = self._begin(plan, self._props_now(), parent)
        if hit is not None:
            return self._stream(call, cached=hit)
        budget, response = self._send(call, payload)
        if response.status_code >= 400:
            self._fail_status(call, budget, response)
        return self._stream(call, budget=budget, response=response)

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

    # -- the I/O of a call ----------------------------------------------------------------------

    def _props_now(self) -> ServerProps | None:
        return self._props.get() if self._read_props else self._props.props

    def _send(self, call: Call, payload: bytes) -> tuple[Budget, httpx.Response]:
        """Send the request and return its budget and response (body unread); a failure ends the call."""
        budget = self._limits.start()
        try:
            return budget, self._http.send(self._request(call, payload, budget), stream=True)
        except BaseException as exc:
            error = self._send_failed(call, exc, budget)
            if error is exc:
                raise
            raise error from exc

    def _fail_status(self, call: Call, budget: Budget, response: httpx.Response) -> NoReturn:
        """End the call with the error its HTTP error status means, and raise it."""
        status = response.status_code
        self._received(call, status)
        try:
            body = read_body(response, budget, ERROR_BODY_BYTES, truncate=True)
        except (httpx.HTTPError, DeadlinePassed):
            body = b""  # the status alone is enough to report
        except BaseException as exc:
            self._recorder.fail(call, exc, status=status)
            raise
        finally:
            response.close()
        raise self._status_failed(call, status, body, response.charset_encoding)

