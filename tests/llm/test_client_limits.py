"""How long and how much: the deadline per call, the longest gap between stream events, the size caps.

Real loopback servers trickle an answer a byte at a time, keep a stream
alive with `: ping` comments only, or answer far more than asked; each call
ends with a typed error that names the setting, recorded like any failure.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from obs import semconv
from obs.llm.errors import BadResponse, LLMServerError, ServerTimeout
from tests.llm import servers
from tests.llm.client_support import MESSAGES, Rig, make_rig

MIB = 1024 * 1024


def _assert_failure_recorded(rig: Rig, error: LLMServerError, error_type: str) -> None:
    span = rig.only_span()
    assert span.status == "error"
    assert span.attributes[semconv.ERROR_TYPE] == error_type
    assert span.attributes[semconv.ERROR_MESSAGE] == str(error)
    metrics = rig.client.get_metrics()
    assert (metrics.request_count, metrics.error_count) == (1, 1)
    logged = rig.logger.get_logs_by_level("error")
    assert [e.message for e in logged] == [f"{span.name} failed: {error}"]
    assert logged[0].trace_id == span.trace_id


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "chat_stream"])
def test_a_trickling_answer_ends_at_the_deadline(stream: bool) -> None:
    with servers.serve(servers.trickle(0.5)) as server:
        # The idle timeout is set long: in a stream, bytes that make no event would end it first.
        rig = make_rig(server.url, timeout=1, deadline_s=1.5, stream_idle_timeout_s=30, read_props=False)
        with pytest.raises(ServerTimeout) as caught:
            if stream:
                list(rig.client.chat_stream(MESSAGES))
            else:
                rig.client.chat(MESSAGES)
    assert "deadline of 1.5 s" in str(caught.value)
    assert "deadline_s=" in str(caught.value)
    _assert_failure_recorded(rig, caught.value, "ServerTimeout")


def test_a_stream_of_pings_only_ends_at_the_idle_timeout() -> None:
    with servers.serve(servers.pings_only(0.1, after=1)) as server:
        rig = make_rig(server.url, timeout=5, stream_idle_timeout_s=0.6, read_props=False)
        stream = rig.client.chat_stream(MESSAGES)
        assert next(stream) == "Hello"
        with pytest.raises(ServerTimeout) as caught:
            next(stream)
    assert "no event for 0.6 s" in str(caught.value)
    assert "stream_idle_timeout_s=" in str(caught.value)
    _assert_failure_recorded(rig, caught.value, "ServerTimeout")
    assert rig.only_span().attributes[semconv.OBS_PARTIAL_OUTPUT] == "Hello"


def test_a_silent_stream_ends_at_the_idle_timeout_when_it_is_the_shorter() -> None:
    with servers.serve(servers.hang_mid_stream(after=1)) as server:
        rig = make_rig(server.url, timeout=30, stream_idle_timeout_s=0.3)
        stream = rig.client.chat_stream(MESSAGES)
        assert next(stream) == "Hello"
        with pytest.raises(ServerTimeout, match=r"no event for 0\.3 s after 2 chunks"):
            next(stream)
    with servers.serve(servers.hang) as server:
        rig = make_rig(server.url, timeout=30, stream_idle_timeout_s=0.3, read_props=False)
        with pytest.raises(ServerTimeout, match=r"within 0\.3 s \(waiting\).*stream_idle_timeout_s"):
            rig.client.chat_stream(MESSAGES)
    assert rig.only_span().attributes[semconv.ERROR_TYPE] == "ServerTimeout"


def test_pings_also_end_at_the_deadline_when_it_comes_first() -> None:
    with servers.serve(servers.pings_only(0.1, after=1)) as server:
        rig = make_rig(server.url, timeout=5, deadline_s=0.8, read_props=False)
        with pytest.raises(ServerTimeout, match=r"deadline of 0\.8 s"):
            list(rig.client.chat_stream(MESSAGES))
    assert rig.only_span().attributes[semconv.ERROR_TYPE] == "ServerTimeout"


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_an_answer_over_the_byte_cap_is_a_bad_response_naming_the_setting(chunked: bool) -> None:
    with servers.serve(servers.huge_answer(8 * MIB, stream=False, chunked=chunked)) as server:
        rig = make_rig(server.url, max_response_bytes=MIB)
        with pytest.raises(BadResponse) as caught:
            rig.client.chat(MESSAGES)
    assert "max_response_bytes" in str(caught.value) and "1,048,576 bytes" in str(caught.value)
    _assert_failure_recorded(rig, caught.value, "BadResponse")


def test_a_stream_over_the_byte_cap_keeps_what_came() -> None:
    with servers.serve(servers.huge_answer(8 * MIB, stream=True)) as server:
        rig = make_rig(server.url, max_response_bytes=MIB)
        received = []
        with pytest.raises(BadResponse, match="max_response_bytes") as caught:
            for delta in rig.client.chat_stream(MESSAGES):
                received.append(delta)
    assert 0 < len("".join(received)) <= MIB
    _assert_failure_recorded(rig, caught.value, "BadResponse")
    assert "the partial answer is kept on the span" in str(caught.value)


def test_the_default_cap_lets_a_large_answer_through() -> None:
    with servers.serve(servers.huge_answer(2 * MIB, stream=True)) as server:
        rig = make_rig(server.url)
        text = "".join(rig.client.chat_stream(MESSAGES))
    assert len(text) == 2 * MIB // 4096 * 4096
    assert rig.only_span().status == "success"


def _content(attr: str) -> str:
    return "".join(p.get("content", "") for m in json.loads(attr) for p in m["parts"])


def test_captured_content_is_cut_at_the_cap_and_marked() -> None:
    question = [{"role": "system", "content": "s" * 300}, {"role": "user", "content": "q" * 5000}]
    with servers.serve(servers.huge_answer(8192, stream=False)) as server:
        rig = make_rig(server.url, capture_content=True, max_content_chars=1000)
        response, span = rig.client.chat(question)
    assert len(response.content) == 8192  # the application gets the whole answer
    attrs = span.attributes
    assert attrs[semconv.OBS_CONTENT_TRUNCATED] is True
    sent = _content(attrs[semconv.GEN_AI_INPUT_MESSAGES])
    assert sent.startswith("s" * 300 + "q") and len(sent) <= 1000
    assert len(attrs[semconv.GEN_AI_INPUT_MESSAGES]) <= 1200  # still valid JSON, overhead included
    answer = _content(attrs[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert answer == "y" * len(answer) and 0 < len(answer) <= 1000


def test_content_within_the_cap_is_not_marked() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url, capture_content=True)
        _, span = rig.client.chat(MESSAGES)
    assert semconv.OBS_CONTENT_TRUNCATED not in span.attributes
    assert _content(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES]) == servers.CONTENT


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"deadline_s": 0}, "deadline_s must be None (no deadline) or seconds > 0, got 0"),
        ({"deadline_s": float("inf")}, "deadline_s must be None (no deadline) or seconds > 0"),
        ({"deadline_s": "60"}, "deadline_s must be None"),
        ({"stream_idle_timeout_s": -1}, "stream_idle_timeout_s must be None (the timeout) or seconds > 0"),
        ({"stream_idle_timeout_s": True}, "stream_idle_timeout_s must be None"),
        ({"max_response_bytes": 100}, "max_response_bytes must be an int >= 1024"),
        ({"max_response_bytes": 2.0e6}, "max_response_bytes must be an int >= 1024"),
        ({"max_content_chars": 0}, "max_content_chars must be an int >= 1"),
    ],
)
def test_limits_are_validated(kwargs: dict[str, Any], says: str) -> None:
    from obs.llm.client import InstrumentedClient

    with pytest.raises(ValueError) as caught:
        InstrumentedClient("http://127.0.0.1:8033", **kwargs)
    assert says in str(caught.value)
