"""The one-line caption under each chat answer, read from the answer's span.

Pure: a `Span` in, a string out. Every number is an attribute the
InstrumentedClient recorded on the span (semconv keys); a number the server
did not give is shown as "n/a" rather than guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from obs import semconv
from obs.trace.spans import Span

__all__ = ["answer_caption"]

_NA = "n/a"


def _number(attributes: Mapping[str, Any], key: str) -> float | None:
    value = attributes.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _ms(value: float | None) -> str:
    return _NA if value is None else f"{value:,.0f} ms"


def answer_caption(span: Span) -> str:
    """`latency · TTFT · tokens in → out · tokens/s · cost · prompt cache` for one LLM request span."""
    attrs = span.attributes
    latency = _number(attrs, semconv.OBS_LATENCY_MS)
    if latency is None:
        latency = span.duration
    ttft = _number(attrs, semconv.OBS_TTFT_MS)
    tokens_in = _number(attrs, semconv.GEN_AI_USAGE_INPUT_TOKENS)
    tokens_out = _number(attrs, semconv.GEN_AI_USAGE_OUTPUT_TOKENS)
    rate = _number(attrs, semconv.OBS_TOKENS_PER_SECOND)
    cost = _number(attrs, semconv.OBS_COST_USD)
    cache = _number(attrs, semconv.LLAMA_CPP_PROMPT_CACHE_RATIO)
    parts = [
        f"latency {_ms(latency)}",
        f"TTFT {_ms(ttft)}",
        "tokens {} → {}".format(*(_NA if n is None else f"{n:.0f}" for n in (tokens_in, tokens_out))),
        f"{_NA if rate is None else f'{rate:.1f}'} tok/s",
        f"cost {_NA if cost is None else f'${cost:.6f}'}",
        f"prompt cache {_NA if cache is None else f'{cache:.0%}'}",
    ]
    return " · ".join(parts)
