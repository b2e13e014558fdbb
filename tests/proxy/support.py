"""Helpers for the proxy tests: a proxy recording into a real SQLite file and reading it back, the
request bodies, raw sockets to a server on loopback, an upstream whose stream never ends, and an upstream
waiting for its caller to leave."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h11
import httpx

from obs.proxy import ProxyHandle, start_proxy
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.spans import Span
from obs.trace.traces import Trace
from tests.llm.servers import MODEL, Behaviour, Handler, LoopbackServer, _Server, good, stream_lines

API_KEY = "sk-proxy-test-4f1c9a7e2b6d8035"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
# The request bodies of the relay tests, as JSON: a chat answered whole, and the same chat streamed.
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
STREAM = {**CHAT, "stream": True}


def event_stream(lines: Sequence[str]) -> bytes:
    """The bytes an upstream streams for the server-sent event `lines` (each followed by a blank line)."""
    return "".join(line + "\n\n" for line in lines).encode()


def connect(base: str) -> socket.socket:
    """A TCP connection to the server at `base` ("http://host:port"): 10 s timeout, Nagle off."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Every byte `sock` receives until the other side closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def endless_stream(stopped: threading.Event) -> Behaviour:
    """An upstream whose chat stream never ends (a role chunk, then deltas every 20 ms) until its caller
    closes the connection, which sets `stopped`; other paths (/props) are answered as `good` does."""

    def endless(handler: Handler) -> None:
        if handler.path == "/props":
            good(handler)
            return
        handler.start_stream()
        handler.send_event(stream_lines()[0])
        while not handler.server.state.release.is_set():
            try:
                handler.send_event(stream_lines()[1])
            except OSError:  # the proxy closed the connection: generation would stop here
                stopped.set()
                return
            handler.server.state.release.wait(0.02)

    return endless


def peer_closed(handler: Handler, until: threading.Event) -> bool:
    """Wait until the client of `handler` closes its side (True) or `until` is set (False)."""
    while not until.is_set():
        readable, _, _ = select.select([handler.connection], [], [], 0.05)
        if readable and handler.connection.recv(1, socket.MSG_PEEK) == b"":
            return True
    return False


def second_request_dropped(handler: Handler) -> None:
    """Answer as `good` does, but drop each connection's second request unanswered: llama-server may
    close a kept-alive connection after a stream without saying so."""
    handler.count = getattr(handler, "count", 0) + 1  # type: ignore[attr-defined]
    if handler.count == 2:  # type: ignore[attr-defined]
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)
        return
    good(handler)


def stream_then_leave(url: str, content: bytes, events: int) -> bytes:
    """POST `content` to `url`, read the streamed answer until `events` server-sent events came, then close
    the connection, as a caller that leaves midway does; the bytes received."""
    with httpx.Client() as client, client.stream("POST", url, content=content) as response:
        received = b""
        for chunk in response.iter_raw():
            received += chunk
            if received.count(b"data:") >= events:
                break
    return received


def wait_until(condition: Callable[[], object], timeout_s: float = 20.0) -> bool:
    """Poll `condition` until it is true; False if it is not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


@contextmanager
def recording_proxy(upstream: str, db: Path, **kwargs: Any) -> Iterator[ProxyHandle]:
    """A proxy for `upstream` on a free loopback port, recording into the SQLite file `db`."""
    handle = start_proxy(upstream, db=db, **kwargs)
    try:
        yield handle
    finally:
        handle.stop()


def stored_traces(db: Path, handle: ProxyHandle | None, count: int, timeout_s: float = 20.0) -> list[Trace]:
    """The traces in the file once there are at least `count` (flushing the proxy's writer while waiting)."""
    found: list[Trace] = []

    def enough() -> bool:
        nonlocal found
        if handle is not None and handle.running:
            handle.tracer.force_flush(5.0)
        store = SqliteTraceStore(db)
        try:
            found = store.all()
        finally:
            store.close()
        return len(found) >= count

    assert wait_until(enough, timeout_s), f"expected {count} traces in {db}, found {len(found)}"
    return found


def only_span(db: Path, handle: ProxyHandle | None) -> Span:
    """The one span of the one trace in the file."""
    traces = stored_traces(db, handle, 1)
    assert len(traces) == 1, [t.name for t in traces]
    assert len(traces[0].spans) == 1
    return traces[0].spans[0]


class _WideServer(_Server):
    # socketserver's default backlog of 5 resets connections when dozens arrive at once.
    request_queue_size = 256


@contextmanager
def serve_many(behaviour: Behaviour) -> Iterator[LoopbackServer]:
    """`tests.llm.servers.serve`, with a listen backlog wide enough for many callers at once."""
    state = LoopbackServer(url="")
    server = _WideServer(behaviour, state)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Answers:
    """Answers read from a raw socket with h11: (status, headers, body), one after another."""

    def __init__(self, sock: socket.socket, method: bytes = b"POST") -> None:
        self.sock = sock
        self.conn = h11.Connection(h11.CLIENT)
        self.method = method

    def next(self) -> tuple[int, dict[bytes, bytes], bytes]:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        # h11 reads answers to requests it saw: tell it about one (the bytes went out raw).
        self.conn.send(h11.Request(method=self.method, target=b"/", headers=[(b"host", b"proxy")]))
        self.conn.send(h11.EndOfMessage())
        status, headers, body = 0, {}, b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(self.sock.recv(65536))
                continue
            if isinstance(event, h11.Response):
                status, headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, body
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError("the connection closed before the answer was complete")

    def closed(self) -> bool:
        """True once the proxy closed the connection (nothing more comes)."""
        self.sock.settimeout(10)
        return self.sock.recv(1) == b""
