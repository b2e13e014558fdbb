"""The argument checks of `MetricsCollector`: each returns the value in its canonical type, or raises
ValueError naming the argument, the value and the accepted range (and, for a timestamp that looks
like milliseconds, saying so).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from obs._validate import check_real

_INF = math.inf
ACCURACY_RANGE = (0.0001, 0.5)
MAX_RETENTION_S = 31 * 86400
# Keeps every sum finite and every column in range, far above any real request (prices: _pricing).
MAX_TOKENS = 10**12
# One day: no LLM request lasts longer, and a bound keeps one absurd value from collapsing the
# sketch's low bins (and with them every percentile of the real requests).
MAX_MS = 86_400_000.0
# Recorded timestamps: epoch seconds from 2000-01-01T00:00:00Z to the clock's now + 1 day. A
# timestamp in milliseconds (or 1e300) would otherwise stretch the rates, push every real request
# out of the series and give the dashboard dates it cannot hold.
MIN_TIMESTAMP = 946_684_800.0
MAX_AHEAD_S = 86_400.0
_UNITS = (("milliseconds", 1e3), ("microseconds", 1e6), ("nanoseconds", 1e9))


def check_ms(name: str, value: Any) -> float:
    """A duration in milliseconds: a finite number in [0, one day]."""
    return check_real(
        name, value, 0.0, MAX_MS, f"a finite number of milliseconds in [0, {MAX_MS:.0f}] (at most one day)"
    )


def check_flag(name: str, value: Any) -> bool:
    """A yes/no argument: True or False (the ints 1 and 0 too); anything else is a mistake."""
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if type(value).__name__ == "bool_":  # numpy's bool, without importing numpy
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")


def check_model(value: Any) -> str | None:
    """A model name: None or a str."""
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"model must be None or a model name (a str), got {value!r}")


def check_tokens(name: str, value: Any) -> int:
    """A token count: an int in [0, 10**12]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= MAX_TOKENS:
        raise ValueError(f"{name} must be an int in [0, {MAX_TOKENS}], got {value!r}")
    return int(value)


def check_timestamp(name: str, value: Any) -> float:
    """A query bound: finite epoch seconds >= 0."""
    return check_real(name, value, 0.0, _INF, "finite epoch seconds >= 0")


def check_recorded_timestamp(value: Any, now_s: float) -> float:
    """A timestamp to record: epoch seconds in [2000-01-01, now_s + 1 day], as a float.

    Raises ValueError naming `timestamp` and the range; a value that fits once
    divided by 1000 (or 1e6, 1e9) is said to look like milliseconds (or micro-,
    nanoseconds).
    """
    hi = now_s + MAX_AHEAD_S
    if not isinstance(value, bool) and isinstance(value, numbers.Real):
        try:
            stamp = float(value)
        except OverflowError:  # an int beyond any float
            stamp = _INF
        if MIN_TIMESTAMP <= stamp <= hi:
            return stamp
        hint = ""
        for unit, factor in _UNITS:
            if MIN_TIMESTAMP <= stamp / factor <= hi:
                hint = f": that looks like epoch {unit}; pass seconds ({stamp:.0f} / {factor:.0f})"
                break
    else:
        hint = ""
    raise ValueError(
        f"timestamp must be epoch seconds from 2000-01-01 ({MIN_TIMESTAMP:.0f}) to now + 1 day "
        f"({hi:.0f}), got {value!r}{hint}"
    )


def check_accuracy(name: str, value: Any) -> float:
    """A relative accuracy of the quantile sketch: a number in ACCURACY_RANGE."""
    lo, hi = ACCURACY_RANGE
    return check_real(name, value, lo, hi, f"a number in [{lo}, {hi}]")


def check_int(name: str, value: Any, lo: int, hi: int, multiple: int = 1) -> int:
    """An int (not a bool) in [lo, hi] and a multiple of `multiple`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not lo <= value <= hi
        or value % multiple
    ):
        extra = f" and a multiple of {multiple}" if multiple > 1 else ""
        raise ValueError(f"{name} must be an int in [{lo}, {hi}]{extra}, got {value!r}")
    return value
