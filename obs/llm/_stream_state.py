"""What reading a streamed chat answer means, whoever does the reading: sync or async.

`StreamState` is the part `ChatStream` and `AsyncChatStream` share: the
server-sent events cut into lines and parsed, each chunk timed
(`take_chunk`), the limits checked as lines arrive (the call's deadline and
the longest wait for an event), the failures turned into `obs.llm.errors`,
and the call recorded once, when the stream ends. The two classes add only
the I/O: where the bytes come from (`iter_bytes` or `aiter_bytes`) and how
the response is closed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from obs import semconv
from obs.llm._call_state import Call
from obs.llm._limits import Budget, LineSplitter, TooLarge
from obs.llm._recording import CallRecorder
from obs.llm._server_errors import ServerErrors
from obs.llm.errors import LLMServerError
from obs.llm.llama.responses import DONE, ChatCompletion, ResponseFormatError, StreamError, parse_sse_line
from obs.trace.spans import Span

__all__ = ["FINISHED", "StreamState", "take_chunk"]

# What `StreamState.take_pending` returns once the server's `[DONE]` has come.
FINISHED = object()


def take_chunk(recorder: CallRecorder, call: Call, item: Mapping[str, Any], now_ms: float) -> str:
    """Feed one decoded stream chunk, which arrived at `now_ms`, to `call`; return its text delta.

    Times the first chunk, the first token (adding the `first_token` event,
    stamped at `now_ms`) and the gaps between tokens, all from `call.t0`, the
    moment the request was sent, on the recorder's monotonic clock. Shared by
    the client's streams and by recorders that read a stream after it went
    by (`obs.llm.exchange`).
    """
    assert call.t0 is not None  # set when the request was sent
    if call.first_chunk_ms is None:
        call.first_chunk_ms = now_ms - call.t0
    delta = call.acc.feed(item)
    if delta:
        if call.last_token is None:
            call.ttft_ms = now_ms - call.t0
            recorder.event(call, semconv.EVENT_FIRST_TOKEN, at_ms=now_ms)
        else:
            call.gaps.append(now_ms - call.last_token)
        call.last_token = now_ms
    return delta


class StreamState:
    """One streamed answer as it is read, and its recording when it ends; the I/O is the subclass's.

    A subclass feeds the body's bytes to `_feed` (None at its end) until
    `_take_pending` returns a delta or FINISHED, maps what a read raised
    with `_error_for`, and closes the response before recording the end
    (`_record_done`, `_record_failure`, `_record_closed`).
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
        """Internal: made by the client's `chat_stream`.

        `recorder` records the call when the stream ends, `errors` builds the
        (redacted) errors it may end in, `cache_put` offers a complete answer
        to the client's response cache, and `budget` holds `response` to the
        call's deadline, idle timeout and byte cap. `cached` is an answer
        from the response cache, delivered whole (no response then).
        """
        self._recorder = recorder
        self._errors = errors
        self._cache_put = cache_put
        self._call = call
        self._response = response
        self._cached = cached
        self._budget = budget
        self._sse = True
        self._splitter: LineSplitter | None = None
        self._pending: deque[str | None] = deque()
        self._eof = False
        self._waiting_since = 0.0
        if response is not None:
            kind = response.headers.get("content-type", "")
            self._sse = "event-stream" in kind or not kind
            self._splitter = LineSplitter(errors.limits.max_response_bytes)
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

    # -- reading: the subclass brings the bytes ---------------------------------------------------

    def _start_wait(self) -> None:
        """A read begins: only time spent waiting from here counts as idle, not the caller's own."""
        assert self._budget is not None
        self._waiting_since = self._budget.now()

    def _feed(self, chunk: bytes | None) -> None:
        """Take the next bytes of the body, or None at its end."""
        assert self._splitter is not None
        if chunk is None:
            self._pending.extend(self._splitter.close())
            self._eof = True
            return
        self._pending.extend(self._splitter.feed(chunk))
        self._pending.append(None)  # after each piece of bytes, the time is checked

    def _take_pending(self) -> str | object | None:
        """The next text delta the lines fed so far hold, FINISHED at `[DONE]`, None to read on.

        Raises an LLMServerError for a line that is no chat chunk, an error
        event, the deadline or the idle timeout gone by, and a body that
        ended before `[DONE]`.
        """
        while self._pending:
            out = self._take_line(self._pending.popleft())
            if out is not None:
                return out
        if self._eof:
            call = self._call
            raise self._errors.stream_ended(call.acc.chunks, call.acc.text)
        return None

    def _take_line(self, line: str | None) -> str | object | None:
        call, errors, budget = self._call, self._errors, self._budget
        assert budget is not None
        try:
            item = None if line is None else parse_sse_line(line)
        except ResponseFormatError:
            raise errors.stream_line(line or "") from None
        if item is not DONE and budget.expired():
            raise errors.deadline("mid-stream", chunks=call.acc.chunks)
        if item is None:
            if budget.now() - self._waiting_since > errors.limits.stream_idle_timeout_s:
                raise errors.stream_idle(call.acc.chunks)
            return None
        self._waiting_since = budget.now()
        if item is DONE:
            return FINISHED
        if isinstance(item, StreamError):
            raise errors.stream_event(item)
        return take_chunk(self._recorder, call, item, self._recorder.clock.monotonic_ms()) or None

    def _error_for(self, exc: BaseException) -> BaseException | None:
        """The error a failure while reading the stream ends in; None for the application's own."""
        call, errors = self._call, self._errors
        if isinstance(exc, LLMServerError):
            return exc
        if isinstance(exc, httpx.TimeoutException):
            assert self._budget is not None
            return errors.stream_silent(call.acc.chunks, self._budget)
        if isinstance(exc, httpx.HTTPError):
            return errors.stream_cut(exc, call.acc.chunks, call.acc.text)
        if isinstance(exc, TooLarge):
            return errors.too_large(exc.limit, stream=True)
        return None

    def _body_error_for(self, exc: BaseException) -> BaseException:
        """The error a failure while reading a whole (not streamed) body ends in; else `exc` itself."""
        assert self._budget is not None
        return self._errors.reading(exc, self._budget) or exc

    # -- the end, recorded once (the subclass has closed the response) ---------------------------

    def _record_done(self) -> None:
        """The stream came to `[DONE]`: record the assembled answer."""
        call = self._call
        self._recorder.event(call, semconv.EVENT_RESPONSE_RECEIVED, {semconv.HTTP_RESPONSE_STATUS_CODE: 200})
        completion = call.acc.to_completion()
        self.response = completion
        self._cache_put(call, completion)
        self._recorder.succeed(call, completion, status=200)

    def _deliver_whole(self, completion: ChatCompletion, *, cached: bool) -> str | None:
        """Record an answer that came whole (from the cache, or as one JSON body); its text, None if empty."""
        self.response = completion
        if not cached:
            self._cache_put(self._call, completion)
        self._recorder.succeed(self._call, completion, cached=cached, status=None if cached else 200)
        return completion.content or None

    def _json_completion(self, body: bytes) -> ChatCompletion:
        """A server that ignored `stream: true` sent one JSON body: its completion (BadResponse if none)."""
        response = self._response
        assert response is not None
        received = {semconv.HTTP_RESPONSE_STATUS_CODE: 200}
        self._recorder.event(self._call, semconv.EVENT_RESPONSE_RECEIVED, received)
        kind = response.headers.get("content-type")
        return self._errors.completion(body, kind, response.charset_encoding)

    def _record_failure(self, error: BaseException) -> None:
        """The stream broke with `error` (or the application's own exception): record it once."""
        self.error = error
        if not self._call.ended:
            self._recorder.fail(self._call, error, status=200)

    def _record_closed(self) -> None:
        """The caller stopped reading: record what arrived as a success closed early."""
        call = self._call
        completion = self._cached if self._cached is not None else call.acc.to_completion()
        self.response = completion
        self._recorder.succeed(
            call, completion, cached=self._cached is not None, closed_early=self._cached is None
        )

    def __repr__(self) -> str:
        state = "ended" if self._call.ended else "open"
        return f"{type(self).__name__}({state}, chunks={self._call.acc.chunks})"
