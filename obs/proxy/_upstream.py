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
  `handoff()` gives a streamed body to a pump of its own (`obs.proxy._pump`);
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
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import httpx

from obs.proxy._connection import UpstreamConnection
from obs.proxy._http1 import (
    MAX_HEAD_BYTES,
    ChunkedBody,
    FramingError,
    Headers,
    answer_framing,
    parse_status_head,
    says_close,
)

if TYPE_CHECKING:
    from obs.proxy._pump import ThreadPump

__all__ = ["EarlyRelay", "UpstreamPool", "UpstreamResponse"]

_BODY_METHODS = (b"POST", b"PUT", b"PATCH")
_STALE = (httpx.RemoteProtocolError, httpx.ReadError)
Callback = Callable[[], None]
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


class UpstreamResponse:
    """An answer whose status and headers are in; `read()` its body, `aclose()` when done with it."""

    __slots__ = ("_chunks", "_conn", "_deliver", "_done", "_finished", "_held", "_keep", "_last", "_left",
                 "_mode", "_on_done", "_pool", "_timeout", "_watchdog", "failure", "headers", "received",
                 "relayed", "status")  # fmt: skip

    def __init__(self, pool: UpstreamPool, conn: UpstreamConnection, status: int,
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
        request = self._request_bytes(verb, target.encode("latin-1"), headers, body)
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
        else:
            self.release(conn)

    # -- internals --------------------------------------------------------------------------------

    def _request_bytes(self, verb: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                       body: bytes) -> bytes:  # fmt: skip
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
        """`send`'s `early` relay on `conn` (made ready, then the request written here, then the relay's
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

        if on_sent is not None:
            on_sent()  # the span begins before the relay is made ready: its head names it
        transport.pause_reading()
        try:
            relayed = early(sock.fileno(), conn.buffer, timeout_s, answered)
        except BaseException:
            transport.resume_reading()
            raise
        transport.write(request)
        pump = await relayed  # the relay thread wakes now, and waits for the head
        if not made:  # the relay left the answer to be read here, from the bytes it read
            transport.resume_reading()
            return True, None
        response = made[0]
        response.relayed = True
        response.failure = pump.failure
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
