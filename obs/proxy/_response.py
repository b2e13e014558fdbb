"""An upstream answer whose head is in (`obs.proxy._upstream`): its body read, pushed, or handed to a pump."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import httpx

from obs.proxy._http1 import ChunkedBody, FramingError

if TYPE_CHECKING:
    from obs.proxy._connection import UpstreamConnection

__all__ = ["Callback", "UpstreamResponse"]

Callback = Callable[[], None]


class _Pool(Protocol):
    """What an answer needs of its pool (`obs.proxy._upstream.UpstreamPool`)."""

    tls: bool

    def answered(self, conn: UpstreamConnection, keep: bool) -> None:
        """An answer is done with `conn`: pooled if `keep`, else closed."""


class UpstreamResponse:
    """An answer whose status and headers are in; `read()` its body, `aclose()` when done with it."""

    __slots__ = ("_chunks", "_conn", "_deliver", "_done", "_finished", "_held", "_keep", "_last", "_left",
                 "_mode", "_on_done", "_pool", "_timeout", "_watchdog", "failure", "headers", "received",
                 "relayed", "status")  # fmt: skip

    def __init__(self, pool: _Pool, conn: UpstreamConnection, status: int,
                 headers: list[tuple[bytes, bytes]], mode: str, length: int, keep: bool,
                 timeout_s: float | None) -> None:  # fmt: skip
        """Internal: made by `UpstreamPool.send`."""
        self._pool = pool
        self._conn = conn
        self.status = status
        self.headers = headers
        self.received = 0
        self._mode = mode  # "none", "length", "chunked" or "close"
        self._left = length
        self._chunks = ChunkedBody() if mode == "chunked" else None
        self._keep = keep
        self._timeout = timeout_s
        self._finished: asyncio.Future[None] | None = None  # push mode (`stream_to`) from here on
        self._deliver: Callable[[bytes], None] | None = None
        self._on_done: Callback | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._held, self._last = False, 0.0
        # Relayed to the caller already, head and body, by `send(early=...)`; `failure`: how it broke.
        self.relayed = False
        self.failure: httpx.HTTPError | None = None
        self._done = mode == "none" or (mode == "length" and length == 0)
        if self._done:
            self._finish()

    async def read(self) -> bytes:
        """The body's next bytes (all that has arrived, unframed); b"" once it is complete."""
        if self._done:
            return b""
        conn = self._conn
        while True:
            if conn.buffer:
                data = self._take()
                if data or self._done:
                    self.received += len(data)
                    if self._done:
                        self._finish()
                    return data
            if conn.closed:
                if self._mode == "close" and not conn.buffer:
                    if conn.error is not None and isinstance(conn.error, OSError):
                        raise conn.ended("in the middle of its answer")
                    self._done = True
                    self._finish()
                    return b""
                raise conn.ended(f"in the middle of its answer ({self.received} bytes of the body in)")
            await conn.more(self._timeout)

    def stream_to(self, deliver: Callable[[bytes], None], done: Callable[[], None]) -> asyncio.Future[None]:
        """Push mode: hand each piece of the body (unframed) to `deliver` as it arrives, then call `done`.

        Both are called from the connection's own callbacks: no task wakes up
        per piece. The future returned ends (None) once `done` has been
        called, or with the httpx error the body ended in (ReadTimeout when
        `read_timeout_s` passed without a byte while not paused), or with
        what `deliver` or `done` raised. Nothing else is read from this
        response afterwards; `aclose()` it as always.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._finished, self._deliver, self._on_done = future, deliver, done
        conn = self._conn
        if self._done or conn is None:  # no body (HEAD, 204, 304, an empty one)
            self._complete(future)
            return future
        conn.sink = self._pump
        if self._timeout is not None:
            self._last = loop.time()
            self._watchdog = loop.call_later(self._timeout, self._watch)
        if conn.buffer or conn.closed:
            self._pump()
        return future

    @property
    def chunked(self) -> bool:
        """True when the upstream's chunks delimit the body."""
        return self._mode == "chunked"

    @property
    def timeout_s(self) -> float | None:
        """The longest wait for the upstream's next bytes (None: no limit)."""
        return self._timeout

    def handoff(self) -> tuple[int, bytearray, ChunkedBody | None] | None:
        """For a pump of its own: the socket (fd), the bytes read so far, the chunked body's state.

        Only for a chunked or close-delimited body not yet complete, on a
        plain-HTTP connection; None otherwise. The connection stops reading
        until `handed_back`; `buffer` is to be consumed as the body is read.
        """
        conn = self._conn
        if conn is None or self._done or self._mode not in ("chunked", "close") or self._pool.tls:
            return None
        transport = conn.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if transport is None or sock is None or conn.closed or transport.is_closing():
            return None
        transport.pause_reading()
        return sock.fileno(), conn.buffer, self._chunks

    def handed_back(self, complete: bool) -> None:
        """The pump is over; `complete` if it read the body to its end (the connection may be pooled)."""
        conn = self._conn
        if conn is None:
            return
        if complete and conn.transport is not None and not conn.closed:
            conn.transport.resume_reading()
            self._done = True
            self._finish()

    def pause(self) -> None:
        """Push mode: stop reading from the upstream (the caller reads slowly); no timeout runs meanwhile."""
        conn = self._conn
        if conn is not None and not self._held and conn.transport is not None and not conn.closed:
            self._held = True
            conn.transport.pause_reading()

    def resume(self) -> None:
        """Push mode: read from the upstream again after `pause()`."""
        conn = self._conn
        if conn is not None and self._held and conn.transport is not None and not conn.closed:
            self._held = False
            self._last = conn.loop.time()
            conn.transport.resume_reading()

    def _pump(self) -> None:
        conn, future = self._conn, self._finished
        if conn is None or future is None or future.done():
            return
        try:
            if conn.buffer:
                data = self._take()
                if data:
                    self.received += len(data)
                    if self._timeout is not None:
                        self._last = conn.loop.time()
                    self._deliver(data)  # type: ignore[misc]
                if self._done:
                    self._complete(future)
                    return
            if conn.closed:
                if self._mode == "close" and not conn.buffer and not isinstance(conn.error, OSError):
                    self._done = True
                    self._complete(future)
                    return
                raise conn.ended(f"in the middle of its answer ({self.received} bytes of the body in)")
        except Exception as exc:
            self._unhook()
            future.set_exception(exc)

    def _complete(self, future: asyncio.Future[None]) -> None:
        self._unhook()
        self._finish()
        try:
            self._on_done()  # type: ignore[misc]
        except Exception as exc:
            future.set_exception(exc)
            return
        future.set_result(None)

    def _watch(self) -> None:
        conn, future, timeout = self._conn, self._finished, self._timeout
        if conn is None or future is None or future.done() or timeout is None:
            return
        idle = 0.0 if self._held else conn.loop.time() - self._last
        if idle >= timeout:
            self._unhook()
            future.set_exception(httpx.ReadTimeout(f"no bytes from the upstream within {timeout:g} s"))
        else:
            self._watchdog = conn.loop.call_later(timeout - idle, self._watch)

    def _unhook(self) -> None:
        if self._conn is not None:
            self._conn.sink = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _take(self) -> bytes:
        """Unframe what the buffer holds; sets `_done` when the body's end is in it."""
        buffer = self._conn.buffer
        chunks = self._chunks
        if chunks is not None:
            try:
                data = chunks.take(buffer)
            except FramingError as exc:
                raise httpx.RemoteProtocolError(f"the upstream's answer has {exc}") from None
            self._done = chunks.done
            return data
        if self._mode == "close":
            data = bytes(buffer)
            buffer.clear()
            return data
        n = min(len(buffer), self._left)  # "length"
        data = bytes(buffer[:n])
        del buffer[:n]
        self._left -= n
        self._done = self._left == 0
        return data

    def _finish(self) -> None:
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if conn is not None:
            self._pool.answered(conn, self._keep)

    async def aclose(self) -> None:
        """Done with the answer: a connection read to the end is pooled, any other closed."""
        self._unhook()
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if conn is not None:
            self._pool.answered(conn, self._done and self._keep)
