"""Clocks: where obs reads the time, so tests can inject their own.

A clock gives two readings: wall time in epoch milliseconds (for timestamps a
person reads and exporters send) and a monotonic reading in milliseconds (for
durations, which must never go backwards when the wall clock is adjusted).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Anything that tells the time in milliseconds."""

    def time_ms(self) -> float:
        """Wall-clock time as epoch milliseconds."""
        ...

    def monotonic_ms(self) -> float:
        """A monotonic reading in milliseconds, only meaningful as a difference."""
        ...


class SystemClock:
    """The real clock: `time.time_ns` and `time.perf_counter_ns`."""

    __slots__ = ()

    def time_ms(self) -> float:
        """Return the wall-clock time in epoch milliseconds."""
        return time.time_ns() / 1e6

    def monotonic_ms(self) -> float:
        """Return a monotonic reading in milliseconds."""
        return time.perf_counter_ns() / 1e6

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock that moves only when told to: exact times for tests.

    Both readings advance together, so a duration measured on the monotonic
    reading equals the difference of wall times. Thread-safe.
    """

    def __init__(self, start_ms: float = 1_700_000_000_000.0) -> None:
        """Start the clock at `start_ms` epoch milliseconds (monotonic starts at 0)."""
        self._lock = threading.Lock()
        self._wall = float(start_ms)
        self._mono = 0.0

    def time_ms(self) -> float:
        """Return the current fake wall time in epoch milliseconds."""
        with self._lock:
            return self._wall

    def monotonic_ms(self) -> float:
        """Return the current fake monotonic reading in milliseconds."""
        with self._lock:
            return self._mono

    def time_s(self) -> float:
        """Return the current fake wall time in epoch seconds."""
        with self._lock:
            return self._wall / 1000.0

    def advance(self, ms: float) -> None:
        """Move both readings forward by `ms` milliseconds (must be >= 0)."""
        if not ms >= 0:
            raise ValueError(f"FakeClock.advance: ms must be >= 0, got {ms!r}")
        with self._lock:
            self._wall += ms
            self._mono += ms

    def __repr__(self) -> str:
        return f"FakeClock(time_ms={self._wall!r})"
