"""Fixed-bucket histograms at the GenAI bucket boundaries, recorded exactly per request.

The OpenTelemetry GenAI semantic conventions (v1.41) advise bucket
boundaries for `gen_ai.client.operation.duration`,
`gen_ai.client.operation.time_to_first_chunk` (seconds, `DURATION_BUCKETS_S`)
and `gen_ai.client.token.usage` (tokens, `TOKEN_BUCKETS`). `GenAIHistograms`
counts every recorded request into those buckets: one counter per bucket
plus an overflow, a count and a sum per histogram, so its memory is fixed
(4 x 15 counters) and every count is exact. `MetricsCollector` keeps one and
adds to it under its own lock; `snapshot()` turns the counts into
cumulative `Histogram` values (a value equal to a boundary counts in that
boundary's bucket, as Prometheus' `le` says).
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left
from dataclasses import dataclass

__all__ = ["DURATION_BUCKETS_S", "TOKEN_BUCKETS", "GenAIHistograms", "Histogram"]

# gen_ai.client.operation.duration, gen_ai.client.operation.time_to_first_chunk (semconv v1.41).
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)
# gen_ai.client.token.usage.
TOKEN_BUCKETS: tuple[float, ...] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)
# The duration boundaries in milliseconds, the unit the collector records in (exact: each
# product rounds to the same double as the decimal written out).
_DURATION_BUCKETS_MS: tuple[float, ...] = tuple(round(b * 1000.0, 6) for b in DURATION_BUCKETS_S)


@dataclass(frozen=True, slots=True)
class Histogram:
    """A histogram at one instant: `cumulative[i]` values are <= `bounds[i]`; `count` and `sum` of all."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    count: int
    sum: float

    def __post_init__(self) -> None:
        if len(self.cumulative) != len(self.bounds):
            raise ValueError(
                f"Histogram: cumulative must have one count per bound ({len(self.bounds)}), "
                f"got {len(self.cumulative)}"
            )
        if list(self.bounds) != sorted(set(self.bounds)) or any(math.isnan(b) for b in self.bounds):
            raise ValueError(f"Histogram: bounds must be increasing numbers, got {self.bounds!r}")
        counts = (*self.cumulative, self.count)
        if any(b < a for a, b in itertools.pairwise(counts)) or (counts and counts[0] < 0):
            raise ValueError(
                f"Histogram: cumulative counts must not decrease and end at most at count ({self.count}); "
                f"got {self.cumulative!r}"
            )


def _cumulative(bounds: tuple[float, ...], counts: list[int], total: float, scale: float) -> Histogram:
    running = list(itertools.accumulate(counts))
    return Histogram(bounds, tuple(running[: len(bounds)]), running[-1], float(total * scale))


class GenAIHistograms:
    """Exact bucket counts of request duration, time to first token and input/output tokens.

    Not thread-safe by itself: its owner (the collector) calls `add` and
    `snapshot` under its lock. Values are trusted (the collector has checked them).
    """

    __slots__ = ("_dur", "_dur_sum", "_in", "_in_sum", "_out", "_out_sum", "_ttft", "_ttft_sum")

    def __init__(self) -> None:
        """Start with every count at zero."""
        size = len(DURATION_BUCKETS_S) + 1  # the last counter holds values above every bound
        self._dur = [0] * size
        self._ttft = [0] * size
        self._in = [0] * (len(TOKEN_BUCKETS) + 1)
        self._out = [0] * (len(TOKEN_BUCKETS) + 1)
        self._dur_sum = 0.0
        self._ttft_sum = 0.0
        self._in_sum = 0
        self._out_sum = 0

    def add(self, latency_ms: float, ttft_ms: float | None, input_tokens: int, output_tokens: int) -> None:
        """Count one request: its duration, its time to first token (None: not counted) and its tokens."""
        self._dur[bisect_left(_DURATION_BUCKETS_MS, latency_ms)] += 1
        self._dur_sum += latency_ms
        if ttft_ms is not None:
            self._ttft[bisect_left(_DURATION_BUCKETS_MS, ttft_ms)] += 1
            self._ttft_sum += ttft_ms
        self._in[bisect_left(TOKEN_BUCKETS, input_tokens)] += 1
        self._in_sum += input_tokens
        self._out[bisect_left(TOKEN_BUCKETS, output_tokens)] += 1
        self._out_sum += output_tokens

    def snapshot(self) -> dict[str, Histogram]:
        """The four histograms now: `duration` and `ttft` in seconds, `input_tokens`, `output_tokens`."""
        return {
            "duration": _cumulative(DURATION_BUCKETS_S, self._dur, self._dur_sum, 0.001),
            "ttft": _cumulative(DURATION_BUCKETS_S, self._ttft, self._ttft_sum, 0.001),
            "input_tokens": _cumulative(TOKEN_BUCKETS, self._in, self._in_sum, 1),
            "output_tokens": _cumulative(TOKEN_BUCKETS, self._out, self._out_sum, 1),
        }

    def __deepcopy__(self, memo: dict[int, object]) -> GenAIHistograms:
        """An independent copy with the same counts."""
        twin = GenAIHistograms()
        for name in self.__slots__:
            value = getattr(self, name)
            setattr(twin, name, list(value) if isinstance(value, list) else value)
        return twin
