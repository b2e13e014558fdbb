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
import re
import reprlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit, urlunsplit


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


# -- URLs shown to people ------------------------------------------------------------------------

URL_MASK = "***"
# A path segment this long, of letters and digits (and - _), with both, reads as a token: the
# secret of many webhook URLs (Slack, Discord, Teams) is in the path, not the query.
_TOKEN_SEGMENT = re.compile(r"(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{16,}", re.ASCII)
_MIN_SECRET = 4  # shorter parts are not searched for in texts (a `v=2` would mask every "2")


def _split_url(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a bad port raises only when it is read)
    except ValueError:
        return None
    return parts


def redact_url(url: str) -> str:
    """`url` as it may be shown in messages, reprs and logs: its secrets replaced by `***`.

    User info and fragment are dropped, every query value and every path
    segment that looks like a token (16+ letters and digits, with both) is
    masked: `https://u:p@hooks.example/services/T0/AbC123dEf456GhI789?key=s`
    shows as `https://hooks.example/services/T0/***?key=***`. Text that does
    not parse as a URL is masked whole.
    """
    parts = _split_url(url) if isinstance(url, str) else None
    if parts is None or not parts.scheme or not parts.hostname:
        return URL_MASK
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    path = "/".join(URL_MASK if _TOKEN_SEGMENT.fullmatch(s) else s for s in parts.path.split("/"))
    query = "&".join(f"{name}={URL_MASK}" for name, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def url_secrets(url: str) -> list[str]:
    """The secrets `redact_url` hides, to be removed from texts that may quote the URL (longest first)."""
    parts = _split_url(url) if isinstance(url, str) else None
    if parts is None:
        return []
    found = [parts.username or "", parts.password or "", parts.fragment]
    found += [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
    found += [s for s in parts.path.split("/") if _TOKEN_SEGMENT.fullmatch(s)]
    found += [quote(s, safe="") for s in found]  # as they appear inside the URL itself
    return sorted({s for s in found if len(s) >= _MIN_SECRET}, key=len, reverse=True)


def redact_text(text: str, url: str) -> str:
    """`text` with `url` shown as `redact_url(url)` and each of its secrets replaced by `***`."""
    text = text.replace(url, redact_url(url)) if url else text
    for secret in url_secrets(url):
        text = text.replace(secret, URL_MASK)
    return text
