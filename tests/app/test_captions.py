"""Tests of app.captions: the line under each answer reads the span's attributes, and only them."""

from __future__ import annotations

from app.captions import answer_caption
from obs import semconv
from obs.trace.spans import Span

TRACE = "0" * 31 + "1"
SPAN = "0" * 15 + "1"


def _span(attributes: dict, duration: float | None = 900.0) -> Span:
    return Span(SPAN, TRACE, None, "chat m", 1000.0, 1900.0, duration, "success", attributes, [], "client")


def test_caption_shows_every_measured_number() -> None:
    span = _span({
        semconv.OBS_LATENCY_MS: 1234.4, semconv.OBS_TTFT_MS: 120.0,
        semconv.GEN_AI_USAGE_INPUT_TOKENS: 30, semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 24,
        semconv.OBS_TOKENS_PER_SECOND: 95.25, semconv.OBS_COST_USD: 0.000078,
        semconv.LLAMA_CPP_PROMPT_CACHE_RATIO: 0.75,
    })
    assert answer_caption(span) == (
        "latency 1,234 ms · TTFT 120 ms · tokens 30 → 24 · 95.2 tok/s · cost $0.000078 · prompt cache 75%"
    )


def test_missing_numbers_show_as_not_available_and_latency_falls_back_to_duration() -> None:
    caption = answer_caption(_span({semconv.OBS_TTFT_MS: float("nan"), semconv.OBS_COST_USD: True}))
    assert caption == "latency 900 ms · TTFT n/a · tokens n/a → n/a · n/a tok/s · cost n/a · prompt cache n/a"
