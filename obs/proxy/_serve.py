"""The proxy's own HTTP/1.1 server: each streamed piece is written to the caller by the callback that got it.

Relaying a stream is a wake-up per token. Served through uvicorn and ASGI,
each piece also woke a task, went through an event object and several
wrappers, and the event loop turned once more; on a machine whose cores all
run the model, every such microsecond is taken from generation. Here the
upstream connection's callback unframes the piece and writes it, framed
again, to the caller's socket (`ProxyApp.relay` with this module's caller):
one loop turn, one read, one write. A connection is left to a relay thread
(`obs.proxy._kept`) while it waits for a request, from its first one and
after each streamed call a thread relayed whole; the loop takes it back
for anything that thread does not relay itself.

What it speaks (RFC 9112), towards callers:

- requests: a request line (`METHOD target HTTP/1.1` or `HTTP/1.0`, origin
  or absolute form), headers (64 KiB at most, else 431), a body by
  `Content-Length` or `Transfer-Encoding: chunked` (100 MiB at most, else
  413; `Expect: 100-continue` answered); pipelined requests are answered in
  order; a malformed one gets 400 (505 for another HTTP version) with
  llama-server's error JSON, and the connection is closed;
- answers: the status and headers the relay gives; a body with its
  `Content-Length` is written as is, any other chunked (close-delimited to
  an HTTP/1.0 caller); none for HEAD, 1xx, 204 and 304;
- connections: kept alive (HTTP/1.1) unless the caller says close; an idle
  one is closed after 5 s, as uvicorn does; a caller that reads slowly holds
  the upstream back (`pause_writing`); a caller that leaves cancels its
  request (the relay stops the upstream request and records it).

`ProxyServer(app, sock).run()` serves on its own event loop until `stop()`
(from any thread; `handle_signals=True` also stops on SIGINT or SIGTERM):
it stops accepting, closes idle connections, gives open answers 5 seconds
(`_GRACE_S`), then cancels them (recorded as cut, the callers' answers
broken).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Callable

from obs.proxy._caller import CallerRequest, Clock, Feed, push, request_of
from obs.proxy._http1 import (
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    ChunkedBody,
    FramingError,
    Headers,
    RequestRefused,
    answer_head,
    header_value,
    request_head,
    says_close,
)
from obs.proxy._kept import Handback, KeptCaller
from obs.proxy._pump import CallerLeft, ThreadPump
from obs.proxy._pump import available as pump_available
from obs.proxy._upstream import EarlyRelay, UpstreamResponse
from obs.proxy._wire import error_body, response_headers
from obs.proxy.app import ProxyApp

__all__ = ["ProxyServer"]

_log = logging.getLogger("obs.proxy")

_PIPELINED_BYTES = 256 * 1024  # bytes of the next requests read ahead while one is answered
_GRACE_S = 5.0  # how long open answers may go on once the server stops
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Connection(asyncio.Protocol):
    """One caller's connection: reads its requests, and is the `Caller` each answer is written to."""

    def __init__(self, server: ProxyServer) -> None:
        self.gone = False
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head: tuple[str, str, bool, list[tuple[bytes, bytes]], int] | None = None  # awaiting its body
        self._chunks: ChunkedBody | None = None
        self._body = bytearray()
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._method = "GET"
        self._http11 = True
        self._keep = True
        self._answer_head = b""
        self._started = False
        self._ended = True
        self._chunked = False
        self._reading = True
        self._writable = True
        self._throttle: tuple[Callable[[], None], Callable[[], None]] | None = None
        self._kept: KeptCaller | None = None  # the relay thread that serves this connection meanwhile
        self._keep_next = False  # the last answer went out whole from a relay thread: keep it there

    # -- asyncio's side ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server.connections.add(self)
        if not self._keep_in_thread(self._transport):  # its first request is read by a relay thread too
            self._arm_idle()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._task is None:
            self._next()
        elif len(self._buffer) > _PIPELINED_BYTES and self._reading and self._transport is not None:
            self._reading = False
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        return False  # a caller that half-closes is gone, as uvicorn takes it

    def connection_lost(self, exc: Exception | None) -> None:
        noticed, self.gone = self.gone, True
        self._server.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        if self._task is not None and not self._ended and not noticed:
            self._task.cancel()

    def pause_writing(self) -> None:
        self._writable = False
        if self._throttle is not None:
            self._throttle[0]()

    def resume_writing(self) -> None:
        self._writable = True
        if self._throttle is not None:
            self._throttle[1]()

    # -- the Caller the relay writes to -----------------------------------------------------------

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Write the status line and headers; choose how the body is delimited."""
        bodyless = self._method == "HEAD" or status in (204, 304) or 100 <= status < 200
        sized = any(name.lower() == b"content-length" for name, _ in headers)
        self._chunked = self._http11 and not bodyless and not sized
        if not (bodyless or sized or self._http11) or self._server.stopping:
            self._keep = False  # an HTTP/1.0 caller learns the body's end from the connection's
        self._started = True
        # Written with the body's first bytes if they are already here.
        self._answer_head = answer_head(status, headers, self._chunked, self._keep)

    def _flush(self) -> None:
        head, self._answer_head = self._answer_head, b""
        if head and not self.gone and self._transport is not None:
            self._transport.write(head)

    def write(self, data: bytes) -> None:
        """Write a piece of the body now (framed as a chunk when the answer is chunked)."""
        if self.gone:
            return
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        if self._answer_head:
            data, self._answer_head = self._answer_head + data, b""
        self._transport.write(data)  # type: ignore[union-attr]

    def end(self) -> None:
        """The body is complete: its last chunk goes out now (a closing answer closes now)."""
        self._ended = True
        if self.gone or self._transport is None:
            return
        last = b"0\r\n\r\n" if self._chunked else b""
        if self._answer_head or last:
            head, self._answer_head = self._answer_head, b""
            self._transport.write(head + last)
        if not self._keep:
            self._transport.close()

    def abort(self) -> None:
        """Break the connection once what was written is out: the caller sees its answer cut."""
        self._keep = False
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def stream(self, response: UpstreamResponse, feed: Feed | None, now_ms: Clock) -> Awaitable[None]:
        """Relay the body: a stream in a thread of its own (`obs.proxy._pump`), anything else on the loop."""
        transport = self._transport
        if self._chunked:
            self._flush()  # a stream's head goes out at once, as the upstream's did
        if self._chunked and not self.gone and pump_available() and transport is not None \
                and transport.get_write_buffer_size() == 0:  # fmt: skip
            sock = transport.get_extra_info("socket")
            handoff = response.handoff() if sock is not None else None
            if handoff is not None:
                pump = ThreadPump(*handoff, sock.fileno(), feed=feed, now_ms=now_ms,
                                  timeout_s=response.timeout_s)
                return self._pumped(pump, response)
        self._throttle = (response.pause, response.resume)
        if not self._writable:
            response.pause()
        pushed = push(response, self.write, self.end, feed, now_ms)
        self._flush()  # no body byte was here yet: the head goes out alone
        return pushed

    def relay_early(self, traceparent: Callable[[], str | None], feed: Feed | None,
                    now_ms: Clock) -> EarlyRelay | None:  # fmt: skip
        """A relay of the whole answer by a thread from the moment the request is written (module
        docstring of `obs.proxy._pump`), or None where this connection cannot have one: an HTTP/1.0
        caller, HEAD, an answer still being written, the server stopping."""
        transport = self._transport
        if not self._http11 or self._method == "HEAD" or self.gone or self._server.stopping:
            return None
        if not pump_available() or transport is None or transport.get_write_buffer_size():
            return None
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        return functools.partial(self._relay_early, transport, sock.fileno(), traceparent, feed, now_ms)

    def _relay_early(
        self, transport: asyncio.Transport, caller_fd: int, traceparent: Callable[[], str | None],
        feed: Feed | None, now_ms: Clock, upstream_fd: int, buffer: bytearray, timeout_s: float | None,
        answered: Callable[[bytes, int, Headers], None],
    ) -> Awaitable[ThreadPump]:
        """`relay_early`'s relay, made ready now (the request is out, the span begun); awaited, its thread
        starts, and it returns the pump once it is over, raising how the answer failed if it did."""
        keep, parent = self._keep, traceparent()

        def head(version: bytes, status: int, headers: Headers) -> bytes:  # in the relay thread
            answered(version, status, headers)
            return answer_head(status, response_headers(headers, parent, chunked=True), True, keep)

        pump = ThreadPump(upstream_fd, buffer, None, caller_fd, feed=feed, now_ms=now_ms, timeout_s=timeout_s,
                          head=head)  # fmt: skip
        return self._relayed_early(transport, pump)

    async def _relayed_early(self, transport: asyncio.Transport, pump: ThreadPump) -> ThreadPump:
        try:
            await self._run(pump, transport)
        finally:
            if pump.head_sent:
                self._started = self._chunked = True
        self._keep_next = pump.done and not pump.buffer
        return pump

    async def _pumped(self, pump: ThreadPump, response: UpstreamResponse) -> None:
        transport = self._transport
        assert transport is not None
        try:
            await self._run(pump, transport)
        finally:
            response.handed_back(pump.done)

    async def _run(self, pump: ThreadPump, transport: asyncio.Transport) -> None:
        """Run `pump`, this connection not read meanwhile (the pump watches its socket); then, if it wrote
        the body's last chunk, the answer has ended."""
        transport.pause_reading()
        try:
            await pump.run()
        except CallerLeft:
            self.gone = True
            transport.close()
            raise
        finally:
            if self._reading and not transport.is_closing():
                transport.resume_reading()
        if not pump.done:
            return  # the pump left the answer to the loop
        self._ended = True
        if pump.buffer:
            # The upstream sent bytes past the body's end: the pump cut them off (they never reach the
            # caller) and its connection is not reused; this one is closed as well, as after any
            # answer from an upstream that broke HTTP's framing.
            self._keep = False
        if not self._keep:
            transport.close()

    # -- requests ---------------------------------------------------------------------------------

    def _next(self) -> None:
        """Parse the next request from what was read; start answering it once it is whole."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            request = self._parse()
        except RequestRefused as refused:
            self._refuse(refused.status, str(refused))
            return
        if request is None:
            if not self._buffer and self._head is None:
                self._arm_idle()
            return
        self._throttle = None
        self._started, self._ended, self._keep_next = False, False, False
        self._task = asyncio.get_running_loop().create_task(self._answer(request))

    def _parse(self) -> CallerRequest | None:
        buffer = self._buffer
        if self._head is None:
            while buffer[:2] == b"\r\n":
                del buffer[:2]  # empty lines before a request line are allowed (RFC 9112 section 2.2)
            end = buffer.find(b"\r\n\r\n")
            if end < 0 or end > MAX_HEAD_BYTES:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise RequestRefused(431, "the request's headers are larger than 64 KiB")
                return None
            self._head = request_head(bytes(buffer[:end]))
            del buffer[:end + 4]
            method, _, http11, headers, length = self._head
            self._method, self._http11 = method, http11
            self._keep = http11 and not says_close(headers)
            self._chunks = ChunkedBody() if length < 0 else None
            self._body = bytearray()
            expect = header_value(headers, b"expect")
            if expect is not None and expect.lower() == b"100-continue" and length != 0 and self._transport:
                self._transport.write(_CONTINUE)
        method, target, _, headers, length = self._head
        if self._chunks is not None:
            try:
                self._body += self._chunks.take(buffer)
            except FramingError as exc:
                raise RequestRefused(400, f"the request has {exc}") from None
            if len(self._body) > MAX_BODY_BYTES:
                raise RequestRefused(413, "the request body is larger than 100 MiB")
            if not self._chunks.done:
                return None
            body = bytes(self._body)
        else:
            if len(buffer) < length:
                return None
            body = bytes(buffer[:length])
            del buffer[:length]
        self._head = None
        return request_of(method, target, headers, body)

    async def _answer(self, request: CallerRequest, kept: Handback | None = None) -> None:
        try:
            await self._server.app.relay(request, self, kept)
        except asyncio.CancelledError:
            pass  # the caller left, or the server stops: the relay recorded it
        except Exception:
            _log.exception("obs.proxy: a request failed inside the proxy")
            if not self._started:
                self._refuse(500, "the proxy failed to relay the request (see its log)")
            else:
                self.abort()
        finally:
            self._task = None
            self._done()

    def _done(self) -> None:
        transport = self._transport
        if self.gone or transport is None or transport.is_closing():
            return
        if not self._ended or not self._keep or self._server.stopping:
            transport.close()
            return
        if self._keep_next and not self._buffer and self._head is None and self._keep_in_thread(transport):
            return
        if not self._reading:
            self._reading = True
            transport.resume_reading()
        self._next()

    def _keep_in_thread(self, transport: asyncio.Transport) -> bool:
        """Leave the connection to a relay thread until its next request that is not a streamed model
        call (`obs.proxy._kept`); False where it cannot be (an upstream over TLS, an answer still being
        written)."""
        host = self._server.app.kept_host() if pump_available() and not self._server.stopping else None
        sock = transport.get_extra_info("socket")
        if host is None or sock is None or transport.get_write_buffer_size():
            return False
        transport.pause_reading()  # before the thread reads: the loop must not
        kept = KeptCaller(host, sock.fileno(), self._server.idle_s)
        self._kept, self._ended, self._keep_next = kept, False, False
        self._task = asyncio.get_running_loop().create_task(self._kept_turn(transport, kept))
        return True

    async def _kept_turn(self, transport: asyncio.Transport, kept: KeptCaller) -> None:
        """Wait for the relay thread to hand the connection back, and take over from where it was."""
        try:
            back = await kept.run()
        except asyncio.CancelledError:  # the server stops now: the thread recorded the answer cut
            back = Handback(close=True)
        finally:
            self._kept = None
        if not back.close and self._reading:
            transport.resume_reading()  # the loop reads the connection again
        if back.request is not None:
            self._method, self._http11, self._keep, self._started = back.request.method, True, True, False
            self._throttle = None
            await self._answer(back.request, back)  # ends this task's turn as any answer's does
            return
        self._task, self._ended = None, True
        if back.close:
            transport.close()
            return
        self._buffer += back.read
        self._done()

    def _refuse(self, status: int, message: str) -> None:
        payload = error_body(status, f"obs.proxy: {message}", "invalid_request_error")
        self._keep = False
        self._method = "GET"
        self.start(status, [(b"content-type", b"application/json; charset=utf-8"),
                            (b"content-length", b"%d" % len(payload))])  # fmt: skip
        self.write(payload)
        self.end()

    def _arm_idle(self) -> None:
        if self._idle is None and self._transport is not None:
            self._idle = asyncio.get_running_loop().call_later(self._server.idle_s, self._transport.close)

    # -- the server's side ------------------------------------------------------------------------

    def shutdown(self) -> None:
        """The server stops: close now when idle, else after the answer under way."""
        self._keep = False
        if self._kept is not None:
            self._kept.close_when_idle()
        if self._task is None and self._transport is not None:
            self._transport.close()

    def cancel(self) -> asyncio.Task[None] | None:
        """The server stops now: cancel the answer under way (recorded as cut); its task, if any."""
        task = self._task
        if task is not None and not self._ended:
            task.cancel()
        return task


class ProxyServer:
    """Serves a ProxyApp on a bound socket with the proxy's own HTTP/1.1 protocol (module docstring)."""

    def __init__(self, app: ProxyApp, sock: socket.socket, *, idle_s: float = 5.0) -> None:
        """Nothing is served until `run()`; `sock` is bound (listening or not); `idle_s` closes idle ones."""
        self.app = app
        self.idle_s = idle_s
        self.started = False
        self.stopping = False
        self.connections: set[_Connection] = set()
        self._sock = sock
        self._stop_asked = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def run(self, *, handle_signals: bool = False) -> None:
        """Serve until `stop()` (or SIGINT/SIGTERM with `handle_signals`), then shut down; blocks."""
        asyncio.run(self._serve(handle_signals))

    def stop(self) -> None:
        """Ask the server to stop (from any thread); `run()` returns once it has shut down."""
        self._stop_asked.set()
        loop, event = self._loop, self._stop
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(event.set)

    async def _serve(self, handle_signals: bool) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._loop = loop
        if self._stop_asked.is_set():
            self._stop.set()
        signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
        for number in signals:
            loop.add_signal_handler(number, self._stop.set)
        try:
            await self.app.startup()
            server = await loop.create_server(lambda: _Connection(self), sock=self._sock, backlog=1024)
            self.started = True
            await self._stop.wait()
            await self._shutdown(server)
        finally:
            for number in signals:
                loop.remove_signal_handler(number)
            await self.app.aclose()

    async def _shutdown(self, server: asyncio.Server) -> None:
        self.stopping = True
        server.close()
        for connection in list(self.connections):
            connection.shutdown()
        open_answers = [c._task for c in self.connections if c._task is not None]
        if open_answers:
            await asyncio.wait(open_answers, timeout=_GRACE_S)
        cancelled = [task for c in list(self.connections) if (task := c.cancel()) is not None]
        if cancelled:
            await asyncio.wait(cancelled, timeout=_GRACE_S)
        for connection in list(self.connections):
            if connection._transport is not None:
                connection._transport.close()
