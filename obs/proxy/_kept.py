"""A caller's connection served by a relay thread while it waits for its requests.

On a machine whose cores all run the model, every step of Python between a
request's arrival and its first token delays that token: the event loop's
turn at the request, its task, handing the answer's relay to a thread, that
thread's wake-up. A relay that does only the necessary (read the request,
write it upstream, wait for the head and the first chunk, pass them on, all
on one thread) adds half as much. So a new connection, and a connection
after a streamed model call that a thread relayed to its end, is left by
the proxy's server (`obs.proxy._serve`) to a `KeptCaller`, run by a relay
thread (`run()`); the event loop reads nothing from it meanwhile. The
thread:

- waits for the caller's next request (at most the server's idle time: the
  connection is then closed, as an idle one is) and reads it whole;
- relays it itself if it is a streamed model call (HTTP/1.1, kept
  alive, a `Content-Length` body of at most `MAX_KEPT_BODY`, nothing
  pipelined behind it, no `Expect`): takes the spare upstream connection
  (`Spares`) or connects, writes the request, begins the call's span
  (`RelayedCall.sent`), relays the chunked answer (`ThreadPump.relay_here`)
  and hands the call to the event loop to be recorded
  (`ProxyApp.record_kept`), as the loop's relay would have; then makes a
  spare upstream connection ready and waits again.

Anything else ends the thread's turn: the loop takes over from where the
thread was, with nothing lost and nothing done twice (`Handback`): the bytes
of a request that is not such a call (the loop parses and answers it as any
other); a request written upstream whose answer is not chunked, or did not
come (the loop reads the answer from the bytes the thread read, or answers
502 or 504); a request that no connection could be made for (502). A
pooled spare found closed while the request was on its way is replaced and
the request sent again, once, as the pool does. A caller that leaves, an
upstream that breaks midway or a server that stops mid-answer are recorded
as the loop's relay records them, and the connection is closed.

`close_when_idle()` (the server stops) ends a thread that waits for a
request at once, and one that relays an answer after it; `cancel()` stops
it where it is (the answer cut, recorded so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import httpx

from obs.llm.exchange import route_of
from obs.proxy._call import STREAMED as _STREAMED
from obs.proxy._caller import request_of
from obs.proxy._http1 import (
    MAX_HEAD_BYTES,
    Headers,
    RequestRefused,
    answer_head,
    header_value,
    request_head,
    says_close,
)
from obs.proxy._pump import CallerLeft, Stopped, ThreadPump, in_relay_thread
from obs.proxy._spares import Spares
from obs.proxy._wire import response_headers

if TYPE_CHECKING:
    from obs.proxy._call import RelayedCall
    from obs.proxy._caller import CallerRequest

__all__ = ["MAX_KEPT_BODY", "Handback", "KeptCaller", "KeptHost", "Outcome"]

# How a call the thread relayed ended (`ProxyApp.record_kept`): its answer passed whole, the caller left,
# the upstream broke midway, the proxy stopped it, or something failed inside the proxy.
Outcome = Literal["ok", "left", "broken", "stopped", "failed"]

MAX_KEPT_BODY = 1024 * 1024  # a longer request body is read by the event loop
_KNOWN_HEADS = 256  # request heads (and caller heads) remembered, at most
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,15})[ \t]*\r\n", re.IGNORECASE)
_NO_BODY = b"content-length: 0\r\n\r\n"
_SLOT = "00-traceparent-slot"  # where a caller head made once takes each call's traceparent
_CALLER_HEADS: dict[int, tuple[Headers, int, bytes, bytes]] = {}
_READ_BYTES = 256 * 1024
_POLLIN = getattr(select, "POLLIN", 1)
_POLLRDHUP = getattr(select, "POLLRDHUP", 0)
_STALE = (httpx.RemoteProtocolError, httpx.ReadError)
_log = logging.getLogger("obs.proxy")


@dataclass(slots=True)
class Handback:
    """Where the thread left the connection to the event loop (module docstring).

    `close`: close it (idle, the caller gone, an answer broken or cut);
    else `request` with its `call` is a request the loop is to answer:
    written on `upstream` (the answer to be read from there, `answer` the
    bytes of it read already), or never answered (`failure`, nothing
    written to the caller); else `read` holds the caller's bytes that the
    loop is to read as if they had just arrived.
    """

    close: bool = False
    read: bytes = b""
    request: CallerRequest | None = None
    call: RelayedCall | None = None
    upstream: socket.socket | None = None
    answer: bytes = b""
    failure: httpx.HTTPError | None = None
    connected: bool = False  # the thread waited for a new upstream connection for this request


@dataclass(slots=True)
class _Known:
    """What a request head seen before says (`KeptCaller._parse`): the request's method, target and
    headers (the Content-Length value at `length_at` is the first such request's); `prefix`, the request as
    written upstream up to its Content-Length line, when the thread relays it (None: the loop does)."""

    method: str
    target: str
    headers: Headers
    length_at: int
    prefix: bytes | None


@dataclass(frozen=True, slots=True)
class _Incoming:
    """A whole request the thread relays: its head's `_Known`, its body's length and the body."""

    known: _Known
    length: int
    body: bytes


@dataclass(slots=True)
class _Head:
    """An answer's status and headers, for recording (`obs.proxy._call.AnswerHead`)."""

    status: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class KeptHost:
    """What a kept connection asks of the app relaying its calls (`ProxyApp`)."""

    loop: asyncio.AbstractEventLoop
    call: Callable[[CallerRequest], RelayedCall]  # the recording of a streamed model call
    wire: Callable[[CallerRequest], bytes]  # the request as written upstream
    record: Callable[[RelayedCall, Outcome, BaseException | None, bool], None]  # on the loop: record a call
    retried: Callable[[], None]  # on the loop: count a request sent again
    spares: Spares
    timeout_s: float | None
    now_ms: Callable[[], float]
    heads: dict[bytes, _Known] = field(default_factory=dict)  # request heads seen (`KeptCaller._parse`)


class KeptCaller:
    """One caller connection's socket, served by a relay thread between calls (module docstring)."""

    def __init__(self, host: KeptHost, caller_fd: int, idle_s: float) -> None:
        """Nothing runs until `run()`; `caller_fd` is the connection's socket (its transport must neither
        read nor write meanwhile)."""
        self._host = host
        self._idle_s = idle_s
        self._caller = socket.socket(fileno=os.dup(caller_fd))
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._lock = threading.Lock()
        self._waiting = False  # the thread waits for a request (guarded by the lock)
        self._closing = False

    async def run(self) -> Handback:
        """Serve the connection in a relay thread until it hands it back (module docstring)."""
        return await in_relay_thread(self._main, self.cancel, self._close)

    def close_when_idle(self) -> None:
        """End the thread's turn once no answer is under way (at once if it waits for a request)."""
        with self._lock:
            self._closing = True
            if self._waiting:
                self._wake()

    def cancel(self) -> None:
        """Stop the thread where it is: an answer under way is cut (recorded so), the connection closed."""
        with self._lock:
            self._closing = True
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _main(self) -> Handback:
        try:
            return self._serve()
        except Exception:  # a bug: the connection is closed rather than left in doubt
            _log.exception("obs.proxy: a kept connection's thread failed")
            return Handback(close=True)
        finally:
            self._close()

    def _close(self) -> None:
        self._caller.close()  # the duplicate only: the connection stays open
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _serve(self) -> Handback:
        spares = self._host.spares
        while True:
            got = self._request()
            if isinstance(got, Handback):
                return got
            back = self._relay(got)
            if back is not None:
                return back
            spares.make_ready(answered=True)  # after the answer, while the model rests

    # -- reading the next request -----------------------------------------------------------------

    def _request(self) -> Handback | _Incoming:
        """The next request, if it is one this thread relays; else where the loop takes over."""
        buffer = bytearray()
        poller = select.poll()
        poller.register(self._caller, _POLLIN | _POLLRDHUP)
        poller.register(self._wake_r, _POLLIN)
        deadline = time.monotonic() + self._idle_s
        while True:
            with self._lock:
                if self._closing:
                    return Handback(close=not buffer, read=bytes(buffer))
                self._waiting = True
            now = time.monotonic()
            renew = self._host.spares.renew_at()
            until = deadline if renew is None or buffer else min(deadline, renew)
            events = poller.poll(max(0, int((until - now) * 1000) + 1))
            with self._lock:
                self._waiting = False
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 64)
                if self._closing:
                    return Handback(close=not buffer, read=bytes(buffer))
            if not events:
                if time.monotonic() >= deadline:
                    return Handback(close=not buffer, read=bytes(buffer))  # idle (or slow: the loop's)
                self._host.spares.make_ready(answered=False)  # the spare got old: renewed, while kept
                continue
            if not any(fd == self._caller.fileno() for fd, _ in events):
                continue
            try:
                data = self._caller.recv(_READ_BYTES)
            except BlockingIOError:
                continue
            except OSError:
                return Handback(close=True)
            if not data:
                return Handback(close=True, read=bytes(buffer))  # the caller closed its connection
            buffer += data
            got = self._parse(buffer)
            if got is not None:
                return got

    def _parse(self, buffer: bytearray) -> Handback | _Incoming | None:
        """A whole request this thread relays, a Handback for one it does not, None while incomplete.

        Only what decides that is looked at before the request goes out: a
        head seen before (the same bytes but for its Content-Length value:
        callers send the same headers call after call) is known already
        (`_learn`), and the body is only searched for `"stream": true`.
        """
        start = 0
        while buffer[start:start + 2] == b"\r\n":
            start += 2
        end = buffer.find(b"\r\n\r\n", start)
        if end < 0:
            return None if len(buffer) <= MAX_HEAD_BYTES else Handback(read=bytes(buffer))
        head = bytes(buffer[start:end + 2])
        length_line = _LENGTH.search(head)
        if length_line is None:  # no body, or a chunked one: the loop's
            return Handback(read=bytes(buffer))
        length = int(length_line[1])
        if length > MAX_KEPT_BODY:
            return Handback(read=bytes(buffer))
        heads = self._host.heads
        known = heads.get(key := head[:length_line.start(1)] + head[length_line.end(1):])
        if known is None:
            known = self._learn(head[:-2])
            if len(heads) >= _KNOWN_HEADS:
                heads.clear()
            heads[key] = known
        if known.prefix is None:
            return Handback(read=bytes(buffer))
        total = end + 4 + length
        if len(buffer) < total:
            return None
        body = bytes(buffer[end + 4:total])
        if len(buffer) > total or _STREAMED.search(body) is None:  # pipelined, or not streamed
            return Handback(read=bytes(buffer))
        return _Incoming(known, length, body)

    def _learn(self, head: bytes) -> _Known:
        """What a request head says (a `_Known` without `prefix` if this thread does not relay it)."""
        try:
            method, target, http11, headers, length = request_head(head)
        except RequestRefused:
            return _Known("", "", [], -1, None)  # the loop refuses it, as always
        request = request_of(method, target, headers, b"")
        at = next((i for i, (name, _) in enumerate(headers) if name.lower() == b"content-length"), -1)
        known = _Known(request.method, request.target, headers, at, None)
        if not http11 or length < 0 or at < 0 or says_close(headers) or header_value(headers, b"expect") \
                or route_of(method, request.path) is None:  # fmt: skip
            return known
        wire = self._host.wire(request)
        if wire.endswith(_NO_BODY):
            known.prefix = wire[:-len(_NO_BODY)]
        return known

    # -- relaying one call ------------------------------------------------------------------------

    def _relay(self, incoming: _Incoming) -> Handback | None:
        """Relay one streamed model call; None once its answer went out whole (the connection kept).

        The request goes out first; its recording (the call, its span) is
        made ready after, while llama-server reads it.
        """
        host, known = self._host, incoming.known
        wire = b"%bcontent-length: %d\r\n\r\n%b" % (known.prefix, incoming.length, incoming.body)
        call: RelayedCall | None = None
        connected = False
        for attempt in range(2):
            try:
                up, pooled = host.spares.take()
            except httpx.HTTPError as exc:
                call = call or self._call(incoming)
                return Handback(request=call.request, call=call, failure=exc, connected=True)
            connected = connected or not pooled
            try:
                up.sendall(wire)
            except OSError as exc:
                up.close()
                if pooled and not attempt:
                    host.loop.call_soon_threadsafe(host.retried)
                    continue
                call = call or self._call(incoming)
                return Handback(request=call.request, call=call, connected=connected,
                                failure=httpx.ReadError(f"the upstream connection broke ({exc}) before "
                                                        "answering"))  # fmt: skip
            if call is None:
                sent_ms = host.now_ms()
                call = self._call(incoming)
                call.sent(sent_ms)
            try:
                back = self._answer(up, call, pooled and not attempt, connected)
            except BaseException:  # a failure inside the proxy: the call is recorded as the loop's would be
                up.close()
                host.loop.call_soon_threadsafe(host.record, call, "failed", None, connected)
                raise
            if back is None or back.close or back.request is not None:
                return back
            host.loop.call_soon_threadsafe(host.retried)  # a pooled spare found closed: once more
        raise AssertionError("unreachable")  # pragma: no cover

    def _call(self, incoming: _Incoming) -> RelayedCall:
        known = incoming.known
        headers = list(known.headers)
        headers[known.length_at] = (headers[known.length_at][0], b"%d" % incoming.length)
        return self._host.call(request_of(known.method, known.target, headers, incoming.body))

    def _answer(self, up: socket.socket, call: RelayedCall, retry: bool, connected: bool) -> Handback | None:
        """Relay the answer on `up`: None once it went out whole; Handback(close=False, request=None) to
        send the request again on a new connection."""
        host, buffer = self._host, bytearray()

        traceparent = call.traceparent()

        def head(version: bytes, status: int, headers: Headers) -> bytes:  # the caller's, in this thread
            call.answered(_Head(status, headers))
            return _caller_head(status, headers, traceparent)

        pump = ThreadPump(up.fileno(), buffer, None, self._caller.fileno(), feed=call.keep if call.recording
                          else None, now_ms=host.now_ms, timeout_s=host.timeout_s, head=head,
                          wake_fd=self._wake_r)  # fmt: skip
        try:
            pump.relay_here()
        except httpx.HTTPError as exc:
            up.close()
            if not pump.head_sent:
                if retry and not buffer and isinstance(exc, _STALE):
                    return Handback()
                return Handback(call=call, request=call.request, failure=exc, connected=connected)
            host.loop.call_soon_threadsafe(host.record, call, "broken", exc, connected)
            return Handback(close=True)
        except CallerLeft:
            up.close()  # which makes llama-server stop generating
            host.loop.call_soon_threadsafe(host.record, call, "left", None, connected)
            return Handback(close=True)
        except Stopped:
            up.close()
            host.loop.call_soon_threadsafe(host.record, call, "stopped", None, connected)
            return Handback(close=True)
        if not pump.head_sent:  # not a chunked answer: the loop reads it from here
            up.setblocking(False)
            return Handback(call=call, request=call.request, upstream=up, answer=bytes(buffer),
                            connected=connected)  # fmt: skip
        up.close()  # llama-server closes its connection after a stream anyway
        host.loop.call_soon_threadsafe(host.record, call, "ok", None, connected)
        with self._lock:
            closing = self._closing
        return Handback(close=True) if pump.buffer or closing else None


def _caller_head(status: int, headers: Headers, traceparent: str | None) -> bytes:
    """The caller's head for a chunked answer with `status` and `headers` (a list the pump keeps for a
    head it saw before, `obs.proxy._pump`), naming the call's span: made once per such head, then only
    the `traceparent` put in."""
    if traceparent is None:
        return answer_head(status, response_headers(headers, None, chunked=True), True, True)
    made = _CALLER_HEADS.get(id(headers))
    if made is None or made[0] is not headers or made[1] != status:
        before, _, after = answer_head(status, response_headers(headers, _SLOT, chunked=True), True,
                                       True).partition(_SLOT.encode("ascii"))  # fmt: skip
        if len(_CALLER_HEADS) >= _KNOWN_HEADS:
            _CALLER_HEADS.clear()
        _CALLER_HEADS[id(headers)] = made = (headers, status, before, after)
    return made[2] + traceparent.encode("ascii") + made[3]
