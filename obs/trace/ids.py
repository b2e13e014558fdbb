"""Trace and span ids, and the W3C Trace Context `traceparent` header.

Trace ids are 16 random bytes as 32 lowercase hex characters, span ids 8 bytes
as 16; neither may be all zeros. Id generators are injectable so tests get the
same ids every run.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Protocol, runtime_checkable

__all__ = [
    "IdGenerator",
    "RandomIdGenerator",
    "SequentialIdGenerator",
    "TraceParent",
    "format_traceparent",
    "is_valid_span_id",
    "is_valid_trace_id",
    "parse_traceparent",
]

_TRACE_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_SPAN_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_TRACEPARENT_RE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


@runtime_checkable
class IdGenerator(Protocol):
    """Makes trace and span ids."""

    def trace_id(self) -> str:
        """A new trace id: 32 lowercase hex characters, not all zeros."""
        ...

    def span_id(self) -> str:
        """A new span id: 16 lowercase hex characters, not all zeros."""
        ...


class RandomIdGenerator:
    """Random ids from `random.getrandbits` (as OpenTelemetry's SDK does).

    `trace_id()` gives 128 random bits as 32 hex characters, `span_id()` 64 bits
    as 16; an all-zero draw (invalid, and a 2**-64 chance) is skipped.
    """

    __slots__ = ("span_id", "trace_id")

    def __init__(self) -> None:
        """Draw from the `random` module's generator (reseeded in forked children by `random`)."""
        # Each id is one `next` on a chain of C iterators (draw bits, skip zero, format as hex):
        # half the cost of a Python method, and ids are drawn for every span the tracer starts.
        self.trace_id: Callable[[], str] = partial(next, _hex_ids(128))
        self.span_id: Callable[[], str] = partial(next, _hex_ids(64))

    def __repr__(self) -> str:
        return "RandomIdGenerator()"


def _hex_ids(bits: int) -> Iterator[str]:
    """An endless iterator of random, non-zero `bits`-bit ids as fixed-width lowercase hex."""
    draws = iter(partial(random.getrandbits, bits), None)
    return map(f"%0{bits // 4}x".__mod__, filter(None, draws))


class SequentialIdGenerator:
    """Deterministic ids counting up from 1: trace `000..01`, span `000..01`.

    A test double shipped for users' tests as well as ours. Thread-safe.
    """

    def __init__(self, start: int = 1) -> None:
        """Start both counters at `start` (must be >= 1, since zero ids are invalid)."""
        if start < 1:
            raise ValueError(f"SequentialIdGenerator: start must be >= 1, got {start}")
        self._lock = threading.Lock()
        self._next_trace = start
        self._next_span = start

    def trace_id(self) -> str:
        """Return the next trace id in sequence."""
        with self._lock:
            value, self._next_trace = self._next_trace, self._next_trace + 1
        return f"{value:032x}"

    def span_id(self) -> str:
        """Return the next span id in sequence."""
        with self._lock:
            value, self._next_span = self._next_span, self._next_span + 1
        return f"{value:016x}"


def is_valid_trace_id(value: object) -> bool:
    """True if `value` is 32 lowercase hex characters and not all zeros."""
    return isinstance(value, str) and bool(_TRACE_ID_RE.match(value)) and value != "0" * 32


def is_valid_span_id(value: object) -> bool:
    """True if `value` is 16 lowercase hex characters and not all zeros."""
    return isinstance(value, str) and bool(_SPAN_ID_RE.match(value)) and value != "0" * 16


@dataclass(frozen=True, slots=True)
class TraceParent:
    """The parts of a W3C `traceparent` header."""

    trace_id: str
    span_id: str
    sampled: bool = True
    version: str = "00"


def format_traceparent(trace_id: str, span_id: str, sampled: bool = True) -> str:
    """Return `00-<trace-id>-<span-id>-<flags>`; flags `01` when sampled.

    Raises ValueError if either id is malformed or all zeros.
    """
    if not is_valid_trace_id(trace_id):
        raise ValueError(
            f"traceparent: trace_id must be 32 lowercase hex characters, not all zeros; "
            f"got {trace_id!r}"
        )
    if not is_valid_span_id(span_id):
        raise ValueError(
            f"traceparent: span_id must be 16 lowercase hex characters, not all zeros; "
            f"got {span_id!r}"
        )
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def parse_traceparent(header: str) -> TraceParent:
    """Parse a `traceparent` header value into its parts.

    Follows W3C Trace Context: version `ff` is invalid; version `00` must have
    exactly four fields; higher versions may carry more after the flags.
    Raises ValueError naming what is wrong.
    """
    if not isinstance(header, str):
        raise ValueError(f"traceparent must be a string, got {type(header).__name__}")
    match = _TRACEPARENT_RE.match(header.strip())
    if match is None:
        raise ValueError(
            "traceparent must look like 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, "
            f"got {header!r}"
        )
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff":
        raise ValueError("traceparent version ff is invalid")
    if version == "00" and rest:
        raise ValueError(f"traceparent version 00 has exactly four fields, got {header!r}")
    if not is_valid_trace_id(trace_id):
        raise ValueError("traceparent trace id is all zeros")
    if not is_valid_span_id(span_id):
        raise ValueError("traceparent span id is all zeros")
    return TraceParent(trace_id, span_id, bool(int(flags, 16) & 1), version)
