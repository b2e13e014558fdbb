"""The proxy over real loopback HTTP: relayed unchanged, recorded into a real SQLite file, faults survived.

Upstreams are the loopback servers of tests/llm/servers.py (well-behaved,
refusing, failing, cutting, hanging) and a few more written here; callers
are real httpx clients. Every comparison is with what a direct call gives.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from obs import semconv
from obs.proxy import ProxyApp, ProxyHandle, ProxyStartError, start_proxy
from obs.trace.processors import BatchProcessor, InMemoryExporter
from obs.trace.tracer import Tracer
from tests.llm.servers import (
    CONTENT,
    DELTAS,
    MODEL,
    PROMPT_TOKENS,
    TIMINGS,
    Handler,
    LoopbackServer,
    echo_secret_everywhere,
    error_status,
    garbage,
    good,
    hang_mid_stream,
    refused_url,
    serve,
    stream_cut,
    stream_lines,
)
from tests.proxy.support import (
    API_KEY,
    CHAT,
    PARENT_ID,
    STREAM,
    TRACE_ID,
    TRACEPARENT,
    connect,
    endless_stream,
    only_span,
    peer_closed,
    read_until_closed,
    recording_proxy,
    second_request_dropped,
    serve_many,
    stored_traces,
    stream_then_leave,
    wait_until,
)

# Headers that describe one connection (and the date, which moves): the only ones allowed to differ.
_PER_CONNECTION = {"connection", "keep-alive", "transfer-encoding", "date", "traceparent"}


@pytest.fixture
def proxy(upstream: LoopbackServer, db: Path) -> Iterator[ProxyHandle]:
    with recording_proxy(upstream.url, db, capture_content=True) as handle:
        yield handle


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k.decode().lower(), v.decode()) for k, v in response.headers.raw
            if k.decode().lower() not in _PER_CONNECTION]


def _call(base: str, path: str, body: dict[str, object] | bytes, headers: dict[str, str] | None = None,
          timeout: float = 30.0) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with httpx.Client(timeout=timeout) as client:
        return client.post(base + path, content=content, headers=headers or {})


# -- unchanged, both ways ---------------------------------------------------------------------------


@pytest.mark.parametrize("body", [CHAT, STREAM])
def test_the_answer_comes_back_byte_for_byte_with_only_a_traceparent_added(
    upstream: LoopbackServer, proxy: ProxyHandle, body: dict[str, object]
) -> None:
    direct = _call(upstream.url, "/v1/chat/completions", body)
    relayed = _call(proxy.url, "/v1/chat/completions", body)
    assert relayed.status_code == direct.status_code == 200
    assert relayed.content == direct.content
    assert _headers(relayed) == _headers(direct)
    assert relayed.headers["traceparent"].startswith("00-")


def _raw_post(base: str, target: str, body: bytes, headers: dict[str, str]) -> bytes:
    """POST with exactly these headers (and Host, Content-Length), as a minimal client would."""
    host, port = base.removeprefix("http://").split(":")
    head = [f"POST {target} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}",
            "Connection: close", *(f"{name}: {value}" for name, value in headers.items())]
    with connect(base) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        return read_until_closed(sock)


def test_the_request_reaches_the_upstream_unchanged(upstream: LoopbackServer, proxy: ProxyHandle) -> None:
    body = b'{"model": "m",   "messages": [{"role": "user", "content": "caf\xc3\xa9"}], "x_extra": [1, 2]}'
    headers = {"Authorization": f"Bearer {API_KEY}", "X-Custom": "kept", "traceparent": TRACEPARENT,
               "Content-Type": "application/json"}
    answer = _raw_post(proxy.url, "/v1/chat/completions?debug=1&x=%20y", body, headers)
    assert answer.startswith(b"HTTP/1.1 200 ")
    got = upstream.requests[-1]
    assert (got.method, got.path, got.body) == ("POST", "/v1/chat/completions?debug=1&x=%20y", body)
    sent = {k.lower(): v for k, v in got.headers.items()}
    # The caller's headers and nothing else: no Accept, Accept-Encoding or User-Agent of the proxy's own.
    assert sent == {**{k.lower(): v for k, v in headers.items()}, "host": upstream.url.removeprefix("http://"),
                    "content-length": str(len(body))}


def test_other_paths_are_relayed_and_not_recorded(
    upstream: LoopbackServer, proxy: ProxyHandle, db: Path
) -> None:
    with httpx.Client() as client:
        for path in ("/health", "/props"):
            direct, relayed = client.get(upstream.url + path), client.get(proxy.url + path)
            assert (relayed.status_code, relayed.content) == (direct.status_code, direct.content)
            assert "traceparent" not in relayed.headers
    _call(proxy.url, "/v1/chat/completions", CHAT)
    traces = stored_traces(db, proxy, 1)
    assert [t.spans[0].name for t in traces] == [f"chat {MODEL}"]
    assert proxy.stats.requests == 3 and proxy.stats.recorded == 1


def test_a_recorded_chat_carries_what_the_server_said(upstream: LoopbackServer, proxy: ProxyHandle,
                                                       db: Path) -> None:
    relayed = _call(proxy.url, "/v1/chat/completions", STREAM,
                    {"traceparent": TRACEPARENT, "X-Conversation-Id": "conv-42"})
    assert relayed.text.endswith("data: [DONE]\n\n")
    span = only_span(db, proxy)
    assert (span.trace_id, span.parent_id) == (TRACE_ID, PARENT_ID)
    assert relayed.headers["traceparent"] == f"00-{TRACE_ID}-{span.id}-01"
    attrs = span.attributes
    assert span.name == f"chat {MODEL}" and span.status == "success"
    assert attrs[semconv.GEN_AI_CONVERSATION_ID] == "conv-42"
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == len(DELTAS)
    assert attrs[semconv.LLAMA_CPP_TIMINGS_PROMPT_MS] == TIMINGS["prompt_ms"]
    assert attrs[semconv.SERVER_PORT] == int(upstream.url.rsplit(":", 1)[1])
    assert semconv.OBS_TTFT_MS in attrs and semconv.OBS_INTER_TOKEN_MEAN_MS in attrs
    assert json.loads(attrs[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["parts"][0]["content"] == CONTENT
    assert proxy.collector.get_metrics().request_count == 1


# -- the upstream misbehaving -----------------------------------------------------------------------


def test_nothing_listening_upstream_gives_502_with_a_clear_json_error_and_is_recorded(db: Path) -> None:
    url = refused_url()
    with recording_proxy(url, db) as proxy:
        relayed = _call(proxy.url, "/v1/chat/completions", CHAT)
        health = httpx.get(proxy.url + "/health")
        span = only_span(db, proxy)
    assert relayed.status_code == 502 and health.status_code == 502
    error = relayed.json()["error"]
    assert error["code"] == 502 and error["type"] == "unavailable_error"
    assert f"no server answers at {url}" in error["message"] and "--upstream" in error["message"]
    assert relayed.headers["traceparent"].split("-")[2] == span.id
    assert span.status == "error" and span.attributes[semconv.ERROR_TYPE] == "ServerUnavailable"
    assert health.json()["error"]["code"] == 502


def test_an_error_status_is_relayed_as_it_came_and_recorded(db: Path) -> None:
    with serve(error_status(500, "slot crashed")) as server, recording_proxy(server.url, db) as proxy:
        direct = _call(server.url, "/v1/chat/completions", CHAT)
        relayed = _call(proxy.url, "/v1/chat/completions", CHAT)
        span = only_span(db, proxy)
    assert (relayed.status_code, relayed.content) == (500, direct.content)
    assert span.attributes[semconv.ERROR_TYPE] == "500"
    assert "slot crashed" in span.attributes[semconv.ERROR_MESSAGE]


def test_garbage_is_relayed_as_it_came_and_recorded_as_a_bad_response(db: Path) -> None:
    with serve(garbage) as server, recording_proxy(server.url, db) as proxy:
        direct = _call(server.url, "/v1/chat/completions", CHAT)
        relayed = _call(proxy.url, "/v1/chat/completions", CHAT)
        span = only_span(db, proxy)
    assert (relayed.status_code, relayed.content) == (200, direct.content)
    assert relayed.headers["content-type"] == direct.headers["content-type"] == "text/html"
    assert span.attributes[semconv.ERROR_TYPE] == "BadResponse"


def _read_stream(base: str) -> tuple[bytes, Exception | None]:
    received = b""
    with httpx.Client(timeout=10) as client, client.stream(
        "POST", base + "/v1/chat/completions", content=json.dumps(STREAM).encode()
    ) as response:
        try:
            for chunk in response.iter_raw():
                received += chunk
        except httpx.HTTPError as exc:
            return received, exc
    return received, None


def test_a_stream_cut_upstream_is_cut_for_the_caller_too_and_recorded(db: Path) -> None:
    with serve(stream_cut(after=2)) as server, recording_proxy(server.url, db, capture_content=True) as proxy:
        direct, direct_error = _read_stream(server.url)
        relayed, relayed_error = _read_stream(proxy.url)
        span = only_span(db, proxy)
    assert relayed == direct
    assert isinstance(direct_error, httpx.RemoteProtocolError)
    assert isinstance(relayed_error, httpx.RemoteProtocolError)  # the caller sees the cut, not a clean end
    assert span.attributes[semconv.ERROR_TYPE] == "StreamInterrupted"
    assert span.attributes[semconv.OBS_PARTIAL_OUTPUT] == "".join(DELTAS[:2])
    assert proxy.stats.broken == 1


def test_a_stream_that_ends_cleanly_before_done_ends_cleanly_and_is_recorded(db: Path) -> None:
    with serve(stream_cut(after=2, chunked=False)) as server, recording_proxy(server.url, db) as proxy:
        relayed, error = _read_stream(proxy.url)
        span = only_span(db, proxy)
    assert error is None and b"[DONE]" not in relayed
    assert span.attributes[semconv.ERROR_TYPE] == "StreamInterrupted"
    assert "ended before [DONE]" in span.attributes[semconv.ERROR_MESSAGE]


def test_a_hanging_upstream_is_abandoned_with_the_caller_and_recorded(db: Path) -> None:
    stopped = threading.Event()

    def hang_until_left(handler: Handler) -> None:
        if peer_closed(handler, handler.server.state.release):
            stopped.set()

    with serve(hang_until_left) as server, recording_proxy(server.url, db) as proxy:
        for base in (server.url, proxy.url):  # a direct call and a relayed one give the caller the same
            with pytest.raises(httpx.ReadTimeout):
                _call(base, "/v1/chat/completions", CHAT, timeout=0.5)
        assert wait_until(stopped.is_set), "the proxy kept the upstream request open"
        span = only_span(db, proxy)
    assert span.status == "error" and span.attributes[semconv.ERROR_TYPE] == "ClientDisconnected"
    assert "before any answer came" in span.attributes[semconv.ERROR_MESSAGE]
    assert proxy.stats.client_gone == 1


def test_a_caller_leaving_mid_stream_stops_the_upstream_request(db: Path) -> None:
    stopped = threading.Event()
    with serve(endless_stream(stopped)) as server, recording_proxy(server.url, db) as proxy:
        stream_then_leave(proxy.url + "/v1/chat/completions", json.dumps(STREAM).encode(), 4)
        assert wait_until(stopped.is_set), "the upstream went on streaming to nobody"
        span = only_span(db, proxy)
    assert span.status == "success" and span.attributes[semconv.OBS_STREAM_CLOSED_EARLY] is True
    assert span.attributes[semconv.OBS_STREAM_CHUNKS] >= 3


def test_a_pooled_connection_closed_by_the_server_is_retried_once_on_a_new_one(db: Path) -> None:
    with serve(second_request_dropped) as server, recording_proxy(server.url, db) as proxy:
        first = _call(proxy.url, "/v1/chat/completions", CHAT)
        second = _call(proxy.url, "/v1/chat/completions", CHAT)
        traces = stored_traces(db, proxy, 2)
        assert (first.status_code, second.status_code) == (200, 200)
        # Each connection's second request is dropped: /props then chat 1 on the first, chat 2 on its retry's.
        assert proxy.stats.retried == 2
        assert [r.path for r in server.requests] == ["/props", *["/v1/chat/completions"] * 4]
    assert all(t.spans[0].status == "success" for t in traces)


def test_a_request_a_new_connection_got_no_answer_for_is_not_sent_twice(db: Path) -> None:
    def drop_chat(handler: Handler) -> None:
        if handler.path == "/props":
            good(handler)
            return
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)

    with serve(drop_chat) as server, recording_proxy(server.url, db) as proxy:
        with httpx.Client() as client:
            client.get(proxy.url + "/health")  # warms nothing: every request gets a new connection below
            relayed = client.post(proxy.url + "/v1/chat/completions", content=json.dumps(CHAT).encode())
        span = only_span(db, proxy)
        chats = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert relayed.status_code == 502 and "closed the connection without answering" in relayed.text
    assert len(chats) == 1
    assert span.attributes[semconv.ERROR_TYPE] == "ServerUnavailable"


def test_the_api_key_reaches_the_upstream_but_nothing_recorded(db: Path) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with serve(echo_secret_everywhere) as server, \
            recording_proxy(server.url, db, capture_content=True) as proxy:
        plain = _call(proxy.url, "/v1/chat/completions", CHAT, auth)
        streamed = _call(proxy.url, "/v1/chat/completions", STREAM, auth)
        stored_traces(db, proxy, 2)
        sent = {k.lower(): v for k, v in server.requests[-1].headers.items()}
        assert sent["authorization"] == f"Bearer {API_KEY}"
    assert API_KEY in plain.text and API_KEY in streamed.text  # relayed unchanged to the caller
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
    on_disk = b"".join(p.read_bytes() for p in files)
    assert b"you sent" in on_disk  # content was captured...
    assert API_KEY[:8].encode() not in on_disk  # ...and the key, whole or in part, was not


# -- many at once -----------------------------------------------------------------------------------


def test_64_streams_pass_side_by_side(db: Path) -> None:
    # Every stream waits until all 64 requests are in: a proxy that serialised them would never finish.
    count = 64
    arrived = threading.Barrier(count, timeout=30)

    def all_together(handler: Handler) -> None:
        if handler.path == "/props":
            good(handler)
            return
        arrived.wait()
        good(handler)

    async def stream_all(base: str) -> list[str]:
        limits = httpx.Limits(max_connections=count)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            async def one(i: int) -> str:
                body = json.dumps({**STREAM, "user": f"caller-{i}"}).encode()
                async with client.stream("POST", base + "/v1/chat/completions", content=body) as response:
                    return (await response.aread()).decode()
            return await asyncio.gather(*(one(i) for i in range(count)))

    with serve_many(all_together) as server, recording_proxy(server.url, db) as proxy:
        answers = asyncio.run(stream_all(proxy.url))
        traces = stored_traces(db, proxy, count)
    assert all(answer.endswith("data: [DONE]\n\n") for answer in answers)
    conversations = {t.spans[0].attributes[semconv.GEN_AI_CONVERSATION_ID] for t in traces}
    assert conversations == {f"caller-{i}" for i in range(count)}
    assert all(t.spans[0].status == "success" for t in traces)


# -- starting and configuring -----------------------------------------------------------------------


def test_start_proxy_refuses_what_cannot_work(db: Path, upstream: LoopbackServer) -> None:
    with pytest.raises(ValueError, match=r"tracer= .* or db="):
        start_proxy(upstream.url, db=db, tracer=Tracer())
    with pytest.raises(ValueError, match=r"upstream .*http"):
        start_proxy("ftp://nowhere", tracer=Tracer())
    with pytest.raises(ValueError, match="port must be an int in"):
        start_proxy(upstream.url, port=70000, tracer=Tracer())
    with pytest.raises(ValueError, match="timeout_s must be seconds > 0"):
        ProxyApp(upstream.url, tracer=Tracer(), timeout_s=0)
    for wrong in (-1, float("nan"), float("inf"), True, "30"):
        with pytest.raises(ValueError, match=r"keep_ready_s must be seconds >= 0 \(0: never\)"):
            ProxyApp(upstream.url, tracer=Tracer(), keep_ready_s=wrong)  # type: ignore[arg-type]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ProxyStartError, match=r"cannot listen on 127\.0\.0\.1:.*choose another port"):
            start_proxy(upstream.url, port=taken.getsockname()[1], tracer=Tracer())


def test_a_proxy_given_a_tracer_records_through_it(upstream: LoopbackServer) -> None:
    from obs.trace.processors import InMemoryExporter, SimpleProcessor

    exporter = InMemoryExporter()
    tracer = Tracer(processors=[SimpleProcessor(exporter)], service_name="my-gateway")
    with start_proxy(upstream.url, tracer=tracer) as proxy:
        _call(proxy.url, "/v1/chat/completions", CHAT)
        assert wait_until(lambda: exporter.traces)
    assert exporter.traces[0].metadata[semconv.SERVICE_NAME] == "my-gateway"
    assert not proxy.running


def test_a_call_still_open_when_the_proxy_stops_is_recorded_as_cut(db: Path) -> None:
    with serve(hang_mid_stream(after=2)) as server:
        proxy = start_proxy(server.url, db=db, capture_content=True)
        try:
            with httpx.Client(timeout=30) as client, client.stream(
                "POST", proxy.url + "/v1/chat/completions", content=json.dumps(STREAM).encode()
            ) as response:
                received = b""
                chunks = response.iter_raw()
                while received.count(b"data:") < 3:
                    received += next(chunks)
                # Open answers get a few seconds, then the proxy stops and the caller's answer breaks.
                assert proxy.stop()
                with pytest.raises(httpx.HTTPError):
                    for _ in chunks:
                        pass
        finally:
            proxy.stop()
        span = only_span(db, None)
    assert span.attributes[semconv.ERROR_TYPE] == "StreamInterrupted"
    assert "the proxy was stopped" in span.attributes[semconv.ERROR_MESSAGE]
    assert span.attributes[semconv.OBS_PARTIAL_OUTPUT] == "".join(DELTAS[:2])


def test_mounted_under_a_prefix_it_forwards_what_follows_the_prefix(upstream: LoopbackServer) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from obs.trace.processors import InMemoryExporter, SimpleProcessor

    exporter = InMemoryExporter()
    app = ProxyApp(upstream.url, tracer=Tracer(processors=[SimpleProcessor(exporter)]))
    host = Starlette(routes=[Mount("/llm", app=app)])

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://obs") as client:
            answer = await client.post("/llm/v1/chat/completions?x=1", content=json.dumps(CHAT).encode())
        await app.aclose()
        return answer

    answer = asyncio.run(call())
    assert answer.status_code == 200 and answer.json()["object"] == "chat.completion"
    # /props is read on the side (no lifespan ran here), on a connection of its own: in either order.
    assert [r.path for r in upstream.requests if r.path != "/props"] == ["/v1/chat/completions?x=1"]
    assert [t.spans[0].name for t in exporter.traces] == [f"chat {MODEL}"]


def test_recording_is_written_once_no_request_is_in_flight_not_in_the_middle_of_one() -> None:
    """With the writers' own schedule far off (60 s), what the proxy recorded is exported as soon as
    the last request in flight is over, and not while another is still being relayed."""
    hold = threading.Event()

    def held_or_good(handler: Handler) -> None:
        if handler.wants_stream and b'"hold"' in handler.body:
            handler.start_stream()
            for line in stream_lines()[:-1]:
                handler.send_event(line)
            hold.wait(30.0)  # the stream stays open until the test lets it end
            handler.send_event(stream_lines()[-1])
            handler.end_stream()
        else:
            good(handler)

    exporter = InMemoryExporter()
    tracer = Tracer(processors=[BatchProcessor(exporter, schedule_delay_s=60.0)])
    with serve(held_or_good) as upstream, start_proxy(upstream.url, tracer=tracer) as proxy:
        url = proxy.url + "/v1/chat/completions"
        httpx.post(url, json=CHAT, timeout=30).raise_for_status()
        assert wait_until(lambda: len(exporter.traces) == 1)  # at once: nothing else was in flight

        with httpx.Client(timeout=30) as client, \
                client.stream("POST", url, json={**STREAM, "user": "hold"}) as held:  # fmt: skip
            lines = held.iter_lines()
            assert next(lines).startswith("data: ")  # the held stream is in flight
            httpx.post(url, json=CHAT, timeout=30).raise_for_status()
            time.sleep(0.5)
            # The second call is over and queued, but a stream is still being relayed: not written yet.
            assert len(exporter.traces) == 1 and tracer.processors[0].stats().pending == 1
            hold.set()
            assert [line for line in lines if line][-1] == "data: [DONE]"
        assert wait_until(lambda: len(exporter.traces) == 3)
    assert [t.spans[0].attributes.get(semconv.GEN_AI_REQUEST_STREAM) for t in exporter.traces] == [
        None, None, True]  # fmt: skip
