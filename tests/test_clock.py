"""Tests for obs.clock: the real clock's readings and the fake clock's exact arithmetic."""

from __future__ import annotations

import math
import threading
import time

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


def test_fake_clock_is_thread_safe() -> None:
    clock = FakeClock(start_ms=0.0)

    def work() -> None:
        for _ in range(1000):
            clock.advance(1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clock.time_ms() == 8000.0
    assert clock.monotonic_ms() == 8000.0
