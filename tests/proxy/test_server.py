"""The proxy's own HTTP/1.1 server as callers meet it: exact requests on raw sockets, answers read by h11.

Requests are written byte for byte (chunked bodies, `Expect: 100-continue`,
pipelining, HTTP/1.0, malformed ones) to a proxy started with `start_proxy`
in front of real loopback servers; every answer is parsed by h11, an HTTP
parser other than the proxy's own, so its framing is checked too. Streamed
answers take the thread that relays a stream (each test counts the pumps the
server started): a caller that stops reading holds the upstream back and
then gets every byte, as it does for a large answer with its
Content-Length, which stays on the event loop; a caller that leaves
stops the upstream even while it is silent, a silent upstream past the
proxy's timeout cuts the caller's answer, and bytes an upstream sends past
the end of its answer never reach a later answer on the same connection.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from obs import semconv
from obs.logs import LLMLogger
from obs.proxy import ProxyHandle, _kept, _serve
from obs.proxy._pump import ThreadPump
from obs.proxy._serve import ProxyServer
from obs.proxy._upstream import UpstreamResponse
from obs.proxy.app import ProxyApp
from obs.proxy.server import _QueueOnly, bind_socket
from obs.storage.exporter import SqliteLogSink
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.tracer import Tracer
from tests.llm.servers import (
    DELTAS,
    MODEL,
    Handler,
    LoopbackServer,
    good,
    hang_mid_stream,
    huge_answer,
    serve,
    stream_lines,
)
from tests.proxy import support
from tests.proxy.support import (
    Answers,
    connect,
    event_stream,
    only_span,
    peer_closed,
    read_until_closed,
    recording_proxy,
    stored_traces,
    stream_then_leave,
    wait_until,
)

CHAT = json.dumps(support.CHAT).encode()
STREAM = json.dumps(support.STREAM).encode()


@pytest.fixture
def proxy(upstream: LoopbackServer, db: Path) -> Iterator[ProxyHandle]:
    with recording_proxy(upstream.url, db) as handle:
        yield handle


@pytest.fixture
def pumps(monkeypatch: pytest.MonkeyPatch) -> list[ThreadPump]:
    """Every ThreadPump the proxy's server and its connections' threads start from now on (each relays as
    ever; it is only counted)."""
    started: list[ThreadPump] = []

    class CountedPump(ThreadPump):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(_serve, "ThreadPump", CountedPump)
    monkeypatch.setattr(_kept, "ThreadPump", CountedPump)
    return started


@pytest.fixture
def holds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """"pause" and "resume", in order, each time the relay on the event loop holds an upstream back or
    lets it go on (each does its work as ever; it is only noted)."""
    noted: list[str] = []
    pause, resume = UpstreamResponse.pause, UpstreamResponse.resume

    def noted_pause(self: UpstreamResponse) -> None:
        noted.append("pause")
        pause(self)

    def noted_resume(self: UpstreamResponse) -> None:
        noted.append("resume")
        resume(self)

    monkeypatch.setattr(UpstreamResponse, "pause", noted_pause)
    monkeypatch.setattr(UpstreamResponse, "resume", noted_resume)
    return noted


def _post_head(target: str, *extra: str) -> bytes:
    return ("\r\n".join([f"POST {target} HTTP/1.1", "Host: proxy", "Content-Type: application/json",
                         *extra]) + "\r\n\r\n").encode()  # fmt: skip


# -- requests -----------------------------------------------------------------------------------------


def test_a_chunked_request_body_after_100_continue_reaches_the_upstream_whole(
    upstream: LoopbackServer, proxy: ProxyHandle
) -> None:
    with connect(proxy.url) as sock:
        sock.sendall(_post_head("/v1/chat/completions", "Transfer-Encoding: chunked", "Expect: 100-continue"))
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"  # sent before any body byte
        for start in range(0, len(CHAT), 7):  # chunks of 7 bytes, each with an extension, then a trailer
            piece = CHAT[start:start + 7]
            sock.sendall(b"%x;n=%d\r\n%s\r\n" % (len(piece), start, piece))
        sock.sendall(b"0\r\nx-trailer: 1\r\n\r\n")
        status, _, body = Answers(sock).next()
    assert status == 200 and json.loads(body)["object"] == "chat.completion"
    got = upstream.requests[-1]
    sent = {name.lower(): value for name, value in got.headers.items()}
    assert got.body == CHAT and sent["content-length"] == str(len(CHAT))
    assert "transfer-encoding" not in sent and "expect" not in sent


def test_pipelined_requests_are_answered_in_order_on_one_connection(
    upstream: LoopbackServer, proxy: ProxyHandle, db: Path
) -> None:
    requests = (b"GET /health HTTP/1.1\r\nHost: proxy\r\n\r\n"
                + _post_head("/v1/chat/completions", f"Content-Length: {len(STREAM)}") + STREAM
                + b"GET /props HTTP/1.1\r\nHost: proxy\r\n\r\n")  # fmt: skip
    with connect(proxy.url) as sock:
        sock.sendall(requests)  # all three at once: each waits for the answer before it
        answers = Answers(sock, b"GET")
        health = answers.next()
        answers.method = b"POST"
        streamed = answers.next()
        answers.method = b"GET"
        props = answers.next()
    assert json.loads(health[2]) == {"status": "ok"}
    assert streamed[1][b"transfer-encoding"] == b"chunked"
    assert streamed[2] == event_stream(stream_lines())
    assert json.loads(props[2])["model_alias"] == MODEL
    assert [r.path for r in upstream.requests if r.path != "/props"] == ["/health", "/v1/chat/completions"]
    assert only_span(db, proxy).attributes[semconv.GEN_AI_REQUEST_STREAM] is True


def test_an_http_1_0_caller_gets_the_stream_until_the_connection_closes(proxy: ProxyHandle) -> None:
    with connect(proxy.url) as sock:
        head = b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(STREAM)
        sock.sendall(head + STREAM)
        received = read_until_closed(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" in head.lower()
    assert b"transfer-encoding" not in head.lower()
    assert body == event_stream(stream_lines())


def test_an_absolute_target_is_forwarded_as_its_path(upstream: LoopbackServer, proxy: ProxyHandle) -> None:
    with connect(proxy.url) as sock:
        sock.sendall(b"GET http://somewhere:9/health HTTP/1.1\r\nHost: somewhere\r\n\r\n")
        status, _, body = Answers(sock, b"GET").next()
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert upstream.requests[-1].path == "/health"


@pytest.mark.parametrize(("request_bytes", "status", "said"), [
    (b"NOT AN HTTP REQUEST\r\n\r\n", 400, "the request line is not"),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "only HTTP/1.1 and HTTP/1.0"),
    (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400, "malformed header line"),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
     "without Content-Length"),
    (b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", 400, "bad Content-Length"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad chunk size"),
    (b"POST / HTTP/1.1\r\nContent-Length: 209715200\r\n\r\n", 413, "larger than 100 MiB"),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431, "larger than 64 KiB"),
])  # fmt: skip
def test_a_malformed_request_gets_a_json_error_and_the_connection_closes(
    upstream: LoopbackServer, proxy: ProxyHandle, request_bytes: bytes, status: int, said: str
) -> None:
    before = len(upstream.requests)
    with connect(proxy.url) as sock:
        sock.sendall(request_bytes)
        answers = Answers(sock, b"GET")
        got_status, headers, body = answers.next()
        assert answers.closed()
    assert got_status == status and headers[b"connection"] == b"close"
    error = json.loads(body)["error"]
    assert error["code"] == status and said in error["message"] and error["message"].startswith("obs.proxy: ")
    assert len(upstream.requests) == before  # nothing was forwarded


def test_an_idle_kept_alive_connection_is_closed_after_its_idle_time(upstream: LoopbackServer) -> None:
    server = ProxyServer(ProxyApp(upstream.url, tracer=Tracer()), bind_socket("127.0.0.1", 0), idle_s=0.2)
    host, port = server._sock.getsockname()[:2]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started)
        with connect(f"http://{host}:{port}") as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: proxy\r\n\r\n")
            answers = Answers(sock, b"GET")
            assert answers.next()[0] == 200
            assert answers.closed()  # kept alive, then closed once idle
    finally:
        server.stop()
        thread.join(10)
    assert not thread.is_alive()


# -- streams (relayed by a thread of their own) -----------------------------------------------------------


def test_a_caller_that_stops_reading_holds_the_upstream_back_and_then_gets_every_byte(
    db: Path, pumps: list[ThreadPump]
) -> None:
    size = 8 * 1024 * 1024  # far more than the sockets' buffers hold
    with serve(huge_answer(size, stream=True)) as server, recording_proxy(server.url, db) as proxy:
        with httpx.Client(timeout=60) as client:
            direct = client.post(server.url + "/v1/chat/completions", content=STREAM).content
            with client.stream("POST", proxy.url + "/v1/chat/completions", content=STREAM) as response:
                chunks = response.iter_raw()
                received = next(chunks)
                time.sleep(1.0)  # not reading: the proxy must wait, not drop or buffer without end
                for chunk in chunks:
                    received += chunk
        span = stored_traces(db, proxy, 1)[0].spans[0]
    assert received == direct and len(received) > size
    assert span.status == "success" and span.attributes[semconv.OBS_STREAM_CHUNKS] >= size // 4096
    assert len(pumps) == 1 and pumps[0].done  # relayed, to its end, by the thread of its own


def test_a_caller_that_stops_reading_a_large_answer_with_its_length_holds_the_upstream_back(
    db: Path, pumps: list[ThreadPump], holds: list[str]
) -> None:
    size = 16 * 1024 * 1024  # far more than the proxy's socket buffer and the caller's small one hold
    with serve(huge_answer(size, stream=False, chunked=False)) as server, \
            recording_proxy(server.url, db) as proxy:  # fmt: skip
        with httpx.Client(timeout=60) as client:
            direct = client.post(server.url + "/v1/chat/completions", content=CHAT)
        host, port = proxy.url.removeprefix("http://").split(":")
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before connecting: it stays
            sock.settimeout(30)
            sock.connect((host, int(port)))
            sock.sendall(_post_head("/v1/chat/completions", f"Content-Length: {len(CHAT)}") + CHAT)
            assert sock.recv(16, socket.MSG_PEEK).startswith(b"HTTP/1.1 200")  # the answer began
            time.sleep(1.0)  # not reading: the proxy must wait, not drop or buffer without end
            status, headers, body = Answers(sock).next()
        span = only_span(db, proxy)
    assert status == 200 and headers[b"content-length"] == direct.headers["content-length"].encode()
    assert body == direct.content and len(body) > size
    assert span.status == "success"
    assert pumps == []  # an answer with its length is relayed on the event loop
    assert "pause" in holds and holds[-1] == "resume"  # held back while the caller did not read, then let go


def test_a_caller_leaving_while_the_upstream_is_silent_stops_the_upstream_request(db: Path) -> None:
    stopped = threading.Event()

    def silent_until_left(handler: Handler) -> None:
        if handler.path == "/props":
            good(handler)
            return
        handler.start_stream()
        handler.send_event(stream_lines()[0])
        handler.send_event(stream_lines()[1])
        if peer_closed(handler, handler.server.state.release):
            stopped.set()  # the proxy closed the connection: generation would stop here

    with serve(silent_until_left) as server, recording_proxy(server.url, db) as proxy:
        stream_then_leave(proxy.url + "/v1/chat/completions", STREAM, 2)
        assert wait_until(stopped.is_set), "the upstream request was left open"
        span = only_span(db, proxy)
        assert proxy.stats.client_gone == 1
    assert span.status == "success" and span.attributes[semconv.OBS_STREAM_CLOSED_EARLY] is True


def test_an_upstream_silent_past_the_proxys_timeout_cuts_the_answer_and_is_recorded(db: Path) -> None:
    with serve(hang_mid_stream(after=2)) as server, \
            recording_proxy(server.url, db, timeout_s=0.5, capture_content=True) as proxy:
        with httpx.Client(timeout=30) as client, client.stream(
            "POST", proxy.url + "/v1/chat/completions", content=STREAM
        ) as response:
            received = b""
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in response.iter_raw():
                    received += chunk
        span = only_span(db, proxy)
    assert received.count(b"data:") == 3  # the role chunk and two deltas came through before the silence
    assert span.attributes[semconv.ERROR_TYPE] == "ServerTimeout"
    assert "in the middle of its answer" in span.attributes[semconv.ERROR_MESSAGE]
    assert span.attributes[semconv.OBS_PARTIAL_OUTPUT] == "".join(DELTAS[:2])


def test_bytes_an_upstream_sends_past_its_answer_never_reach_the_caller(db: Path) -> None:
    def junk_after_the_end(handler: Handler) -> None:
        good(handler)
        if handler.path != "/props":
            handler.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nforge")  # nobody asked for it
            handler.wfile.flush()
            handler.close_connection = True

    expected = event_stream(stream_lines())
    with serve(junk_after_the_end) as server, recording_proxy(server.url, db) as proxy:
        for _ in range(3):
            with connect(proxy.url) as sock:
                sock.sendall(_post_head("/v1/chat/completions", f"Content-Length: {len(STREAM)}") + STREAM)
                status, _, body = Answers(sock).next()
                sock.settimeout(0.5)
                try:
                    after = sock.recv(65536)  # the proxy closes the connection, or keeps it idle
                except TimeoutError:
                    after = b""
            assert (status, body, after) == (200, expected, b"")
        traces = stored_traces(db, proxy, 3)
    assert [t.spans[0].status for t in traces] == ["success"] * 3


def test_the_recording_tracer_passes_flush_soon_on_to_its_log_file(tmp_path: Path) -> None:
    """record_into's logger writes into a SqliteLogSink through a queue-only wrapper: Tracer.flush_soon
    must reach the sink through it (its own schedule here is an hour away)."""
    with SqliteTraceStore(tmp_path / "obs.db") as store:
        sink = SqliteLogSink(store, flush_interval_s=3600.0)
        tracer = Tracer(logger=LLMLogger(stream=_QueueOnly(sink)))
        tracer.logger.info("written while the model rests")  # type: ignore[union-attr]
        assert sink.written == 0
        tracer.flush_soon()
        assert wait_until(lambda: sink.written == 1)
        assert sink.close()
