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

All but the I/O lives in `obs.llm._stream_state` and is shared with
`obs.llm.async_stream.AsyncChatStream`; `take_chunk` is re-exported here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from types import TracebackType

from obs.llm._limits import read_body
from obs.llm._stream_state import FINISHED, StreamState, take_chunk

__all__ = ["ChatStream", "take_chunk"]

_log = logging.getLogger(__name__)


class ChatStream(StreamState):
    """The text deltas of a streamed answer, as they arrive; the span is recorded when it ends.

    Iterate it (or hand it to `st.write_stream`). It ends by being read to
    the server's `[DONE]`, by `close()` (also on leaving a `with` block or
    when dropped), or by breaking: then iteration raises StreamInterrupted,
    ServerTimeout, HTTPStatusError or BadResponse, and the text received so
    far stays on the span. Afterwards `span` is the recorded Span and
    `response` the assembled ChatCompletion (None if it broke); `error` is
    what it broke with.
    """

    _chunks: Iterator[bytes] | None = None

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        if self._call.ended:
            raise StopIteration
        if self._cached is not None:
            delta = self._deliver_whole(self._cached, cached=True)
        elif not self._sse:
            delta = self._deliver_json()
        else:
            delta = self._read_delta()
        if delta is None:
            raise StopIteration
        return delta

    def _read_delta(self) -> str | None:
        """The next text delta from the wire; None once the stream has ended at `[DONE]`."""
        self._start_wait()
        try:
            out = self._next_event()
        except BaseException as exc:
            error = self._error_for(exc)
            if error is None:  # the application's own (KeyboardInterrupt, say): recorded, passed on
                self._abort(exc)
                raise
        else:
            if out is FINISHED:
                self._close_response()
                self._record_done()
                return None
            assert isinstance(out, str)
            return out
        self._abort(error)
        raise error

    def _next_event(self) -> str | object:
        if self._chunks is None:
            assert self._response is not None
            self._chunks = self._response.iter_bytes()
        while (out := self._take_pending()) is None:
            self._feed(next(self._chunks, None))
        return out

    def _deliver_json(self) -> str | None:
        """A server that ignored `stream: true` and sent one JSON body: take it whole."""
        assert self._response is not None and self._budget is not None
        try:
            body = read_body(self._response, self._budget, self._errors.limits.max_response_bytes)
            completion = self._json_completion(body)
        except BaseException as exc:  # BadResponse from the body, a read failure, or the application's own
            error = self._body_error_for(exc)
            self._abort(error)
            if error is exc:
                raise
            raise error from None
        finally:
            self._close_response()
        return self._deliver_whole(completion, cached=False)

    def _close_response(self) -> None:
        if self._response is not None:
            try:
                self._response.close()
            except Exception as exc:  # closing a broken connection may fail again; nothing to save
                _log.debug("obs: closing a stream response failed: %s", exc)

    def _abort(self, error: BaseException) -> None:
        self._close_response()
        self._record_failure(error)

    def close(self) -> None:
        """Stop reading: the connection is closed and the span recorded with what arrived."""
        if self._call.ended:
            return
        self._close_response()
        self._record_closed()

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
