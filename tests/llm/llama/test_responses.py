"""Parsing of llama-server chat responses, stream lines, timings and error bodies."""

from __future__ import annotations

import json

import pytest

from obs.llm.llama.responses import (
    DONE,
    ChatCompletion,
    ResponseFormatError,
    StreamAccumulator,
    StreamError,
    Timings,
    Usage,
    parse_chat_response,
    parse_error_body,
    parse_sse_line,
)
from tests.llm import servers

# A body as the embedded llama-server sends it (values from a real answer).
REAL_BODY = {
    "choices": [
        {
            "finish_reason": "length",
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I assist you today"},
        }
    ],
    "created": 1795858575,
    "model": "SmolLM2-135M-Instruct.Q4_1",
    "system_fingerprint": "b0-unknown",
    "object": "chat.completion",
    "usage": {
        "completion_tokens": 8,
        "prompt_tokens": 31,
        "total_tokens": 39,
        "prompt_tokens_details": {"cached_tokens": 0},
    },
    "id": "chatcmpl-MTSTtQtCK7cFT9sFCBXpt50MSToZESYf",
    "timings": {
        "cache_n": 0,
        "prompt_n": 31,
        "prompt_ms": 210.625,
        "prompt_per_token_ms": 6.794354838709677,
        "prompt_per_second": 147.18100890207714,
        "predicted_n": 8,
        "predicted_ms": 94.1,
        "predicted_per_token_ms": 13.442857142857141,
        "predicted_per_second": 74.38894792773645,
    },
}


def test_parse_chat_response_reads_every_field() -> None:
    completion = parse_chat_response(REAL_BODY)
    assert completion.content == "Hello! How can I assist you today"
    assert completion.text == completion.content
    assert completion.id == "chatcmpl-MTSTtQtCK7cFT9sFCBXpt50MSToZESYf"
    assert completion.model == "SmolLM2-135M-Instruct.Q4_1"
    assert completion.finish_reason == "length"
    assert completion.finish_reasons == ("length",)
    assert completion.usage == Usage(31, 8, 39, 0)
    assert completion.timings is not None
    assert completion.timings.prompt_n == 31
    assert completion.timings.predicted_ms == 94.1
    assert completion.timings.model_ms == pytest.approx(304.725)
    assert completion.timings.prompt_cache_ratio == 0.0
    assert completion.timings.draft_acceptance_rate is None
    assert completion.system_fingerprint == "b0-unknown"
    assert completion.created == 1795858575
    assert completion.to_dict() == REAL_BODY


def test_parse_chat_response_without_llama_extras() -> None:
    body = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}
    completion = parse_chat_response(body)
    assert completion == ChatCompletion(
        id=None, model=None, content="hi", finish_reason="stop", finish_reasons=("stop",)
    )
    assert completion.usage is None and completion.timings is None


def test_parse_chat_response_joins_text_parts_and_tolerates_null_content() -> None:
    parts = {
        "choices": [
            {
                "message": {
                    "content": [
                        {"type": "text", "text": "a"},
                        {"type": "image"},
                        {"type": "text", "text": "b"},
                    ]
                }
            }
        ]
    }
    assert parse_chat_response(parts).content == "ab"
    assert parse_chat_response({"choices": [{"message": {"content": None}}]}).content == ""


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([1, 2], "expected a JSON object"),
        ({"object": "chat.completion", "id": "x"}, "no choices (keys: id, object)"),
        ({"choices": []}, "no choices"),
        ({"choices": ["text"]}, "no message"),
        ({"choices": [{"delta": {}}]}, "no message"),
    ],
)
def test_parse_chat_response_refuses_what_is_not_a_completion(body: object, says: str) -> None:
    with pytest.raises(ResponseFormatError) as caught:
        parse_chat_response(body)
    assert says in str(caught.value)


def test_usage_and_timings_from_odd_json() -> None:
    assert Usage.from_json(None) is None
    assert Usage.from_json({}) is None
    assert Usage.from_json({"prompt_tokens": 3}) == Usage(3, 0, 3, None)
    assert Usage.from_json({"prompt_tokens": True, "completion_tokens": 2.0}) == Usage(
        0, 2, 2, None, invalid=("prompt_tokens",)
    )
    assert Usage.from_json(
        {"prompt_tokens": -1, "completion_tokens": 10**13, "total_tokens": 1.5, "prompt_tokens_details": {}}
    ) == Usage(0, 0, 0, None, invalid=("prompt_tokens", "completion_tokens", "total_tokens"))
    assert Usage.from_json({"prompt_tokens": 10**12, "completion_tokens": 0}) == Usage(10**12, 0, 10**12)
    assert Timings.from_json({"prompt_ms": 1.0}) is None
    assert Timings.from_json({"prompt_ms": float("nan"), "predicted_ms": 1.0}) is None
    drafted = Timings.from_json(
        {
            "prompt_ms": 1,
            "predicted_ms": 2,
            "cache_n": 30,
            "prompt_n": 10,
            "draft_n": 8,
            "draft_n_accepted": 6,
        }
    )
    assert drafted is not None
    assert drafted.prompt_cache_ratio == 0.75
    assert drafted.draft_acceptance_rate == 0.75
    assert Timings(0, 0.0, 0, 0.0, cache_n=0).prompt_cache_ratio == 0.0


def test_parse_error_body_shapes() -> None:
    llama = json.dumps(servers.llama_error(503, "Loading model", "unavailable_error"))
    assert parse_error_body(llama) == StreamError("Loading model", "unavailable_error", 503)
    assert parse_error_body(llama.encode()) == StreamError("Loading model", "unavailable_error", 503)
    assert parse_error_body('{"error": "boom"}') == StreamError("boom")
    assert parse_error_body('{"message": "plain"}') == StreamError("plain")
    assert parse_error_body("<html>") is None
    assert parse_error_body("[1]") is None
    assert parse_error_body('{"error": {"code": 1}}') is None


def test_parse_sse_line_kinds() -> None:
    assert parse_sse_line("") is None
    assert parse_sse_line(": ping") is None
    assert parse_sse_line("event: message") is None
    assert parse_sse_line("no colon at all") is None
    assert parse_sse_line("data: [DONE]") is DONE
    assert parse_sse_line("data:[DONE]") is DONE
    assert parse_sse_line('data: {"a": 1}') == {"a": 1}
    assert parse_sse_line('data:{"a": 2}') == {"a": 2}
    assert parse_sse_line(
        'error: {"error": {"code": 500, "message": "slot crashed", "type": "server_error"}}'
    ) == (StreamError("slot crashed", "server_error", 500))
    assert parse_sse_line("error: gone") == StreamError("gone")
    assert parse_sse_line('data: {"error": {"message": "bad"}}') == StreamError("bad")
    with pytest.raises(ResponseFormatError, match="not JSON"):
        parse_sse_line("data: <html>")
    with pytest.raises(ResponseFormatError, match="not a JSON object"):
        parse_sse_line("data: [1, 2]")
    assert repr(DONE) == "DONE"


def test_stream_accumulator_rebuilds_the_answer() -> None:
    acc = StreamAccumulator()
    deltas = []
    for line in servers.stream_lines():
        item = parse_sse_line(line)
        if item is DONE:
            break
        assert isinstance(item, dict)
        deltas.append(acc.feed(item))
    assert deltas == ["", "Hello", " there", ",", " friend", "", ""]
    assert acc.text == servers.CONTENT
    assert acc.chunks == 7
    completion = acc.to_completion()
    assert completion.content == servers.CONTENT
    assert completion.finish_reason == "stop"
    assert completion.finish_reasons == ("stop",)
    assert completion.id == "chatcmpl-stream"
    assert completion.model == servers.MODEL
    assert completion.usage == Usage(
        servers.PROMPT_TOKENS, 4, servers.PROMPT_TOKENS + 4, servers.CACHED_TOKENS
    )
    assert completion.timings == Timings.from_json(servers.TIMINGS)
    # The assembled raw body reads back as the same answer.
    again = parse_chat_response(completion.raw)
    assert again.content == completion.content
    assert again.usage == completion.usage
    assert again.timings == completion.timings


def test_stream_accumulator_ignores_malformed_chunks() -> None:
    acc = StreamAccumulator()
    assert acc.feed({"choices": "nope"}) == ""
    assert acc.feed({"choices": [7]}) == ""
    assert acc.feed({"choices": [{"delta": "x"}]}) == ""
    assert acc.feed({"choices": [{"delta": {"content": "ok"}}], "usage": "bad", "timings": []}) == "ok"
    assert acc.usage is None and acc.timings is None
    assert acc.to_completion().raw["choices"][0]["message"] == {"role": "assistant", "content": "ok"}
