"""The proxy benchmark's verdicts rest on `median_interval` (it must hold the median as often as it says)
and on `_rounds`, which interleaves the sides compared."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from benchmarks import bench_proxy
from benchmarks.bench_proxy import median_interval


def _coverage(n: int, low_rank: int, high_rank: int) -> float:
    """Odds that the median of a continuous distribution lies between the low_rank-th and high_rank-th
    smallest of n draws (ranks from 1): at least low_rank draws below it and at least n-high_rank+1 above."""
    return sum(math.comb(n, below) for below in range(low_rank, high_rank)) / 2**n


def test_thirty_values_give_the_tenth_and_twenty_first() -> None:
    # The textbook 95% interval for the median of 30 values: ranks 10 and 21 (95.7%).
    assert median_interval([float(v) for v in range(1, 31)]) == (10.0, 21.0)


@pytest.mark.parametrize("n", [6, 7, 10, 11, 30, 31, 47, 61, 100, 115])
def test_the_interval_is_the_narrowest_that_holds_the_median_95_percent_of_the_time(n: int) -> None:
    low, high = median_interval([float(v) for v in range(1, n + 1)])
    low_rank, high_rank = int(low), int(high)
    assert low_rank - 1 == n - high_rank  # symmetric
    if low_rank == 1:  # the whole range: nothing narrower reaches 95%
        assert _coverage(n, 2, n - 1) < 0.95
        return
    assert _coverage(n, low_rank, high_rank) >= 0.95
    assert _coverage(n, low_rank + 1, high_rank - 1) < 0.95


def test_drawn_samples_have_their_median_inside_about_95_percent_of_the_time() -> None:
    draw = random.Random(7)
    trials, inside = 4000, 0
    for _ in range(trials):
        low, high = median_interval([draw.random() for _ in range(30)])
        inside += low <= 0.5 <= high  # the uniform distribution's median
    assert 0.94 <= inside / trials <= 0.975


def test_rounds_start_each_side_first_in_turn_and_stop_once_decided() -> None:
    """Each round starts one side later than the round before (no side always runs on a warmer server),
    every side runs once a round, and the rounds stop at the first look that finds a verdict."""
    calls: list[str] = []

    def side(name: str) -> Callable[[], str]:
        def run() -> str:
            calls.append(name)
            return name
        return run

    looks: list[int] = []

    def decided(direct: list[str], proxied: list[str]) -> bool:
        looks.append(len(direct))
        return len(direct) >= bench_proxy.MIN_ROUNDS + bench_proxy.BATCH

    results = bench_proxy._rounds(side("d"), side("p"), 3600.0, decided, side("h"))
    rounds = bench_proxy.MIN_ROUNDS + bench_proxy.BATCH
    assert [len(r) for r in results] == [rounds] * 3 and [r[0] for r in results] == ["d", "p", "h"]
    assert calls[:9] == ["d", "p", "h", "p", "h", "d", "h", "d", "p"]
    assert looks == [bench_proxy.MIN_ROUNDS, rounds]
    calls.clear()
    two = bench_proxy._rounds(side("d"), side("p"), 3600.0, decided)
    assert len(two) == 2 and calls[:4] == ["d", "p", "p", "d"]  # two sides: the order flips each round


def test_a_comparison_is_settled_by_a_verdict_or_a_spread_too_wide_for_one_never_by_a_straddle() -> None:
    """More rounds are run only while they can still bring a verdict (`bench_proxy._settled`)."""
    draw = random.Random(3)
    clear = [0.5 + draw.uniform(-0.2, 0.2) for _ in range(40)]  # well under the 2 ms target: PASS
    assert bench_proxy._added_verdict(clear, 20.0)[0] == "PASS" and bench_proxy._settled(clear, 20.0)
    straddling = [2.0 + draw.uniform(-1.0, 1.0) for _ in range(40)]  # around the target, spread 1 ms
    assert bench_proxy._added_verdict(straddling, 20.0)[0] is None
    assert not bench_proxy._settled(straddling, 20.0)
    wide = [draw.uniform(-20.0, 20.0) for _ in range(40)]  # quartiles 20 ms apart: over 4 x 2 ms
    assert bench_proxy._spread(wide) > 8.0 and bench_proxy._added_verdict(wide, 20.0)[0] is None
    assert bench_proxy._settled(wide, 20.0)
    assert bench_proxy._settled([math.nan, *clear[1:]], 20.0)  # a server without timings: nothing to wait for
