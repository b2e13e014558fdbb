"""One relayed model call's recording, done once its answer has passed.

Recording a call costs CPU: reading the request's JSON, the span's
attributes, the log entry, reading the answer. Done as the request went out,
it ran while the model worked on that request, and on a machine whose cores
all run the model that time was taken from the model: the first token came
later. So `RelayedCall` begins only the span as the request goes out (its
ids name it in the answer's `traceparent` header, and it starts when the
request did), keeps the answer's head and each piece of its body with the
time it arrived, and records the call through `Exchange` once the answer
has passed, from what it kept, exactly as it would have as the bytes went by:
the same span, times, tokens and log entries, each stamped when it happened.

It records sooner when it must: at once on any failure or when the caller
leaves (`begin`, which the relay calls on those paths), and as soon as the
kept bytes pass the recording's cap (`max_response_bytes`), so memory stays
bounded; from then on each piece goes straight to the `Exchange`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from obs.llm.exchange import Exchange, Route, route_of

if TYPE_CHECKING:
    from obs.proxy._caller import CallerRequest
    from obs.trace.handles import SpanHandle

__all__ = ["STREAMED", "AnswerHead", "CallHooks", "RelayedCall"]

_Headers = list[tuple[bytes, bytes]]
# A request that asks for a streamed answer (a guess from its bytes, for speed only: a wrong one costs
# a thread's wake-up, as the loop then reads the answer).
STREAMED = re.compile(rb'"stream"\s*:\s*true')


class AnswerHead(Protocol):
    """An upstream answer's status and headers, as recording reads them (an `AnswerHead`, say)."""

    status: int
    headers: _Headers


@dataclass(frozen=True, slots=True)
class CallHooks:
    """What recording a call asks of the app relaying it (`ProxyApp`), made once per app."""

    now_ms: Callable[[], float]  # the app's monotonic clock
    open: Callable[[Route, _Headers], SpanHandle | None]  # begin the span (None: that failed)
    begin: Callable[[Route, _Headers, bytes, SpanHandle | None, float], Exchange | None]  # the recording
    answered: Callable[[Exchange, AnswerHead], None]  # tell it the answer's head
    failed: Callable[[str, BaseException], None]  # count and log a failure of recording
    cap: int  # the kept bytes past which a call is recorded without waiting for its end


class RelayedCall:
    """One relayed request's recording (module docstring): made on the event loop, for any request.

    Only model calls (the routes `obs.llm.exchange` knows) are recorded;
    for any other request every method does nothing. `answered` and `keep`
    may be called from the thread relaying the answer (a call that a thread
    relays from the request's arrival, `obs.proxy._held`, may also be made
    and `sent` there); everything else on the event loop.
    """

    __slots__ = (
        "_answer",
        "_hooks",
        "_kept",
        "_kept_bytes",
        "_lock",
        "_loop",
        "_request",
        "_route",
        "_sent_ms",
        "_span",
        "_started",
        "exchange",
    )

    def __init__(self, hooks: CallHooks, request: CallerRequest,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:  # fmt: skip
        """Nothing is recorded yet; `loop` is the event loop that records (default: the running one, for
        a call made on it)."""
        self._hooks = hooks
        self._request = request
        self._route = route_of(request.method, request.path)
        self._started = hooks.now_ms()
        self._sent_ms: float | None = None
        self._span: SpanHandle | None = None
        self._answer: AnswerHead | None = None
        self._kept: list[tuple[bytes, float]] = []
        self._kept_bytes = 0
        self._lock = threading.Lock()
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self.exchange: Exchange | None = None

    @property
    def request(self) -> CallerRequest:
        """The request this call relays."""
        return self._request

    @property
    def recording(self) -> bool:
        """True for a model call whose recording is under way (not given up after a failure)."""
        return self._route is not None or self.exchange is not None

    @property
    def streamed(self) -> bool:
        """True for a model call whose request asks for a streamed answer (by a look at its bytes: a
        guess, for choosing how to relay it, never for recording it)."""
        return self._route is not None and STREAMED.search(self._request.body) is not None

    def sent(self, at_ms: float | None = None) -> None:
        """The request was written upstream just now, or at `at_ms` (called once): the span begins, timed
        from then."""
        self._sent_ms = self._hooks.now_ms() if at_ms is None else at_ms
        if self._route is not None:
            self._span = self._hooks.open(self._route, self._request.headers)

    def answered(self, response: AnswerHead) -> None:
        """The answer's head arrived: kept for the recording."""
        self._answer = response

    def traceparent(self) -> str | None:
        """The `traceparent` naming the call's span, to answer the caller with; None if there is none."""
        span = self._span if self.exchange is None else self.exchange.call.handle
        if span is None:
            return None
        try:
            return span.traceparent()
        except Exception as exc:  # ids that are not W3C ids
            self._hooks.failed("the traceparent of a call", exc)
            return None

    def keep(self, piece: bytes, arrived_ms: float) -> None:
        """Keep a piece of the answer's body, arrived at `arrived_ms` (the app's clock), for recording."""
        with self._lock:
            exchange = self.exchange
            if exchange is None:
                if self._route is None:
                    return  # not a model call, or beginning its recording failed
                self._kept.append((piece, arrived_ms))
                before, self._kept_bytes = self._kept_bytes, self._kept_bytes + len(piece)
                if before <= self._hooks.cap < self._kept_bytes:  # this piece passed the cap: record now
                    with contextlib.suppress(RuntimeError):  # the loop has closed: the relay ends anyway
                        self._loop.call_soon_threadsafe(self.begin)
                return
        exchange.feed(piece, arrived_ms)

    def begin(self) -> Exchange | None:
        """The call's recording, begun now if not yet and given all that was kept; None if there is none."""
        with self._lock:
            route = self._route
            if route is None:
                return self.exchange
            self._route = None  # begun once, even when beginning fails
            request, hooks = self._request, self._hooks
            at_ms = self._started if self._sent_ms is None else self._sent_ms
            exchange = hooks.begin(route, request.headers, request.body, self._span, at_ms)
            if exchange is not None:
                exchange.sent(at_ms)
                if self._answer is not None:
                    hooks.answered(exchange, self._answer)
                for piece, arrived_ms in self._kept:
                    exchange.feed(piece, arrived_ms)
            self._kept = []
            self._kept_bytes = 0
            self.exchange = exchange
            return exchange
