"""A streamed answer relayed by a thread of its own: poll, read, unframe, write, keep; no loop turn per piece.

Each piece of a stream wakes the relay once. On the event loop a wake-up
is the loop's own turn (the selector, the ready queue, the transport's
callbacks) before any of the proxy's code runs: most of the CPU a piece
costs, and on a machine whose cores all run the model every microsecond of
it is taken from generation. `ThreadPump` moves the body of one streamed
answer (chunked or close-delimited, from a plain-HTTP upstream, to an
HTTP/1.1 caller) off the loop: while it runs, neither connection's
transport reads, and a thread waits on both sockets with `poll`, reads what
the upstream sent, writes each piece on to the caller (framed as a chunk)
and only then hands it to `feed` with its arrival time, as the relay on the
loop does. When the caller's socket is full it stops reading the upstream
until the caller catches up.

The threads are kept between streams (`_Workers`): starting a thread costs
the event loop about 0.2 ms of CPU and the new thread as much again, while
the model computes the first token; handing a stream to a thread that waits
for one costs a queue's wake-up.

A pump may also read the answer's head (`head=`): run as soon as the
request is written, it waits for the head itself, so that while the model
computes the first token nothing but this thread, waiting, is left in the
proxy. (On a machine whose cores all run the model, the event loop's turn
at the head, and preparing and handing over the body's relay, took that
CPU from the model.) The thread parses the head and asks `head(version,
status, headers)` for the caller's when the answer is chunked, and goes on
from there. Anything else (an answer with another framing, an
informational one, bytes that are not HTTP) ends the pump with nothing
written to the caller (`head_sent` false): the bytes read stay in
`buffer`, for the event loop to read the answer as before.

`await pump.run()` returns once the body's last chunk went out; it raises
httpx's exception classes when the upstream connection breaks or stays
silent past `timeout_s` (ReadTimeout), `CallerLeft` when the caller closes
its connection, and CancelledError (after stopping the thread) when the
relay is cancelled. The thread never touches the event loop's objects: it
reports through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import select
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

import httpx

from obs.proxy._http1 import (
    MAX_HEAD_BYTES,
    ChunkedBody,
    FramingError,
    Headers,
    answer_framing,
    parse_status_head,
    whole_chunk,
)

__all__ = ["CallerLeft", "HeadFor", "Stopped", "ThreadPump", "available", "in_relay_thread"]

# Given a chunked answer's version, status and headers (in the relay thread), the caller's head.
HeadFor = Callable[[bytes, int, Headers], bytes]
_T = TypeVar("_T")

_READ_BYTES = 256 * 1024
_PENDING_BYTES = 1024 * 1024  # chunked bytes passed on before their framing is read anyway
_POLLIN = getattr(select, "POLLIN", 1)
_POLLOUT = getattr(select, "POLLOUT", 4)
_POLLRDHUP = getattr(select, "POLLRDHUP", 0)  # Linux: the caller closed its side
_GONE = getattr(select, "POLLHUP", 16) | getattr(select, "POLLERR", 8) | _POLLRDHUP
_END = b"0\r\n\r\n"
_log = logging.getLogger("obs.proxy")
_KEPT_THREADS = 8  # relay threads kept waiting between streams, at most
_KEPT_S = 60.0  # how long a kept relay thread waits for a stream before it ends
_KEPT_HEADS = 64  # answer heads remembered, parsed, at most
_HEADS: dict[bytes, tuple[bytes, int, Headers] | None] = {}
_UNSEEN = object()


def available() -> bool:
    """True where `select.poll` exists (Linux, macOS): elsewhere answers stay on the event loop."""
    return hasattr(select, "poll")


class CallerLeft(Exception):
    """The caller closed its connection before the whole answer was written to it."""


class Stopped(Exception):
    """The relay was cancelled: the thread stops where it is."""


class ThreadPump:
    """One answer's body relayed upstream to caller by a thread (module docstring).

    `upstream_fd` and `caller_fd` are the two connections' sockets (their
    transports must not read or write meanwhile); `buffer` holds the body's
    bytes already read and is left holding any bytes read past its end;
    `chunks` unframes a chunked body (None: the body ends when the upstream
    closes the connection); `feed(piece, arrived_ms)` keeps each piece for
    recording (None: nothing is kept) with `now_ms`'s time of its arrival.

    A chunked body goes to the caller as it came, framing and all (the
    caller's answer is chunked too): when what arrived is one whole chunk,
    the thread only checks its size line, writes it and notes the time; the
    pieces are handed to `feed` after the next bytes that are anything else
    (the last chunk among them) went on, past `_PENDING_BYTES`, and when the
    relay ends any other way.

    With `head` (module docstring), the pump first reads the answer's head
    (`chunks` is then not used); `head_sent` tells whether the caller's
    head went out (if not, the pump left the answer to the loop).
    """

    def __init__(
        self, upstream_fd: int, buffer: bytearray, chunks: ChunkedBody | None, caller_fd: int, *,
        feed: Callable[[bytes, float], None] | None, now_ms: Callable[[], float], timeout_s: float | None,
        head: HeadFor | None = None, wake_fd: int | None = None,
    ) -> None:
        """Nothing runs until `run()` (or `relay_here()`); `wake_fd`, the read end of a pipe a byte in
        which stops the relay, is the pump's own unless given (`relay_here` only)."""
        self.buffer = buffer
        self.done = False
        self.head_sent = False
        self._head = head
        self._chunks = chunks
        self._feed = feed
        self._now_ms = now_ms
        self._timeout_ms = None if timeout_s is None else max(1, int(timeout_s * 1000))
        self._timeout_s = timeout_s
        self._pending: list[tuple[float, bytes, int]] = []  # whole chunks passed on (data from [2]), not fed
        self._pending_bytes = 0
        self._note = self._pending.append  # the hot path's one step of keeping (the list is only cleared)
        self._up = socket.socket(fileno=os.dup(upstream_fd))
        self._caller = socket.socket(fileno=os.dup(caller_fd))
        self._own_pipe = wake_fd is None
        self._wake_r, self._wake_w = os.pipe() if wake_fd is None else (wake_fd, -1)

    async def run(self) -> None:
        """Relay the body in a thread; return once it is complete (module docstring for the failures)."""
        await in_relay_thread(self._relay_unless_stopped, self._stop, self._close)

    def relay_here(self) -> None:
        """Relay in the calling thread, which waits: return once the body's last chunk went out, raise
        as `run()` does (`Stopped` for a byte in the pipe). The pump is spent either way."""
        try:
            self._relay()
        except BaseException:
            self._keep_pending()  # what came before the failure is recorded with it
            raise
        finally:
            self._close()

    def _relay_unless_stopped(self) -> None:
        with contextlib.suppress(Stopped):  # cancelled: `run` raises CancelledError
            self.relay_here()

    def _stop(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _close(self) -> None:
        for sock in (self._up, self._caller):
            sock.close()  # the duplicates only: the connections stay open
        if self._own_pipe:
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _relay(self) -> None:
        up, caller = self._up, self._caller
        poller = select.poll()
        poller.register(self._wake_r, _POLLIN)
        poller.register(up, _POLLIN)
        poller.register(caller, _POLLIN | _POLLRDHUP)
        up_fd, caller_fd, now_ms, arrived = up.fileno(), caller.fileno(), self._now_ms, self._arrived
        if self._head is not None and not self._read_head(poller, up_fd, caller_fd):
            return
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer.clear()
            if arrived(data, now_ms()):
                return
        while True:
            data = self._upstream_bytes(poller, up_fd, caller_fd, "in the middle of its answer")
            if data is None:
                continue
            if not data:
                if self._chunks is None:
                    self.done = True
                    self._send(_END)
                    return
                raise httpx.RemoteProtocolError("the upstream closed the connection in the middle of its "
                                                "answer")  # fmt: skip
            if arrived(data, now_ms()):
                return

    def _upstream_bytes(self, poller: select.poll, up_fd: int, caller_fd: int, where: str) -> bytes | None:
        """Wait for the upstream's next bytes, watching the caller's socket and the stop pipe too: what
        arrived, b"" at the upstream's end, None when only the caller's socket stirred (`where` names the
        moment in errors). The sockets are polled level-triggered: what is not handled now comes again."""
        events = poller.poll(self._timeout_ms)
        if not events:
            raise httpx.ReadTimeout(f"no bytes from the upstream within {self._timeout_s:g} s")
        for fd, event in events:
            if fd == up_fd:
                try:
                    return self._up.recv(_READ_BYTES)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise httpx.ReadError(f"the upstream connection broke ({exc}) {where}") from None
            elif fd == caller_fd:
                if event & _GONE or not _peek(self._caller):
                    raise CallerLeft("the caller closed its connection")
                poller.modify(self._caller, _POLLRDHUP)  # its next request waits for this answer to end
            else:
                raise Stopped
        return None

    def _read_head(self, poller: select.poll, up_fd: int, caller_fd: int) -> bool:
        """Read the answer's head and send the caller's; False (nothing sent) when the loop is to do it.

        Raises what the loop's reading of a head raises (httpx's classes), so
        a pooled connection found closed is retried as before.
        """
        buffer = self.buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise httpx.RemoteProtocolError("the upstream's answer headers are too large")
            data = self._upstream_bytes(poller, up_fd, caller_fd, "before answering")
            if data is not None:
                if not data:
                    raise httpx.RemoteProtocolError("the upstream closed the connection before answering")
                buffer += data
        parsed = _seen_head(bytes(buffer[:end]))
        if parsed is None:
            return False  # informational, bodiless, sized, close-delimited or malformed: the loop's
        head = self._head(*parsed)  # type: ignore[misc]
        del buffer[:end + 4]
        self._chunks = ChunkedBody()
        self.head_sent = True
        self._send(head)
        return True

    def _arrived(self, data: bytes, arrived: float) -> bool:
        """Pass bytes from the upstream on to the caller, and keep them; True once the body is complete."""
        chunks, buffer = self._chunks, self.buffer
        if chunks is None:  # close-delimited: each piece becomes a chunk of the caller's answer
            self._send(b"%x\r\n%b\r\n" % (len(data), data))
            if self._feed is not None:
                self._feed(data, arrived)
            return False
        if not buffer:
            start = whole_chunk(data)
            if start is not None:
                # The hot path: one whole chunk, not the last, goes on as it came and is only noted. Its
                # write is tried here (no call of `_send` unless the caller's socket is full or broken).
                try:
                    sent = self._caller.send(data)
                except OSError:
                    sent = 0  # `_send` tries again: it waits for room, or raises CallerLeft
                if sent != len(data):
                    self._send(data[sent:])
                self._note((arrived, data, start))
                self._pending_bytes = pending = self._pending_bytes + len(data)
                if pending > _PENDING_BYTES:
                    self._keep_pending()
                return False
        # Anything else (a chunk split, several at once, the last one) is unframed before it goes on, so
        # that bytes past the body's end (left in `buffer`) never reach the caller.
        buffer += data
        try:
            piece = chunks.take(buffer)
        except FramingError as exc:
            raise httpx.RemoteProtocolError(f"the upstream's answer has {exc}") from None
        self.done = chunks.done
        self._send(data[:len(data) - len(buffer)] if self.done else data)
        self._keep_pending()
        if piece and self._feed is not None:
            self._feed(piece, arrived)
        return self.done

    def _keep_pending(self) -> None:
        """Hand the whole chunks passed on so far to `feed`, framing off, each with its arrival time."""
        pending, feed = self._pending, self._feed
        try:
            if feed is not None:
                for arrived, data, start in pending:
                    feed(data[start:-2], arrived)
        finally:
            pending.clear()
            self._pending_bytes = 0

    def _send(self, data: bytes) -> None:
        """Write all of `data` to the caller, waiting while its socket is full (the upstream waits too)."""
        caller = self._caller
        try:
            sent = caller.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            raise CallerLeft("the caller's connection broke") from None
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        waiting = select.poll()
        waiting.register(caller, _POLLOUT)
        waiting.register(self._wake_r, _POLLIN)
        while view:
            for fd, event in waiting.poll():
                if fd == self._wake_r:
                    raise Stopped
                if event & _GONE & ~_POLLRDHUP:
                    raise CallerLeft("the caller's connection broke")
            try:
                view = view[caller.send(view):]
            except BlockingIOError:
                continue
            except OSError:
                raise CallerLeft("the caller's connection broke") from None


class _Workers:
    """Threads that relay streams, one at a time each, kept waiting between streams.

    `run(job, *args)` hands the job to a waiting thread, else to a new one.
    A thread that finished a job waits for the next one unless `keep` are
    waiting already; one that waited `idle_s` for nothing ends.
    """

    def __init__(self, keep: int, idle_s: float) -> None:
        self._keep = keep
        self._idle_s = idle_s
        self._lock = threading.Lock()
        self._waiting: list[queue.SimpleQueue[tuple[Callable[..., None], tuple[object, ...]]]] = []

    def run(self, job: Callable[..., None], *args: object) -> None:
        """Run `job(*args)` in a relay thread; raises only what starting a thread raises."""
        with self._lock:
            inbox = self._waiting.pop() if self._waiting else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name="obs-proxy-stream", daemon=True).start()
        inbox.put((job, args))

    def _serve(self, inbox: queue.SimpleQueue[tuple[Callable[..., None], tuple[object, ...]]]) -> None:
        while True:
            try:
                job, args = inbox.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    if inbox in self._waiting:  # else a job is on its way: take it
                        self._waiting.remove(inbox)
                        return
                continue
            try:
                job(*args)  # in_relay_thread's: reports its outcome to the loop itself
            except Exception:
                _log.exception("obs.proxy: a stream's relay thread failed")
            with self._lock:
                if len(self._waiting) >= self._keep:
                    return
                self._waiting.append(inbox)


_WORKERS = _Workers(_KEPT_THREADS, _KEPT_S)


def _seen_head(head: bytes) -> tuple[bytes, int, Headers] | None:
    """(version, status, headers) of a chunked answer's head (ending before its empty line), None for any
    other. An upstream sends the same head answer after answer, so each is parsed once: the headers list
    is then the same object every time (nobody changes it)."""
    parsed = _HEADS.get(head, _UNSEEN)
    if parsed is _UNSEEN:
        try:
            version, status, headers = parse_status_head(head)
            chunked = answer_framing(b"GET", status, headers)[0] == "chunked"  # (never HEAD here)
        except FramingError:
            chunked = False  # the loop says what is wrong, as always
        parsed = (version, status, headers) if chunked else None
        if len(_HEADS) >= _KEPT_HEADS:
            _HEADS.clear()
        _HEADS[head] = parsed
    return parsed  # type: ignore[return-value]


async def in_relay_thread(job: Callable[[], _T], stop: Callable[[], None], abandon: Callable[[], None]) -> _T:
    """`job()` run in one of the relay threads kept between streams (a new one if none waits): what it
    returns, or what it raises, once it is over. Cancelled meanwhile, `stop()` asks the job to end at
    once, and the thread is waited for before CancelledError goes on (nothing the job holds may be used
    before that). `abandon()` frees what the job would have if no thread could be started."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[_T] = loop.create_future()

    def main() -> None:  # in the relay thread: it never touches the loop's objects but through the loop
        result: _T | None = None
        error: BaseException | None = None
        try:
            result = job()
        except BaseException as exc:  # reported to the loop, where it is raised
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(_settle, finished, result, error)

    try:
        _WORKERS.run(main)
    except BaseException:
        abandon()
        raise
    try:
        return await asyncio.shield(finished)
    except asyncio.CancelledError:
        stop()
        with contextlib.suppress(Exception):
            await finished  # the thread stops at once
        raise


def _peek(sock: socket.socket) -> bool:
    """True if the socket has bytes to read (a pipelined request), False at its end."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return True
    except OSError:
        return False


def _settle(finished: asyncio.Future[_T], result: _T, error: BaseException | None) -> None:
    if finished.done():
        return
    if error is None:
        finished.set_result(result)
    else:
        finished.set_exception(error)
