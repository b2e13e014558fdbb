"""Odd input from either side never leaves a call unrecorded.

A request body that cannot be sent as JSON fails with a ValueError naming
what is wrong, and the call is recorded as a failure (never an open span);
token counts out of range from the server are counted as 0, marked on the
span and logged, and the request still reaches the metrics.
"""

from __future__ import annotations

from typing import Any

import pytest

from obs import semconv
from tests.llm import servers
from tests.llm.client_support import MESSAGES, make_rig

LONE_SURROGATE = [{"role": "user", "content": "broken \ud800 text"}]


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "chat_stream"])
@pytest.mark.parametrize(
    ("messages", "params", "says"),
    [
        (LONE_SURROGATE, {}, "messages[0] cannot be sent as JSON"),
        (MESSAGES, {"temperature": object()}, "temperature cannot be sent as JSON"),
        (MESSAGES, {"stop": {"a", "b"}}, "stop cannot be sent as JSON"),
    ],
    ids=["lone surrogate", "object", "set"],
)
def test_a_body_that_cannot_be_encoded_fails_clearly_and_is_recorded(
    stream: bool, messages: list[dict[str, Any]], params: dict[str, Any], says: str
) -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url, read_props=False)
        with pytest.raises(ValueError, match="cannot be sent as JSON") as caught:
            if stream:
                rig.client.chat_stream(messages, **params)
            else:
                rig.client.chat(messages, **params)
    assert says in str(caught.value)
    assert server.requests == []  # nothing half-encoded was sent
    span = rig.only_span()  # ended, so the trace is finished and stored
    assert span.status == "error"
    assert span.attributes[semconv.ERROR_TYPE] == "ValueError"
    metrics = rig.client.get_metrics()
    assert (metrics.request_count, metrics.error_count) == (1, 1)
    logged = rig.logger.get_logs_by_level("error")
    assert len(logged) == 1 and logged[0].trace_id == span.trace_id


BAD_USAGE = {
    "negative": ({"prompt_tokens": -5, "completion_tokens": 4}, ["prompt_tokens"], 0, 4),
    "huge": ({"prompt_tokens": 21, "completion_tokens": 10**15}, ["completion_tokens"], 21, 0),
    "float overflow": (
        {"prompt_tokens": 1e300, "completion_tokens": 1e300},
        ["prompt_tokens", "completion_tokens"],
        0,
        0,
    ),
    "not integers": (
        {"prompt_tokens": "21", "completion_tokens": 2.5},
        ["prompt_tokens", "completion_tokens"],
        0,
        0,
    ),
    "bad total and cache": (
        {
            "prompt_tokens": 21,
            "completion_tokens": 4,
            "total_tokens": -1,
            "prompt_tokens_details": {"cached_tokens": "x"},
        },
        ["total_tokens", "cached_tokens"],
        21,
        4,
    ),
}


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "chat_stream"])
@pytest.mark.parametrize("case", list(BAD_USAGE))
def test_usage_out_of_range_is_counted_as_zero_marked_and_logged(stream: bool, case: str) -> None:
    usage, invalid, prompt, completion = BAD_USAGE[case]
    with servers.serve(servers.usage_out_of_range(usage)) as server:
        rig = make_rig(server.url)
        if stream:
            assert "".join(rig.client.chat_stream(MESSAGES)) == servers.CONTENT
        else:
            assert rig.client.chat(MESSAGES).response.content == servers.CONTENT
    span = rig.only_span()
    assert span.status == "success"
    assert span.attributes[semconv.OBS_USAGE_INVALID] == invalid
    if "prompt_tokens" in invalid:
        assert semconv.GEN_AI_USAGE_INPUT_TOKENS not in span.attributes
    else:
        assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == prompt
    if "completion_tokens" in invalid:
        assert semconv.GEN_AI_USAGE_OUTPUT_TOKENS not in span.attributes
    else:
        assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == completion
    metrics = rig.client.get_metrics()
    assert (metrics.request_count, metrics.error_count) == (1, 0)
    assert (metrics.prompt_tokens, metrics.completion_tokens) == (prompt, completion)
    assert rig.client.telemetry_errors == 0
    warnings = rig.logger.get_logs_by_level("warning")
    assert len(warnings) == 1 and warnings[0].trace_id == span.trace_id
    assert "usage out of range" in warnings[0].message and invalid[0] in warnings[0].message
