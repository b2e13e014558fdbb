"""GenAI histograms of a MetricsCollector, at the bucket boundaries the semantic conventions advise.

`MetricsCollector` keeps latency and time to first token in quantile
sketches (1% relative accuracy), not in fixed buckets, and keeps token
counts only as totals. `collector_histograms(collector)` reads what there is,
without changing the collector:

- `duration` and `ttft` (seconds, `DURATION_BUCKETS_S`): count and sum are
  exact; a bucket's cumulative count is exact except for requests within
  the sketch's relative accuracy of its boundary (a 2%-wide sketch bin that
  straddles the boundary is counted on the side its midpoint falls). A
  boundary at or above the largest value counts everything, one below the
  smallest counts nothing, so a lone request always lands in the right bucket.
- `input_tokens` and `output_tokens` (`TOKEN_BUCKETS`): a collector that
  offers exact fixed-bucket histograms through `genai_histograms()` (a
  mapping of these four names to `Histogram`s) is read from there instead,
  for all four; without it only the totals are known, so these two carry
  just the `+Inf` bucket (count = requests, sum = tokens).

The read takes the collector's lock once and copies the two sketches.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DURATION_BUCKETS_S", "TOKEN_BUCKETS", "Histogram", "collector_histograms"]

# gen_ai.client.operation.duration, gen_ai.client.operation.time_to_first_chunk (semconv v1.41).
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)
# gen_ai.client.token.usage.
TOKEN_BUCKETS: tuple[float, ...] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)


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


def _from_sketch(sketch: Any, bounds_s: tuple[float, ...]) -> Histogram:
    """Cumulative counts of a QuantileSketch of milliseconds at boundaries given in seconds."""
    count = sketch.count
    total_s = sketch.sum / 1000.0
    if not count:
        return Histogram(bounds_s, tuple(0 for _ in bounds_s), 0, 0.0)
    mapping = sketch.mapping
    # The sketch's bins: bins[j] counts bin offset + j; zeros apart (read from a private copy).
    offset, bins, zeros = sketch._offset, list(sketch._bins), sketch._zeros
    lo, hi = sketch.min, sketch.max
    cumulative = []
    for bound in bounds_s:
        bound_ms = bound * 1000.0
        if bound_ms >= hi:
            cumulative.append(count)
        elif bound_ms < lo:
            cumulative.append(0)
        else:
            edge = mapping.index(bound_ms)  # the bin holding the boundary
            if mapping.value(edge) > bound_ms:
                edge -= 1
            upto = edge - offset + 1
            cumulative.append(zeros + sum(bins[: max(0, min(upto, len(bins)))]))
    return Histogram(bounds_s, tuple(cumulative), count, total_s)


def _totals_only(count: int, total: float) -> Histogram:
    return Histogram((), (), count, float(total))


def collector_histograms(collector: Any) -> dict[str, Histogram]:
    """The four GenAI histograms of `collector` (see the module docstring for how exact each is).

    Keys: `duration`, `ttft` (seconds), `input_tokens`, `output_tokens`.
    ValueError if `collector` is not a MetricsCollector (or something with
    `genai_histograms()`).
    """
    exact = getattr(collector, "genai_histograms", None)
    if callable(exact):
        found = exact()
        if not isinstance(found, Mapping) or not all(
            isinstance(found.get(k), Histogram) for k in ("duration", "ttft", "input_tokens", "output_tokens")
        ):
            raise ValueError(
                "collector_histograms: genai_histograms() must return a mapping of duration, ttft, "
                "input_tokens and output_tokens to Histogram values"
            )
        return {k: found[k] for k in ("duration", "ttft", "input_tokens", "output_tokens")}
    lock = getattr(collector, "_lock", None)
    if lock is None or not hasattr(collector, "_lat") or not hasattr(collector, "_ttft"):
        raise ValueError(
            f"collector_histograms: collector must be a MetricsCollector, got {type(collector).__name__}"
        )
    with lock:
        latency, ttft = collector._lat.copy(), collector._ttft.copy()
        requests, prompt, completion = collector._count, collector._prompt, collector._completion
    return {
        "duration": _from_sketch(latency, DURATION_BUCKETS_S),
        "ttft": _from_sketch(ttft, DURATION_BUCKETS_S),
        "input_tokens": _totals_only(requests, prompt),
        "output_tokens": _totals_only(requests, completion),
    }
