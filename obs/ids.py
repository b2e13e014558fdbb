"""Trace and span ids, and the W3C Trace Context `traceparent` header.

Trace ids are 16 random bytes as 32 lowercase hex characters, span ids 8 bytes
as 16; neither may be all zeros. Id generators are injectable so tests get the
same ids every run.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass
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
    """Random ids from `random.getrandbits` (as OpenTelemetry's SDK does)."""

    __slots__ = ()

    def trace_id(self) -> str:
        """Return a random, non-zero 128-bit trace id as 32 hex characters."""
        value = random.getrandbits(128)
        while value == 0:
            value = random.getrandbits(128)
        return f"{value:032x}"

    def span_id(self) -> str:
        """Return a random, non-zero 64-bit span id as 16 hex characters."""
        value = random.getrandbits(64)
        while value == 0:
            value = random.getrandbits(64)
        return f"{value:016x}"


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
