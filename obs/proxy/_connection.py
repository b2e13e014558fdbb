"""One connection of the proxy's upstream pool (`obs.proxy._upstream`): an asyncio protocol whose
received bytes wait in `buffer` until the answer being read takes them.

It wakes the one reader waiting (`more`) or calls the push-mode `sink` on
every arrival and at the end; while it sits in the pool, `on_lost` tells the
pool when the upstream closes it and `expiry` is the pool's timer for its age.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

__all__ = ["UpstreamConnection"]

_HIGH_WATER = 256 * 1024  # bytes waiting unread before the socket is no longer read


def _expire(waiter: asyncio.Future[None], seconds: float) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout(f"no bytes from the upstream within {seconds:g} s"))


class UpstreamConnection(asyncio.Protocol):
    """One upstream connection: received bytes wait in `buffer` until the response reads them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.error: BaseException | None = None
        self.idle_since = 0.0
        self.sink: Callable[[], None] | None = None  # push mode: called on every arrival and at the end
        self.on_lost: Callable[[UpstreamConnection], None] | None = None  # while pooled: told when it closes
        self.expiry: asyncio.TimerHandle | None = None  # while pooled and kept ready: its 4 s limit
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    # -- asyncio's side ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        sink = self.sink
        if sink is not None:
            sink()
            return
        if len(self.buffer) > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        self._lost()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()
        self._lost()

    def _lost(self) -> None:
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost(self)

    def _wake(self) -> None:
        if self.sink is not None:
            self.sink()
            return
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the response's side ----------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """True for a connection that may carry a request (open, nothing unread waiting)."""
        transport = self.transport
        return not self.closed and transport is not None and not transport.is_closing() and not self.buffer

    async def more(self, timeout_s: float | None) -> None:
        """Wait until more bytes arrived or the connection ended; ReadTimeout after `timeout_s`."""
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()  # what was waiting has been read
        waiter = self.loop.create_future()
        self._waiter = waiter
        if timeout_s is None:
            await waiter
            return
        timer = self.loop.call_later(timeout_s, _expire, waiter, timeout_s)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def ended(self, what: str) -> Exception:
        """The error for a connection that ended while `what` was still expected."""
        if isinstance(self.error, OSError) and not isinstance(self.error, ConnectionAbortedError):
            return httpx.ReadError(f"the upstream connection broke ({self.error}) {what}")
        return httpx.RemoteProtocolError(f"the upstream closed the connection {what}")

    def unpooled(self) -> None:
        """Taken out of the pool: no longer watched for closing or expiry."""
        self.on_lost = None
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None

    def close(self) -> None:
        """Close the connection now (the upstream sees the caller leave)."""
        self.unpooled()
        self.closed = True
        if self.transport is not None:
            self.transport.close()
