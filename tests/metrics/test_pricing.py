"""Prices by tokens and by compute (dollars per hour of server time), and the cost of each model."""

from __future__ import annotations

import copy
import json
import math

import pytest

from obs.clock import FakeClock
from obs.metrics._pricing import MAX_MODELS, OTHER_MODELS, ModelCost, ModelPrice
from obs.metrics.collector import MetricsCollector

T0 = 1_700_000_040.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ms=T0 * 1000)


def test_a_compute_price_charges_the_server_time_exactly(clock: FakeClock) -> None:
    metrics = MetricsCollector(compute_price_per_hour=3.6, clock=clock)
    # 60 ms of server time at $3.60 an hour: 60 / 3,600,000 * 3.6 = $0.00006, whatever the tokens.
    assert metrics.record_request(900.0, 1000, 500, model="local", server_ms=60.0) == 0.00006
    assert metrics.record_request(50.0, 7, 3, model="local", server_ms=1000.0) == 0.001
    assert metrics.get_metrics().total_cost == 0.00106
    assert metrics.time_series(1)[0].cost == 0.00106
    assert metrics.cost_by_model() == {
        "local": ModelCost(2, 0.00106, "compute", _counts(compute=2), 1060.0),
    }


def test_compute_costs_sum_without_drift(clock: FakeClock) -> None:
    metrics = MetricsCollector(compute_price_per_hour=0.36, clock=clock)
    for _ in range(10_000):
        metrics.record_request(10.0, 1, 1, server_ms=0.1)  # 1e-8 dollars each
    assert metrics.get_metrics().total_cost == 0.0001
    assert metrics.cost_by_model()[None].cost_usd == 0.0001


def test_which_price_applies_to_which_model(clock: FakeClock) -> None:
    metrics = MetricsCollector(
        0.001, 0.002,
        model_prices={"hosted": (0.01, 0.03)},
        compute_price_per_hour=1.8,
        model_compute_prices={"big-gpu": 7.2},
        clock=clock,
    )
    assert metrics.price_for("hosted") == ModelPrice("tokens", 0.01, 0.03)
    assert metrics.price_for("big-gpu") == ModelPrice("compute", per_hour=7.2)
    # Unlisted models get the default compute price, which wins over the default token prices.
    assert metrics.price_for("anything-else") == ModelPrice("compute", per_hour=1.8)
    assert metrics.price_for() == ModelPrice("compute", per_hour=1.8)
    assert metrics.prices_for("anything-else") == (0.001, 0.002)  # the token prices, still kept
    assert metrics.cost_for(1000, 1000, "hosted") == 0.04
    assert metrics.cost_for(1000, 1000, "big-gpu", server_ms=500.0) == 0.001
    assert metrics.cost_for(1000, 1000, "anything-else", server_ms=500.0) == 0.00025
    metrics.set_compute_price(None)  # no default compute price: the default token prices again
    assert metrics.price_for("anything-else") == ModelPrice("tokens", 0.001, 0.002)


def test_setting_one_way_for_a_model_replaces_the_other(clock: FakeClock) -> None:
    metrics = MetricsCollector(model_prices={"m": (0.5, 0.5)}, clock=clock)
    metrics.set_compute_price(3.6, model="m")
    assert metrics.price_for("m") == ModelPrice("compute", per_hour=3.6)
    assert metrics.prices_for("m") == (0.001, 0.002)  # its token prices went
    metrics.set_prices(0.1, 0.2, model="m")
    assert metrics.price_for("m") == ModelPrice("tokens", 0.1, 0.2)
    metrics.set_compute_price(3.6, model="m")
    metrics.set_compute_price(None, model="m")  # back to the defaults
    assert metrics.price_for("m") == ModelPrice("tokens", 0.001, 0.002)


def test_free_is_told_apart_from_a_silent_zero(clock: FakeClock) -> None:
    metrics = MetricsCollector(
        model_prices={"free-tokens": (0.0, 0.0)}, model_compute_prices={"free-box": 0.0}, clock=clock
    )
    metrics.record_request(10.0, 500, 500, model="free-tokens")
    metrics.record_request(10.0, 500, 500, model="free-box", server_ms=40.0)
    metrics.record_request(10.0, 500, 500, model="free-box")  # no timings: still free, not unknown
    metrics.record_request(10.0, 0, 0, model="priced")  # $0, but only because nothing was spent
    costs = metrics.cost_by_model()
    assert {model: (c.cost_usd, c.pricing) for model, c in costs.items()} == {
        "free-tokens": (0.0, "free"),
        "free-box": (0.0, "free"),
        "priced": (0.0, "tokens"),
    }
    assert metrics.price_for("free-box").free and metrics.price_for("free-tokens").free
    assert not metrics.price_for("priced").free
    assert not MetricsCollector(model_compute_prices={"m": 0.01}).price_for("m").free


def test_compute_without_server_time_is_unknown_not_free(clock: FakeClock) -> None:
    metrics = MetricsCollector(compute_price_per_hour=3.6, clock=clock)
    assert metrics.record_request(10.0, 100, 100, model="m") == 0.0  # e.g. a stream cut before its timings
    assert metrics.cost_by_model()["m"].pricing == "unknown"
    metrics.record_request(10.0, 100, 100, model="m", server_ms=1000.0)
    cost = metrics.cost_by_model()["m"]
    assert (cost.requests, cost.cost_usd, cost.pricing) == (2, 0.001, "compute")
    assert cost.by_pricing == _counts(compute=1, unknown=1)  # the unpriced one is still counted apart


def test_cache_hits_are_labelled_and_a_change_of_price_shows_as_mixed(clock: FakeClock) -> None:
    metrics = MetricsCollector(clock=clock)
    metrics.record_request(10.0, 0, 0, cached=True, model="m")
    assert metrics.cost_by_model()["m"].pricing == "cache"
    metrics.record_request(10.0, 1000, 0, model="m")
    assert metrics.cost_by_model()["m"].pricing == "tokens"
    metrics.set_compute_price(3.6, model="m")
    metrics.record_request(10.0, 1000, 0, model="m", server_ms=1000.0)
    cost = metrics.cost_by_model()["m"]
    assert (cost.requests, cost.cost_usd, cost.pricing) == (3, 0.002, "mixed")
    assert cost.by_pricing == _counts(tokens=1, compute=1, cache=1)
    assert json.loads(json.dumps(cost.to_dict())) == {
        "requests": 3, "cost_usd": 0.002, "pricing": "mixed",
        "by_pricing": _counts(tokens=1, compute=1, cache=1), "server_ms": 1000.0,
    }


def test_costs_per_model_are_bounded_reset_and_copied(clock: FakeClock) -> None:
    metrics = MetricsCollector(clock=clock)
    for i in range(MAX_MODELS + 5):
        metrics.record_request(10.0, 1000, 0, model=f"m{i}")
    metrics.record_request(10.0, 1000, 0, model="m0")  # a name already kept stays apart
    costs = metrics.cost_by_model()
    assert len(costs) == MAX_MODELS + 1
    assert costs[OTHER_MODELS].requests == 5 and costs["m0"].requests == 2
    twin = copy.deepcopy(metrics)
    metrics.reset()
    assert metrics.cost_by_model() == {}
    assert len(twin.cost_by_model()) == MAX_MODELS + 1
    assert metrics.price_for() == ModelPrice("tokens", 0.001, 0.002)  # prices outlive a reset


@pytest.mark.parametrize("bad", [-0.01, math.nan, math.inf, -math.inf, 1e7, "3.6", True])
def test_bad_compute_prices_are_refused_by_name(bad: object) -> None:
    range_ = r"must be a number in \[0, 1e\+06\] \(dollars per hour of server time\)"
    with pytest.raises(ValueError, match="compute_price_per_hour " + range_):
        MetricsCollector(compute_price_per_hour=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"model_compute_prices\['m'\] " + range_):
        MetricsCollector(model_compute_prices={"m": bad})  # type: ignore[dict-item]
    metrics = MetricsCollector()
    with pytest.raises(ValueError, match="dollars_per_hour " + range_):
        metrics.set_compute_price(bad, model="m")  # type: ignore[arg-type]
    assert metrics.price_for("m") == ModelPrice("tokens", 0.001, 0.002)


def test_a_model_priced_both_ways_is_refused() -> None:
    with pytest.raises(ValueError, match="model 'm' is in both model_prices and model_compute_prices"):
        MetricsCollector(model_prices={"m": (0.1, 0.1)}, model_compute_prices={"m": 1.0})
    with pytest.raises(ValueError, match=r"model_compute_prices keys must be model names \(str\), got 3"):
        MetricsCollector(model_compute_prices={3: 1.0})  # type: ignore[dict-item]


@pytest.mark.parametrize("bad", [-1.0, math.nan, 86_400_001.0, "40", True])
def test_a_bad_server_time_is_refused_and_records_nothing(bad: object) -> None:
    metrics = MetricsCollector(compute_price_per_hour=3.6)
    says = r"server_ms must be a finite number of milliseconds in \[0, 86400000\]"
    with pytest.raises(ValueError, match=says):
        metrics.record_request(10.0, 1, 1, server_ms=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="server_ms"):
        metrics.cost_for(1, 1, server_ms=bad)  # type: ignore[arg-type]
    assert metrics.get_metrics().request_count == 0 and metrics.cost_by_model() == {}


def _counts(**given: int) -> dict[str, int]:
    return {way: given.get(way, 0) for way in ("tokens", "compute", "free", "cache", "unknown")}
