"""AsyncChatStream: a streamed chat answer read in an event loop, recorded as one span when it ends.

`AsyncInstrumentedClient.chat_stream` sends the request and hands back an
`AsyncChatStream`; `async for delta in stream` reads the server-sent events
as they arrive. It records exactly what `obs.llm.stream.ChatStream` records
(the reading, the limits, the errors and the recording are the same code,
`obs.llm._stream_state`); only the I/O is awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

import httpx

from obs.llm._call_state import Call
from obs.llm._limits import Budget, aread_body
from obs.llm._recording import CallRecorder
from obs.llm._server_errors import ServerErrors
from obs.llm._stream_state import FINISHED, StreamState
from obs.llm.llama.responses import ChatCompletion

__all__ = ["AsyncChatStream"]

_log = logging.getLogger(__name__)
# Closes of dropped streams' responses, scheduled on their loops (held until done, as asyncio asks).
_CLOSING: set[asyncio.Future[Any]] = set()


class AsyncChatStream(StreamState):
    """The text deltas of a streamed answer, awaited as they arrive; the span is recorded when it ends.

    `async for delta in stream`. It ends by being read to the server's
    `[DONE]`, by `await stream.aclose()` (also on leaving an `async with`
    block), or by breaking: then iteration raises StreamInterrupted,
    ServerTimeout, HTTPStatusError or BadResponse, and the text received so
    far stays on the span. A stream dropped unread is recorded as closed
    early when collected, and its connection closed on its event loop.
    Afterwards `span` is the recorded Span, `response` the assembled
    ChatCompletion (None if it broke) and `error` what it broke with.
    Belongs to the event loop it was opened in.
    """

    def __init__(
        self,
        recorder: CallRecorder,
        call: Call,
        *,
        errors: ServerErrors,
        cache_put: Callable[[Call, ChatCompletion], None],
        budget: Budget | None = None,
        response: httpx.Response | None = None,
        cached: ChatCompletion | None = None,
    ) -> None:
        """Internal: made by `AsyncInstrumentedClient.chat_stream` (see `StreamState`), in its loop."""
        super().__init__(
            recorder, call, errors=errors, cache_put=cache_put, budget=budget, response=response,
            cached=cached,
        )
        self._loop = asyncio.get_running_loop()
        self._chunks: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncChatStream:
        return self

    async def __anext__(self) -> str:
        if self._call.ended:
            raise StopAsyncIteration
        if self._cached is not None:
            delta = self._deliver_whole(self._cached, cached=True)
        elif not self._sse:
            delta = await self._deliver_json()
        else:
            delta = await self._read_delta()
        if delta is None:
            raise StopAsyncIteration
        return delta

    async def _read_delta(self) -> str | None:
        """The next text delta from the wire; None once the stream has ended at `[DONE]`."""
        self._start_wait()
        try:
            out = await self._next_event()
        except BaseException as exc:
            error = self._error_for(exc)
            if error is None:  # the application's own (a cancellation, say): recorded, passed on
                await self._abort(exc)
                raise
        else:
            if out is FINISHED:
                self._record_done()
                await self._close_response()
                return None
            assert isinstance(out, str)
            return out
        await self._abort(error)
        raise error

    async def _next_event(self) -> str | object:
        if self._chunks is None:
            assert self._response is not None
            self._chunks = self._response.aiter_bytes()
        while (out := self._take_pending()) is None:
            self._feed(await anext(self._chunks, None))
        return out

    async def _deliver_json(self) -> str | None:
        """A server that ignored `stream: true` and sent one JSON body: take it whole."""
        assert self._response is not None and self._budget is not None
        try:
            body = await aread_body(self._response, self._budget, self._errors.limits.max_response_bytes)
            completion = self._json_completion(body)
        except BaseException as exc:  # BadResponse from the body, a read failure, or the application's own
            error = self._body_error_for(exc)
            await self._abort(error)
            if error is exc:
                raise
            raise error from None
        finally:
            await self._close_response()
        return self._deliver_whole(completion, cached=False)

    async def _close_response(self) -> None:
        response = self._response
        if response is None or response.is_closed:
            return
        try:
            await response.aclose()
        except Exception as exc:  # closing a broken connection may fail again; nothing to save
            _log.debug("obs: closing a stream response failed: %s", exc)

    async def _abort(self, error: BaseException) -> None:
        # Recorded first: a second cancellation arriving while the connection closes loses nothing.
        self._record_failure(error)
        await self._close_response()

    async def aclose(self) -> None:
        """Stop reading: the connection is closed and the span recorded with what arrived."""
        if self._call.ended:
            await self._close_response()
            return
        self._record_closed()
        await self._close_response()

    async def __aenter__(self) -> AsyncChatStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # An exception in the caller's block is the caller's: the request itself ended early.
        await self.aclose()

    def __del__(self) -> None:
        # Nothing may escape a finalizer. The span is recorded here; the connection can only be
        # closed by awaiting, so that is handed to the stream's loop (a thread-safe call).
        with contextlib.suppress(Exception):
            if not self._call.ended:
                self._record_closed()
            response = self._response
            if response is not None and not response.is_closed and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(_close_later, response)


def _close_later(response: httpx.Response) -> None:
    task = asyncio.ensure_future(response.aclose())
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)
