"""The time series of a MetricsCollector: per-second and per-minute buckets in fixed rings.

Time buckets live in two fixed rings of columns: one slot per second for the
collector's `per_second_retention_s` and one per minute for its
`per_minute_retention_s`. Each slot keeps counts and sums, plus two compact
bin arrays (latency, TTFT) whose bins each join `series_coarsening` bins of
the totals' sketch, with at most `series_max_bins` counters per array. A
per-second slot is folded into its minute when its ring position is reused,
so a request is written to one slot only. Retention counts back from the
newest second written.

`_Series` holds the two rings and answers `time_series` (`TimeBucket`s) and
`window` (`WindowStats`) for the collector, which guards it with its lock and
writes the slots itself on its hot path.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import asdict, dataclass
from typing import Any

from obs.metrics._pricing import UNITS_PER_DOLLAR
from obs.metrics.quantiles import QuantileSketch, add_to_bins, merge_into_bins

__all__ = ["TimeBucket", "WindowStats"]

_INF = math.inf
_ceil = math.ceil
# The key of a slot that holds no bucket.
_EMPTY = -1
# A counter below this takes one more in any counter width; at it, add_to_bins widens the array.
_ROOM = 65535


@dataclass(frozen=True, slots=True)
class TimeBucket:
    """One time bucket of a series: `start` in epoch seconds, sums and percentiles of its requests.

    Percentiles are within the collector's `series_relative_accuracy` (just
    under 2% by default) of the exact ones, and 0 when the bucket holds no request.
    """

    start: float
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    avg_latency_ms: float
    p50_latency_ms: float
    p95_latency_ms: float
    p95_ttft_ms: float
    cache_hits: int
    traces_kept_head: int
    traces_kept_tail: int
    traces_dropped: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Metrics over a sliding window, for alert rules; every number is 0 when the window is empty.

    `cost_per_hour`, `tokens_per_second` and `requests_per_minute` divide by
    the nominal `window_s`. Percentiles are within `series_relative_accuracy`.
    """

    window_s: float
    request_count: int
    error_count: int
    error_rate: float
    avg_latency_ms: float
    p95_latency_ms: float
    p99_latency_ms: float
    p95_ttft_ms: float
    cost: float
    cost_per_hour: float
    tokens: int
    tokens_per_second: float
    requests_per_minute: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


_INT_COLUMNS = (
    "requests", "errors", "cache_hits", "prompt_tokens", "completion_tokens", "lat_zero",
    "ttft_count", "ttft_zero", "head", "tail", "dropped",
)  # fmt: skip
# Cost is summed in 1e-12 dollar units as floats: exact up to 2**53 units ($9,007) per bucket,
# and unlike an int64 column it cannot overflow.
_SUM_COLUMNS = ("cost", "lat_sum", "ttft_sum")


class _Ring:
    """Time buckets of one width in a fixed ring: slot `b % size` holds bucket number `b`.

    Each field is a column (an array with one entry per slot) so a slot costs
    a few bytes per field instead of a Python object; `lat_bins`/`ttft_bins`
    hold a compact bin array per slot (None while empty) starting at bin
    `lat_off`/`ttft_off`.
    """

    __slots__ = (
        "cache_hits", "completion_tokens", "cost", "dropped", "errors", "head", "key", "lat_bins",
        "lat_max", "lat_min", "lat_off", "lat_sum", "lat_zero", "prompt_tokens", "requests", "resets",
        "size", "sums", "tail", "ttft_bins", "ttft_count", "ttft_max", "ttft_min", "ttft_off", "ttft_sum",
        "ttft_zero", "width",
    )  # fmt: skip

    def __init__(self, width: int, size: int) -> None:
        self.width = width
        self.size = size
        self.key = array("q", [_EMPTY]) * size
        for name in (*_INT_COLUMNS, "lat_off", "ttft_off"):
            setattr(self, name, array("q", [0]) * size)
        for name in (*_SUM_COLUMNS, "lat_max", "ttft_max"):
            setattr(self, name, array("d", [0.0]) * size)
        self.lat_min = array("d", [_INF]) * size
        self.ttft_min = array("d", [_INF]) * size
        self.lat_bins: list[array | None] = [None] * size
        self.ttft_bins: list[array | None] = [None] * size
        # The columns a fold adds up, and every column with its empty value: claims and folds
        # run once per bucket, and a list of arrays spares them a getattr per column.
        self.sums = [getattr(self, name) for name in (*_INT_COLUMNS, *_SUM_COLUMNS)]
        self.resets: list[tuple[Any, Any]] = [(getattr(self, name), 0) for name in _INT_COLUMNS]
        self.resets += [(getattr(self, name), 0.0) for name in (*_SUM_COLUMNS, "lat_max", "ttft_max")]
        self.resets += [
            (self.lat_min, _INF), (self.ttft_min, _INF), (self.lat_bins, None), (self.ttft_bins, None),
        ]  # fmt: skip

    def claim(self, s: int, key: int) -> None:
        """Empty slot `s` and give it to bucket `key`."""
        self.key[s] = key
        for column, empty in self.resets:
            column[s] = empty

    def take_slot(self, s: int, src: _Ring, t: int, max_bins: int) -> None:
        """Add everything of `src` slot `t`, which its owner empties next, into slot `s`.

        Bin arrays of `src` may be moved here rather than copied.
        """
        for mine, theirs in zip(self.sums, src.sums, strict=True):
            mine[s] += theirs[t]
        if src.lat_min[t] < self.lat_min[s]:
            self.lat_min[s] = src.lat_min[t]
        if src.lat_max[t] > self.lat_max[s]:
            self.lat_max[s] = src.lat_max[t]
        if src.ttft_min[t] < self.ttft_min[s]:
            self.ttft_min[s] = src.ttft_min[t]
        if src.ttft_max[t] > self.ttft_max[s]:
            self.ttft_max[s] = src.ttft_max[t]
        for mine, offs, theirs, their_offs in (
            (self.lat_bins, self.lat_off, src.lat_bins, src.lat_off),
            (self.ttft_bins, self.ttft_off, src.ttft_bins, src.ttft_off),
        ):
            src_bins = theirs[t]
            if src_bins is None:
                continue
            if mine[s] is None:
                mine[s] = src_bins
                offs[s] = their_offs[t]
            else:
                offs[s], mine[s] = merge_into_bins(offs[s], mine[s], their_offs[t], src_bins, max_bins)


class _Agg:
    """Sums of some slots and their merged sketches, turned into a TimeBucket or WindowStats."""

    __slots__ = (
        "cache_hits", "completion_tokens", "cost", "dropped", "errors", "head", "lat", "lat_sum",
        "prompt_tokens", "requests", "tail", "ttft",
    )  # fmt: skip

    def __init__(self, sketch: QuantileSketch) -> None:
        self.requests = self.errors = self.cache_hits = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.head = self.tail = self.dropped = 0
        self.cost = self.lat_sum = 0.0
        self.lat = sketch.copy()
        self.ttft = sketch.copy()

    def add(self, ring: _Ring, s: int) -> None:
        self.requests += ring.requests[s]
        self.errors += ring.errors[s]
        self.cache_hits += ring.cache_hits[s]
        self.prompt_tokens += ring.prompt_tokens[s]
        self.completion_tokens += ring.completion_tokens[s]
        self.head += ring.head[s]
        self.tail += ring.tail[s]
        self.dropped += ring.dropped[s]
        self.cost += ring.cost[s]
        self.lat_sum += ring.lat_sum[s]
        if ring.requests[s]:
            bins = ring.lat_bins[s]
            self.lat.merge_bins(
                ring.lat_off[s], bins if bins is not None else (), ring.lat_zero[s],
                ring.lat_min[s], ring.lat_max[s], ring.lat_sum[s],
            )  # fmt: skip
        if ring.ttft_count[s]:
            bins = ring.ttft_bins[s]
            self.ttft.merge_bins(
                ring.ttft_off[s], bins if bins is not None else (), ring.ttft_zero[s],
                ring.ttft_min[s], ring.ttft_max[s], ring.ttft_sum[s],
            )  # fmt: skip

    def bucket(self, start: float) -> TimeBucket:
        n = self.requests
        p50, p95 = self.lat.quantiles((0.5, 0.95))
        return TimeBucket(
            start=start,
            requests=n,
            errors=self.errors,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost=self.cost / UNITS_PER_DOLLAR,
            avg_latency_ms=self.lat_sum / n if n else 0.0,
            p50_latency_ms=p50,
            p95_latency_ms=p95,
            p95_ttft_ms=self.ttft.quantile(0.95),
            cache_hits=self.cache_hits,
            traces_kept_head=self.head,
            traces_kept_tail=self.tail,
            traces_dropped=self.dropped,
        )

    def stats(self, window_s: float) -> WindowStats:
        n = self.requests
        p95, p99 = self.lat.quantiles((0.95, 0.99))
        tokens = self.prompt_tokens + self.completion_tokens
        return WindowStats(
            window_s=window_s,
            request_count=n,
            error_count=self.errors,
            error_rate=self.errors / n if n else 0.0,
            avg_latency_ms=self.lat_sum / n if n else 0.0,
            p95_latency_ms=p95,
            p99_latency_ms=p99,
            p95_ttft_ms=self.ttft.quantile(0.95),
            cost=self.cost / UNITS_PER_DOLLAR,
            cost_per_hour=self.cost * 3600.0 / window_s / UNITS_PER_DOLLAR,
            tokens=tokens,
            tokens_per_second=tokens / window_s,
            requests_per_minute=n * 60.0 / window_s,
        )

class _Series:
    """The buckets of one collector: a per-second ring whose slots fold into a per-minute ring.

    Not thread-safe: the collector's lock guards it.
    """

    __slots__ = ("high", "max_bins", "minutes", "seconds", "template")

    def __init__(
        self, per_second_s: int, per_minute_s: int, max_bins: int, template: QuantileSketch
    ) -> None:
        """Rings for `per_second_s` seconds and `per_minute_s` seconds (a multiple of 60)."""
        self.seconds = _Ring(1, per_second_s)
        self.minutes = _Ring(60, per_minute_s // 60)
        self.max_bins = max_bins
        # An empty sketch of the series' accuracy, copied for every aggregate.
        self.template = template
        # Newest second bucket ever written: retention counts back from it.
        self.high = _EMPTY

    def slot(self, b: int) -> tuple[_Ring | None, int]:
        """The (ring, slot) that takes data of second `b`, claiming a slot if needed.

        A per-second slot whose position is reused is folded into its minute
        first. Data too old for the per-second ring goes straight to its minute;
        data too old for both is counted in the totals only: (None, -1).
        """
        sec = self.seconds
        s = b % sec.size
        key = sec.key[s]
        if key == b:
            return sec, s
        if key < b and b > self.high - sec.size:
            if key != _EMPTY:
                minutes, t = self._minute_slot(key // 60)
                if minutes is not None:
                    minutes.take_slot(t, sec, s, self.max_bins)
            sec.claim(s, b)
            if b > self.high:
                self.high = b
            return sec, s
        return self._minute_slot(b // 60)

    def _minute_slot(self, m: int) -> tuple[_Ring | None, int]:
        """The per-minute (ring, slot) of minute `m`, or (None, -1) when it is past retention."""
        minutes = self.minutes
        t = m % minutes.size
        key = minutes.key[t]
        if key == m:
            return minutes, t
        if key < m:
            minutes.claim(t, m)
            return minutes, t
        return None, -1

    def add_bin(self, offsets: array, all_bins: list[array | None], s: int, index: int) -> None:
        """Count one value of coarse bin `index` in slot `s` of a ring's bin column."""
        bins = all_bins[s]
        if bins is None:
            offsets[s] = index
            all_bins[s] = array("H", (1,))
            return
        j = index - offsets[s]
        if 0 <= j < len(bins) and bins[j] < _ROOM:
            bins[j] += 1
        else:
            offsets[s], all_bins[s] = add_to_bins(offsets[s], bins, index, 1, self.max_bins)

    def buckets(self, bucket_s: int, lo: float, hi: float) -> list[TimeBucket]:
        """Buckets of `bucket_s` (1 or 60) seconds that overlap [lo, hi] and hold data, oldest first."""
        if self.high == _EMPTY:
            return []
        if bucket_s == 1:
            first = self.high - self.seconds.size + 1
            groups = {
                key: [(self.seconds, s)]
                for s, key in enumerate(self.seconds.key)
                if key != _EMPTY and key >= first
            }
        else:
            groups = self._minute_groups(self.high // 60 - self.minutes.size + 1)
        out = []
        for key in sorted(groups):
            start = key * bucket_s
            if start + bucket_s <= lo or start > hi:
                continue
            agg = _Agg(self.template)
            for ring, s in groups[key]:
                agg.add(ring, s)
            if agg.requests or agg.head or agg.tail or agg.dropped:
                out.append(agg.bucket(float(start)))
        return out

    def _minute_groups(self, first: int, last: int | None = None) -> dict[int, list[tuple[_Ring, int]]]:
        """Per minute in [first, last]: the per-minute slot and the live per-second slots of it."""
        groups: dict[int, list[tuple[_Ring, int]]] = {}
        hi = _INF if last is None else last
        for t, key in enumerate(self.minutes.key):
            if key != _EMPTY and first <= key <= hi:
                groups.setdefault(key, []).append((self.minutes, t))
        for s, key in enumerate(self.seconds.key):
            if key != _EMPTY and first <= key // 60 <= hi:
                groups.setdefault(key // 60, []).append((self.seconds, s))
        return groups

    def window(self, window_s: float, end: int) -> WindowStats:
        """Stats of the `window_s` seconds ending with second `end` (see `MetricsCollector.window`)."""
        agg = _Agg(self.template)
        if self.high == _EMPTY:
            return agg.stats(window_s)
        start = end - _ceil(window_s) + 1
        sec = self.seconds
        if window_s <= sec.size and start > self.high - sec.size:
            for b in range(max(start, 0), end + 1):
                s = b % sec.size
                if sec.key[s] == b:
                    agg.add(sec, s)
        else:
            last = end // 60
            for slots in self._minute_groups(last - _ceil(window_s / 60.0) + 1, last).values():
                for ring, s in slots:
                    agg.add(ring, s)
        return agg.stats(window_s)
