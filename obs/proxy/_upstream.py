"""The proxy's HTTP/1.1 client for its one upstream: an asyncio protocol and a pool of kept-alive connections.

Relaying a streamed answer is the proxy's hot path: one upstream read and
one write to the caller per token. A general client (httpx over httpcore,
anyio and h11) spends most of the proxy's CPU there, in layers a relay does
not need (a cancel scope and several wrappers per read, an event object per
chunk), and on a machine whose cores all run the model every millisecond of
it is taken from generation. This client does only what the relay needs:

- `UpstreamPool.send(method, target, headers, body)` writes the request
  (headers as given, plus `Host` and `Content-Length`) on a kept-alive
  connection or a new one and returns once the answer's status line and
  headers are in (informational 1xx answers skipped);
- `UpstreamResponse.read()` returns the body's next bytes as they arrive,
  everything already received at once (chunked framing removed, as the
  ASGI server frames the answer again), b"" at the end;
- a connection whose answer was read to the end, that neither side asked to
  close, goes back to the pool for 4 s (less than llama-server's 5 s); one
  closed early or mid-answer is closed, which makes llama-server stop
  generating;
- failures are httpx's exception classes, so callers handle them as they
  would httpx's: `ConnectError`/`ConnectTimeout` (nothing answered),
  `ReadTimeout` (`read_timeout_s` passed without a byte), `RemoteProtocolError`
  (closed before the answer was complete, or not HTTP), `ReadError` (reset).

A pooled connection that turns out closed before any byte of the answer
came is replaced by a new one and the request sent again, once (`on_retry`
is told); a request that a new connection got no answer for is never sent
twice.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

import httpx

__all__ = ["UpstreamPool", "UpstreamResponse", "header_value"]

_MAX_HEAD_BYTES = 64 * 1024
_MAX_LINE_BYTES = 4 * 1024
_HIGH_WATER = 256 * 1024  # bytes waiting unread before the socket is no longer read
_BODY_METHODS = (b"POST", b"PUT", b"PATCH")
_NO_BODY_STATUS = (204, 304)
_HEX = frozenset(b"0123456789abcdefABCDEF")
_STALE = (httpx.RemoteProtocolError, httpx.ReadError)


class _Default:
    """The pool's own read timeout (a timeout of None means no limit, so None cannot say "default")."""


_POOLS = _Default()


def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header `name` (lowercase), or None."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _expire(waiter: asyncio.Future[None], seconds: float) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout(f"no bytes from the upstream within {seconds:g} s"))


class _Connection(asyncio.Protocol):
    """One upstream connection: received bytes wait in `buffer` until the response reads them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.error: BaseException | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    # -- asyncio's side ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
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

    def close(self) -> None:
        """Close the connection now (the upstream sees the caller leave)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamResponse:
    """An answer whose status and headers are in; `read()` its body, `aclose()` when done with it."""

    __slots__ = ("_chunk_left", "_conn", "_done", "_keep", "_left", "_mode", "_pool", "_timeout",
                 "headers", "received", "status")  # fmt: skip

    def __init__(self, pool: UpstreamPool, conn: _Connection, status: int,
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
        self._chunk_left = -1  # -1: a chunk's size line is next; -2: the CRLF after a chunk's data
        self._keep = keep
        self._timeout = timeout_s
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

    def _take(self) -> bytes:
        """Unframe what the buffer holds; sets `_done` when the body's end is in it."""
        buffer = self._conn.buffer
        mode = self._mode
        if mode == "close":
            data = bytes(buffer)
            buffer.clear()
            return data
        if mode == "length":
            n = min(len(buffer), self._left)
            data = bytes(buffer[:n])
            del buffer[:n]
            self._left -= n
            self._done = self._left == 0
            return data
        pieces: list[bytes] = []
        while buffer and not self._done:
            left = self._chunk_left
            if left > 0:
                n = min(len(buffer), left)
                pieces.append(bytes(buffer[:n]))
                del buffer[:n]
                self._chunk_left = -2 if n == left else left - n
            elif left == -2:
                if len(buffer) < 2:
                    break
                if buffer[0] != 13 or buffer[1] != 10:
                    raise httpx.RemoteProtocolError("the upstream's chunked body is malformed (no CRLF after "
                                                    "a chunk)")  # fmt: skip
                del buffer[:2]
                self._chunk_left = -1
            else:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > _MAX_LINE_BYTES:
                        raise httpx.RemoteProtocolError("the upstream's chunk size line is too long")
                    break
                size = bytes(buffer[:end]).split(b";", 1)[0].strip()
                if not size or not _HEX.issuperset(size):
                    raise httpx.RemoteProtocolError("the upstream's chunked body has a bad chunk size")
                if int(size, 16) == 0:
                    trailer_end = buffer.find(b"\r\n\r\n", end) if buffer[end + 2:end + 4] != b"\r\n" else end
                    if trailer_end < 0:
                        break  # trailers still coming
                    del buffer[:trailer_end + 4]
                    self._done = True
                    break
                del buffer[:end + 2]
                self._chunk_left = int(size, 16)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _finish(self) -> None:
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if conn is None:
            return
        if self._keep and conn.usable:
            self._pool.release(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        """Done with the answer: a connection read to the end is pooled, any other closed."""
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if conn is not None:
            if self._done and self._keep and conn.usable:
                self._pool.release(conn)
            else:
                conn.close()


class UpstreamPool:
    """Kept-alive connections to one upstream (`scheme://host:port`); see the module docstring."""

    def __init__(self, scheme: str, host: str, port: int, *, connect_timeout_s: float,
                 read_timeout_s: float | None, max_idle: int = 64, idle_expiry_s: float = 4.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:  # fmt: skip
        """Nothing is opened yet; `ssl_context` is used for https (default: the system's CAs)."""
        self.host = host
        self.port = port
        self.host_header = (f"[{host}]" if ":" in host else host).encode("ascii")
        if port != (443 if scheme == "https" else 80):
            self.host_header += b":%d" % port
        self._ssl: ssl.SSLContext | None = None
        if scheme == "https":
            self._ssl = ssl_context if ssl_context is not None else httpx.create_ssl_context()
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._max_idle = max_idle
        self._expiry = idle_expiry_s
        self._idle: list[_Connection] = []

    async def send(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes, *,
                   read_timeout_s: float | _Default | None = _POOLS,
                   on_retry: Callable[[], None] | None = None) -> UpstreamResponse:  # fmt: skip
        """Send the request and return once its answer's head is in (module docstring for failures).

        `target` is the path and query; `read_timeout_s` replaces the pool's for this request.
        """
        timeout = self.read_timeout_s if isinstance(read_timeout_s, _Default) else read_timeout_s
        verb = method.encode("ascii")
        request = self._request_bytes(verb, target.encode("latin-1"), headers, body)
        for attempt in range(2):
            conn, pooled = await self._connection()
            assert conn.transport is not None
            conn.transport.write(request)
            try:
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

    def release(self, conn: _Connection) -> None:
        """Keep `conn` for the next request (the newest are used first)."""
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        if len(self._idle) > self._max_idle:
            self._idle.pop(0).close()

    async def aclose(self) -> None:
        """Close every kept connection."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

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

    async def _connection(self) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable and now - conn.idle_since < self._expiry:
                return conn, True
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(loop), self.host, self.port, ssl=self._ssl,
                                       server_hostname=self.host if self._ssl else None),
                self.connect_timeout_s,
            )  # fmt: skip
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection within {self.connect_timeout_s:g} s") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
        return conn, False

    async def _head(self, conn: _Connection, verb: bytes, timeout_s: float | None) -> UpstreamResponse:
        buffer = conn.buffer
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD_BYTES:
                    raise httpx.RemoteProtocolError("the upstream's answer headers are too large")
                if conn.closed:
                    raise conn.ended("before answering")
                await conn.more(timeout_s)
                continue
            head = bytes(buffer[:end])
            del buffer[:end + 4]
            version, status, headers = _parse_head(head)
            if 100 <= status < 200 and status != 101:
                continue  # informational: the real answer follows
            break
        mode, length = _framing(verb, status, headers)
        keep = version == b"HTTP/1.1" and mode != "close" and status != 101 and not _says_close(headers)
        return UpstreamResponse(self, conn, status, headers, mode, length, keep, timeout_s)


def _parse_head(head: bytes) -> tuple[bytes, int, list[tuple[bytes, bytes]]]:
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise httpx.RemoteProtocolError("the upstream did not answer in HTTP/1.x")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name:
            raise httpx.RemoteProtocolError("the upstream sent a malformed header line")
        headers.append((name, value.strip(b" \t")))
    return version, int(code), headers


def _framing(verb: bytes, status: int, headers: list[tuple[bytes, bytes]]) -> tuple[str, int]:
    """How the body ends (RFC 9112 section 6.3): ("none" | "chunked" | "length" | "close", length)."""
    if verb == b"HEAD" or status in _NO_BODY_STATUS or 100 <= status < 200:
        return "none", 0
    encoding = header_value(headers, b"transfer-encoding")
    if encoding is not None:
        final = encoding.split(b",")[-1].strip().lower()
        return ("chunked", 0) if final == b"chunked" else ("close", 0)
    lengths = {value.strip() for key, value in headers if key.lower() == b"content-length"}
    if not lengths:
        return "close", 0
    if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
        raise httpx.RemoteProtocolError("the upstream sent a bad Content-Length")
    return "length", int(lengths.pop())


def _says_close(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(key.lower() == b"connection" and b"close" in value.lower() for key, value in headers)
