"""ProxyApp as an ASGI app, served by uvicorn: the same relay as the proxy's own server gives.

`start_proxy` and `python -m obs.proxy` serve the proxy with its own
HTTP/1.1 server; `ProxyApp` is also an ASGI app, to mount in another one or
serve with any ASGI server. Here uvicorn serves it (recording into a real
SQLite file) in front of real loopback servers: answers byte for byte,
streamed or not, a cut stream cut for the caller too, a caller that leaves
stopping the upstream, and a caller that stops reading getting every byte
once it reads again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from obs import semconv
from obs.proxy.app import ProxyApp
from obs.proxy.server import bind_socket, open_recording
from tests.llm.servers import DELTAS, good, huge_answer, serve, stream_cut, stream_lines
from tests.proxy.support import (
    CHAT,
    STREAM,
    endless_stream,
    event_stream,
    stored_traces,
    stream_then_leave,
    wait_until,
)


@contextmanager
def asgi_proxy(upstream: str, db: Path) -> Iterator[tuple[str, ProxyApp]]:
    """ProxyApp for `upstream` served by uvicorn on a free loopback port, recording into `db`."""
    tracer, close = open_recording(db, "obs-proxy-asgi")
    app = ProxyApp(upstream, tracer=tracer, capture_content=True)
    sock = bind_socket("127.0.0.1", 0)
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(10)
        close(10.0)


@pytest.mark.parametrize("body", [CHAT, STREAM], ids=["whole", "streamed"])
def test_the_answer_comes_back_byte_for_byte_and_is_recorded(db: Path, body: dict[str, object]) -> None:
    with serve(good) as server, asgi_proxy(server.url, db) as (url, _):
        with httpx.Client(timeout=30) as client:
            direct = client.post(server.url + "/v1/chat/completions", json=body)
            relayed = client.post(url + "/v1/chat/completions", json=body)
        traces = stored_traces(db, None, 1)
    assert relayed.status_code == direct.status_code == 200
    assert relayed.content == direct.content
    assert relayed.headers["content-type"] == direct.headers["content-type"]
    span = traces[0].spans[0]
    assert relayed.headers["traceparent"] == f"00-{span.trace_id}-{span.id}-01"
    assert span.status == "success" and span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == len(DELTAS)


def test_a_stream_cut_upstream_is_cut_for_the_caller_too_and_recorded(db: Path) -> None:
    with serve(stream_cut(after=2)) as server, asgi_proxy(server.url, db) as (url, app):
        received = b""
        with httpx.Client(timeout=10) as client, client.stream(
            "POST", url + "/v1/chat/completions", json=STREAM
        ) as response, pytest.raises(httpx.RemoteProtocolError):
            for chunk in response.iter_raw():
                received += chunk
        span = stored_traces(db, None, 1)[0].spans[0]
        assert app.stats.broken == 1
    assert received == event_stream(stream_lines()[:3])
    assert span.attributes[semconv.ERROR_TYPE] == "StreamInterrupted"
    assert span.attributes[semconv.OBS_PARTIAL_OUTPUT] == "".join(DELTAS[:2])


def test_a_caller_leaving_mid_stream_stops_the_upstream_request(db: Path) -> None:
    stopped = threading.Event()
    with serve(endless_stream(stopped)) as server, asgi_proxy(server.url, db) as (url, app):
        stream_then_leave(url + "/v1/chat/completions", json.dumps(STREAM).encode(), 4)
        assert wait_until(stopped.is_set), "the upstream went on streaming to nobody"
        span = stored_traces(db, None, 1)[0].spans[0]
        assert app.stats.client_gone == 1
    assert span.status == "success" and span.attributes[semconv.OBS_STREAM_CLOSED_EARLY] is True


def test_a_caller_that_stops_reading_gets_every_byte_once_it_reads_again(db: Path) -> None:
    size = 4 * 1024 * 1024
    body = json.dumps(STREAM).encode()
    with serve(huge_answer(size, stream=True)) as server, asgi_proxy(server.url, db) as (url, _):
        with httpx.Client(timeout=60) as client:
            direct = client.post(server.url + "/v1/chat/completions", content=body).content
            with client.stream("POST", url + "/v1/chat/completions", content=body) as response:
                chunks = response.iter_raw()
                received = next(chunks)
                time.sleep(1.0)  # not reading: the relay holds the upstream back meanwhile
                for chunk in chunks:
                    received += chunk
        span = stored_traces(db, None, 1)[0].spans[0]
    assert received == direct and len(received) > size
    assert span.status == "success" and span.attributes[semconv.OBS_STREAM_CHUNKS] >= size // 4096
