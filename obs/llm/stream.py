"""ChatStream: the text deltas of a streamed chat answer, recorded as one span when it ends.

`InstrumentedClient.chat_stream` sends the request and hands back a
`ChatStream`. Iterating it reads the server-sent events as they arrive,
timing the first token and the gaps between tokens; the span, the metrics
record and the log entry are written once, when the stream ends: read to
`[DONE]`, closed early, or broken (then the text received so far stays on
the span and iteration raises an `obs.llm.errors` exception). The stream is
held to the client's limits: its deadline, the longest it may wait for an
event (`: ping` comments and partial lines are not events), and the most
bytes it may bring.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

import httpx

from obs import semconv
from obs.llm._limits import Budget, LineSplitter, TooLarge, read_body
from obs.llm._recording import Call, CallRecorder
from obs.llm._server_errors import ServerErrors
from obs.llm.errors import LLMServerError
from obs.llm.llama.responses import DONE, ChatCompletion, ResponseFormatError, StreamError, parse_sse_line
from obs.trace.spans import Span

__all__ = ["ChatStream", "take_chunk"]

_log = logging.getLogger(__name__)


def take_chunk(recorder: CallRecorder, call: Call, item: Mapping[str, Any], now_ms: float) -> str:
    """Feed one decoded stream chunk, which arrived at `now_ms`, to `call`; return its text delta.

    Times the first chunk, the first token (adding the `first_token` event,
    stamped at `now_ms`) and the gaps between tokens, all from `call.t0`, the
    moment the request was sent, on the recorder's monotonic clock. Shared by
    `ChatStream` and by recorders that read a stream after it went by
    (`obs.llm.exchange`).
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
        recorder: CallRecorder,
        call: Call,
        *,
        errors: ServerErrors,
        cache_put: Callable[[Call, ChatCompletion], None],
        budget: Budget | None = None,
        response: httpx.Response | None = None,
        cached: ChatCompletion | None = None,
    ) -> None:
        """Internal: made by `InstrumentedClient.chat_stream`.

        `recorder` records the call when the stream ends, `errors` builds the
        (redacted) errors it may end in, `cache_put` offers a complete answer
        to the client's response cache, and `budget` holds `response` to the
        call's deadline, idle timeout and byte cap.
        """
        self._recorder = recorder
        self._errors = errors
        self._cache_put = cache_put
        self._call = call
        self._response = response
        self._cached = cached
        self._budget = budget
        self._lines: Iterator[str | None] | None = None
        self._sse = True
        if response is not None:
            kind = response.headers.get("content-type", "")
            self._sse = "event-stream" in kind or not kind
            self._lines = self._read_lines(response, errors.limits.max_response_bytes)
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
        recorder = self._recorder
        errors = self._errors
        clock = recorder.clock
        budget = self._budget
        assert self._lines is not None and budget is not None
        idle_s = errors.limits.stream_idle_timeout_s
        # Only time spent waiting here counts as idle: the caller's own time between reads does not.
        waiting_since = budget.now()
        try:
            for line in self._lines:
                try:
                    item = None if line is None else parse_sse_line(line)
                except ResponseFormatError:
                    raise errors.stream_line(line or "") from None
                if item is not DONE and budget.expired():
                    raise errors.deadline("mid-stream", chunks=call.acc.chunks)
                if item is None:
                    if budget.now() - waiting_since > idle_s:
                        raise errors.stream_idle(call.acc.chunks)
                    continue
                waiting_since = budget.now()
                if item is DONE:
                    self._finish_done()
                    raise StopIteration
                if isinstance(item, StreamError):
                    raise errors.stream_event(item)
                delta = take_chunk(recorder, call, item, clock.monotonic_ms())
                if delta:
                    return delta
            raise errors.stream_ended(call.acc.chunks, call.acc.text)
        except StopIteration:
            raise
        except httpx.TimeoutException:
            error: BaseException = errors.stream_silent(call.acc.chunks, budget)
        except httpx.HTTPError as exc:
            error = errors.stream_cut(exc, call.acc.chunks, call.acc.text)
        except TooLarge as exc:
            error = errors.too_large(exc.limit, stream=True)
        except LLMServerError as exc:
            error = exc
        except BaseException as exc:
            self._abort(exc)
            raise
        self._abort(error)
        raise error

    @staticmethod
    def _read_lines(response: httpx.Response, limit: int) -> Iterator[str | None]:
        """The stream's lines as they arrive, and None after each piece of bytes (to check the time)."""
        splitter = LineSplitter(limit)
        for chunk in response.iter_bytes():
            yield from splitter.feed(chunk)
            yield None
        yield from splitter.close()

    def _close_response(self) -> None:
        if self._response is not None:
            try:
                self._response.close()
            except Exception as exc:  # closing a broken connection may fail again; nothing to save
                _log.debug("obs: closing a stream response failed: %s", exc)

    def _finish_done(self) -> None:
        call = self._call
        self._close_response()
        self._recorder.event(call, semconv.EVENT_RESPONSE_RECEIVED, {semconv.HTTP_RESPONSE_STATUS_CODE: 200})
        completion = call.acc.to_completion()
        self.response = completion
        self._cache_put(call, completion)
        self._recorder.succeed(call, completion, status=200)

    def _deliver_whole(self, completion: ChatCompletion, *, cached: bool) -> str:
        self.response = completion
        if not cached:
            self._cache_put(self._call, completion)
        self._recorder.succeed(self._call, completion, cached=cached, status=None if cached else 200)
        if not completion.content:
            raise StopIteration
        return completion.content

    def _deliver_json(self) -> str:
        """A server that ignored `stream: true` and sent one JSON body: take it whole."""
        response, budget, errors = self._response, self._budget, self._errors
        assert response is not None and budget is not None
        try:
            body = read_body(response, budget, errors.limits.max_response_bytes)
            self._recorder.event(
                self._call, semconv.EVENT_RESPONSE_RECEIVED, {semconv.HTTP_RESPONSE_STATUS_CODE: 200}
            )
            kind = response.headers.get("content-type")
            completion = errors.completion(body, kind, response.charset_encoding)
        except BaseException as exc:  # BadResponse from the body, a read failure, or the application's own
            error = errors.reading(exc, budget) or exc
            self._abort(error)
            if error is exc:
                raise
            raise error from None
        finally:
            self._close_response()
        return self._deliver_whole(completion, cached=False)

    def _abort(self, error: BaseException) -> None:
        self.error = error
        self._close_response()
        if not self._call.ended:
            self._recorder.fail(self._call, error, status=200)

    def close(self) -> None:
        """Stop reading: the connection is closed and the span recorded with what arrived."""
        call = self._call
        if call.ended:
            return
        self._close_response()
        completion = self._cached if self._cached is not None else call.acc.to_completion()
        self.response = completion
        self._recorder.succeed(
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

