"""A caller's connection served by a relay thread (`obs.proxy._kept`): from its first request, and
again after each streamed call the loop relayed, its streamed model calls are relayed by that thread from
the request's arrival, recorded as the event loop records any call; everything that thread does not relay
(another kind of request, a sized or missing answer, pipelined requests, a large body) is answered by the
loop as before, and the connection stays the loop's until a streamed call passed again.

Every test talks to a real HTTP server on loopback through the proxy's own server; `stats.kept` counts
the calls a thread relayed. A request with `Connection: close` is the loop's.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from obs import semconv
from obs.proxy import start_proxy
from obs.proxy._kept import MAX_KEPT_BODY
from obs.proxy._spares import Spares
from tests.llm.servers import (
    DELTAS,
    Handler,
    completion_body,
    error_status,
    good,
    hang,
    refused_url,
    serve,
    stream_cut,
    stream_lines,
)
from tests.proxy.support import (
    CHAT,
    PARENT_ID,
    STREAM,
    TRACE_ID,
    TRACEPARENT,
    Answers,
    connect,
    endless_stream,
    recording_proxy,
    stored_traces,
    wait_until,
)

_STREAM = json.dumps(STREAM).encode()
_CHAT = json.dumps(CHAT).encode()
_PATH = "/v1/chat/completions"


def _chats(*behaviours: Callable[[Handler], None]) -> Callable[[Handler], None]:
    """The n-th chat call answered by `behaviours[n]` (the last one for any after); /props as `good`."""
    count = itertools.count()

    def answer(handler: Handler) -> None:
        if handler.path == "/props":
            good(handler)
            return
        behaviours[min(next(count), len(behaviours) - 1)](handler)

    return answer


def _events(answer: httpx.Response) -> list[str]:
    return [line for line in answer.text.split("\n") if line]


def _span_ids(traceparent: str) -> tuple[str, str]:
    _, trace_id, span_id, _ = traceparent.split("-")
    return trace_id, span_id


def test_streams_are_relayed_by_the_connections_thread_and_recorded_as_the_loops_are(db: Path) -> None:
    with serve(good) as server, recording_proxy(server.url, db) as proxy, httpx.Client(timeout=30) as client:
        direct = client.post(server.url + _PATH, content=_STREAM)
        by_loop = httpx.post(proxy.url + _PATH, content=_STREAM, headers={"Connection": "close"}, timeout=30)
        answers = [by_loop, *(client.post(proxy.url + _PATH, content=_STREAM) for _ in range(3))]
        traces = stored_traces(db, proxy, 4)
        stats = proxy.stats
    assert (stats.requests, stats.kept, stats.recorded) == (4, 3, 4)
    assert stats.no_answer == stats.broken == stats.client_gone == stats.telemetry_errors == 0
    for answer in answers:
        assert answer.status_code == 200 and answer.headers["transfer-encoding"] == "chunked"
        assert answer.content == direct.content
    spans = {(t.spans[0].trace_id, t.spans[0].id): t.spans[0] for t in traces}
    recorded = [spans[_span_ids(answer.headers["traceparent"])] for answer in answers]
    first, *kept = recorded
    for span in kept:  # the thread's calls are recorded as the loop's was
        assert span.status == first.status == "success"
        assert span.name == first.name
        assert set(span.attributes) == set(first.attributes)
        for name in (semconv.GEN_AI_USAGE_INPUT_TOKENS, semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
                     semconv.GEN_AI_RESPONSE_MODEL, semconv.GEN_AI_RESPONSE_FINISH_REASONS):  # fmt: skip
            assert span.attributes[name] == first.attributes[name]
        assert span.attributes[semconv.OBS_TTFT_MS] > 0
        assert span.end_time >= span.start_time


def test_a_traceparent_sent_on_a_kept_call_makes_its_span_a_child_of_the_callers(db: Path) -> None:
    with serve(good) as server, recording_proxy(server.url, db) as proxy, httpx.Client(timeout=30) as client:
        client.post(proxy.url + _PATH, content=_STREAM)
        answer = client.post(proxy.url + _PATH, content=_STREAM, headers={"traceparent": TRACEPARENT})
        traces = stored_traces(db, proxy, 2)
        assert proxy.stats.kept == 2
    child = next(t for t in traces if t.spans[0].trace_id == TRACE_ID)
    assert child.spans[0].parent_id == PARENT_ID
    assert _span_ids(answer.headers["traceparent"]) == (TRACE_ID, child.spans[0].id)


def test_other_requests_between_streams_are_answered_by_the_loop_and_the_streams_stay_kept(db: Path) -> None:
    with serve(good) as server, recording_proxy(server.url, db) as proxy, httpx.Client(timeout=30) as client:
        direct_whole = client.post(server.url + _PATH, content=_CHAT)
        client.post(proxy.url + _PATH, content=_STREAM)
        health = client.get(proxy.url + "/health")
        whole = client.post(proxy.url + _PATH, content=_CHAT)
        client.post(proxy.url + _PATH, content=_STREAM)
        streamed = client.post(proxy.url + _PATH, content=_STREAM)
        stored_traces(db, proxy, 4)
        stats = proxy.stats
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert whole.status_code == 200 and whole.json() == direct_whole.json()
    assert _events(streamed) == [line for line in stream_lines() if line]
    # the first stream is the thread's; then the loop's, up to the stream after the non-streamed call;
    # the last one the thread's again
    assert (stats.requests, stats.kept) == (5, 2)


def test_a_sized_error_to_a_kept_call_is_relayed_as_it_came_and_recorded(db: Path) -> None:
    refused = error_status(400, "the request exceeds the context size", "invalid_request_error")
    with serve(_chats(good, refused, good)) as server, recording_proxy(server.url, db) as proxy, \
            httpx.Client(timeout=30) as client:  # fmt: skip
        client.post(proxy.url + _PATH, content=_STREAM)
        error = client.post(proxy.url + _PATH, content=_STREAM)
        after = [client.post(proxy.url + _PATH, content=_STREAM) for _ in range(2)]
        traces = stored_traces(db, proxy, 4)
        stats = proxy.stats
    assert error.status_code == 400 and error.headers["content-length"] == str(len(error.content))
    assert error.json()["error"]["message"] == "the request exceeds the context size"
    span = next(t.spans[0] for t in traces if t.spans[0].id == _span_ids(error.headers["traceparent"])[1])
    assert span.status == "error" and span.attributes[semconv.ERROR_TYPE] == "400"
    for answer in after:
        assert answer.status_code == 200 and _events(answer) == [line for line in stream_lines() if line]
    # the error's answer was read by the loop, and so was the next stream; the one after was kept again
    assert (stats.requests, stats.kept, stats.no_answer) == (4, 2, 0)


def test_a_kept_call_that_no_connection_can_be_made_for_gets_502_and_is_recorded(db: Path) -> None:
    server_cm = serve(good)
    server = server_cm.__enter__()
    try:
        with recording_proxy(server.url, db, keep_ready_s=0) as proxy, httpx.Client(timeout=30) as client:
            client.post(proxy.url + _PATH, content=_STREAM)
            server_cm.__exit__(None, None, None)  # the upstream goes away; no spare connection is kept
            down = client.post(proxy.url + _PATH, content=_STREAM)
            traces = stored_traces(db, proxy, 2)
            stats = proxy.stats
    finally:
        server_cm.__exit__(None, None, None)
    assert down.status_code == 502 and down.json()["error"]["message"].startswith("obs.proxy: ")
    span = next(t.spans[0] for t in traces if t.spans[0].status == "error")
    assert _span_ids(down.headers["traceparent"])[1] == span.id
    assert (stats.no_answer, stats.kept) == (1, 1)


def test_a_kept_call_the_upstream_never_answers_gets_504_once_the_timeout_passes(db: Path) -> None:
    with serve(_chats(good, hang)) as server, recording_proxy(server.url, db, timeout_s=0.3) as proxy, \
            httpx.Client(timeout=30) as client:  # fmt: skip
        client.post(proxy.url + _PATH, content=_STREAM)
        late = client.post(proxy.url + _PATH, content=_STREAM)
        traces = stored_traces(db, proxy, 2)
        stats = proxy.stats
    assert late.status_code == 504
    assert "sent nothing for 0.3 s before answering" in late.json()["error"]["message"]
    span = next(t.spans[0] for t in traces if t.spans[0].status == "error")
    assert span.attributes[semconv.ERROR_TYPE] == "ServerTimeout"
    assert stats.no_answer == 1


def test_a_kept_call_cut_upstream_is_cut_for_the_caller_and_recorded(db: Path) -> None:
    with serve(_chats(good, stream_cut(after=2))) as server, \
            recording_proxy(server.url, db, capture_content=True) as proxy, \
            httpx.Client(timeout=30) as client:  # fmt: skip
        client.post(proxy.url + _PATH, content=_STREAM)
        received = b""
        with pytest.raises(httpx.RemoteProtocolError), \
                client.stream("POST", proxy.url + _PATH, content=_STREAM) as response:  # fmt: skip
            for chunk in response.iter_raw():
                received += chunk
        traces = stored_traces(db, proxy, 2)
        stats = proxy.stats
    assert received.count(b"data:") == 3  # the role chunk and two deltas, then the cut
    span = next(t.spans[0] for t in traces if t.spans[0].status == "error")
    assert span.attributes[semconv.ERROR_TYPE] == "StreamInterrupted"
    assert span.attributes[semconv.OBS_PARTIAL_OUTPUT] == "".join(DELTAS[:2])
    assert (stats.broken, stats.kept) == (1, 2)


def test_a_caller_leaving_a_kept_call_stops_the_upstream_request_and_is_recorded(db: Path) -> None:
    stopped = threading.Event()
    with serve(_chats(good, endless_stream(stopped))) as server, recording_proxy(server.url, db) as proxy:
        with httpx.Client(timeout=30) as client:
            client.post(proxy.url + _PATH, content=_STREAM)
            with client.stream("POST", proxy.url + _PATH, content=_STREAM) as response:
                received = b""
                for chunk in response.iter_raw():
                    received += chunk
                    if received.count(b"data:") >= 3:
                        break
        assert stopped.wait(10)  # the upstream saw its connection closed: generation stops
        traces = stored_traces(db, proxy, 2)
        assert wait_until(lambda: proxy.stats.client_gone == 1)
        assert proxy.stats.kept == 2
    left = [t.spans[0] for t in traces if semconv.OBS_STREAM_CLOSED_EARLY in t.spans[0].attributes]
    assert len(left) == 1 and left[0].status == "success"  # a stream the caller stopped reading, as direct


def test_requests_pipelined_behind_a_kept_stream_are_answered_in_order_by_the_loop(db: Path) -> None:
    def request(body: bytes, *extra: str) -> bytes:
        head = [f"POST {_PATH} HTTP/1.1", "Host: proxy", "Content-Type: application/json",
                f"Content-Length: {len(body)}", *extra]  # fmt: skip
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    with serve(good) as server, recording_proxy(server.url, db) as proxy, connect(proxy.url) as sock:
        answers = Answers(sock)
        sock.sendall(request(_STREAM))
        first = answers.next()
        sock.sendall(request(_STREAM) + request(_CHAT) + request(_STREAM, "Connection: close"))
        pipelined = [answers.next() for _ in range(3)]
        assert answers.closed()
        stored_traces(db, proxy, 4)
        assert proxy.stats.requests == 4
    events = [line for line in stream_lines() if line]
    for status, _, body in (first, pipelined[0], pipelined[2]):
        assert status == 200 and [line for line in body.decode().split("\n") if line] == events
    assert pipelined[1][0] == 200 and json.loads(pipelined[1][2]) == completion_body()


def test_a_request_body_larger_than_the_threads_limit_is_read_by_the_loop(db: Path) -> None:
    long_prompt = {**STREAM, "messages": [{"role": "user", "content": "x" * (MAX_KEPT_BODY + 1)}]}
    with serve(good) as server, recording_proxy(server.url, db) as proxy, httpx.Client(timeout=30) as client:
        client.post(proxy.url + _PATH, content=_STREAM)
        answer = client.post(proxy.url + _PATH, json=long_prompt)
        stored_traces(db, proxy, 2)
        assert (proxy.stats.requests, proxy.stats.kept) == (2, 1)
        assert len(server.requests[-1].body) > MAX_KEPT_BODY  # it reached the upstream whole
    assert answer.status_code == 200 and _events(answer) == [line for line in stream_lines() if line]


def test_a_kept_connection_is_closed_when_the_proxy_stops(db: Path) -> None:
    with serve(good) as server:
        proxy = start_proxy(server.url, db=db)
        try:
            with connect(proxy.url) as sock:
                answers = Answers(sock)
                sock.sendall(f"POST {_PATH} HTTP/1.1\r\nHost: proxy\r\nContent-Length: {len(_STREAM)}\r\n\r\n"
                             .encode() + _STREAM)  # fmt: skip
                assert answers.next()[0] == 200
                proxy.stop()  # the connection waits for its next request in the relay thread
                assert answers.closed()
        finally:
            proxy.stop()
    assert proxy.stats.client_gone == proxy.stats.broken == 0


def test_a_kept_stream_when_the_proxy_stops_is_recorded_as_cut(db: Path) -> None:
    stopped = threading.Event()
    with serve(_chats(good, endless_stream(stopped))) as server:
        proxy = start_proxy(server.url, db=db)
        try:
            with httpx.Client(timeout=30) as client:
                client.post(proxy.url + _PATH, content=_STREAM)
                with pytest.raises(httpx.RemoteProtocolError), \
                        client.stream("POST", proxy.url + _PATH, content=_STREAM) as response:  # fmt: skip
                    for chunk in response.iter_raw():
                        if b"data:" in chunk:
                            threading.Thread(target=proxy.stop, daemon=True).start()
            assert stopped.wait(20)  # its upstream request was stopped too
            assert wait_until(lambda: not proxy.running, 20)
        finally:
            proxy.stop()
        traces = stored_traces(db, None, 2)
    cut = next(t.spans[0] for t in traces if t.spans[0].status != "success")
    assert "stopped" in cut.attributes[semconv.ERROR_MESSAGE]
    assert proxy.stats.kept == 2


def test_a_spare_the_upstream_closes_on_the_request_is_replaced_once_and_then_502(db: Path) -> None:
    chats = itertools.count()

    def dropped_after_the_first(handler: Handler) -> None:  # every call after the first: no answer at all
        if handler.path == "/props" or next(chats) == 0:
            good(handler)
            return
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)

    with serve(dropped_after_the_first) as server, recording_proxy(server.url, db) as proxy, \
            httpx.Client(timeout=30) as client:  # fmt: skip
        client.post(proxy.url + _PATH, content=_STREAM)
        assert wait_until(lambda: proxy.app.spares.holds)  # made ready after the answer
        dropped = client.post(proxy.url + _PATH, content=_STREAM)
        stored_traces(db, proxy, 2)
        stats = proxy.stats
        sent = [r.path for r in server.requests].count(_PATH)
    assert dropped.status_code == 502 and "closed the connection" in dropped.json()["error"]["message"]
    # sent on the spare, then once more on a new connection, which got no answer either: never a third time
    assert (sent, stats.retried, stats.no_answer) == (3, 1, 1)


def test_32_kept_alive_callers_stream_side_by_side(db: Path) -> None:
    events = [line for line in stream_lines() if line]
    failures: list[BaseException] = []

    def caller(proxy_url: str) -> None:
        try:
            with httpx.Client(timeout=60) as client:
                for _ in range(3):
                    assert _events(client.post(proxy_url + _PATH, content=_STREAM)) == events
        except BaseException as exc:  # reported below
            failures.append(exc)

    with serve(good) as server, recording_proxy(server.url, db) as proxy:
        threads = [threading.Thread(target=caller, args=(proxy.url,)) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures, failures[:3]
        traces = stored_traces(db, proxy, 96)
        stats = proxy.stats
    assert len(traces) == 96 and all(t.spans[0].status == "success" for t in traces)
    assert (stats.requests, stats.kept) == (96, 96)


# -- the spare upstream connection ------------------------------------------------------------------------


def test_a_spare_is_taken_once_and_a_closed_one_is_never_used() -> None:
    spares = Spares("127.0.0.1", 9, connect_timeout_s=1.0, keep_ready_s=30.0)
    mine, theirs = socket.socketpair()
    spares.put(mine)
    assert spares.holds and spares.take_spare() is mine and spares.take_spare() is None
    spares.put(mine)
    theirs.close()  # the upstream closed it while it waited
    assert spares.take_spare() is None and not spares.holds
    assert mine.fileno() == -1  # and it was closed, not left open


def test_a_spare_older_than_llama_servers_idle_limit_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from obs.proxy import _spares

    spares = Spares("127.0.0.1", 9, connect_timeout_s=1.0, keep_ready_s=30.0)
    mine, theirs = socket.socketpair()
    spares.put(mine)
    monkeypatch.setattr(_spares, "_SPARE_S", 0.0)
    assert spares.take_spare() is None
    theirs.close()


def test_with_keep_ready_0_no_spare_is_kept_and_connecting_fails_with_httpx_errors() -> None:
    mine, theirs = socket.socketpair()
    host, port = refused_url().removeprefix("http://").split(":")
    spares = Spares(host, int(port), connect_timeout_s=1.0, keep_ready_s=0.0)
    spares.put(mine)
    assert not spares.holds and mine.fileno() == -1
    spares.make_ready(answered=True)
    assert not spares.holds
    with pytest.raises(httpx.ConnectError):
        spares.take()
    theirs.close()


def test_a_spare_too_old_to_use_is_dropped_when_it_cannot_be_renewed(monkeypatch: pytest.MonkeyPatch) -> None:
    from obs.proxy import _spares

    host, port = refused_url().removeprefix("http://").split(":")
    spares = Spares(host, int(port), connect_timeout_s=1.0, keep_ready_s=30.0)
    mine, theirs = socket.socketpair()
    spares.put(mine)
    monkeypatch.setattr(_spares, "_SPARE_S", 0.0)
    spares.make_ready(answered=False)  # renewing fails (nothing listens): the old one goes all the same
    assert not spares.holds and spares.renew_at() is None and mine.fileno() == -1
    theirs.close()


def test_a_failure_inside_a_kept_call_is_recorded_and_the_connection_closed(
    db: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from obs.proxy import _kept

    def broken(*args: object) -> bytes:
        raise RuntimeError("a bug in making the caller's head")

    with serve(good) as server, recording_proxy(server.url, db) as proxy, httpx.Client(timeout=30) as client:
        client.post(proxy.url + _PATH, content=_STREAM)
        monkeypatch.setattr(_kept, "_caller_head", broken)
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(proxy.url + _PATH, content=_STREAM)  # the connection closes with no answer
        monkeypatch.undo()
        after = client.post(proxy.url + _PATH, content=_STREAM)  # on a new connection
        traces = stored_traces(db, proxy, 3)
        assert wait_until(lambda: proxy.app._kept_in_flight == 0 and proxy.app._in_flight == 0)
    assert "a kept connection's thread failed" in caplog.text
    assert after.status_code == 200 and len(traces) == 3
