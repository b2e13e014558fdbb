"""Tests for obs.metrics.quantiles: the rank convention, the relative error bound, merging, bounded bins."""

from __future__ import annotations

import math
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obs.metrics.quantiles import LogMapping, QuantileSketch, add_to_bins, exact_quantile, merge_into_bins

QS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)

positive = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)
value_lists = st.lists(st.one_of(positive, st.just(0.0)), min_size=1, max_size=300)


def _within(estimate: float, exact: float, accuracy: float) -> bool:
    return abs(estimate - exact) <= accuracy * exact


# -- the rank convention -------------------------------------------------------------------------


def test_exact_quantile_takes_the_nearest_rank() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert exact_quantile(values, 0.0) == 1.0
    assert exact_quantile(values, 0.25) == 1.0  # 1-based rank ceil(0.25 * 4) = 1
    assert exact_quantile(values, 0.5) == 2.0  # rank ceil(2.0) = 2
    assert exact_quantile(values, 0.51) == 3.0  # rank ceil(2.04) = 3
    assert exact_quantile(values, 0.99) == 4.0  # rank ceil(3.96) = 4
    assert exact_quantile(values, 1.0) == 4.0


def test_high_percentiles_of_two_values_are_the_larger() -> None:
    assert exact_quantile([553.0, 1237.0], 0.95) == 1237.0
    assert exact_quantile([553.0, 1237.0], 0.5) == 553.0


def test_rank_is_not_pushed_up_by_float_rounding() -> None:
    values = [float(v) for v in range(1, 101)]
    assert 0.07 * 100 > 7  # 7.000000000000001
    assert exact_quantile(values, 0.07) == 7.0


def test_exact_quantile_of_nothing_is_zero_and_q_is_checked() -> None:
    assert exact_quantile([], 0.5) == 0.0
    with pytest.raises(ValueError, match=r"q must be in \[0, 1\]"):
        exact_quantile([1.0], 1.5)


# -- the mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, 0.0, 1.0, -0.1, math.nan, math.inf, True, "0.01", None])
def test_mapping_refuses_bad_accuracy(bad: object) -> None:
    with pytest.raises(ValueError, match="relative_accuracy"):
        LogMapping(bad)  # type: ignore[arg-type]


@given(positive.filter(lambda x: x > 0))
def test_mapping_reads_a_bin_back_within_the_accuracy(x: float) -> None:
    mapping = LogMapping(0.01)
    assert _within(mapping.value(mapping.index(x)), x, 0.01)


@given(positive.filter(lambda x: x > 0), st.integers(min_value=1, max_value=8))
def test_coarsened_mapping_bins_are_unions_of_fine_bins(x: float, factor: int) -> None:
    fine = LogMapping(0.01)
    coarse = fine.coarsened(factor)
    coarse_index = -(-fine.index(x) // factor)
    assert _within(coarse.value(coarse_index), x, coarse.relative_accuracy)


def test_coarsened_accuracy_is_stated() -> None:
    coarse = LogMapping(0.01).coarsened(2)
    assert coarse.relative_accuracy == pytest.approx(2 * 0.01 / (1 + 0.01**2), rel=1e-12)
    assert coarse.factor == 2
    assert coarse == LogMapping(0.01).coarsened(2)
    assert coarse != LogMapping(0.01)
    with pytest.raises(ValueError, match="factor"):
        LogMapping(0.01).coarsened(0)


# -- the error bound (property tests) ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(value_lists)
def test_every_quantile_is_within_one_percent_of_exact(values: list[float]) -> None:
    sketch = QuantileSketch()
    sketch.add_all(values)
    for q, estimate in zip(QS, sketch.quantiles(QS), strict=True):
        exact = exact_quantile(values, q)
        assert _within(estimate, exact, 0.01), (q, estimate, exact)


@settings(max_examples=150, deadline=None)
@given(value_lists, st.floats(min_value=0.0, max_value=1.0), st.sampled_from([0.001, 0.005, 0.02, 0.1]))
def test_any_q_and_accuracy_keep_the_bound(values: list[float], q: float, accuracy: float) -> None:
    # The bound holds while the values fit in max_bins bins: give it enough for 1e-6 .. 1e9.
    mapping = LogMapping(accuracy)
    sketch = QuantileSketch(max_bins=mapping.index(1e9) - mapping.index(1e-6) + 1, mapping=mapping)
    sketch.add_all(values)
    assert _within(sketch.quantile(q), exact_quantile(values, q), accuracy)


@settings(max_examples=150, deadline=None)
@given(value_lists, value_lists)
def test_merge_equals_sketching_the_concatenation(a: list[float], b: list[float]) -> None:
    left, right, both = QuantileSketch(), QuantileSketch(), QuantileSketch()
    left.add_all(a)
    right.add_all(b)
    both.add_all(a + b)
    left.merge(right)
    assert left.quantiles(QS) == both.quantiles(QS)
    assert (left.count, left.min, left.max) == (both.count, both.min, both.max)
    assert left.sum == pytest.approx(both.sum)


@settings(max_examples=100, deadline=None)
@given(st.lists(positive.filter(lambda x: x > 0), min_size=1, max_size=200))
def test_add_indexed_is_add_with_a_precomputed_index(values: list[float]) -> None:
    plain, indexed = QuantileSketch(), QuantileSketch()
    for value in values:
        plain.add(value)
        indexed.add_indexed(value, indexed.mapping.index(value))
    assert plain.quantiles(QS) == indexed.quantiles(QS)
    assert (plain.count, plain.sum, plain.min, plain.max) == (
        indexed.count,
        indexed.sum,
        indexed.min,
        indexed.max,
    )


# -- edge cases ----------------------------------------------------------------------------------


def test_empty_sketch_answers_zero() -> None:
    sketch = QuantileSketch()
    assert sketch.quantiles(QS) == [0.0] * len(QS)
    assert (sketch.count, len(sketch), sketch.sum, sketch.min, sketch.max) == (0, 0, 0.0, 0.0, 0.0)


def test_one_value_is_every_quantile_exactly() -> None:
    sketch = QuantileSketch()
    sketch.add(123.456)
    assert sketch.quantiles(QS) == [123.456] * len(QS)


def test_many_equal_values_are_exact() -> None:
    sketch = QuantileSketch()
    sketch.add(0.3, count=1000)
    assert sketch.quantiles(QS) == [0.3] * len(QS)
    assert sketch.count == 1000
    assert sketch.sum == pytest.approx(300.0)


def test_zeros_come_first_and_read_back_as_zero() -> None:
    sketch = QuantileSketch()
    sketch.add_all([0.0, 0.0, 0.0, 10.0])
    assert sketch.quantiles([0.0, 0.5, 0.66, 1.0]) == [0.0, 0.0, 0.0, 10.0]


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, -math.inf])
def test_add_refuses_values_outside_the_domain(bad: float) -> None:
    sketch = QuantileSketch()
    with pytest.raises(ValueError, match="value must be finite and >= 0"):
        sketch.add(bad)
    assert sketch.count == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_add_refuses_bad_counts(bad: object) -> None:
    with pytest.raises(ValueError, match="count must be an int >= 1"):
        QuantileSketch().add(1.0, count=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan])
def test_quantile_refuses_q_outside_0_1(bad: float) -> None:
    sketch = QuantileSketch()
    sketch.add(1.0)
    with pytest.raises(ValueError, match=r"q must be in \[0, 1\]"):
        sketch.quantile(bad)


@pytest.mark.parametrize("bad", [7, 0, 2.5, True])
def test_sketch_refuses_too_few_bins(bad: object) -> None:
    with pytest.raises(ValueError, match="max_bins must be an int >= 8"):
        QuantileSketch(max_bins=bad)  # type: ignore[arg-type]


def test_merge_refuses_another_mapping() -> None:
    with pytest.raises(ValueError, match="different mappings"):
        QuantileSketch(0.01).merge(QuantileSketch(0.02))


def test_copy_is_independent() -> None:
    sketch = QuantileSketch()
    sketch.add_all([1.0, 2.0, 3.0])
    twin = sketch.copy()
    twin.add(1000.0)
    assert (sketch.count, sketch.max) == (3, 3.0)
    assert (twin.count, twin.max) == (4, 1000.0)


def test_clear_forgets_everything() -> None:
    sketch = QuantileSketch()
    sketch.add_all([5.0, 0.0])
    sketch.clear()
    assert (sketch.count, sketch.bin_count, sketch.quantile(0.5)) == (0, 0, 0.0)


def test_counts_beyond_16_bits_widen_the_counters() -> None:
    sketch = QuantileSketch()
    sketch.add(7.0, count=70_000)
    sketch.add(7.0, count=70_000)
    sketch.add(9.0)
    assert sketch.count == 140_001
    assert sketch.quantile(0.5) == pytest.approx(7.0, rel=0.01)
    assert sketch.quantile(1.0) == 9.0


# -- bounded bins --------------------------------------------------------------------------------


def test_bins_stay_bounded_and_high_quantiles_keep_the_bound() -> None:
    values = [10.0 ** (i / 10) for i in range(0, 121)]  # 1 .. 1e12, far more than 64 bins apart
    sketch = QuantileSketch(max_bins=64)
    sketch.add_all(values)
    assert sketch.bin_count == 64
    for q in (0.99, 0.995, 1.0):
        assert _within(sketch.quantile(q), exact_quantile(values, q), 0.01)
    assert sketch.quantile(0.0) == 1.0  # the exact minimum survives the collapse


def test_bins_stay_bounded_when_values_arrive_from_the_top_down() -> None:
    sketch = QuantileSketch(max_bins=16)
    sketch.add_all([10.0 ** (-i / 5) for i in range(100)])
    assert sketch.bin_count == 16
    assert sketch.count == 100
    assert sketch.quantile(1.0) == 1.0


def test_add_to_bins_grows_down_and_up() -> None:
    offset, bins = add_to_bins(10, array("H", [1, 2]), 8, 1, 100)
    assert (offset, list(bins)) == (8, [1, 0, 1, 2])
    offset, bins = add_to_bins(offset, bins, 13, 5, 100)
    assert (offset, list(bins)) == (8, [1, 0, 1, 2, 0, 5])
    offset, bins = add_to_bins(0, array("H"), -3, 2, 100)
    assert (offset, list(bins)) == (-3, [2])


def test_add_to_bins_folds_the_lowest_bins_at_the_bound() -> None:
    offset, bins = add_to_bins(10, array("H", [1, 2, 3]), 20, 1, 8)
    # Bins 13..20 are kept; 10, 11 and 12 fold into 13.
    assert (offset, list(bins)) == (13, [6, 0, 0, 0, 0, 0, 0, 1])
    offset, bins = add_to_bins(10, array("H", [1, 2, 3]), 40, 1, 8)
    assert (offset, list(bins)) == (33, [6, 0, 0, 0, 0, 0, 0, 1])
    offset, bins = add_to_bins(10, array("H", [1] * 8), 2, 4, 8)
    assert (offset, list(bins)) == (10, [5, 1, 1, 1, 1, 1, 1, 1])


def test_add_to_bins_widens_on_overflow() -> None:
    offset, bins = add_to_bins(0, array("H", [65_535]), 0, 1, 8)
    assert (offset, bins.typecode, list(bins)) == (0, "I", [65_536])


def test_merge_into_bins_adds_counts_by_bin() -> None:
    offset, bins = merge_into_bins(5, array("H", [1, 1]), 3, array("H", [2, 0, 3, 4]), 100)
    assert (offset, list(bins)) == (3, [2, 0, 4, 5])
    offset, bins = merge_into_bins(0, array("H"), 7, array("H", [0, 0]), 100)
    assert (offset, list(bins)) == (0, [])
