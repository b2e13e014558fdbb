"""What each call costs, on its span and in the metrics: by tokens, by server time, free, cached, unknown."""

from __future__ import annotations

from typing import Any

import pytest

from obs import semconv
from obs.llm.errors import HTTPStatusError, StreamInterrupted
from obs.metrics._pricing import ModelCost
from tests.llm import servers
from tests.llm.client_support import MESSAGES, make_rig

# The loopback server's timings: prompt_ms 40 + predicted_ms 20 = 60 ms of server time;
# at $3.60 an hour that is 60 / 3,600,000 * 3.6 = $0.00006.
SERVER_MS = servers.TIMINGS["prompt_ms"] + servers.TIMINGS["predicted_ms"]
PER_HOUR = 3.6
COMPUTE_COST = 0.00006


def _cost(span: Any) -> tuple[Any, Any]:
    return span.attributes.get(semconv.OBS_COST_USD), span.attributes.get(semconv.OBS_COST_PRICING)


def _answer_with(body: dict[str, Any]) -> servers.Behaviour:
    def behaviour(handler: servers.Handler) -> None:
        if handler.path == "/v1/chat/completions":
            handler.send_json(200, body)
        else:
            servers.good(handler)

    return behaviour


def _counts(**given: int) -> dict[str, int]:
    return {way: given.get(way, 0) for way in ("tokens", "compute", "free", "cache", "unknown")}


def test_a_compute_price_is_applied_to_llama_cpps_timings() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        rig.collector.set_compute_price(PER_HOUR)
        _, span = rig.client.chat(MESSAGES)
        stream = rig.client.chat_stream(MESSAGES)
        list(stream)
    assert _cost(span) == (COMPUTE_COST, "compute")
    assert stream.span is not None and _cost(stream.span) == (COMPUTE_COST, "compute")
    assert rig.collector.get_metrics().total_cost == 2 * COMPUTE_COST
    assert rig.collector.cost_by_model() == {
        servers.MODEL: ModelCost(2, 2 * COMPUTE_COST, "compute", _counts(compute=2), 2 * SERVER_MS)
    }
    finished = [e for e in rig.logger.get_logs() if e.message.endswith("finished")]
    assert {(e.data["cost_usd"], e.data["pricing"]) for e in finished} == {(COMPUTE_COST, "compute")}


def test_token_prices_by_default() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        _, span = rig.client.chat(MESSAGES)
    expected = (servers.PROMPT_TOKENS * 0.001 + servers.COMPLETION_TOKENS * 0.002) / 1000
    assert _cost(span) == (expected, "tokens")
    assert rig.collector.cost_by_model()[servers.MODEL].pricing == "tokens"


def test_a_model_priced_at_zero_is_free_not_a_silent_zero() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        rig.collector.set_prices(0.0, 0.0, model=servers.MODEL)
        _, span = rig.client.chat(MESSAGES)
    assert _cost(span) == (0.0, "free")
    assert rig.collector.cost_by_model()[servers.MODEL].pricing == "free"


def test_a_cache_hit_costs_nothing_and_says_why() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url, cache_size=4)
        rig.collector.set_compute_price(PER_HOUR)
        rig.client.chat(MESSAGES)
        _, hit = rig.client.chat(MESSAGES)
    assert _cost(hit) == (0.0, "cache")
    cost = rig.collector.cost_by_model()[servers.MODEL]
    assert (cost.cost_usd, cost.pricing) == (COMPUTE_COST, "compute")
    assert cost.by_pricing == _counts(compute=1, cache=1)


@pytest.mark.parametrize(
    "timings",
    [None, {**servers.TIMINGS, "prompt_ms": -5.0}, {**servers.TIMINGS, "predicted_ms": 1e12}],
    ids=["no timings", "negative", "over a day"],
)
def test_without_usable_server_time_a_compute_cost_is_unknown_not_zero(timings: Any) -> None:
    body = servers.completion_body(timings=False)
    if timings is not None:
        body["timings"] = timings
    with servers.serve(_answer_with(body)) as server:
        rig = make_rig(server.url)
        rig.collector.set_compute_price(PER_HOUR)
        _, span = rig.client.chat(MESSAGES)
    assert _cost(span) == (None, "unknown")  # no cost on the span rather than a $0 that means nothing
    assert rig.collector.cost_by_model()[servers.MODEL].by_pricing == _counts(unknown=1)
    assert rig.client.telemetry_errors == 0


def test_failed_calls_carry_the_cost_the_metrics_counted() -> None:
    with servers.serve(servers.error_status(500, "boom")) as server:
        rig = make_rig(server.url)
        with pytest.raises(HTTPStatusError):
            rig.client.chat(MESSAGES)
        rig.collector.set_compute_price(PER_HOUR)
        with pytest.raises(HTTPStatusError):
            rig.client.chat(MESSAGES)
    by_tokens, by_compute = (t.spans[0] for t in rig.store.all())
    assert _cost(by_tokens) == (0.0, "tokens")
    assert _cost(by_compute) == (None, "unknown")


def test_a_stream_cut_before_its_timings_is_unknown_under_a_compute_price() -> None:
    with servers.serve(servers.stream_cut(after=2)) as server:
        rig = make_rig(server.url)
        rig.collector.set_compute_price(PER_HOUR)
        stream = rig.client.chat_stream(MESSAGES)
        with pytest.raises(StreamInterrupted):
            list(stream)
    assert _cost(rig.only_span()) == (None, "unknown")
