"""Span attributes computed from a request body, an answer and measured times."""

from __future__ import annotations

import json

from obs import semconv
from obs.llm.llama.attributes import (
    derived_attributes,
    input_messages_json,
    inter_token_stats,
    output_messages_json,
    request_attributes,
    response_attributes,
    timings_attributes,
)
from obs.llm.llama.props import ServerProps
from obs.llm.llama.responses import ChatCompletion, Timings, Usage, parse_chat_response
from tests.llm import servers


def test_request_attributes_map_parameters_with_their_types() -> None:
    body = {
        "messages": [],
        "temperature": 0,
        "top_p": 0.9,
        "top_k": 40,
        "max_tokens": 16,
        "seed": 7,
        "stop": "\n",
        "frequency_penalty": 0.5,
        "presence_penalty": 1,
        "unknown": "ignored",
    }
    props = ServerProps(model_path="/m.gguf", n_ctx=1024, build="b1")
    attrs = request_attributes(
        body, model="smol", server_address="127.0.0.1", server_port=8033, props=props, stream=True
    )
    assert attrs == {
        semconv.GEN_AI_OPERATION_NAME: "chat",
        semconv.GEN_AI_PROVIDER_NAME: "llama.cpp",
        semconv.GEN_AI_REQUEST_MODEL: "smol",
        semconv.GEN_AI_REQUEST_TEMPERATURE: 0.0,
        semconv.GEN_AI_REQUEST_TOP_P: 0.9,
        semconv.GEN_AI_REQUEST_TOP_K: 40,
        semconv.GEN_AI_REQUEST_MAX_TOKENS: 16,
        semconv.GEN_AI_REQUEST_SEED: 7,
        semconv.GEN_AI_REQUEST_STOP_SEQUENCES: ["\n"],
        semconv.GEN_AI_REQUEST_FREQUENCY_PENALTY: 0.5,
        semconv.GEN_AI_REQUEST_PRESENCE_PENALTY: 1.0,
        semconv.GEN_AI_REQUEST_STREAM: True,
        semconv.SERVER_ADDRESS: "127.0.0.1",
        semconv.SERVER_PORT: 8033,
        semconv.LLAMA_CPP_N_CTX: 1024,
        semconv.LLAMA_CPP_BUILD: "b1",
        semconv.LLAMA_CPP_MODEL_PATH: "/m.gguf",
    }
    assert isinstance(attrs[semconv.GEN_AI_REQUEST_TEMPERATURE], float)


def test_request_attributes_skip_bad_values() -> None:
    body = {"temperature": "hot", "max_tokens": 1.5, "seed": True, "stop": ["a", 1], "top_p": float("inf")}
    attrs = request_attributes(body, model=None, server_address=None, server_port=None)
    assert attrs == {semconv.GEN_AI_OPERATION_NAME: "chat", semconv.GEN_AI_PROVIDER_NAME: "llama.cpp"}
    assert (
        request_attributes(
            {"n_predict": 5, "stop": ["x"]}, model=None, server_address=None, server_port=None
        )[semconv.GEN_AI_REQUEST_MAX_TOKENS]
        == 5
    )


def test_content_json_follows_genai_shape() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {}}]},
        {"role": "assistant", "content": None},
    ]
    assert json.loads(input_messages_json(messages)) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Hi"}, {"type": "image_url"}]},
        {"role": "assistant", "parts": []},
    ]
    assert json.loads(output_messages_json("Hello <b>é</b>", "stop")) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Hello <b>é</b>"}],
            "finish_reason": "stop",
        }
    ]
    assert "é" in output_messages_json("é", None)  # kept readable, not \u-escaped
    assert "finish_reason" not in output_messages_json("x", None)


def test_response_attributes_from_llama_answer() -> None:
    attrs = response_attributes(parse_chat_response(servers.completion_body()))
    assert attrs == {
        semconv.GEN_AI_RESPONSE_ID: "chatcmpl-test",
        semconv.GEN_AI_RESPONSE_MODEL: servers.MODEL,
        semconv.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
        semconv.GEN_AI_USAGE_INPUT_TOKENS: servers.PROMPT_TOKENS,
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS: servers.COMPLETION_TOKENS,
        semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: servers.CACHED_TOKENS,
        semconv.LLAMA_CPP_TIMINGS_PROMPT_N: 16,
        semconv.LLAMA_CPP_TIMINGS_PROMPT_MS: 40.0,
        semconv.LLAMA_CPP_TIMINGS_PREDICTED_N: 4,
        semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS: 20.0,
        semconv.LLAMA_CPP_TIMINGS_PROMPT_PER_SECOND: 400.0,
        semconv.LLAMA_CPP_TIMINGS_PREDICTED_PER_SECOND: 200.0,
        semconv.LLAMA_CPP_TIMINGS_CACHE_N: 5,
        semconv.LLAMA_CPP_PROMPT_CACHE_RATIO: 5 / 21,
    }


def test_response_attributes_cached_tokens_from_timings_and_drafts() -> None:
    completion = ChatCompletion(
        id=None,
        model=None,
        content="",
        usage=Usage(10, 2, 12, None),
        timings=Timings(2, 1.0, 2, 1.0, cache_n=8, draft_n=4, draft_n_accepted=3),
    )
    attrs = response_attributes(completion)
    assert attrs[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 8
    assert attrs[semconv.LLAMA_CPP_TIMINGS_DRAFT_N] == 4
    assert attrs[semconv.LLAMA_CPP_TIMINGS_DRAFT_N_ACCEPTED] == 3
    assert attrs[semconv.LLAMA_CPP_DRAFT_ACCEPTANCE_RATE] == 0.75
    assert semconv.GEN_AI_RESPONSE_ID not in attrs
    assert timings_attributes(None) == {}
    assert response_attributes(ChatCompletion(id=None, model=None, content="")) == {}


def test_inter_token_stats() -> None:
    assert inter_token_stats([]) is None
    assert inter_token_stats([5.0]) == (5.0, 5.0, 5.0)
    mean, p50, p95 = inter_token_stats([10.0, 30.0, 20.0, 40.0])  # type: ignore[misc]
    assert mean == 25.0
    assert p50 == 20.0  # nearest rank: never a value between two gaps
    assert p95 == 40.0


def test_derived_attributes() -> None:
    timings = Timings(16, 40.0, 4, 20.0)
    attrs = derived_attributes(100.0, 4, timings, ttft_ms=30.0, first_chunk_ms=25.0, gaps_ms=[10.0, 20.0])
    assert attrs == {
        semconv.OBS_LATENCY_MS: 100.0,
        semconv.OBS_TOKENS_PER_SECOND: 40.0,
        semconv.OBS_NON_MODEL_MS: 40.0,
        semconv.OBS_TTFT_MS: 30.0,
        semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: 0.025,
        semconv.OBS_INTER_TOKEN_MEAN_MS: 15.0,
        semconv.OBS_INTER_TOKEN_P50_MS: 10.0,
        semconv.OBS_INTER_TOKEN_P95_MS: 20.0,
    }
    # A clock that says 0 ms gives no rate; model time above latency floors at 0.
    assert derived_attributes(0.0, 4, timings) == {semconv.OBS_LATENCY_MS: 0.0, semconv.OBS_NON_MODEL_MS: 0.0}
    assert derived_attributes(10.0, None) == {semconv.OBS_LATENCY_MS: 10.0}
