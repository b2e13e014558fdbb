"""The proxy's own HTTP/1.1 client against real loopback servers that answer with scripted bytes.

Each server accepts connections on a free port, reads each request (head and
Content-Length body) and answers with the byte pieces a test gives, flushed
one by one (so framing arrives split anywhere), keeping the connection or
closing it. What the client must get right: every way an HTTP/1.1 body ends
(chunked with extensions and trailers, Content-Length, close-delimited, no
body), informational answers, what the request looks like on the wire,
reusing a connection only when that is safe, and each failure as httpx's
exception.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import httpx
import pytest

from obs.proxy._http1 import ChunkedBody, whole_chunk
from obs.proxy._upstream import UpstreamPool, UpstreamResponse

# One answer: the pieces to write (each flushed, with a short pause), then whether to close.
Answer = tuple[Sequence[bytes], bool]


@dataclass
class Scripted:
    """A loopback server answering its n-th request with `answers[n]` (the last one repeats)."""

    answers: list[Answer]
    port: int = 0
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    closed: int = 0  # connections over (either side closed them)
    idle_close_s: float | None = None  # close a connection silent this long, as llama-server after 5 s
    accepted_at: list[float] = field(default_factory=list)  # time.monotonic() of each connection
    requests_at: list[float] = field(default_factory=list)
    listener: socket.socket | None = None


def _read_request(conn: socket.socket, pending: bytearray) -> bytes | None:
    while b"\r\n\r\n" not in pending:
        data = conn.recv(65536)
        if not data:
            return None
        pending += data
    end = pending.index(b"\r\n\r\n") + 4
    head = bytes(pending[:end])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(pending) < end + length:
        data = conn.recv(65536)
        if not data:
            return None
        pending += data
    request = bytes(pending[:end + length])
    del pending[:end + length]
    return request


@contextmanager
def scripted(answers: list[Answer], idle_close_s: float | None = None) -> Iterator[Scripted]:
    state = Scripted(answers, idle_close_s=idle_close_s)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    state.port = listener.getsockname()[1]
    state.listener = listener
    stop = threading.Event()

    def serve_one(conn: socket.socket) -> None:
        pending = bytearray()
        conn.settimeout(state.idle_close_s)
        with conn:
            try:
                answer_all(conn, pending)
            except TimeoutError:
                pass  # silent too long: closed
            finally:
                state.closed += 1

    def answer_all(conn: socket.socket, pending: bytearray) -> None:
        while not stop.is_set():
            request = _read_request(conn, pending)
            if request is None:
                return
            index = len(state.requests)
            state.requests_at.append(time.monotonic())
            state.requests.append(request)
            pieces, close = state.answers[min(index, len(state.answers) - 1)]
            for piece in pieces:
                conn.sendall(piece)
                time.sleep(0.002)  # a pause between pieces: each arrives on its own
            if close:
                return

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            state.accepted_at.append(time.monotonic())
            state.connections += 1
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _pool(port: int, read_timeout_s: float | None = 10.0) -> UpstreamPool:
    return UpstreamPool("http", "127.0.0.1", port, connect_timeout_s=5.0, read_timeout_s=read_timeout_s)


async def _read(response: UpstreamResponse) -> tuple[bytes, list[bytes]]:
    pieces = []
    while chunk := await response.read():
        pieces.append(chunk)
    await response.aclose()
    return b"".join(pieces), pieces


async def _pushed(response: UpstreamResponse) -> tuple[bytes, list[bytes]]:
    """The body as `stream_to` hands it over, piece by piece from the connection's callback."""
    pieces: list[bytes] = []
    ended: list[bytes] = []
    try:
        await response.stream_to(pieces.append, lambda: ended.append(b"".join(pieces)))
    finally:
        await response.aclose()
    assert ended == [b"".join(pieces)]  # `done` came once, after the last piece
    return b"".join(pieces), pieces


Reader = Callable[[UpstreamResponse], Awaitable[tuple[bytes, list[bytes]]]]
# Both ways of reading a body: pulled by `read()` (the proxy's own /props), pushed by `stream_to` (the relay).
READERS = pytest.mark.parametrize("_body", [_read, _pushed], ids=["read", "pushed"])


def _run(coroutine_function: Callable[[], object]) -> object:
    return asyncio.run(coroutine_function())  # type: ignore[arg-type]


def _bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
EVENTS = b'data: {"a": 1}\n\ndata: [DONE]\n\n'
CHUNKED_BODY = (b"f;name=value\r\n" + EVENTS[:15] + b"\r\n" + b"%x\r\n" % (len(EVENTS) - 15) + EVENTS[15:]
                + b"\r\n0\r\nx-trailer: yes\r\n\r\n")  # fmt: skip


@READERS
def test_a_chunked_body_split_anywhere_is_unframed_whole_and_the_connection_kept(_body: Reader) -> None:
    answer = ([CHUNKED_HEAD, *_bytewise(CHUNKED_BODY)], False)
    with scripted([answer]) as server:
        async def main() -> tuple[list[bytes], list[tuple[bytes, bytes]], int]:
            pool = _pool(server.port)
            bodies = []
            for _ in range(2):
                response = await pool.send("POST", "/v1/chat/completions", [], b"{}")
                headers = response.headers
                bodies.append((await _body(response))[0])
            await pool.aclose()
            return bodies, headers, response.status

        bodies, headers, status = _run(main)  # type: ignore[misc]
        assert bodies == [EVENTS, EVENTS] and status == 200
        assert (b"transfer-encoding", b"chunked") in headers  # the head as it came (the relay drops it)
        assert server.connections == 1  # read to the end: the second request went on the same connection


@READERS
def test_a_chunk_arriving_whole_is_one_read_and_chunks_already_in_are_joined(_body: Reader) -> None:
    frame = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in (b"data: 1\n\n", b"data: 2\n\n"))
    answer = ([CHUNKED_HEAD, frame, b"%x\r\n" % 9 + b"data: 3\n\n\r\n", b"0\r\n\r\n"], False)
    with scripted([answer]) as server:
        async def main() -> list[bytes]:
            pool = _pool(server.port)
            response = await pool.send("GET", "/", [], b"")
            pieces = (await _body(response))[1]
            await pool.aclose()
            return pieces

        assert _run(main) == [b"data: 1\n\ndata: 2\n\n", b"data: 3\n\n"]


@READERS
def test_content_length_close_delimited_and_bodiless_answers_end_where_http_says(_body: Reader) -> None:
    answers: list[Answer] = [
        ([b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello", b" world"], False),
        ([b"HTTP/1.1 204 No Content\r\n\r\n"], False),
        ([b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"], False),  # an answer to HEAD: no body follows
        ([b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil ", b"the end"], True),
    ]
    with scripted(answers) as server:
        async def main() -> list[tuple[int, bytes]]:
            pool = _pool(server.port)
            got = []
            for method in ("GET", "DELETE", "HEAD", "GET"):
                response = await pool.send(method, "/x", [], b"")
                got.append((response.status, (await _body(response))[0]))
            await pool.aclose()
            return got

        assert _run(main) == [(200, b"hello world"), (204, b""), (200, b""), (200, b"until the end")]
        assert server.connections == 1  # the close-delimited answer was the last on it


@READERS
def test_informational_answers_are_skipped(_body: Reader) -> None:
    answer = ([b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"], False)
    with scripted([answer]) as server:
        async def main() -> tuple[int, bytes]:
            pool = _pool(server.port)
            response = await pool.send("POST", "/", [], b"x")
            result = response.status, (await _body(response))[0]
            await pool.aclose()
            return result

        assert _run(main) == (200, b"ok")


def test_the_request_goes_out_as_given_with_host_and_content_length() -> None:
    with scripted([([b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"], False)]) as server:
        async def main() -> None:
            pool = _pool(server.port)
            headers = [(b"Content-Type", b"application/json"), (b"x-b", b"2"), (b"X-A", b"1")]
            for method, body in (("POST", b'{"q": 1}'), ("POST", b""), ("GET", b"")):
                await (await pool.send(method, "/v1/chat/completions?x=1", headers, body)).aclose()
            await pool.aclose()

        _run(main)
        first, empty_post, get = server.requests
        assert first == (b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n"
                         b"Content-Type: application/json\r\nx-b: 2\r\nX-A: 1\r\ncontent-length: 8\r\n\r\n"
                         b'{"q": 1}' % server.port)  # fmt: skip
        assert b"content-length: 0\r\n" in empty_post
        assert b"content-length" not in get


@pytest.mark.parametrize(("pieces", "message"), [
    ([CHUNKED_HEAD, b"20\r\n", b"only part of the chunk"], "in the middle of its answer"),
    ([CHUNKED_HEAD, b"zz\r\nnope\r\n"], "bad chunk size"),
    ([b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf"], "in the middle of its answer"),
])  # fmt: skip
@pytest.mark.parametrize("pushed", [False, True], ids=["read", "pushed"])
def test_a_body_cut_or_malformed_is_a_remote_protocol_error_after_what_came(
    pieces: list[bytes], message: str, pushed: bool
) -> None:
    ended: list[bool] = []  # a broken body must never be reported as ended
    with scripted([(pieces, True)]) as server:
        async def main() -> tuple[list[bytes], BaseException]:
            pool = _pool(server.port)
            response = await pool.send("GET", "/", [], b"")
            got: list[bytes] = []
            with pytest.raises(httpx.RemoteProtocolError) as caught:
                if pushed:
                    await response.stream_to(got.append, lambda: ended.append(True))
                else:
                    while chunk := await response.read():
                        got.append(chunk)
            await response.aclose()
            await pool.aclose()
            return got, caught.value

        got, error = _run(main)  # type: ignore[misc]
        assert message in str(error)
        assert not ended, "a broken body was reported as ended"
        if b"only part" in pieces[-1] or b"half" in pieces[-1]:
            assert b"".join(got) in (b"only part of the chunk", b"half")  # what came was passed on first


def test_not_http_and_silence_and_nobody_are_httpx_errors() -> None:
    with scripted([([b"SSH-2.0-OpenSSH\r\n\r\n"], True)]) as server, \
            pytest.raises(httpx.RemoteProtocolError, match=r"sent an answer not in HTTP/1\.x"):
        _run(lambda: _pool(server.port).send("GET", "/", [], b""))
    with scripted([([b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab"], False)]) as server:
        async def stalls() -> None:
            response = await _pool(server.port, read_timeout_s=0.3).send("GET", "/", [], b"")
            assert await response.read() == b"ab"
            await response.read()

        with pytest.raises(httpx.ReadTimeout):
            _run(stalls)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        _run(lambda: _pool(port).send("GET", "/", [], b""))


def test_a_pooled_connection_the_server_closed_is_replaced_once_and_a_new_one_never_retried() -> None:
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    # The server answers, then drops the kept-alive connection without saying so.
    with scripted([([ok], True), ([ok], True)]) as server:
        async def main() -> tuple[list[bytes], int]:
            pool = _pool(server.port)
            retries = []
            bodies = []
            for _ in range(2):
                response = await pool.send("GET", "/", [], b"", on_retry=lambda: retries.append(1))
                bodies.append((await _read(response))[0])
                await asyncio.sleep(0.05)  # the close reaches the client while the connection is idle
            await pool.aclose()
            return bodies, len(retries)

        bodies, retries = _run(main)  # type: ignore[misc]
        assert bodies == [b"ok", b"ok"] and server.connections == 2
        assert retries == 0  # the close was seen before reuse: a new connection, nothing sent twice
    with scripted([([], True)]) as server:  # a new connection closed without an answer
        retried: list[int] = []

        async def fails() -> None:
            await _pool(server.port).send("POST", "/", [], b"{}", on_retry=lambda: retried.append(1))

        with pytest.raises(httpx.RemoteProtocolError, match="before answering"):
            _run(fails)
        assert len(server.requests) == 1 and not retried


def test_a_pushed_body_times_out_only_while_the_upstream_is_silent_not_while_held_back() -> None:
    with scripted([([b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", b"ab"], False)]) as server:
        async def main() -> tuple[bool, list[bytes], BaseException | None]:
            response = await _pool(server.port, read_timeout_s=0.3).send("GET", "/", [], b"")
            got: list[bytes] = []
            finished = response.stream_to(got.append, lambda: None)
            response.pause()  # the caller reads slowly: no bytes are read, and no timeout runs
            await asyncio.sleep(1.0)
            held_without_timeout = not finished.done()
            response.resume()
            try:
                await finished
            except httpx.ReadTimeout as exc:
                error: BaseException | None = exc
            else:
                error = None
            await response.aclose()
            return held_without_timeout, got, error

        held_without_timeout, got, error = _run(main)  # type: ignore[misc]
    assert held_without_timeout
    assert got == [b"ab"]  # read once let go, then the silence timed out
    assert isinstance(error, httpx.ReadTimeout)


@pytest.mark.parametrize(("data", "start"), [
    (b"5\r\nhello\r\n", 3),
    (b"5;name=value\r\nhello\r\n", 14),  # an extension
    (b"A\r\n0123456789\r\n", 3),
    (b"5\r\nhell\r\n", None),  # shorter than its size
    (b"5\r\nhello\r\n5\r\nworld\r\n", None),  # two chunks
    (b"5\r\nhelloXY", None),  # no CRLF after the data
    (b"0\r\n\r\n", None),  # the last chunk
    (b"5\r\nhel", None),  # split
    (b"zz\r\nhi\r\n", None),  # not a size
])  # fmt: skip
def test_one_whole_chunk_is_told_from_anything_else_and_unframed_the_same_either_way(
    data: bytes, start: int | None
) -> None:
    assert whole_chunk(data) == start
    assert whole_chunk(bytearray(data)) == start
    if start is not None:
        body = ChunkedBody()
        assert body.take(bytearray(data)) == data[start:-2] and not body.done


# -- a connection kept ready ----------------------------------------------------------------------

# What llama-server does after every streamed answer: the body ends, then the connection closes.
STREAM_THEN_CLOSE = ([CHUNKED_HEAD, CHUNKED_BODY], True)


async def _eventually(check: Callable[[], bool], within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _ready_pool(port: int, keep_ready_s: float, idle_expiry_s: float = 4.0) -> UpstreamPool:
    return UpstreamPool("http", "127.0.0.1", port, connect_timeout_s=5.0, read_timeout_s=10.0,
                        keep_ready_s=keep_ready_s, idle_expiry_s=idle_expiry_s)  # fmt: skip


def test_after_an_answer_whose_connection_closes_the_next_request_finds_one_open_and_ready() -> None:
    with scripted([STREAM_THEN_CLOSE]) as server:
        async def main() -> tuple[list[bytes], list[int], bool]:
            pool = _ready_pool(server.port, keep_ready_s=30.0)
            waited: list[int] = []
            bodies = []
            for n in range(3):
                response = await pool.send("POST", "/", [], b"{}", on_connect=partial(waited.append, n))
                bodies.append((await _read(response))[0])
                ready = await _eventually(lambda: server.connections == len(server.requests) + 1)
            await pool.aclose()
            return bodies, waited, ready

        bodies, waited, ready = _run(main)  # type: ignore[misc]
        assert bodies == [EVENTS] * 3
        assert waited == [0]  # only the first request waited for a connection
        assert ready and server.connections == 4  # one per answer, and the one ready after the last
        # Each later request went out on a connection opened before it was sent, after the answer before it.
        for n in (1, 2):
            assert server.requests_at[n - 1] < server.accepted_at[n] < server.requests_at[n]
        assert _run_until(lambda: server.closed == 4)  # closing the pool closed the ready one too


def _run_until(check: Callable[[], bool], within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    return check()


def test_without_keep_ready_no_connection_is_opened_before_a_request() -> None:
    with scripted([STREAM_THEN_CLOSE]) as server:
        async def main() -> list[int]:
            pool = _pool(server.port)
            waited: list[int] = []
            for _ in range(2):
                response = await pool.send("POST", "/", [], b"{}", on_connect=lambda: waited.append(1))
                await _read(response)
                await asyncio.sleep(0.2)
                assert server.connections == len(server.requests)  # nothing opened in between
            await pool.aclose()
            return waited

        assert _run(main) == [1, 1]


def test_a_kept_alive_connection_is_reused_and_no_other_is_opened() -> None:
    with scripted([([CHUNKED_HEAD, CHUNKED_BODY], False)]) as server:
        async def main() -> int:
            pool = _ready_pool(server.port, keep_ready_s=30.0)
            for _ in range(3):
                await _read(await pool.send("POST", "/", [], b"{}"))
            await asyncio.sleep(0.2)  # time for a connection opened in the background to arrive
            await pool.aclose()
            return len(server.requests)

        assert _run(main) == 3 and server.connections == 1


def test_the_ready_connection_is_replaced_when_the_upstream_closes_it_until_the_time_is_up() -> None:
    with scripted([STREAM_THEN_CLOSE], idle_close_s=0.15) as server:
        async def main() -> tuple[bool, int, int]:
            pool = _ready_pool(server.port, keep_ready_s=1.0)
            await _read(await pool.send("POST", "/", [], b"{}"))
            replaced = await _eventually(lambda: server.closed >= 4)  # the answer's, then ready ones
            await asyncio.sleep(1.5)  # past keep_ready_s: the last one closed is not replaced
            opened = server.connections
            await asyncio.sleep(0.5)
            await pool.aclose()
            return replaced, opened, server.connections

        replaced, opened, later = _run(main)  # type: ignore[misc]
        assert replaced
        assert opened == later  # nothing opened once the second was up
        assert 4 <= opened <= 1 + 1.0 / 0.15 + 2  # about one per 0.15 s over the second, then no more


def test_a_ready_connection_past_the_pools_age_limit_is_replaced() -> None:
    with scripted([STREAM_THEN_CLOSE]) as server:
        async def main() -> tuple[bool, bool]:
            pool = _ready_pool(server.port, keep_ready_s=0.6, idle_expiry_s=0.1)
            await _read(await pool.send("POST", "/", [], b"{}"))
            replaced = await _eventually(lambda: server.connections >= 4)
            await asyncio.sleep(0.8)
            settled = server.connections
            await asyncio.sleep(0.3)
            await pool.aclose()
            return replaced, settled == server.connections

        replaced, settled = _run(main)  # type: ignore[misc]
        assert replaced and settled
        assert _run_until(lambda: server.closed == server.connections)  # every replaced one was closed


def test_an_upstream_gone_after_an_answer_fails_the_next_request_as_before_and_nothing_else() -> None:
    loop_errors: list[dict[str, object]] = []
    with scripted([STREAM_THEN_CLOSE]) as server:
        async def main() -> BaseException | None:
            asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
            pool = _ready_pool(server.port, keep_ready_s=30.0)
            await _read(await pool.send("POST", "/", [], b"{}"))
            assert server.listener is not None
            server.listener.close()  # the upstream is gone: connecting is refused from now on
            await asyncio.sleep(0.3)  # the background connection fails: nothing is raised or logged
            try:
                await pool.send("POST", "/", [], b"{}")
            except httpx.ConnectError as exc:
                return exc
            finally:
                await pool.aclose()
            return None

        error = _run(main)
    assert isinstance(error, httpx.ConnectError)
    assert loop_errors == []
