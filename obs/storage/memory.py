"""The in-memory trace store: finished traces kept in a bounded, ordered dict.

Beyond `max_traces` the oldest insertion is evicted. Thread-safe. It has the
shape of `obs.storage.base.TraceStoreProtocol`, as the SQLite store does.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from obs.storage.base import (
    StoreStats,
    TracePredicate,
    _check_max_traces,
    _check_n,
    _check_threshold,
    _check_trace,
    _is_slow,
)
from obs.trace.traces import Trace

__all__ = ["TraceStore"]


class TraceStore:
    """Finished traces in memory, bounded, in insertion order. Thread-safe.

    >>> from obs import FakeClock, SequentialIdGenerator, create_trace, end_trace
    >>> clock, ids = FakeClock(), SequentialIdGenerator()
    >>> store = TraceStore(max_traces=2)
    >>> for name in ("a", "b", "c"):
    ...     store.add(end_trace(create_trace(name, clock=clock, id_generator=ids), clock=clock))
    >>> [t.name for t in store.get_recent()]
    ['c', 'b']
    >>> store.stats().evicted
    1
    """

    def __init__(self, max_traces: int = 1000) -> None:
        """Keep at most `max_traces` traces (an int >= 1); the oldest go first."""
        self._max = _check_max_traces("TraceStore", max_traces, 1000)
        self._lock = threading.Lock()
        self._traces: OrderedDict[str, Trace] = OrderedDict()
        self._added = 0
        self._replaced = 0
        self._evicted = 0

    @property
    def max_traces(self) -> int:
        """The bound this store was made with."""
        return self._max

    @property
    def evicted(self) -> int:
        """How many traces were dropped because the store was full."""
        with self._lock:
            return self._evicted

    def add(self, trace: Trace) -> None:
        """Store `trace` as the newest; replace a stored trace with the same id; evict the oldest.

        Raises TypeError if `trace` is not a Trace.
        """
        _check_trace("TraceStore", trace)
        with self._lock:
            if trace.id in self._traces:
                del self._traces[trace.id]
                self._replaced += 1
            self._traces[trace.id] = trace
            self._added += 1
            while len(self._traces) > self._max:
                self._traces.popitem(last=False)
                self._evicted += 1

    def get(self, trace_id: str) -> Trace | None:
        """The trace with id `trace_id`, or None if it is not stored."""
        with self._lock:
            return self._traces.get(trace_id)

    def __contains__(self, trace_id: object) -> bool:
        """True if a trace with this id is stored."""
        with self._lock:
            return trace_id in self._traces

    def all(self) -> list[Trace]:
        """Every stored trace, oldest first (a snapshot: later adds do not change it)."""
        with self._lock:
            return list(self._traces.values())

    def get_recent(self, n: int | None = None) -> list[Trace]:
        """The `n` most recently added traces (all if None), newest first.

        Raises ValueError if `n` is not None or an int >= 0.
        """
        n = _check_n(n)
        with self._lock:
            newest = reversed(self._traces.values())
            if n is None:
                return list(newest)
            out: list[Trace] = []
            for trace in newest:
                if len(out) >= n:
                    break
                out.append(trace)
            return out

    def get_errors(self) -> list[Trace]:
        """Traces whose status is "error", oldest first."""
        return [t for t in self.all() if t.status == "error"]

    def get_slow(self, threshold_ms: float) -> list[Trace]:
        """Ended traces whose duration is at least `threshold_ms`, oldest first.

        Running traces (no duration yet) are never slow. Raises ValueError if
        `threshold_ms` is negative or not a finite number.
        """
        threshold = _check_threshold(threshold_ms)
        return [t for t in self.all() if _is_slow(t, threshold)]

    def query(self, predicate: TracePredicate) -> list[Trace]:
        """Traces for which `predicate(trace)` is true, oldest first.

        The predicate runs outside the store's lock, so it may itself read the store.
        """
        return [t for t in self.all() if predicate(t)]

    def __len__(self) -> int:
        """How many traces are stored."""
        with self._lock:
            return len(self._traces)

    def clear(self) -> None:
        """Remove every stored trace (counters are kept)."""
        with self._lock:
            self._traces.clear()

    def stats(self) -> StoreStats:
        """Size, bound and counters of this store, read at one instant."""
        with self._lock:
            return StoreStats(len(self._traces), self._max, self._added, self._replaced, self._evicted)

    def __repr__(self) -> str:
        return f"TraceStore(max_traces={self._max}, size={len(self)})"
