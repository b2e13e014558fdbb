"""The shape every trace store has, and the argument checks the stores share.

`TraceStoreProtocol` is what the tracer, the dashboard and the tests rely on:
`obs.storage.memory.TraceStore` and `obs.storage.sqlite.SqliteTraceStore`
both satisfy it. Order is insertion order. Adding a trace whose id is already
stored replaces the old one and counts as a new insertion (it becomes the
newest), so a trace that is updated late is not the first to be evicted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from obs.trace.traces import Trace

__all__ = ["StoreStats", "TracePredicate", "TraceStoreProtocol"]

TracePredicate = Callable[[Trace], bool]


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters of a store: how many traces it holds and what happened to the others.

    `added` counts every `add` call that stored a trace (replacements included),
    `replaced` those that replaced a trace with the same id, `evicted` traces
    dropped because the store was full, and `write_errors` adds that failed to
    reach storage. A persistent store also counts the traces it `sanitized`
    (stored with values it could not hold replaced by marked placeholders) and
    the rows of its file it found `unreadable` (skipped by every read); the
    in-memory store keeps the trace objects themselves, so those stay 0.
    """

    size: int
    max_traces: int
    added: int
    replaced: int
    evicted: int
    write_errors: int = 0
    sanitized: int = 0
    unreadable: int = 0


def _check_max_traces(owner: str, max_traces: object, default: int) -> int:
    if isinstance(max_traces, bool) or not isinstance(max_traces, int) or max_traces < 1:
        raise ValueError(
            f"{owner}: max_traces must be an int >= 1 (for example {default}), got {max_traces!r}"
        )
    return max_traces


def _check_trace(owner: str, trace: object) -> Trace:
    if not isinstance(trace, Trace):
        raise TypeError(f"{owner}.add: expected a Trace, got {type(trace).__name__}")
    return trace


def _check_threshold(threshold_ms: object) -> float:
    if (
        isinstance(threshold_ms, bool)
        or not isinstance(threshold_ms, int | float)
        or not math.isfinite(threshold_ms)
        or threshold_ms < 0
    ):
        raise ValueError(f"get_slow: threshold_ms must be a finite number >= 0, got {threshold_ms!r}")
    return float(threshold_ms)


def _check_n(n: object) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"get_recent: n must be None or an int >= 0, got {n!r}")
    return n


def _is_slow(trace: Trace, threshold_ms: float) -> bool:
    return trace.duration is not None and trace.duration >= threshold_ms


@runtime_checkable
class TraceStoreProtocol(Protocol):
    """What every trace store offers: add, look up, query, count, clear, and its counters."""

    @property
    def max_traces(self) -> int:
        """The most traces the store keeps; the oldest go first beyond it."""
        ...

    def add(self, trace: Trace) -> None:
        """Store `trace` as the newest, replacing one with the same id and evicting beyond the bound."""
        ...

    def get(self, trace_id: str) -> Trace | None:
        """The trace with id `trace_id`, or None."""
        ...

    def __contains__(self, trace_id: object) -> bool:
        """True if a trace with this id is stored."""
        ...

    def all(self) -> list[Trace]:
        """Every stored trace, oldest first."""
        ...

    def get_recent(self, n: int | None = None) -> list[Trace]:
        """The `n` newest traces (all if None), newest first."""
        ...

    def get_errors(self) -> list[Trace]:
        """Traces whose status is "error", oldest first."""
        ...

    def get_slow(self, threshold_ms: float) -> list[Trace]:
        """Ended traces at least `threshold_ms` long, oldest first."""
        ...

    def query(self, predicate: TracePredicate) -> list[Trace]:
        """Traces for which `predicate(trace)` is true, oldest first."""
        ...

    def __len__(self) -> int:
        """How many traces are stored."""
        ...

    def clear(self) -> None:
        """Remove every stored trace."""
        ...

    def stats(self) -> StoreStats:
        """Size, bound and counters, read at one instant."""
        ...
