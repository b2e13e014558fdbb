"""Prices per 1,000 tokens and the exact cost of a request, for the MetricsCollector.

A price is dollars per 1,000 tokens, from 0 to 1e6. A cost is kept as an
int of 1e-12 dollars (`UNITS_PER_DOLLAR` units to the dollar), so the sums
of many costs stay exact where sums of floats drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from obs._validate import check_real

# Far above any real price, and low enough that every sum of costs stays finite.
MAX_PRICE = 1e6
UNITS_PER_DOLLAR = 1e12
# Units of a token at a price of one dollar per 1,000 tokens.
UNITS_PER_1K = 1e9


def check_price(name: str, value: Any) -> float:
    """A price: a number in [0, 1e6] dollars per 1K tokens, as a float; ValueError otherwise."""
    return check_real(name, value, 0.0, MAX_PRICE, f"a number in [0, {MAX_PRICE:g}] (dollars per 1K tokens)")


def check_model_prices(
    model_prices: Mapping[str, tuple[float, float]] | None,
) -> dict[str, tuple[float, float]]:
    """Per-model (prompt, completion) prices, checked; ValueError names the model and the bad price."""
    checked: dict[str, tuple[float, float]] = {}
    for model, pair in (model_prices or {}).items():
        if not isinstance(model, str):
            raise ValueError(f"model_prices keys must be model names (str), got {model!r}")
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(
                f"model_prices[{model!r}] must be a (prompt, completion) pair of prices, got {pair!r}"
            )
        checked[model] = (
            check_price(f"model_prices[{model!r}][0]", pair[0]),
            check_price(f"model_prices[{model!r}][1]", pair[1]),
        )
    return checked


def cost_units(prompt_tokens: int, completion_tokens: int, prices: tuple[float, float]) -> int:
    """The cost in units of 1e-12 dollars of these token counts at (prompt, completion) `prices`."""
    return round((prompt_tokens * prices[0] + completion_tokens * prices[1]) * UNITS_PER_1K)
