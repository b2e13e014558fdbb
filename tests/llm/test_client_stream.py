"""chat_stream against loopback servers: deltas, the span at the end, and every way a stream ends."""

from __future__ import annotations

import gc
import json
import signal

import pytest

from obs import semconv
from obs.llm.errors import (
    BadResponse,
    HTTPStatusError,
    ServerLoading,
    ServerTimeout,
    ServerUnavailable,
    StreamInterrupted,
)
from obs.trace.ids import format_traceparent
from tests.llm import servers
from tests.llm.client_support import MESSAGES, make_rig


def test_full_stream_yields_deltas_and_records_the_span() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        stream = rig.client.chat_stream(MESSAGES, max_tokens=8)
        assert len(rig.store) == 0 and stream.span is None and not stream.finished
        deltas = list(stream)
    assert deltas == list(servers.DELTAS)
    assert stream.finished and stream.text == servers.CONTENT
    assert stream.response is not None and stream.response.content == servers.CONTENT
    span = stream.span
    assert span is not None and rig.only_span() == span
    assert (span.name, span.kind, span.status) == ("chat test-model", "client", "success")
    attrs = span.attributes
    assert attrs[semconv.GEN_AI_REQUEST_STREAM] is True
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == servers.PROMPT_TOKENS
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == len(servers.DELTAS)
    assert attrs[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == servers.CACHED_TOKENS
    assert attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ["stop"]
    assert attrs[semconv.GEN_AI_RESPONSE_ID] == "chatcmpl-stream"
    assert attrs[semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS] == 20.0
    assert attrs[semconv.OBS_TTFT_MS] == 0.0  # the fake clock stands still
    assert attrs[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == 0.0
    assert attrs[semconv.OBS_INTER_TOKEN_P95_MS] == 0.0
    assert attrs[semconv.OBS_STREAM_CHUNKS] == 7
    assert semconv.OBS_STREAM_CLOSED_EARLY not in attrs
    assert json.loads(attrs[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["parts"][0]["content"] == servers.CONTENT
    assert [e.name for e in span.events] == ["request_start", "first_token", "response_received"]
    request = server.requests[-1]
    assert request.json["stream"] is True
    assert request.json["stream_options"] == {"include_usage": True}
    assert request.headers["traceparent"] == format_traceparent(span.trace_id, span.id)
    metrics = rig.client.get_metrics()
    assert (metrics.request_count, metrics.error_count) == (1, 0)
    assert metrics.completion_tokens == len(servers.DELTAS)
    assert [e.message for e in reversed(rig.logger.get_logs_for_trace(span.trace_id))] == [
        "chat test-model request started",
        "chat test-model finished",
    ]


def test_ttft_and_gaps_follow_the_clock() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        stream = rig.client.chat_stream(MESSAGES)
        # Time moves only between reads, so each delta is stamped exactly when it is read.
        for step, expected in zip((30.0, 40.0, 50.0, 60.0), servers.DELTAS, strict=True):
            rig.clock.advance(step)
            assert next(stream) == expected
        rig.clock.advance(5.0)
        assert list(stream) == []
    attrs = stream.span.attributes  # type: ignore[union-attr]
    assert attrs[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == 0.030
    assert attrs[semconv.OBS_TTFT_MS] == 30.0
    assert attrs[semconv.OBS_INTER_TOKEN_MEAN_MS] == 50.0
    assert attrs[semconv.OBS_INTER_TOKEN_P50_MS] == 50.0
    assert attrs[semconv.OBS_INTER_TOKEN_P95_MS] == 60.0
    assert attrs[semconv.OBS_LATENCY_MS] == 185.0
    assert attrs[semconv.OBS_TOKENS_PER_SECOND] == pytest.approx(4 / 0.185)
    assert attrs[semconv.OBS_NON_MODEL_MS] == 125.0  # 185 - (40 + 20) of llama.cpp timings
    metrics = rig.client.get_metrics()
    assert metrics.avg_ttft_ms == 30.0
    assert metrics.max_latency_ms == 185.0
    assert stream.span.duration == 185.0  # type: ignore[union-attr]


@pytest.mark.parametrize("chunked", [True, False], ids=["broken-body", "clean-eof"])
def test_stream_cut_before_done_keeps_the_partial_text(chunked: bool) -> None:
    with servers.serve(servers.stream_cut(after=2, chunked=chunked)) as server:
        rig = make_rig(server.url)
        stream = rig.client.chat_stream(MESSAGES)
        received = []
        with pytest.raises(StreamInterrupted) as caught:
            for delta in stream:
                received.append(delta)
    assert received == ["Hello", " there"]
    assert caught.value.partial_text == "Hello there" if not chunked else True
    assert "the partial answer is kept on the span" in str(caught.value)
    span = rig.only_span()
    assert span is stream.span or span == stream.span
    assert span.status == "error"
    assert span.attributes[semconv.ERROR_TYPE] == "StreamInterrupted"
    assert span.attributes[semconv.OBS_PARTIAL_OUTPUT] == "Hello there"
    assert (
        json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["parts"][0]["content"] == "Hello there"
    )
    assert span.attributes[semconv.OBS_STREAM_CHUNKS] == 3
    assert span.attributes[semconv.GEN_AI_RESPONSE_ID] == "chatcmpl-stream"
    assert stream.error is caught.value and stream.finished
    metrics = rig.client.get_metrics()
    assert (metrics.request_count, metrics.error_count, metrics.completion_tokens) == (1, 1, 2)
    errors = rig.logger.get_logs_by_level("error")
    assert len(errors) == 1 and errors[0].trace_id == span.trace_id
    with pytest.raises(StopIteration):
        next(stream)  # an ended stream stays ended


def test_hang_mid_stream_times_out_with_the_partial_text() -> None:
    with servers.serve(servers.hang_mid_stream(after=1)) as server:
        rig = make_rig(server.url, timeout=0.3)
        stream = rig.client.chat_stream(MESSAGES)
        assert next(stream) == "Hello"
        with pytest.raises(ServerTimeout, match="stopped sending mid-stream"):
            next(stream)
    span = rig.only_span()
    assert span.attributes[semconv.ERROR_TYPE] == "ServerTimeout"
    assert span.attributes[semconv.OBS_PARTIAL_OUTPUT] == "Hello"
    assert span.attributes[semconv.OBS_TTFT_MS] == 0.0


def test_error_event_mid_stream() -> None:
    with servers.serve(servers.error_in_stream) as server:
        rig = make_rig(server.url)
        stream = rig.client.chat_stream(MESSAGES)
        with pytest.raises(
            HTTPStatusError, match=r"reported an error mid-stream \(500: slot crashed\)"
        ) as caught:
            list(stream)
    assert caught.value.status_code == 500 and caught.value.server_error_type == "server_error"
    span = rig.only_span()
    assert span.attributes[semconv.ERROR_TYPE] == "500"
    assert span.attributes[semconv.OBS_PARTIAL_OUTPUT] == "Hello"


def test_garbage_line_in_a_stream_is_a_bad_response() -> None:
    def garbled(handler: servers.Handler) -> None:
        handler.start_stream()
        handler.send_event(servers.stream_lines()[1])
        handler.send_event("data: <html>oops</html>")
        handler.end_stream()

    with servers.serve(garbled) as server:
        rig = make_rig(server.url, read_props=False)
        with pytest.raises(BadResponse, match="carried a line that is not a chat chunk"):
            list(rig.client.chat_stream(MESSAGES))
    assert rig.only_span().attributes[semconv.ERROR_TYPE] == "BadResponse"


def test_closing_early_records_a_successful_partial_span() -> None:
    with servers.serve(servers.hang_mid_stream(after=2)) as server:
        rig = make_rig(server.url)
        with rig.client.chat_stream(MESSAGES) as stream:
            assert next(stream) == "Hello"
        assert stream.finished
    span = rig.only_span()
    assert span.status == "success"
    assert span.attributes[semconv.OBS_STREAM_CLOSED_EARLY] is True
    assert span.attributes[semconv.OBS_PARTIAL_OUTPUT] == "Hello"
    assert semconv.GEN_AI_RESPONSE_FINISH_REASONS not in span.attributes
    assert stream.response is not None and stream.response.content == "Hello"
    metrics = rig.client.get_metrics()
    assert (metrics.request_count, metrics.error_count, metrics.completion_tokens) == (1, 0, 1)
    assert rig.logger.get_logs(level="info")[0].message == "chat test-model closed early"
    stream.close()  # closing again changes nothing
    assert len(rig.store) == 1


def test_a_dropped_stream_is_recorded_when_collected() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        for delta in rig.client.chat_stream(MESSAGES):
            assert delta == "Hello"
            break
        gc.collect()
        never_read = rig.client.chat_stream(MESSAGES)
        del never_read
        gc.collect()
    assert len(rig.store) == 2
    assert all(t.spans[0].attributes[semconv.OBS_STREAM_CLOSED_EARLY] for t in rig.store.all())
    assert rig.client.get_metrics().request_count == 2


def test_app_exception_inside_a_with_block_closes_the_stream() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        with pytest.raises(ZeroDivisionError), rig.client.chat_stream(MESSAGES) as stream:
            next(stream)
            1 / 0  # noqa: B018
    span = rig.only_span()
    assert span.status == "success" and span.attributes[semconv.OBS_STREAM_CLOSED_EARLY] is True


def test_keyboard_interrupt_while_reading_passes_through() -> None:
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with servers.serve(servers.hang_mid_stream(after=1)) as server:
            rig = make_rig(server.url, timeout=10)
            stream = rig.client.chat_stream(MESSAGES)
            assert next(stream) == "Hello"
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            with pytest.raises(KeyboardInterrupt):
                next(stream)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    span = rig.only_span()
    assert span.attributes[semconv.ERROR_TYPE] == "KeyboardInterrupt"
    assert span.attributes[semconv.OBS_PARTIAL_OUTPUT] == "Hello"


def test_http_errors_raise_when_the_stream_is_opened() -> None:
    with servers.serve(servers.loading) as server:
        rig = make_rig(server.url)
        with pytest.raises(ServerLoading):
            rig.client.chat_stream(MESSAGES)
    span = rig.only_span()
    assert (span.status, span.attributes[semconv.ERROR_TYPE]) == ("error", "503")
    assert rig.client.get_metrics().error_count == 1


def test_refused_stream_raises_when_opened() -> None:
    rig = make_rig(servers.refused_url())
    with pytest.raises(ServerUnavailable, match="no llama-server answers at"):
        rig.client.chat_stream(MESSAGES)
    assert rig.only_span().attributes[semconv.ERROR_TYPE] == "ServerUnavailable"


def test_a_server_that_ignores_stream_true_still_works() -> None:
    def json_only(handler: servers.Handler) -> None:
        handler.send_json(200, servers.completion_body())

    with servers.serve(json_only) as server:
        rig = make_rig(server.url, read_props=False)
        stream = rig.client.chat_stream(MESSAGES)
        assert list(stream) == [servers.CONTENT]
    span = rig.only_span()
    assert span.status == "success"
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == servers.COMPLETION_TOKENS


def test_stream_without_usage_records_no_token_counts() -> None:
    def no_usage(handler: servers.Handler) -> None:
        handler.start_stream()
        for line in servers.stream_lines(usage=False):
            handler.send_event(line)
        handler.end_stream()

    with servers.serve(no_usage) as server:
        rig = make_rig(server.url, read_props=False)
        assert "".join(rig.client.chat_stream(MESSAGES)) == servers.CONTENT
    span = rig.only_span()
    assert semconv.GEN_AI_USAGE_OUTPUT_TOKENS not in span.attributes
    assert semconv.OBS_TOKENS_PER_SECOND not in span.attributes
    assert span.status == "success"
