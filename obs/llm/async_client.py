"""AsyncInstrumentedClient: the instrumented client for asyncio, on `httpx.AsyncClient`.

It records exactly what `obs.llm.client.InstrumentedClient` records (the
same spans, metrics, log entries and `obs.llm.errors` exceptions) because
everything but the I/O is the same code (`obs.llm._client_base`,
`obs.llm._stream_state`); here the request is sent and read with `await`.
Many calls may run at once in one event loop: each asyncio task has its own
context, so a call made with no span or trace current in its task is a
trace of its own, and `start_trace` or a `conversation` begun in a task
reaches the tasks it creates, as OpenTelemetry's context does.

The connection pool has no cap unless `max_connections` sets one: every
call in flight gets its own connection, so a burst of concurrent calls
waits on the server, never on the pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, NoReturn

import httpx

from obs.clock import Clock
from obs.llm._call_state import Call
from obs.llm._client_base import DEFAULT_MAX_CONTENT_CHARS, ERROR_BODY_BYTES, ChatResult, ClientBase
from obs.llm._config import Endpoint, check_count
from obs.llm._limits import DEFAULT_DEADLINE_S, DEFAULT_MAX_RESPONSE_BYTES, Budget, DeadlinePassed, aread_body
from obs.llm._props import AsyncPropsReader
from obs.llm.async_stream import AsyncChatStream
from obs.llm.llama.props import ServerProps, shared_ssl_context
from obs.logs import LLMLogger
from obs.metrics.collector import MetricsCollector
from obs.storage.memory import TraceStore
from obs.trace.tracer import Tracer

__all__ = ["AsyncChatStream", "AsyncInstrumentedClient", "ChatResult"]

# Idle connections kept open this long for the next call (httpx's default).
_KEEPALIVE_S = 5.0


class AsyncInstrumentedClient(ClientBase[AsyncChatStream]):
    """A chat client for asyncio that traces, measures and logs every call like `InstrumentedClient`.

    Takes the same arguments as `InstrumentedClient` (see it for each one),
    plus `max_connections`: the most connections open to the server at
    once (None, the default: no cap; calls beyond a cap wait for a free
    connection within their `timeout`). `await client.chat(...)` returns
    the same `ChatResult`; `await client.chat_stream(...)` an
    `AsyncChatStream` to read with `async for`. Close it with
    `await client.aclose()` or `async with`. Safe for many concurrent calls
    in one event loop; use it from one loop at a time.
    """

    _http: httpx.AsyncClient
    _stream_type = AsyncChatStream
    _props: AsyncPropsReader

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
        max_connections: int | None = None,
    ) -> None:
        """Validate the configuration (ValueError names the bad argument) and open a connection pool."""
        if max_connections is not None:
            check_count("max_connections", max_connections, 1, "None = no cap")
        self._max_connections = max_connections
        super().__init__(
            base_url, api_key, model, timeout, collector=collector, store=store, logger=logger,
            tracer=tracer, capture_content=capture_content, cache_size=cache_size, cache_ttl_s=cache_ttl_s,
            read_props=read_props, clock=clock, deadline_s=deadline_s,
            stream_idle_timeout_s=stream_idle_timeout_s, max_response_bytes=max_response_bytes,
            max_content_chars=max_content_chars,
        )  # fmt: skip

    def _connect(self, endpoint: Endpoint, props_url: str) -> None:
        pool = httpx.Limits(
            max_connections=self._max_connections,
            max_keepalive_connections=self._max_connections,
            keepalive_expiry=_KEEPALIVE_S,
        )
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self._limits.timeout_s),
            verify=shared_ssl_context(),
            params=endpoint.params,
            limits=pool,
        )
        self._props = AsyncPropsReader(self._http, props_url, self._headers, self._limits, self.clock)

    @property
    def max_connections(self) -> int | None:
        """The most connections open to the server at once; None for no cap."""
        return self._max_connections

    # -- public API -----------------------------------------------------------------------------

    async def chat(
        self, messages: Sequence[Mapping[str, Any]], *, parent: Any = None,
        conversation_id: str | None = None, **params: Any,
    ) -> ChatResult:
        """Send one chat request and return `(response, span)` once the whole answer is in.

        As `InstrumentedClient.chat`: `params` go into the request body,
        `parent` places the span (by default under the span or trace current
        in this task, else a trace of its own), `conversation_id` names the
        conversation. Raises the same `obs.llm.errors.LLMServerError`
        subclasses and ValueErrors. A cancelled call is recorded as failed
        (`error.type` CancelledError) and the cancellation passes on.
        """
        plan = self._plan(messages, params, stream=False, conversation_id=conversation_id)
        call, payload, hit = self._begin(plan, await self._props_now(), parent)
        if hit is not None:
            return self._cached_result(call, hit)
        budget, response = await self._send(call, payload)
        status = response.status_code
        if status >= 400:
            await self._fail_status(call, budget, response)
        try:
            body = await aread_body(response, budget, self._limits.max_response_bytes)
        except BaseException as exc:
            error = self._read_failed(call, exc, budget, status)
            if error is exc:
                raise
            raise error from None
        finally:
            await response.aclose()
        return self._answered(call, response, body)

    async def chat_stream(
        self, messages: Sequence[Mapping[str, Any]], *, parent: Any = None,
        conversation_id: str | None = None, **params: Any,
    ) -> AsyncChatStream:
        """Send a streamed chat request; read the returned AsyncChatStream with `async for`.

        As `InstrumentedClient.chat_stream`: the request is sent now (so
        connection and HTTP errors raise here) and the span is recorded when
        the stream ends: read to `[DONE]`, closed early (`await
        stream.aclose()`, leaving an `async with` block, or dropping it), or
        broken (iteration raises, and the text received so far stays on the
        span).
        """
        plan = self._plan(messages, params, stream=True, conversation_id=conversation_id)
        call, payload, hit = self._begin(plan, await self._props_now(), parent)
        if hit is not None:
            return self._stream(call, cached=hit)
        budget, response = await self._send(call, payload)
        if response.status_code >= 400:
            await self._fail_status(call, budget, response)
        return self._stream(call, budget=budget, response=response)

    async def refresh_props(self) -> ServerProps | None:
        """Read `/props` now (model name, context size, build); None if the server does not say."""
        return await self._props.read()

    async def aclose(self) -> None:
        """Close the connection pool; the client cannot send afterwards."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncInstrumentedClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- the I/O of a call ----------------------------------------------------------------------

    async def _props_now(self) -> ServerProps | None:
        return await self._props.get() if self._read_props else self._props.props

    async def _send(self, call: Call, payload: bytes) -> tuple[Budget, httpx.Response]:
        """Send the request and return its budget and response (body unread); a failure ends the call."""
        budget = self._limits.start()
        try:
            return budget, await self._http.send(self._request(call, payload, budget), stream=True)
        except BaseException as exc:
            error = self._send_failed(call, exc, budget)
            if error is exc:
                raise
            raise error from exc

    async def _fail_status(self, call: Call, budget: Budget, response: httpx.Response) -> NoReturn:
        """End the call with the error its HTTP error status means, and raise it."""
        status = response.status_code
        self._received(call, status)
        try:
            body = await aread_body(response, budget, ERROR_BODY_BYTES, truncate=True)
        except (httpx.HTTPError, DeadlinePassed):
            body = b""  # the status alone is enough to report
        except BaseException as exc:
            self._recorder.fail(call, exc, status=status)
            raise
        finally:
            await response.aclose()
        raise self._status_failed(call, status, body, response.charset_encoding)

