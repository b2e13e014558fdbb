"""Checks of arguments and configuration shared by the modules that validate them.

A `check_*` function returns the value in its canonical type, or raises
ValueError naming the argument, the value and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def is_finite_number(value: object) -> bool:
    """True for an int or float that is finite; False for a bool, NaN, an infinity or anything else."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_real(name: str, value: Any, lo: float, hi: float, expected: str) -> float:
    """`value` as a float when it is a finite real number (not a bool) in [lo, hi].

    Otherwise raises ValueError: `{name} must be {expected}, got {value!r}`.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not lo <= value <= hi
        or value == math.inf
    ):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def check_probability(owner: str, argument: str, value: object) -> float:
    """Return `value` as a float in [0, 1] or raise ValueError naming `owner`, `argument` and the range."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{owner}: {argument} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner}: {argument} must be in [0, 1], got {value!r}")
    return float(value)
