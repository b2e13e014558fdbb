"""Quantile sketches: percentiles in bounded memory with a guaranteed relative error.

A `QuantileSketch` follows DDSketch (Masson, Rim and Lee, VLDB 2019): a value
`x > 0` is counted in the bin `i = ceil(log_gamma(x))` with
`gamma = (1 + a) / (1 - a)`, and a bin is read back as `2 * gamma**i / (gamma + 1)`.
Every value in bin `i` lies in `(gamma**(i-1), gamma**i]`, so the value read back
is within relative error `a` (the *relative accuracy*, 1% by default) of every
value in the bin. Zeros are counted apart and read back as exactly 0.

Rank convention (the same one `exact_quantile` implements, so tests and
benchmarks compare like with like): the q-quantile of `n` values is the
nearest-rank value, the one of 1-based rank `ceil(q * n)` (at least 1) in
ascending order, which is numpy's "inverted_cdf" method. With few values a
high quantile is the slowest request, never below it: p95 of two latencies is
the larger one. The sketch finds the bin holding that rank, so its answer is
within `a` of that exact value; the answer is also clamped to the exact
minimum and maximum, which makes the quantiles of a single value (or of many
equal values) exact.

Memory is bounded: bins live in a dense array of at most `max_bins` counters
(2, 4 or 8 bytes each, widened only when a count overflows). When values
spread over more than `max_bins` bins, the lowest bins are merged into one:
high quantiles keep the guarantee, the lowest ranks may lose it. At the
default 1% and 2048 bins that takes a spread of more than 10**17 between the
smallest and the largest positive value.

Sketches with the same mapping merge exactly: merging the sketches of two
lists gives the same bins as sketching the concatenated list.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate
from operator import add

__all__ = ["LogMapping", "QuantileSketch", "add_to_bins", "exact_quantile", "merge_into_bins"]

# The mapping is built for an accuracy a hair tighter than promised, so that
# float rounding in log/exp at a bin edge can never push the error past it.
_SLACK = 1e-7
# Counter widths in the order a bin array is widened when a count overflows.
_WIDER = {"H": "I", "I": "Q"}
_DEFAULT_MAX_BINS = 2048
_MIN_MAX_BINS = 8


def _check_accuracy(relative_accuracy: float) -> float:
    """Validate a relative accuracy: a number strictly between 0 and 1 (NaN refused)."""
    if isinstance(relative_accuracy, bool) or not isinstance(relative_accuracy, (int, float)):
        raise ValueError(
            f"relative_accuracy must be a number in (0, 1), got {relative_accuracy!r}"
        )
    if not 0.0 < relative_accuracy < 1.0:
        raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy!r}")
    return float(relative_accuracy)


def _check_max_bins(max_bins: int) -> int:
    """Validate a bin bound: an int of at least 8."""
    if isinstance(max_bins, bool) or not isinstance(max_bins, int) or max_bins < _MIN_MAX_BINS:
        raise ValueError(f"max_bins must be an int >= {_MIN_MAX_BINS}, got {max_bins!r}")
    return max_bins


def _rank(q: float, n: int) -> int:
    """The 0-based rank of the q-quantile among n values: ceil(q * n) - 1, at least 0.

    The tiny tolerance keeps products such as 0.07 * 100 = 7.000000000000001 on
    their whole-number rank.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    return max(0, math.ceil(q * n - 1e-9) - 1)


def exact_quantile(values: Sequence[float], q: float) -> float:
    """The exact q-quantile of `values` under the module's rank convention.

    Returns the nearest-rank value, of 1-based rank `ceil(q * len(values))` (at
    least 1) in ascending order (numpy's "inverted_cdf" method); 0.0 for an
    empty sequence. `q` must be in [0, 1].
    """
    if not values:
        _rank(q, 1)
        return 0.0
    return float(sorted(values)[_rank(q, len(values))])


class LogMapping:
    """Maps positive values to log-spaced bin indices and back, for one relative accuracy.

    `index(x)` is `ceil(log(x) / log(gamma))`; `value(i)` is the point of bin `i`
    whose relative distance to every value of the bin is at most `relative_accuracy`.
    """

    __slots__ = ("_log_gamma", "_multiplier", "_value_factor", "factor", "gamma", "relative_accuracy")

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        """Build the mapping promising `relative_accuracy` (in (0, 1); 0.01 is 1%)."""
        self.relative_accuracy = _check_accuracy(relative_accuracy)
        tight = self.relative_accuracy * (1.0 - _SLACK)
        self._set_gamma((1.0 + tight) / (1.0 - tight), 1)

    def _set_gamma(self, gamma: float, factor: int) -> None:
        self.gamma = gamma
        self.factor = factor
        self._log_gamma = math.log(gamma)
        self._multiplier = 1.0 / self._log_gamma
        self._value_factor = 2.0 / (gamma + 1.0)

    @property
    def multiplier(self) -> float:
        """1 / log(gamma): `index(x)` is `ceil(log(x) * multiplier)` (for callers that inline it)."""
        return self._multiplier

    def coarsened(self, factor: int) -> LogMapping:
        """A mapping whose bin `i` is the union of this mapping's bins `factor*(i-1)+1 .. factor*i`.

        So a value of bin `j` here lies in bin `ceil(j / factor)` there: callers
        that already hold `j` get the coarse bin with integer arithmetic,
        `-(-j // factor)`, instead of another logarithm. Its relative accuracy
        is `(g**factor - 1) / (g**factor + 1)` with `g` the gamma promised here
        (about `factor` times this one). `factor` must be an int in [1, 64].
        """
        if isinstance(factor, bool) or not isinstance(factor, int) or not 1 <= factor <= 64:
            raise ValueError(f"factor must be an int in [1, 64], got {factor!r}")
        promised = ((1.0 + self.relative_accuracy) / (1.0 - self.relative_accuracy)) ** factor
        coarse = object.__new__(LogMapping)
        coarse.relative_accuracy = (promised - 1.0) / (promised + 1.0)
        coarse._set_gamma(math.exp(self._log_gamma * factor), self.factor * factor)
        return coarse

    def index(self, value: float) -> int:
        """The bin index of a positive, finite `value`."""
        return math.ceil(math.log(value) * self._multiplier)

    def value(self, index: int) -> float:
        """The representative value of bin `index` (may be inf for an index past float range)."""
        try:
            return math.exp(index * self._log_gamma) * self._value_factor
        except OverflowError:
            return math.inf

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LogMapping) and other.gamma == self.gamma

    def __hash__(self) -> int:
        return hash(self.gamma)

    def __repr__(self) -> str:
        return f"LogMapping(relative_accuracy={self.relative_accuracy!r})"


def _zeros(typecode: str, n: int) -> array:
    """A new array of n zero counters."""
    return array(typecode, bytes(n * array(typecode).itemsize))


def _widen(bins: array) -> array:
    """A copy of `bins` with wider counters (for a count that no longer fits)."""
    wider = _WIDER.get(bins.typecode)
    if wider is None:
        raise OverflowError("bin count exceeds 2**64 - 1")
    return array(wider, bins)


def _put(bins: array, j: int, value: int) -> array:
    """Set bins[j] = value, widening the counters when it does not fit; return the array."""
    while True:
        try:
            bins[j] = value
            return bins
        except OverflowError:
            bins = _widen(bins)


def add_to_bins(offset: int, bins: array, index: int, count: int, max_bins: int) -> tuple[int, array]:
    """Add `count` to bin `index` of a dense bin array starting at bin `offset`.

    `bins` holds unsigned counters ('H', 'I' or 'Q' typecode); `bins[j]` counts
    bin `offset + j`. The array grows to cover `index`, but never past
    `max_bins` counters: beyond that the lowest bins are merged into the lowest
    kept bin. Returns the new `(offset, bins)`: the array may be a new object
    (wider counters after an overflow), so callers must keep what is returned.
    An empty array takes `index` as its offset.
    """
    n = len(bins)
    if n == 0:
        offset = index
        bins.append(0)
        j = 0
    else:
        j = index - offset
        if j < 0:
            grow = min(-j, max_bins - n)
            if grow > 0:
                bins[0:0] = _zeros(bins.typecode, grow)
                offset -= grow
            j = max(0, index - offset)
        elif j >= n:
            if j >= max_bins:
                # Keep the top max_bins bins ending at `index`; fold the rest into the lowest kept.
                shift = j + 1 - max_bins
                if shift >= n:
                    total = sum(bins)
                    bins = _zeros(bins.typecode, 1)
                else:
                    total = sum(bins[: shift + 1])
                    del bins[:shift]
                bins = _put(bins, 0, total)
                offset += shift
                j = index - offset
            if j >= len(bins):
                bins.extend(_zeros(bins.typecode, j + 1 - len(bins)))
    try:
        bins[j] += count
    except OverflowError:
        bins = _put(bins, j, bins[j] + count)
    return offset, bins


def merge_into_bins(
    offset: int, bins: array, src_offset: int, src_bins: Sequence[int], max_bins: int
) -> tuple[int, array]:
    """Add every count of the dense store `(src_offset, src_bins)` into `(offset, bins)`.

    Same contract as `add_to_bins`: the target grows to cover the source but
    keeps at most `max_bins` counters (lowest bins merged), and the returned
    `(offset, bins)` replace the ones passed in.
    """
    if not any(src_bins):
        return offset, bins
    offset, bins = add_to_bins(offset, bins, src_offset, 0, max_bins)
    offset, bins = add_to_bins(offset, bins, src_offset + len(src_bins) - 1, 0, max_bins)
    base = src_offset - offset
    if base >= 0:
        # Nothing folded: add the aligned run in one slice (map runs in C).
        end = base + len(src_bins)
        while True:
            try:
                bins[base:end] = array(bins.typecode, map(add, bins[base:end], src_bins))
                return offset, bins
            except OverflowError:
                bins = _widen(bins)
    for j, c in enumerate(src_bins):
        if c:
            p = base + j
            if p < 0:
                p = 0
            try:
                bins[p] += c
            except OverflowError:
                bins = _put(bins, p, bins[p] + c)
    return offset, bins


class QuantileSketch:
    """A mergeable DDSketch: quantiles of non-negative values within a relative error.

    Every quantile it returns is within `relative_accuracy` (1% by default)
    relative error of the exact quantile under the module's rank convention,
    as long as the positive values span fewer than `max_bins` bins (see the
    module docstring). Count, sum, min and max are exact. Not thread-safe: the
    owner locks.
    """

    __slots__ = ("_bins", "_count", "_mapping", "_max", "_max_bins", "_min", "_offset", "_sum", "_zeros")

    def __init__(
        self,
        relative_accuracy: float = 0.01,
        max_bins: int = _DEFAULT_MAX_BINS,
        *,
        mapping: LogMapping | None = None,
    ) -> None:
        """An empty sketch; `mapping` (shared between sketches) overrides `relative_accuracy`.

        Raises ValueError for `relative_accuracy` outside (0, 1) or `max_bins` < 8.
        """
        self._mapping = mapping if mapping is not None else LogMapping(relative_accuracy)
        self._max_bins = _check_max_bins(max_bins)
        self.clear()

    def clear(self) -> None:
        """Forget every value."""
        self._offset = 0
        self._bins = array("H")
        self._zeros = 0
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    @property
    def mapping(self) -> LogMapping:
        """The value-to-bin mapping (sketches merge only with an equal mapping)."""
        return self._mapping

    @property
    def relative_accuracy(self) -> float:
        """The promised relative error bound of every quantile."""
        return self._mapping.relative_accuracy

    @property
    def max_bins(self) -> int:
        """The most positive-value bins this sketch keeps."""
        return self._max_bins

    @property
    def count(self) -> int:
        """How many values were added."""
        return self._count

    @property
    def sum(self) -> float:
        """The sum of the values added."""
        return self._sum

    @property
    def min(self) -> float:
        """The smallest value added (0.0 when empty)."""
        return self._min if self._count else 0.0

    @property
    def max(self) -> float:
        """The largest value added (0.0 when empty)."""
        return self._max if self._count else 0.0

    @property
    def bin_count(self) -> int:
        """The number of counters held for positive values (memory is proportional to it)."""
        return len(self._bins)

    def __len__(self) -> int:
        """How many values were added."""
        return self._count

    def add(self, value: float, count: int = 1) -> None:
        """Add `value` (finite, >= 0) `count` times (count an int >= 1).

        Raises ValueError for a negative, NaN or infinite value or a bad count.
        """
        if not 0.0 <= value < math.inf:
            raise ValueError(f"value must be finite and >= 0, got {value!r}")
        if type(count) is not int or count < 1:
            raise ValueError(f"count must be an int >= 1, got {count!r}")
        if value > 0.0:
            index = self._mapping.index(value)
            bins = self._bins
            j = index - self._offset
            if 0 <= j < len(bins):
                try:
                    bins[j] += count
                except OverflowError:
                    self._bins = _put(bins, j, bins[j] + count)
            else:
                self._offset, self._bins = add_to_bins(self._offset, bins, index, count, self._max_bins)
        else:
            self._zeros += count
        self._count += count
        self._sum += value * count
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value

    def add_indexed(self, value: float, index: int) -> None:
        """Add one positive, finite `value` whose bin `index` the caller computed with this mapping.

        For hot paths that share one logarithm between sketches; neither
        argument is checked, so pass only `index == mapping.index(value)`, `value > 0`.
        """
        bins = self._bins
        j = index - self._offset
        if 0 <= j < len(bins):
            try:
                bins[j] += 1
            except OverflowError:
                self._bins = _put(bins, j, bins[j] + 1)
        else:
            self._offset, self._bins = add_to_bins(self._offset, bins, index, 1, self._max_bins)
        self._count += 1
        self._sum += value
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value

    def add_all(self, values: Iterable[float]) -> None:
        """Add each value of `values` once."""
        for value in values:
            self.add(value)

    def merge_bins(
        self,
        offset: int,
        bins: Sequence[int],
        zero_count: int = 0,
        minimum: float = math.inf,
        maximum: float = -math.inf,
        total: float = 0.0,
    ) -> None:
        """Merge a compact bin store built with this sketch's mapping.

        `bins[j]` counts bin `offset + j`; `zero_count` counts zeros; `minimum`,
        `maximum` and `total` are the store's exact min, max and sum (pass them
        when known: the min and max make answers exact at the extremes).
        """
        positives = sum(bins)
        if positives:
            self._offset, self._bins = merge_into_bins(self._offset, self._bins, offset, bins, self._max_bins)
        self._zeros += zero_count
        self._count += positives + zero_count
        self._sum += total
        if minimum < self._min:
            self._min = minimum
        if maximum > self._max:
            self._max = maximum

    def merge(self, other: QuantileSketch) -> None:
        """Add every value of `other` into this sketch (mappings must be equal).

        Raises ValueError when the mappings differ.
        """
        if other._mapping != self._mapping:
            raise ValueError(
                f"cannot merge sketches of different mappings: {self._mapping!r} and {other._mapping!r}"
            )
        if not other._count:
            return
        self.merge_bins(other._offset, other._bins, other._zeros, other._min, other._max, other._sum)

    def copy(self) -> QuantileSketch:
        """An independent sketch with the same mapping and contents."""
        twin = QuantileSketch(max_bins=self._max_bins, mapping=self._mapping)
        twin.merge(self)
        return twin

    def quantile(self, q: float) -> float:
        """The q-quantile (q in [0, 1]) within `relative_accuracy` of the exact one; 0.0 when empty.

        Raises ValueError for q outside [0, 1].
        """
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        """The quantiles for each q of `qs`, in order (one pass over the bins)."""
        qs = list(qs)
        n = self._count
        if n == 0:
            for q in qs:
                _rank(q, 1)
            return [0.0 for _ in qs]
        cumulative = list(accumulate(self._bins))
        out: list[float] = []
        for q in qs:
            k = _rank(q, n)
            if k == 0:
                out.append(float(self._min))
            elif k == n - 1:
                out.append(float(self._max))
            elif k < self._zeros:
                out.append(0.0)
            else:
                j = bisect_right(cumulative, k - self._zeros)
                estimate = self._mapping.value(self._offset + j)
                out.append(min(max(estimate, self._min), self._max))
        return out

    def __repr__(self) -> str:
        return (
            f"QuantileSketch(relative_accuracy={self.relative_accuracy!r}, count={self._count}, "
            f"bins={len(self._bins)})"
        )
