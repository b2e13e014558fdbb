"""The caller's side of a relayed request, whatever server the proxy runs in.

`ProxyApp.relay(request, caller)` relays one `CallerRequest` and answers
through a `Caller`: `start` (status and headers), then `stream` (the body,
from an upstream answer: each piece written on, then handed to `feed` with
its arrival time) or `write` and `end` (the proxy's own answers), or
`abort`. `push` is the body relay on the event loop: each piece goes on from
the upstream connection's callback, so `write` must not wait. Two callers
exist:

- the proxy's own HTTP/1.1 server (`obs.proxy._serve`) writes each piece
  straight to the caller's socket, a streamed answer from a thread of its
  own (`obs.proxy._pump`): the fast path `start_proxy` and `python -m
  obs.proxy` use;
- `AsgiCaller`, when `ProxyApp` is served by an ASGI server or mounted in
  an ASGI app: pieces wait in a queue that a task of its own hands to the
  ASGI `send`, and it holds the upstream back when the queue grows, as a
  slow reader of the socket does.

A caller that left sets `gone` before the relay is cancelled, so the relay
tells a caller leaving from the proxy stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

from obs.proxy._upstream import EarlyRelay, UpstreamResponse

__all__ = [
    "AsgiCaller",
    "Caller",
    "CallerRequest",
    "UpstreamBroke",
    "asgi_disconnected",
    "asgi_request",
    "push",
    "quiet_uvicorn",
    "read_asgi_body",
    "relay_asgi",
    "request_of",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
Feed = Callable[[bytes, float], None]
Clock = Callable[[], float]

_HIGH_WATER = 256 * 1024  # body bytes queued for `send` before the upstream is held back
_LOW_WATER = 64 * 1024


class UpstreamBroke(Exception):
    """Raised to the ASGI server to break the caller's connection as the upstream's broke."""


@dataclass(slots=True)
class CallerRequest:
    """One request as the caller sent it.

    `target` is the path and query below the proxy's own mount point, as
    sent (still percent-encoded); `path` the same path decoded, without the
    query (what decides whether the call is recorded); `headers` as sent.
    """

    method: str
    target: str
    path: str
    headers: Headers
    body: bytes


class Caller(Protocol):
    """Where the answer to one request goes (module docstring)."""

    gone: bool

    def start(self, status: int, headers: Headers) -> None:
        """Send the status and headers (a `content-length` among them means the body is sent as is)."""

    def stream(self, response: UpstreamResponse, feed: Feed | None, now_ms: Clock) -> Awaitable[None]:
        """Relay `response`'s body, then end it; each piece to `feed` (if any) with its arrival time.

        The awaitable raises httpx's errors when the upstream's answer breaks,
        and `CallerLeft` (`obs.proxy._pump`) when the caller is noticed gone
        while the body is relayed.
        """

    def relay_early(self, traceparent: Callable[[], str | None], feed: Feed | None,
                    now_ms: Clock) -> EarlyRelay | None:  # fmt: skip
        """A relay of the whole answer, head and body, from the moment the request is written
        (`UpstreamPool.send(early=...)`); None where this caller has none."""

    def write(self, data: bytes) -> None:
        """Send the next piece of the body (never empty); must not wait."""

    def end(self) -> None:
        """The body is complete."""

    def abort(self) -> None:
        """Break the connection (the upstream's broke, or the proxy stops): the caller sees an answer cut."""


def push(
    response: UpstreamResponse, write: Callable[[bytes], None], end: Callable[[], None], feed: Feed | None,
    now_ms: Clock,
) -> asyncio.Future[None]:
    """Relay `response`'s body on the event loop: each piece to `write` as it arrives, then to `feed`."""
    if feed is None:
        return response.stream_to(write, end)

    def deliver(piece: bytes) -> None:
        arrived = now_ms()
        write(piece)
        feed(piece, arrived)

    return response.stream_to(deliver, end)


class AsgiCaller:
    """A Caller whose writes become ASGI `send` messages, sent in order by `deliver()` (module docstring)."""

    def __init__(self, send: Send) -> None:
        """Nothing sent yet."""
        self.gone = False
        self.ended = False
        self._send = send
        self._queue: deque[Message] = deque()
        self._queued = 0
        self._broken = False
        self._wake: asyncio.Future[None] | None = None
        self._pause: Callable[[], None] | None = None
        self._resume: Callable[[], None] | None = None
        self._held = False

    def start(self, status: int, headers: Headers) -> None:
        """Queue `http.response.start`."""
        self._put({"type": "http.response.start", "status": status, "headers": headers})

    def stream(self, response: UpstreamResponse, feed: Feed | None, now_ms: Clock) -> Awaitable[None]:
        """Queue the body's pieces as they arrive (`push`), holding the upstream back past the high water."""
        self._pause, self._resume = response.pause, response.resume
        return push(response, self.write, self.end, feed, now_ms)

    def relay_early(self, traceparent: Callable[[], str | None], feed: Feed | None,
                    now_ms: Clock) -> EarlyRelay | None:  # fmt: skip
        """None: under an ASGI server the body goes through `send`, on the event loop."""
        return None

    def write(self, data: bytes) -> None:
        """Queue a body piece; hold the upstream back past the high water mark."""
        self._queued += len(data)
        self._put({"type": "http.response.body", "body": data, "more_body": True})
        if self._queued > _HIGH_WATER and not self._held and self._pause is not None:
            self._held = True
            self._pause()

    def end(self) -> None:
        """Queue the end of the body."""
        self.ended = True
        self._put({"type": "http.response.body", "body": b"", "more_body": False})

    def abort(self) -> None:
        """Once what is queued is sent, `deliver()` raises UpstreamBroke (the ASGI server breaks the line)."""
        self._broken = True
        self._put(None)

    def _put(self, message: Message | None) -> None:
        if message is not None:
            self._queue.append(message)
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def deliver(self) -> None:
        """Send what is queued, as it is queued, until the end (or UpstreamBroke after an `abort`)."""
        queue = self._queue
        while True:
            while queue:
                message = queue.popleft()
                if message["type"] == "http.response.body":
                    self._queued -= len(message["body"])
                await self._send(message)
                if not message.get("more_body", True):
                    return
            if self._held and self._queued < _LOW_WATER and self._resume is not None:
                self._held = False
                self._resume()
            if self._broken:
                raise UpstreamBroke("the upstream connection broke")
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake


def asgi_request(scope: Scope, body: bytes) -> CallerRequest:
    """The request an ASGI scope describes, below the prefix the app is mounted at (`root_path`), if any."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    path, root = scope["path"], scope.get("root_path", "")
    root_bytes = root.encode("utf-8")
    if root and raw.startswith(root_bytes):
        raw = raw[len(root_bytes):]  # mounted under a prefix: the upstream knows only what follows it
    if root and path.startswith(root):
        path = path[len(root):]
    query = scope.get("query_string") or b""
    target = raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    return CallerRequest(scope["method"], target, path, list(scope["headers"]), body)


def request_of(method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> CallerRequest:
    """The request a caller sent as `method target` (origin or absolute form) with these headers and body."""
    if target.startswith(("http://", "https://")):  # absolute form: the path is what follows the authority
        slash = target.find("/", target.index("//") + 2)
        target = target[slash:] if slash >= 0 else "/"
    return CallerRequest(method, target, unquote(target.partition("?")[0]), headers, body)


async def read_asgi_body(receive: Receive) -> bytes | None:
    """The whole request body; None if the caller disconnected first."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def asgi_disconnected(receive: Receive) -> None:
    """Returns when the caller disconnects (or, once the answer is complete, when the server says so)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def relay_asgi(relay_to: Callable[[CallerRequest, Caller], Awaitable[None]], scope: Scope,
                     receive: Receive, send: Send) -> None:  # fmt: skip
    """Serve one ASGI HTTP request with `relay_to` (`ProxyApp.relay`): the body read whole, the answer sent
    as it comes, the relay cancelled (the caller marked gone) when the caller disconnects."""
    body = await read_asgi_body(receive)
    if body is None:
        return  # the caller left before its request was complete: nothing was sent upstream
    caller = AsgiCaller(send)
    relay = asyncio.ensure_future(relay_to(asgi_request(scope, body), caller))
    out = asyncio.ensure_future(caller.deliver())
    watch = asyncio.ensure_future(asgi_disconnected(receive))
    try:
        await asyncio.wait((out, watch), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server is shutting down with this call still open
        for task in (relay, out, watch):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
        raise
    if out.done() or caller.ended:
        watch.cancel()
        await relay
        await out
        return
    caller.gone = True
    relay.cancel()
    out.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await relay


class _QuietBreaks(logging.Filter):
    """Keeps uvicorn from logging a traceback for a connection the proxy breaks on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, UpstreamBroke)


_QUIET = _QuietBreaks()


def quiet_uvicorn() -> None:
    """Keep uvicorn from logging a traceback for each connection the proxy breaks on purpose."""
    logger = logging.getLogger("uvicorn.error")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)
