"""Tests for obs.clock: the real clock's readings and the fake clock's exact arithmetic."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Iterator
from fractions import Fraction

import pytest

from obs.clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock


def test_system_clock_reads_epoch_milliseconds() -> None:
    before = time.time() * 1000
    reading = SYSTEM_CLOCK.time_ms()
    after = time.time() * 1000
    # A reading taken between two others, in the same unit (not a duration assertion).
    assert before - 1 <= reading <= after + 1
    assert isinstance(reading, float)


def test_system_clock_monotonic_never_goes_back() -> None:
    readings = [SYSTEM_CLOCK.monotonic_ms() for _ in range(1000)]
    assert readings == sorted(readings)


def test_clocks_satisfy_the_protocol() -> None:
    assert isinstance(SystemClock(), Clock)
    assert isinstance(FakeClock(), Clock)
    assert not isinstance(object(), Clock)
    assert repr(SYSTEM_CLOCK) == "SystemClock()"


def test_fake_clock_starts_where_told() -> None:
    clock = FakeClock(start_ms=5_000.0)
    assert clock.time_ms() == 5_000.0
    assert clock.monotonic_ms() == 0.0
    assert clock.time_s() == 5.0
    assert FakeClock().time_ms() == 1_700_000_000_000.0


def test_fake_clock_advances_both_readings_together() -> None:
    clock = FakeClock(start_ms=1_000.0)
    clock.advance(250)
    clock.advance(0.5)
    assert clock.time_ms() == 1_250.5
    assert clock.monotonic_ms() == 250.5
    assert clock.time_s() == 1.2505
    assert "1250.5" in repr(clock)


@pytest.mark.parametrize("bad", [-1, -0.001, math.nan])
def test_fake_clock_refuses_to_go_back(bad: float) -> None:
    clock = FakeClock(start_ms=0.0)
    with pytest.raises(ValueError, match="ms must be >= 0"):
        clock.advance(bad)
    assert clock.time_ms() == 0.0


THREADS = 16
ADVANCES = 5_000


@pytest.fixture
def eager_thread_switches() -> Iterator[None]:
    """Make the interpreter switch threads every microsecond, so an unguarded `+=` gets interrupted."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


@pytest.mark.parametrize("step", [1, Fraction(1, 2)], ids=["float", "fraction"])
def test_fake_clock_is_thread_safe(eager_thread_switches: None, step: float) -> None:
    # Every thread waits at the barrier, then all advance at once: without the clock's lock, two
    # threads read the same reading and one addition is lost, so the totals come out short. On
    # CPython with the GIL, `self._wall += 1` is never interrupted (no switch point inside it), so
    # only a step whose addition runs Python code (Fraction.__radd__) shows a missing lock there;
    # the float step shows it on a free-threaded build.
    clock = FakeClock(start_ms=0.0)
    barrier = threading.Barrier(THREADS)

    def work() -> None:
        barrier.wait()
        for _ in range(ADVANCES):
            clock.advance(step)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = float(THREADS * ADVANCES * step)
    assert (clock.time_ms(), clock.monotonic_ms()) == (total, total)
