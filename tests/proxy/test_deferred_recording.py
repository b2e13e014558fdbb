"""A model call is recorded once its answer has passed (obs.proxy._call), stamped when each thing happened.

While the upstream works on a request, the proxy only begins its span: the
log entry, the span's name and attributes and the reading of the answer
wait until the answer has passed, so they take no CPU from the model. These
tests hold a real loopback stream open in the middle and look at what is
recorded then and afterwards: nothing but the span's ids before the end (the
`traceparent` the caller got names the span recorded later), and times that
are those of the request and the tokens, not of the recording. An answer past
the recording's cap is recorded without waiting for its end, and a call
whose recording cannot begin still ends its span.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from obs import semconv
from obs.llm.exchange import Exchange
from obs.logs import LLMLogger
from obs.proxy._serve import ProxyServer
from obs.proxy.app import ProxyApp
from obs.proxy.server import bind_socket
from obs.trace.ids import parse_traceparent
from obs.trace.processors import InMemoryExporter, SimpleProcessor
from obs.trace.tracer import Tracer
from tests.llm.servers import MODEL, Handler, good, serve, stream_lines
from tests.proxy.support import PARENT_ID, STREAM, TRACE_ID, TRACEPARENT, wait_until

_HOLD_S = 0.3  # how long the upstream holds its stream open after the first content


@contextlib.contextmanager
def _proxy(upstream: str, **kwargs: object) -> Iterator[tuple[str, Tracer, InMemoryExporter, ProxyApp]]:
    """The proxy's own server for `upstream`, recording into memory: (url, tracer, exporter, app)."""
    exporter = InMemoryExporter()
    tracer = Tracer(logger=LLMLogger(), processors=[SimpleProcessor(exporter)])
    app = ProxyApp(upstream, tracer=tracer, **kwargs)  # type: ignore[arg-type]
    server = ProxyServer(app, bind_socket("127.0.0.1", 0))
    host, port = server._sock.getsockname()[:2]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started)
        yield f"http://{host}:{port}", tracer, exporter, app
    finally:
        server.stop()
        thread.join(timeout=10)


def _held_stream(released: threading.Event, padding: int = 0) -> object:
    """A stream that sends its role chunk, `padding` bytes of SSE comments and its first content,
    then waits for `released` before the rest."""
    lines = stream_lines()

    def behaviour(handler: Handler) -> None:
        if not handler.wants_stream:
            good(handler)
            return
        handler.start_stream()
        handler.send_event(lines[0])
        for _ in range(padding // 1024):
            handler.send_event(":" + "p" * 1023)
        handler.send_event(lines[1])
        released.wait(30.0)
        for line in lines[2:]:
            handler.send_event(line)
        handler.end_stream()

    return behaviour


def _started_entries(tracer: Tracer) -> list[object]:
    assert tracer.logger is not None
    return [e for e in tracer.logger.get_logs() if e.message.endswith("request started")]


def test_a_stream_is_recorded_once_it_has_passed_and_stamped_when_it_happened() -> None:
    released = threading.Event()
    with serve(_held_stream(released)) as upstream, _proxy(upstream.url) as (url, tracer, exporter, _), \
            httpx.Client(timeout=30) as client:  # fmt: skip
        sent = time.time() * 1000
        with client.stream(
            "POST", url + "/v1/chat/completions", json=STREAM, headers={"traceparent": TRACEPARENT}
        ) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            assert '"content"' in next(line for line in lines if line)
            first_token = time.time() * 1000
            time.sleep(_HOLD_S)
            # The model is still at work: nothing is recorded yet but the span's ids.
            assert _started_entries(tracer) == [] and exporter.traces == []
            released.set()
            assert [line for line in lines if line][-1] == "data: [DONE]"
        header = parse_traceparent(response.headers["traceparent"])
        assert wait_until(lambda: len(exporter.traces) == 1)
    (trace,) = exporter.traces
    (span,) = trace.spans
    # The caller's header named the span recorded afterwards, a child of the caller's own span.
    assert (span.trace_id, span.id, span.parent_id) == (TRACE_ID, header.span_id, PARENT_ID)
    assert header.trace_id == TRACE_ID
    assert span.name == trace.name == f"chat {MODEL}"
    assert span.attributes[semconv.GEN_AI_REQUEST_MODEL] == MODEL
    # Stamped when the request went out and the token came, not when the recording was written.
    assert sent - 50 <= span.start_time <= first_token
    (start_event,) = [e for e in span.events if e.name == semconv.EVENT_REQUEST_START]
    assert abs(start_event.timestamp - span.start_time) < 50
    (entry,) = _started_entries(tracer)
    assert abs(entry.timestamp - span.start_time) < 50 and entry.span_id == span.id  # type: ignore[attr-defined]
    assert span.end_time is not None and span.end_time >= first_token + _HOLD_S * 1000 - 50
    assert 0 < span.attributes[semconv.OBS_TTFT_MS] < _HOLD_S * 1000


def test_an_answer_past_the_recordings_cap_is_recorded_without_waiting_for_its_end() -> None:
    released = threading.Event()
    cap = 16 * 1024
    with serve(_held_stream(released, padding=2 * cap)) as upstream, \
            _proxy(upstream.url, max_response_bytes=cap) as (url, tracer, exporter, _), \
            httpx.Client(timeout=30) as client, \
            client.stream("POST", url + "/v1/chat/completions", json=STREAM) as response:  # fmt: skip
        lines = response.iter_lines()
        next(line for line in lines if '"content"' in line)
        # Still streaming, but past what recording reads: recorded now, as too large, memory freed.
        assert wait_until(lambda: len(exporter.traces) == 1, 10.0)
        released.set()
        assert [line for line in lines if line][-1] == "data: [DONE]"
    (span,) = exporter.traces[0].spans
    assert span.status == "error"
    assert "larger than the client's max_response_bytes" in span.attributes[semconv.ERROR_MESSAGE]
    assert len(_started_entries(tracer)) == 1


def test_a_call_whose_recording_cannot_begin_still_ends_its_span_and_is_relayed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> Exchange:
        raise RuntimeError("recording broke")

    monkeypatch.setattr(Exchange, "begin", broken)
    lines = [line for line in stream_lines() if line]
    with serve(good) as upstream, _proxy(upstream.url) as (url, _, exporter, app):
        response = httpx.post(url + "/v1/chat/completions", json=STREAM, timeout=30)
        assert response.status_code == 200
        assert [line for line in response.text.split("\n") if line] == lines
        assert wait_until(lambda: len(exporter.traces) == 1)
        assert app.stats.telemetry_errors == 1 and app.stats.recorded == 0
    (span,) = exporter.traces[0].spans
    assert span.id == parse_traceparent(response.headers["traceparent"]).span_id
    assert span.status == "error" and span.end_time is not None


def test_pieces_kept_before_the_recording_began_are_read_in_order_with_their_times() -> None:
    """Deltas that arrive apart in time keep their own arrival times through the deferral."""
    deltas = ("a", "b", "c")
    lines = stream_lines(deltas)

    def spaced(handler: Handler) -> None:
        if not handler.wants_stream:
            good(handler)
            return
        handler.start_stream()
        handler.send_event(lines[0])
        for line in lines[1:4]:
            time.sleep(0.1)
            handler.send_event(line)
        for line in lines[4:]:
            handler.send_event(line)
        handler.end_stream()

    with serve(spaced) as upstream, _proxy(upstream.url, capture_content=True) as (url, _, exporter, _app):
        httpx.post(url + "/v1/chat/completions", json=STREAM, timeout=30).raise_for_status()
        assert wait_until(lambda: len(exporter.traces) == 1)
    (span,) = exporter.traces[0].spans
    assert "abc" in span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES]
    assert span.attributes[semconv.OBS_TTFT_MS] >= 90  # the first delta came 0.1 s after the request
    # Read at the end, yet each delta keeps its arrival: 0.1 s apart, not all at once.
    assert span.attributes[semconv.OBS_INTER_TOKEN_P50_MS] >= 90


def test_the_first_token_is_relayed_before_the_recording_begins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recording waits for a gate the test opens only once it has the first token: it finds it open."""
    begin = Exchange.begin.__func__  # type: ignore[attr-defined]
    gate = threading.Event()
    found_open: list[bool] = []

    def gated_begin(cls: type[Exchange], *args: object, **kwargs: object) -> Exchange:
        found_open.append(gate.wait(10.0))  # recording that began first would wait here in vain
        return begin(cls, *args, **kwargs)

    monkeypatch.setattr(Exchange, "begin", classmethod(gated_begin))
    released = threading.Event()
    with serve(_held_stream(released)) as upstream, _proxy(upstream.url) as (url, _, exporter, _app):
        with httpx.Client(timeout=30) as client, client.stream(
            "POST", url + "/v1/chat/completions", json=STREAM
        ) as response:
            lines = response.iter_lines()
            next(line for line in lines if '"content"' in line)
            gate.set()
            released.set()
            assert [line for line in lines if line][-1] == "data: [DONE]"
        assert wait_until(lambda: len(exporter.traces) == 1)
    assert found_open == [True]
