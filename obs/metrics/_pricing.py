"""Prices, the exact cost of a request, and the cost of each model, for the MetricsCollector.

A model is priced one of two ways:

- by tokens: dollars per 1,000 prompt tokens and per 1,000 completion tokens
  (from 0 to 1e6), what hosted APIs charge;
- by compute: dollars per hour of server time (from 0 to 1e6), applied to the
  time llama.cpp reports it spent on the request (`timings.prompt_ms +
  timings.predicted_ms`), what a local model really costs: the hardware's
  hour, whatever the tokens.

Each way has a default and per-model prices. A model's own price wins over
the defaults, and the default compute price, when set, wins over the default
token prices; setting one way for a model drops the other for it. How a
request was priced is one of `PRICINGS`: "tokens", "compute", "free" (its
price is zero: $0 on purpose), "cache" (answered from the response cache)
or "unknown" (priced by compute, but no server time was reported: counted
as $0, and counted apart so it is never mistaken for free).

A cost is kept as an int of 1e-12 dollars (`UNITS_PER_DOLLAR` units to the
dollar), so the sums of many costs stay exact where sums of floats drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from obs import semconv
from obs._validate import check_real
from obs.metrics._checks import check_ms, check_tokens

__all__ = [
    "MAX_MODELS",
    "OTHER_MODELS",
    "PRICINGS",
    "CostTally",
    "ModelCost",
    "ModelPrice",
    "PriceBook",
    "PricingMethods",
    "check_compute_price",
    "check_price",
]

# Far above any real price, and low enough that every sum of costs stays finite.
MAX_PRICE = 1e6
UNITS_PER_DOLLAR = 1e12
# Units of a token at a price of one dollar per 1,000 tokens.
UNITS_PER_1K = 1e9
# Units of one millisecond of server time at one dollar per hour.
UNITS_PER_MS_HOUR = UNITS_PER_DOLLAR / 3_600_000.0

PRICINGS = (
    semconv.PRICING_TOKENS,
    semconv.PRICING_COMPUTE,
    semconv.PRICING_FREE,
    semconv.PRICING_CACHE,
    semconv.PRICING_UNKNOWN,
)
_COMPUTE, _FREE, _CACHE, _UNKNOWN = (
    semconv.PRICING_COMPUTE, semconv.PRICING_FREE, semconv.PRICING_CACHE, semconv.PRICING_UNKNOWN
)
# The column of each way of pricing in a CostTally row (after requests, units and server ms).
_COLUMN = {way: 3 + i for i, way in enumerate(PRICINGS)}
# Model names kept apart in the per-model costs; the requests of any further name share one entry.
MAX_MODELS = 1000
OTHER_MODELS = "(other models)"
_MIXED = "mixed"


def check_price(name: str, value: Any) -> float:
    """A price: a number in [0, 1e6] dollars per 1K tokens, as a float; ValueError otherwise."""
    return check_real(name, value, 0.0, MAX_PRICE, f"a number in [0, {MAX_PRICE:g}] (dollars per 1K tokens)")


def check_compute_price(name: str, value: Any) -> float:
    """A compute price: a number in [0, 1e6] dollars per hour of server time, as a float, else ValueError."""
    return check_real(
        name, value, 0.0, MAX_PRICE, f"a number in [0, {MAX_PRICE:g}] (dollars per hour of server time)"
    )


def _check_model(argument: str, model: Any) -> str:
    if not isinstance(model, str):
        raise ValueError(f"{argument} keys must be model names (str), got {model!r}")
    return model


def check_model_prices(
    model_prices: Mapping[str, tuple[float, float]] | None,
) -> dict[str, tuple[float, float]]:
    """Per-model (prompt, completion) prices, checked; ValueError names the model and the bad price."""
    checked: dict[str, tuple[float, float]] = {}
    for model, pair in (model_prices or {}).items():
        _check_model("model_prices", model)
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(
                f"model_prices[{model!r}] must be a (prompt, completion) pair of prices, got {pair!r}"
            )
        checked[model] = (
            check_price(f"model_prices[{model!r}][0]", pair[0]),
            check_price(f"model_prices[{model!r}][1]", pair[1]),
        )
    return checked


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """How the requests of one model are priced: `pricing` is "tokens" (per 1K) or "compute" (per hour)."""

    pricing: str
    prompt_per_1k: float = 0.0
    completion_per_1k: float = 0.0
    per_hour: float = 0.0
    # Worked out once: `charge` runs for every request recorded.
    free: bool = field(init=False, repr=False, compare=False)
    _compute: bool = field(init=False, repr=False, compare=False)
    _kind: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compute = self.pricing == _COMPUTE
        free = self.per_hour == 0.0 if compute else self.prompt_per_1k == 0.0 == self.completion_per_1k
        object.__setattr__(self, "free", free)  # True: the model's requests cost nothing on purpose
        object.__setattr__(self, "_compute", compute)
        object.__setattr__(self, "_kind", _FREE if free else self.pricing)

    def charge(
        self, prompt_tokens: int, completion_tokens: int, server_ms: float | None, cached: bool
    ) -> tuple[int, str]:
        """(cost in units of 1e-12 dollars, how it was priced) of one request; see the module docstring.

        By compute the cost is `server_ms / 3,600,000 * per_hour`, and 0 when
        `server_ms` is None; by tokens the token counts times their prices.
        """
        if cached:
            kind = _CACHE
        elif server_ms is None and self._compute and not self.free:
            kind = _UNKNOWN
        else:
            kind = self._kind
        if self._compute:
            return (0 if server_ms is None else round(server_ms * self.per_hour * UNITS_PER_MS_HOUR)), kind
        dollars_per_1k = prompt_tokens * self.prompt_per_1k + completion_tokens * self.completion_per_1k
        return round(dollars_per_1k * UNITS_PER_1K), kind


class PriceBook:
    """The prices a collector applies: token and compute prices, each a default and per model.

    Reading (`price_for`, `charge`) takes no lock: every change replaces
    the table readers use in one assignment. Changes are not serialized
    here; the collector makes them under its lock.
    """

    def __init__(
        self,
        prompt_token_cost: Any,
        completion_token_cost: Any,
        model_prices: Mapping[str, tuple[float, float]] | None,
        compute_price_per_hour: Any,
        model_compute_prices: Mapping[str, float] | None,
    ) -> None:
        """Check every price (ValueError names the argument, or the model, and the range)."""
        self._tokens = (
            check_price("prompt_token_cost", prompt_token_cost),
            check_price("completion_token_cost", completion_token_cost),
        )
        self._model_tokens = check_model_prices(model_prices)
        self._compute = (
            None
            if compute_price_per_hour is None
            else check_compute_price("compute_price_per_hour", compute_price_per_hour)
        )
        self._model_compute: dict[str, float] = {}
        for model, price in (model_compute_prices or {}).items():
            _check_model("model_compute_prices", model)
            self._model_compute[model] = check_compute_price(f"model_compute_prices[{model!r}]", price)
        both = sorted(set(self._model_tokens) & set(self._model_compute))
        if both:
            raise ValueError(
                f"model {both[0]!r} is in both model_prices and model_compute_prices: a model is priced "
                "by tokens or by compute; give it in one of them"
            )
        self._resolve()

    def _resolve(self) -> None:
        """Rebuild the tables `price_for` reads (replaced whole, so readers never see half of one)."""
        if self._compute is not None:
            default = ModelPrice(semconv.PRICING_COMPUTE, per_hour=self._compute)
        else:
            default = ModelPrice(semconv.PRICING_TOKENS, *self._tokens)
        models = {m: ModelPrice(semconv.PRICING_TOKENS, *p) for m, p in self._model_tokens.items()}
        for model, per_hour in self._model_compute.items():
            models[model] = ModelPrice(semconv.PRICING_COMPUTE, per_hour=per_hour)
        self.table = (default, models)  # read whole by price_for and the collector's record_request

    def price_for(self, model: str | None) -> ModelPrice:
        """How requests of `model` are priced now (the default pricing for None or an unlisted model)."""
        default, models = self.table
        return default if model is None else models.get(model, default)

    def token_prices(self, model: str | None) -> tuple[float, float]:
        """The (prompt, completion) prices per 1K tokens given for `model`, else the default ones."""
        return self._tokens if model is None else self._model_tokens.get(model, self._tokens)

    def set_token_prices(self, prompt: Any, completion: Any, model: str | None) -> None:
        """Price `model` (the default when None) by tokens from now on; its compute price, if any, goes."""
        prices = check_price("prompt_token_cost", prompt), check_price("completion_token_cost", completion)
        if model is None:
            self._tokens = prices
        else:
            self._model_tokens = {**self._model_tokens, _check_model("model", model): prices}
            self._model_compute = {m: p for m, p in self._model_compute.items() if m != model}
        self._resolve()

    def set_compute_price(self, per_hour: Any, model: str | None) -> None:
        """Price `model` (the default when None) by server time from now on; None removes that price.

        A model's compute price replaces its token prices; removing it
        leaves the model on the defaults.
        """
        price = None if per_hour is None else check_compute_price("dollars_per_hour", per_hour)
        if model is None:
            self._compute = price
        else:
            _check_model("model", model)
            self._model_compute = {m: p for m, p in self._model_compute.items() if m != model}
            if price is not None:
                self._model_compute[model] = price
                self._model_tokens = {m: p for m, p in self._model_tokens.items() if m != model}
        self._resolve()

    def __repr__(self) -> str:
        default = self.table[0]
        if default.pricing == semconv.PRICING_COMPUTE:
            return f"${default.per_hour:g}/h of server time"
        return f"({default.prompt_per_1k!r}, {default.completion_per_1k!r}) per 1K tokens"


@dataclass(frozen=True, slots=True)
class ModelCost:
    """What the requests of one model cost since the collector started (or was reset).

    `cost_usd` is exact to 1e-12 dollars. `pricing` says how they were
    priced: one of `PRICINGS` when they all were priced one way (cache hits
    and, beside a priced request, requests of unknown cost aside), "cache"
    when all were cache hits, "mixed" when the prices changed between
    tokens, compute and free. Show "free" for `pricing == "free"`, never a
    bare $0. `by_pricing` counts the requests of each way (a dashboard can
    say how many went unpriced: `by_pricing["unknown"]`); `server_ms` sums
    the server time the requests reported.
    """

    requests: int
    cost_usd: float
    pricing: str
    by_pricing: Mapping[str, int] = field(default_factory=dict)
    server_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {
            "requests": self.requests,
            "cost_usd": self.cost_usd,
            "pricing": self.pricing,
            "by_pricing": dict(self.by_pricing),
            "server_ms": self.server_ms,
        }


class CostTally:
    """Requests, cost and pricing counts per model, for at most `MAX_MODELS` model names.

    Requests of further names are added under `OTHER_MODELS`. Not
    thread-safe: the collector calls `add` under its lock.
    """

    __slots__ = ("_models",)

    def __init__(self) -> None:
        """An empty tally."""
        # model -> [requests, cost units, server ms, then one count per entry of PRICINGS]
        self._models: dict[str | None, list[Any]] = {}

    def add(self, model: str | None, units: int, pricing: str, server_ms: float | None) -> None:
        """Count one request of `model` that cost `units` (1e-12 dollars), priced as `pricing`."""
        row = self._models.get(model)
        if row is None:
            if len(self._models) >= MAX_MODELS:
                model = OTHER_MODELS
                row = self._models.get(model)
            if row is None:
                row = self._models[model] = [0, 0, 0.0, 0, 0, 0, 0, 0]
        row[0] += 1
        row[1] += units
        if server_ms is not None:
            row[2] += server_ms
        row[_COLUMN[pricing]] += 1

    def snapshot(self) -> dict[str | None, ModelCost]:
        """Each model's `ModelCost`, in the order the models were first seen."""
        return {model: _model_cost(row) for model, row in self._models.items()}


def _model_cost(row: list[Any]) -> ModelCost:
    counts = dict(zip(PRICINGS, row[3:], strict=True))
    ways = {way for way, n in counts.items() if n and way != semconv.PRICING_CACHE}
    if len(ways) > 1:
        ways.discard(semconv.PRICING_UNKNOWN)
    if not ways:
        pricing = semconv.PRICING_CACHE
    elif len(ways) == 1:
        (pricing,) = ways
    else:
        pricing = _MIXED
    return ModelCost(row[0], row[1] / UNITS_PER_DOLLAR, pricing, counts, row[2])


class PricingMethods:
    """The pricing half of `MetricsCollector`: its prices and its cost per model.

    Mixed into the collector, which holds `_lock`, `_book` (a PriceBook) and
    `_costs` (a CostTally).
    """

    _lock: Any
    _book: PriceBook
    _costs: CostTally

    def set_prices(
        self, prompt_token_cost: float, completion_token_cost: float, model: str | None = None
    ) -> None:
        """Price `model` (the defaults when None) in dollars per 1K tokens, for requests recorded from now on.

        The model's compute price, if any, goes. ValueError for a negative,
        NaN or infinite price.
        """
        with self._lock:
            self._book.set_token_prices(prompt_token_cost, completion_token_cost, model)

    def set_compute_price(self, dollars_per_hour: float | None, model: str | None = None) -> None:
        """Price `model` (the default when None) in dollars per hour of server time, from now on.

        A model's compute price replaces its token prices; None removes the
        compute price (the model goes back to the defaults; the default goes
        back to token prices). ValueError for a negative, NaN or infinite price.
        """
        with self._lock:
            self._book.set_compute_price(dollars_per_hour, model)

    def prices_for(self, model: str | None = None) -> tuple[float, float]:
        """The (prompt, completion) prices per 1K tokens given for `model`, else the default ones."""
        return self._book.token_prices(model)

    def price_for(self, model: str | None = None) -> ModelPrice:
        """How requests of `model` are priced now: `.pricing` ("tokens" or "compute"), the prices, `.free`."""
        return self._book.price_for(model)

    def cost_for(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        model: str | None = None,
        server_ms: float | None = None,
    ) -> float:
        """The cost in dollars `record_request` would record for these numbers under `model`'s price now.

        By tokens: `(prompt * prompt_price + completion * completion_price) /
        1000`; by compute: `server_ms / 3,600,000 * dollars_per_hour` (0 when
        `server_ms` is None); rounded to 12 decimals. ValueError for a token
        count that is not an int >= 0 or a `server_ms` outside [0, 86,400,000].
        """
        prompt = check_tokens("prompt_tokens", prompt_tokens)
        completion = check_tokens("completion_tokens", completion_tokens)
        ms = None if server_ms is None else check_ms("server_ms", server_ms)
        return self._book.price_for(model).charge(prompt, completion, ms, False)[0] / UNITS_PER_DOLLAR

    def cost_by_model(self) -> dict[str | None, ModelCost]:
        """Each model's requests, cost and how it was priced (`ModelCost`), since the start or last reset.

        Keyed by model name, None for requests recorded without one, in the
        order the models were first seen; at most `MAX_MODELS` names, later
        ones counted together under `OTHER_MODELS`. Show "free" for a model
        whose `pricing` is "free": priced at zero on purpose, not unknown.
        """
        with self._lock:
            return self._costs.snapshot()
