"""A streamed model call is relayed by a thread from the moment its request is written (obs.proxy._pump).

The relay thread writes the request, reads the answer's head, sends the
caller's, and relays the body; the event loop does nothing meanwhile. These
tests send streamed requests (the ones that take this path) to real loopback
upstreams that answer, fail, hang or drop the connection at each step before
the body, and compare with what a direct call gives and what is recorded.

Each test runs twice: as callers send their requests (read, then, by the
thread of their connection, `obs.proxy._kept`), and with `Connection: close`,
which the event loop reads, and hands the answer to a thread as the request
goes out (`obs.proxy._serve`'s early relay).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from obs import semconv
from obs.proxy import ProxyApp, start_proxy
from tests.llm.servers import Handler, completion_body, error_status, good, serve, stream_lines
from tests.proxy.support import (
    STREAM,
    connect,
    only_span,
    peer_closed,
    read_until_closed,
    recording_proxy,
    second_request_dropped,
    stored_traces,
    wait_until,
)

_BODY = json.dumps(STREAM).encode()
_HEADERS: dict[str, str] = {}  # the requests' own headers besides the body's (set by `reader`)


@pytest.fixture(autouse=True, params=["thread", "loop"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Who reads the streamed requests: the thread of the caller's connection, or the event loop."""
    if request.param == "loop":
        monkeypatch.setitem(_HEADERS, "Connection", "close")
    return str(request.param)


def _raw_request() -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in _HEADERS.items()).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n%b"
            b"content-length: %d\r\n\r\n%b" % (extra, len(_BODY), _BODY))  # fmt: skip


def _stream(base: str, content: bytes = _BODY, timeout: float = 30.0) -> httpx.Response:
    with httpx.Client(timeout=timeout) as client:
        return client.post(base + "/v1/chat/completions", content=content, headers=_HEADERS)


def _props_answered(behaviour: Callable[[Handler], None]) -> Callable[[Handler], None]:
    """`behaviour` for the calls; `/props` (the proxy reads it in the background) answered as `good` does."""

    def answer(handler: Handler) -> None:
        if handler.path == "/props":
            good(handler)
            return
        behaviour(handler)

    return answer


def _start_chunked(handler: Handler, status: int, *headers: tuple[str, str]) -> None:
    """Send the head of a chunked event stream with `status` and `headers` besides."""
    handler.send_response(status)
    handler.send_header("Content-Type", "text/event-stream")
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    handler._chunked = True  # type: ignore[attr-defined]


def test_a_streamed_request_of_megabytes_is_written_whole_and_its_answer_relayed(db: Path) -> None:
    # Far more than a socket's buffer takes at once: the relay thread waits for room as it writes.
    content = json.dumps({**STREAM, "messages": [{"role": "user", "content": "x" * (6 * 1024 * 1024)}]})
    with serve(good) as server, recording_proxy(server.url, db) as proxy:
        direct = _stream(server.url, content.encode())
        relayed = _stream(proxy.url, content.encode())
        span = only_span(db, proxy)
        chats = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert [r.body == content.encode() for r in chats] == [True, True]
    assert (relayed.status_code, relayed.content) == (200, direct.content)
    assert span.status == "success" and span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] > 0


def test_a_streamed_call_answered_with_a_sized_error_is_relayed_as_it_came_and_recorded(db: Path) -> None:
    # A body with its Content-Length is not the relay thread's to pass on: the event loop reads it.
    with serve(error_status(400, "bad stream request", "invalid_request_error")) as server, \
            recording_proxy(server.url, db) as proxy:  # fmt: skip
        direct = _stream(server.url)
        with httpx.Client(timeout=10) as client:  # one connection, and the proxy's one upstream connection
            relayed = [client.post(proxy.url + "/v1/chat/completions", content=_BODY,
                                   headers=_HEADERS) for _ in range(3)]
        traces = stored_traces(db, proxy, 3)
    assert [(r.status_code, r.content) for r in relayed] == [(400, direct.content)] * 3
    assert relayed[0].headers["content-length"] == str(len(direct.content))
    for trace in traces:
        assert trace.spans[0].attributes[semconv.ERROR_TYPE] == "400"
        assert "bad stream request" in trace.spans[0].attributes[semconv.ERROR_MESSAGE]


def test_a_chunked_answer_that_also_gives_a_length_goes_on_chunked_without_it(db: Path) -> None:
    # RFC 9112 section 6.3: Transfer-Encoding overrides Content-Length, which a proxy must not send on.
    @_props_answered
    def chunked_with_length(handler: Handler) -> None:
        _start_chunked(handler, 200, ("Content-Length", "7"))
        if handler.wants_stream:
            for line in stream_lines():
                handler.send_event(line)
        else:
            body = json.dumps(completion_body()).encode()
            handler.wfile.write(b"%x\r\n%b\r\n" % (len(body), body))
        handler.end_stream()

    with serve(chunked_with_length) as server, recording_proxy(server.url, db) as proxy:
        streamed = _stream(proxy.url)  # relayed from the request on by a thread
        whole = _stream(proxy.url, json.dumps({**STREAM, "stream": False}).encode())  # by the event loop
        traces = stored_traces(db, proxy, 2)
    for relayed in (streamed, whole):
        assert relayed.status_code == 200 and "content-length" not in relayed.headers
        assert relayed.headers["transfer-encoding"] == "chunked"
    assert streamed.content.decode().split("\n\n")[:-1] == stream_lines()
    assert whole.json() == completion_body()
    assert [t.spans[0].status for t in traces] == ["success", "success"]


def test_a_streamed_error_in_chunks_is_relayed_with_its_status(db: Path) -> None:
    @_props_answered
    def chunked_500(handler: Handler) -> None:
        _start_chunked(handler, 500)
        handler.send_event('error: {"code": 500, "message": "slot crashed", "type": "server_error"}')
        handler.end_stream()

    with serve(chunked_500) as server, recording_proxy(server.url, db) as proxy:
        direct = _stream(server.url)
        relayed = _stream(proxy.url)
        span = only_span(db, proxy)
    assert (relayed.status_code, relayed.content) == (500, direct.content)
    assert relayed.headers["transfer-encoding"] == "chunked" and "traceparent" in relayed.headers
    assert span.status == "error" and span.attributes[semconv.ERROR_TYPE] == "500"


def test_a_streamed_call_on_a_pooled_connection_the_server_closed_is_retried_once_with_one_span(
    db: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    with serve(second_request_dropped) as server, recording_proxy(server.url, db, keep_ready_s=0) as proxy:
        begun: list[str] = []
        begin_span = proxy.tracer.begin_span

        def counted(name: str, *args: Any, **kwargs: Any) -> Any:
            begun.append(name)
            return begin_span(name, *args, **kwargs)

        monkeypatch.setattr(proxy.tracer, "begin_span", counted)
        first = _stream(proxy.url)
        second = _stream(proxy.url)
        traces = stored_traces(db, proxy, 2)
        paths = [r.path for r in server.requests]
        if reader == "loop":
            assert proxy.stats.retried == 2  # /props then chat 1 on the first connection, chat 2 on its retry
            assert paths == ["/props", *["/v1/chat/completions"] * 4]
        else:  # the thread keeps no spare with keep_ready_s=0: each call goes out on a new connection
            assert (proxy.stats.retried, proxy.stats.connects_waited) == (0, 2)
            assert paths == ["/props", *["/v1/chat/completions"] * 2]
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.content.count(b"data:") == second.content.count(b"data:") == len(stream_lines())
    assert [len(t.spans) for t in traces] == [1, 1]
    assert all(t.spans[0].status == "success" for t in traces)
    assert begun == ["chat", "chat"]  # each call's span began once, with its first attempt, not again


def test_a_streamed_call_the_upstream_never_answers_gets_504_once_the_timeout_passes(db: Path) -> None:
    @_props_answered
    def silent(handler: Handler) -> None:
        peer_closed(handler, handler.server.state.release)

    with serve(silent) as server, recording_proxy(server.url, db, timeout_s=0.3) as proxy:
        relayed = _stream(proxy.url)
        span = only_span(db, proxy)
    assert relayed.status_code == 504
    assert relayed.json()["error"]["type"] == "timeout_error"
    assert "sent nothing for 0.3 s before answering" in relayed.json()["error"]["message"]
    assert span.attributes[semconv.ERROR_TYPE] == "ServerTimeout"
    assert proxy.stats.no_answer == 1


def test_a_caller_leaving_before_the_head_stops_the_upstream_request(db: Path) -> None:
    stopped = threading.Event()

    @_props_answered
    def silent_until_left(handler: Handler) -> None:
        if peer_closed(handler, handler.server.state.release):
            stopped.set()

    with serve(silent_until_left) as server, recording_proxy(server.url, db) as proxy:
        with pytest.raises(httpx.ReadTimeout):
            _stream(proxy.url, timeout=0.5)
        assert wait_until(stopped.is_set), "the proxy kept the upstream request open"
        span = only_span(db, proxy)
        assert proxy.stats.client_gone == 1
    assert span.status == "error" and span.attributes[semconv.ERROR_TYPE] == "ClientDisconnected"
    assert "before any answer came" in span.attributes[semconv.ERROR_MESSAGE]


def test_the_head_goes_on_to_the_caller_as_soon_as_it_came_before_any_event(db: Path) -> None:
    events_may_go = threading.Event()
    released: list[bool] = []

    @_props_answered
    def head_then_wait(handler: Handler) -> None:
        handler.start_stream()
        handler.wfile.flush()
        # Until the caller has the head (the model computing its first token); False if it never came.
        released.append(events_may_go.wait(10))
        for line in stream_lines():
            handler.send_event(line)
        handler.end_stream()

    with serve(head_then_wait) as server, recording_proxy(server.url, db) as proxy:
        sock = connect(proxy.url)
        try:
            sock.sendall(_raw_request())
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
            head = received.split(b"\r\n\r\n")[0].decode().lower()
            events_may_go.set()
            while not received.endswith(b"0\r\n\r\n"):
                received += sock.recv(65536)
        finally:
            sock.close()
        span = only_span(db, proxy)
    assert released == [True]  # the caller had the head before any event was sent
    assert head.startswith("http/1.1 200 ok\r\n")
    assert "transfer-encoding: chunked" in head and "content-type: text/event-stream" in head
    assert f"traceparent: 00-{span.trace_id}-{span.id}-01" in head
    assert received.count(b"data:") == len(stream_lines()) and span.status == "success"


def test_informational_answers_before_the_head_are_skipped(db: Path) -> None:
    def continue_first(handler: Handler) -> None:
        if handler.path != "/props":
            handler.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            handler.wfile.flush()
        good(handler)

    with serve(good) as plain, serve(continue_first) as server, recording_proxy(server.url, db) as proxy:
        direct = _stream(plain.url)
        relayed = _stream(proxy.url)
        span = only_span(db, proxy)
    assert (relayed.status_code, relayed.content) == (200, direct.content)
    assert span.status == "success"


def test_a_streamed_call_waiting_for_its_head_when_the_proxy_stops_is_recorded_as_cut(db: Path) -> None:
    arrived = threading.Event()

    @_props_answered
    def silent(handler: Handler) -> None:
        arrived.set()
        peer_closed(handler, handler.server.state.release)

    with serve(silent) as server:
        proxy = start_proxy(server.url, db=db)
        errors: list[Exception] = []

        def call() -> None:
            try:
                _stream(proxy.url)
            except httpx.HTTPError as exc:
                errors.append(exc)

        caller = threading.Thread(target=call)
        try:
            caller.start()
            assert arrived.wait(10)
            assert proxy.stop()  # open answers get a few seconds, then the proxy stops
            caller.join(20)
        finally:
            proxy.stop()
        span = only_span(db, None)
    assert [type(e) for e in errors] == [httpx.RemoteProtocolError]  # no answer, the connection closed
    assert span.status == "error" and "the proxy was stopped" in span.attributes[semconv.ERROR_MESSAGE]


def test_a_failure_inside_the_proxy_after_the_thread_sent_the_head_never_writes_a_second_answer(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_settle(self: ProxyApp, exchange: object) -> None:
        raise RuntimeError("a bug in the proxy, after the answer went out")

    monkeypatch.setattr(ProxyApp, "_settle", broken_settle)
    with serve(good) as server, recording_proxy(server.url, db) as proxy:
        sock = connect(proxy.url)
        try:
            sock.sendall(_raw_request())
            received = read_until_closed(sock)  # the proxy closes the connection after the failure
        finally:
            sock.close()
    assert received.startswith(b"HTTP/1.1 200 OK\r\n") and received.count(b"HTTP/1.1 ") == 1
    assert received.endswith(b"0\r\n\r\n") and received.count(b"data:") == len(stream_lines())
