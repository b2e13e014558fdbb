"""GenAI histograms of a MetricsCollector, at the bucket boundaries the semantic conventions advise.

`MetricsCollector` counts every request into fixed buckets at the GenAI
boundaries as it records it (`obs.metrics.histograms`), so every bucket,
count and sum read here is exact: `duration` and `ttft` in seconds
(`DURATION_BUCKETS_S`), `input_tokens` and `output_tokens`
(`TOKEN_BUCKETS`). `collector_histograms(collector)` reads them through the
collector's `genai_histograms()`, at one instant, and checks their shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from obs.metrics.histograms import DURATION_BUCKETS_S, TOKEN_BUCKETS, Histogram

__all__ = ["DURATION_BUCKETS_S", "TOKEN_BUCKETS", "Histogram", "collector_histograms"]

_KEYS = ("duration", "ttft", "input_tokens", "output_tokens")


def collector_histograms(collector: Any) -> dict[str, Histogram]:
    """The GenAI histograms of `collector`: `duration`, `ttft` (seconds), `input_tokens`, `output_tokens`.

    ValueError if `collector` is not a MetricsCollector (or something else
    whose `genai_histograms()` maps those four names to `Histogram` values).
    """
    exact = getattr(collector, "genai_histograms", None)
    if not callable(exact):
        raise ValueError(
            f"collector_histograms: collector must be a MetricsCollector (with genai_histograms()), "
            f"got {type(collector).__name__}"
        )
    found = exact()
    if not isinstance(found, Mapping) or not all(isinstance(found.get(k), Histogram) for k in _KEYS):
        raise ValueError(
            "collector_histograms: genai_histograms() must return a mapping of duration, ttft, "
            "input_tokens and output_tokens to Histogram values"
        )
    return {k: found[k] for k in _KEYS}
