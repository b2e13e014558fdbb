"""Checks of arguments, configuration and values shared by the modules that take them.

A `check_*` function returns the value in its canonical type, or raises
ValueError naming the argument, the value and what is allowed. `json_safe`
turns any value into one `json.dumps` always encodes (telemetry must store
what it is given rather than raise), and `redact_url` hides the secrets a
configured URL may carry before it is shown anywhere.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Mapping
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


# -- values on their way to JSON ----------------------------------------------------------------

JSON_MAX_DEPTH = 64
# Python refuses to turn an int of more than 4300 digits into text (int_max_str_digits); well below it.
_MAX_INT_DIGITS = 4000
_BIG_INT = 10**_MAX_INT_DIGITS
_LOG10_2 = math.log10(2)
_NON_FINITE_TEXT = {math.inf: "Infinity", -math.inf: "-Infinity"}


def placeholder(reason: str) -> str:
    """The marked text that stands in for a value that could not be kept: `[obs replaced a value: reason]`."""
    return f"[obs replaced a value: {reason}]"


def short_repr(value: object, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters; safe for values nested deeply, huge or with a broken repr."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = shortener.maxlong = limit
    try:
        text = shortener.repr(value)
    except Exception:  # a __repr__ that raises must not break the report about it
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _JsonSafe:
    """One walk of `json_safe`: the replacements it made, in order."""

    def __init__(self, max_depth: int, finite: bool) -> None:
        self.max_depth = max_depth
        self.finite = finite
        self.reasons: list[str] = []
        self.path: set[int] = set()  # ids of the containers being walked, to find a value inside itself

    def replace(self, reason: str) -> str:
        self.reasons.append(reason)
        return placeholder(reason)

    def key(self, key: object) -> object:
        kind = type(key)
        if kind is str or kind is bool or key is None:
            return key
        if kind is int or kind is float:
            return self.value(key, 0)  # a huge int or, with `finite`, a NaN key becomes text
        if isinstance(key, str):
            return str.__str__(key)
        try:
            return str(key)  # any other key becomes its text, as json's default=str does for values
        except Exception as exc:
            return self.replace(f"a {kind.__name__} key whose str() raised {type(exc).__name__}")

    def value(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str or kind is bool or value is None:
            return value
        if kind is float:
            if self.finite and not math.isfinite(value):
                return _NON_FINITE_TEXT.get(value, "NaN")
            return value
        if kind is int:
            if -_BIG_INT < value < _BIG_INT:
                return value
            size = abs(value)
            digits = math.floor(size.bit_length() * _LOG10_2) + 1
            if size < 10 ** (digits - 1):  # the estimate is at most one too high
                digits -= 1
            return self.replace(f"an int of {digits} digits")
        if isinstance(value, Mapping | list | tuple):
            return self.container(value, depth)
        if isinstance(value, str):
            return str.__str__(value)
        if isinstance(value, float | int):  # subclasses (numpy's float64, IntEnum): their plain value
            return self.value(float(value) if isinstance(value, float) else int(value), depth)
        try:
            return str(value)
        except Exception as exc:  # json's default=str would have raised it
            return self.replace(f"a {type(value).__name__} whose str() raised {type(exc).__name__}")

    def container(self, value: Mapping[Any, Any] | list[Any] | tuple[Any, ...], depth: int) -> Any:
        if depth >= self.max_depth:
            return self.replace(f"nested deeper than {self.max_depth} levels")
        marker = id(value)
        if marker in self.path:
            return self.replace("a value that contains itself")
        self.path.add(marker)
        try:
            if isinstance(value, Mapping):
                out_map: dict[Any, Any] = {}
                changed = type(value) is not dict
                for key, item in value.items():
                    clean_key = self.key(key)
                    clean = self.value(item, depth + 1)
                    changed = changed or clean_key is not key or clean is not item
                    out_map[clean_key] = clean
                return out_map if changed else value
            out_list = [self.value(item, depth + 1) for item in value]
            if type(value) is list and all(a is b for a, b in zip(out_list, value, strict=True)):
                return value
            return out_list
        finally:
            self.path.discard(marker)


def json_safe(value: Any, *, max_depth: int = JSON_MAX_DEPTH, finite: bool = False) -> tuple[Any, list[str]]:
    """`value` in a form `json.dumps` always encodes, and the replacements that took.

    Returns `value` itself when nothing needs to change. Otherwise a copy in
    which mappings are dicts (keys other than str, int, float, bool or None
    become their text), tuples are lists, and any other object is its `str()`,
    as `json.dumps(default=str)` would write it. A container nested deeper than
    `max_depth` levels or found inside itself, an int of more than 4000 digits
    and an object whose `str()` raises become a `placeholder(...)` text, each
    named in the returned list. With `finite`, NaN and the infinities become
    the texts "NaN", "Infinity" and "-Infinity" (as OTLP/JSON writes them), so
    the JSON is valid for any reader; that is a conversion, not a replacement,
    and is not listed. Strings are kept as they are, lone surrogates included
    (`json.dumps` escapes them). Never raises.
    """
    walk = _JsonSafe(max_depth, finite)
    try:
        return walk.value(value, 0), walk.reasons
    except Exception as exc:  # e.g. a mapping whose items() raises
        reason = f"a {type(value).__name__} that could not be read ({type(exc).__name__})"
        return walk.replace(reason), walk.reasons
