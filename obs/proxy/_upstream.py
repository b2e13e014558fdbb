"""The proxy's HTTP/1.1 client for its one upstream: an asyncio protocol and a pool of kept-alive connections.

A general client (httpx over httpcore, anyio and h11) spent most of the
proxy's CPU in layers a relay does not need; this one does only what it needs:

- `UpstreamPool.send(method, target, headers, body)` writes the request
  (headers as given, plus `Host` and `Content-Length`) on a kept-alive
  connection or a new one and returns once the answer's status line and
  headers are in (informational 1xx answers skipped);
- `UpstreamResponse.read()` returns the body's next bytes as they arrive,
  all that was received at once, unframed, b"" at the end; `stream_to(deliver,
  done)` hands each piece to `deliver` from the callback that received it (no
  task wakes up per piece), `pause()`/`resume()` holding the upstream back;
  `handoff()` gives a streamed body to a pump of its own (`obs.proxy._pump`),
  and `send(early=...)` a whole answer, from the moment its request is written;
- a connection whose answer was read to the end, that neither side asked to
  close, goes back to the pool for 4 s (less than llama-server's 5 s); one
  closed early or mid-answer is closed, which makes llama-server stop
  generating;
- with `keep_ready_s`, a connection is kept open and ready for that long
  after each answer: opened in the background once an answer lets go of
  its connection and none that may carry a request is left, again when the
  upstream closes it or it reaches the 4 s limit unused. llama-server closes
  its connection after every streamed answer, so without it the next call
  would first wait for a new connection. Connecting in the background never
  raises: a request that finds no ready connection connects (and fails) as
  before;
- failures are httpx's exception classes, so callers handle them as they
  would httpx's: `ConnectError`/`ConnectTimeout` (nothing answered),
  `ReadTimeout` (`read_timeout_s` passed without a byte), `RemoteProtocolError`
  (closed before the answer was complete, or not HTTP), `ReadError` (reset).

A pooled connection found closed before any byte of the answer came is
replaced and the request sent again, once (`on_retry` is told); a request
a new connection got no answer for is never sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import httpx

from obs.proxy._connection import UpstreamConnection
from obs.proxy._http1 import (
    MAX_HEAD_BYTES,
    FramingError,
    Headers,
    answer_framing,
    parse_status_head,
    says_close,
)
from obs.proxy._response import Callback, UpstreamResponse
from obs.proxy._spares import Spares

if TYPE_CHECKING:
    from obs.proxy._pump import ThreadPump

__all__ = ["EarlyRelay", "UpstreamPool", "UpstreamResponse"]

_BODY_METHODS = (b"POST", b"PUT", b"PATCH")
_STALE = (httpx.RemoteProtocolError, httpx.ReadError)
# The caller's relay of a whole answer in a thread (`obs.proxy._pump`), made ready when called, just
# before the request is written, and started once awaited: given the connection's socket (fd), the bytes
# read so far, the read timeout, and what to call (in the relay thread) with the answer's version, status
# and headers once they are in; awaited, the pump once it is over.
EarlyRelay = Callable[[int, bytearray, "float | None", Callable[[bytes, int, Headers], None]],
                      Awaitable["ThreadPump"]]  # fmt: skip
Answered = Callable[["UpstreamResponse"], None]


class _Default:
    """The pool's own read timeout (a timeout of None means no limit, so None cannot say "default")."""


_POOLS = _Default()


class UpstreamPool:
    """Kept-alive connections to one upstream (`scheme://host:port`); see the module docstring."""

    def __init__(self, scheme: str, host: str, port: int, *, connect_timeout_s: float,
                 read_timeout_s: float | None, max_idle: int = 64, idle_expiry_s: float = 4.0,
                 keep_ready_s: float = 0.0, ssl_context: ssl.SSLContext | None = None) -> None:  # fmt: skip
        """Nothing is opened yet; `ssl_context` is used for https (default: the system's CAs).

        `keep_ready_s` > 0 keeps a connection open and ready for that long after each answer
        (module docstring).
        """
        self.host = host
        self.port = port
        self.host_header = (f"[{host}]" if ":" in host else host).encode("ascii")
        if port != (443 if scheme == "https" else 80):
            self.host_header += b":%d" % port
        self._ssl: ssl.SSLContext | None = None
        self.tls = scheme == "https"
        if scheme == "https":
            self._ssl = ssl_context if ssl_context is not None else httpx.create_ssl_context()
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._max_idle = max_idle
        self._expiry = idle_expiry_s
        self._idle: list[UpstreamConnection] = []
        self._ready_s = keep_ready_s
        self._ready_until = 0.0  # time.monotonic() until which a connection is kept ready
        self._opening: asyncio.Task[None] | None = None
        self._closed = False
        self.spares: Spares | None = None  # the relay threads' spare connection (obs.proxy._spares)
        self._to_spares = False  # the connection being made ready goes to `spares` once open

    async def send(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes, *,
                   read_timeout_s: float | _Default | None = _POOLS, on_retry: Callback | None = None,
                   on_sent: Callback | None = None, on_connect: Callback | None = None,
                   early: EarlyRelay | None = None,
                   on_answer: Answered | None = None) -> UpstreamResponse:  # fmt: skip
        """Send the request and return once its answer's head is in (module docstring for failures).

        `target` is the path and query; `read_timeout_s` replaces the pool's
        for this request; `on_sent` is called once the request is first written;
        `on_connect` each time it waited for a new connection (none was ready).
        With `early`, a plain-HTTP connection's answer is handed to that relay
        as soon as the request is written: when it relays the answer it returns
        only once the answer has passed (`relayed` set, `failure` how it broke
        after its head went out), having told `on_answer` (from the relay's
        thread) as soon as the head was in; else the answer is read here.
        """
        timeout = self.read_timeout_s if isinstance(read_timeout_s, _Default) else read_timeout_s
        verb = method.encode("ascii")
        request = self.request_bytes(verb, target.encode("latin-1"), headers, body)
        for attempt in range(2):
            conn, pooled = await self._connection()
            assert conn.transport is not None
            if not pooled and on_connect is not None:
                on_connect()
            sent, on_sent = on_sent, None  # told once, on the first attempt
            try:
                if early is not None:
                    written, response = await self._early(conn, request, timeout, early, on_answer, sent)
                    if response is not None:
                        return response
                    if written:
                        return await self._head(conn, verb, timeout)
                conn.transport.write(request)
                if sent is not None:
                    sent()
                return await self._head(conn, verb, timeout)
            except _STALE:
                conn.close()
                if attempt or not pooled or conn.buffer:
                    raise
                if on_retry is not None:
                    on_retry()
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def answered(self, conn: UpstreamConnection, keep: bool) -> None:
        """An answer is done with `conn`: pooled if `keep` and still usable, else closed; then, with
        `keep_ready_s`, a connection is made ready if none is."""
        if keep and conn.usable and not self._closed:
            self.release(conn)
        else:
            conn.close()
        if self._ready_s > 0:
            self._ready_until = time.monotonic() + self._ready_s
            self._make_ready()

    def release(self, conn: UpstreamConnection) -> None:
        """Keep `conn` for the next request (the newest are used first)."""
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        if self._ready_s > 0:
            conn.on_lost = self._lost
            conn.expiry = conn.loop.call_later(self._expiry, self._expired, conn)
        if len(self._idle) > self._max_idle:
            self._idle.pop(0).close()

    async def aclose(self) -> None:
        """Close every kept connection, and stop keeping one ready."""
        self._closed = True
        opening, self._opening = self._opening, None
        if opening is not None:
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opening
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def adopt(self, sock: socket.socket, read: bytes, method: str) -> UpstreamResponse:
        """The answer to a request a relay thread wrote on `sock` (a connection of its own, given over)
        and left to be read here, `read` the bytes of it read already: returns once its head is in, as
        `send` does (the connection is the pool's from now on)."""
        conn = await self._wrap(sock)
        conn.buffer += read
        try:
            return await self._head(conn, method.encode("ascii"), self.read_timeout_s)
        except BaseException:
            conn.close()
            raise

    async def _wrap(self, sock: socket.socket) -> UpstreamConnection:
        """A connection of the pool's made of an open socket (ReadError if it broke meanwhile)."""
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: UpstreamConnection(loop), sock=sock)
        except OSError as exc:
            sock.close()
            raise httpx.ReadError(f"the upstream connection broke ({exc}) before answering") from None
        return conn

    def ready_to_spares(self) -> None:
        """The next connection made ready becomes the relay threads' spare (`spares`), and none is made
        ready while they keep one: one connection kept ready in all. (One already pooled stays: after a
        stream it is about to be closed by llama-server, which makes the next one ready.)"""
        if self.spares is not None and not self.tls:
            self._to_spares = not self.spares.holds

    # -- a connection kept ready ------------------------------------------------------------------

    def _lost(self, conn: UpstreamConnection) -> None:
        """A pooled connection closed (llama-server's, after a streamed answer or its 5 s)."""
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        conn.unpooled()
        self._make_ready()

    def _expired(self, conn: UpstreamConnection) -> None:
        """A pooled connection reached the age past which it is not used: replaced while kept ready."""
        conn.expiry = None
        if conn in self._idle:
            self._idle.remove(conn)
            conn.close()
            self._make_ready()

    def _make_ready(self) -> None:
        """Open a connection in the background if none in the pool may carry a request (while kept ready)."""
        if self._closed or self._opening is not None or time.monotonic() > self._ready_until:
            return
        if self.spares is not None and self.spares.holds:
            return  # the relay threads keep one
        if not any(conn.usable for conn in self._idle):  # called on the pool's event loop only
            self._opening = asyncio.get_running_loop().create_task(self._open_ready())

    async def _open_ready(self) -> None:
        try:
            conn = await self._open()
        except (httpx.HTTPError, OSError):
            return  # the next request connects, and reports a failure, as it would without this
        finally:
            self._opening = None
        if self._closed:
            conn.close()
        elif self._to_spares and self.spares is not None:
            self._to_spares = False
            self.spares.put(_detached(conn))
        else:
            self.release(conn)

    # -- internals --------------------------------------------------------------------------------

    def request_bytes(self, verb: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes) -> bytes:  # fmt: skip
        """The request as written upstream: `headers` as given, plus `Host` and `Content-Length` (from any
        thread)."""
        parts = [verb, b" ", target, b" HTTP/1.1\r\nhost: ", self.host_header, b"\r\n"]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if body or verb in _BODY_METHODS:
            parts.append(b"content-length: %d\r\n" % len(body))
        parts += (b"\r\n", body)
        return b"".join(parts)

    async def _connection(self) -> tuple[UpstreamConnection, bool]:
        for _ in range(2):
            now = time.monotonic()
            while self._idle:
                conn = self._idle.pop()
                if conn.usable and now - conn.idle_since < self._expiry:
                    conn.unpooled()
                    return conn, True
                conn.close()
            opening = self._opening
            if opening is None:
                break
            await asyncio.shield(opening)  # a connection being made ready: this request takes it
        spare = self.spares.take_spare() if self.spares is not None else None
        if spare is not None:
            with contextlib.suppress(httpx.ReadError):
                return await self._wrap(spare), True
        return await self._open(), False

    async def _open(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(loop), self.host, self.port, ssl=self._ssl,
                                       server_hostname=self.host if self._ssl else None),
                self.connect_timeout_s,
            )  # fmt: skip
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection within {self.connect_timeout_s:g} s") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
        return conn

    async def _early(self, conn: UpstreamConnection, request: bytes, timeout_s: float | None,
                     early: EarlyRelay, on_answer: Answered | None,
                     on_sent: Callback | None) -> tuple[bool, UpstreamResponse | None]:  # fmt: skip
        """`send`'s `early` relay on `conn` (the request written here, then the relay made ready and its
        thread woken): (written?, the answer if relayed)."""
        transport = conn.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if self.tls or transport is None or sock is None or conn.closed or transport.is_closing() \
                or transport.get_write_buffer_size():  # fmt: skip
            return False, None
        made: list[UpstreamResponse] = []

        def answered(version: bytes, status: int, headers: Headers) -> None:  # in the relay thread
            keep = version == b"HTTP/1.1" and not says_close(headers)
            made.append(UpstreamResponse(self, conn, status, headers, "chunked", 0, keep, timeout_s))
            if on_answer is not None:
                on_answer(made[0])

        transport.pause_reading()
        transport.write(request)
        if on_sent is not None:
            on_sent()  # the span begins before the relay is made ready: its head names it
        try:
            relayed = early(sock.fileno(), conn.buffer, timeout_s, answered)
        except BaseException:
            transport.resume_reading()
            raise
        try:
            pump = await relayed  # the relay thread wakes now, and waits for the head
        except httpx.HTTPError as exc:
            if not made:
                raise  # before the head: as the loop's reading of it would (a stale connection retried)
            made[0].relayed, made[0].failure = True, exc  # broke midway: recorded, the caller's broken
            return True, made[0]
        if not made:  # the relay left the answer to be read here, from the bytes it read
            transport.resume_reading()
            return True, None
        response = made[0]
        response.relayed = True
        response.handed_back(pump.done)
        return True, response

    async def _head(self, conn: UpstreamConnection, verb: bytes, timeout_s: float | None) -> UpstreamResponse:
        buffer = conn.buffer
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise httpx.RemoteProtocolError("the upstream's answer headers are too large")
                if conn.closed:
                    raise conn.ended("before answering")
                await conn.more(timeout_s)
                continue
            head = bytes(buffer[:end])
            del buffer[:end + 4]
            try:
                version, status, headers = parse_status_head(head)
            except FramingError as exc:
                raise httpx.RemoteProtocolError(f"the upstream sent {exc}") from None
            if 100 <= status < 200 and status != 101:
                continue  # informational: the real answer follows
            break
        try:
            mode, length = answer_framing(verb, status, headers)
        except FramingError as exc:
            raise httpx.RemoteProtocolError(f"the upstream sent {exc}") from None
        keep = version == b"HTTP/1.1" and mode != "close" and status != 101 and not says_close(headers)
        return UpstreamResponse(self, conn, status, headers, mode, length, keep, timeout_s)


def _detached(conn: UpstreamConnection) -> socket.socket:
    """`conn`'s connection as a socket of its own, its transport closed (the connection outlives it)."""
    transport = conn.transport
    assert transport is not None
    mine = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
    conn.closed = True
    transport.abort()
    return mine
