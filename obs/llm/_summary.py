"""The client's metrics summary: a MetricsSnapshot as a few readable lines."""

from __future__ import annotations

from obs.metrics.collector import MetricsSnapshot


def metrics_summary(m: MetricsSnapshot) -> str:
    """Requests and errors, tokens, cost, latency, TTFT, cache and throughput, one line each."""
    lookups = m.cache_hits + m.cache_misses
    return "\n".join(
        [
            f"Requests: {m.request_count} (errors: {m.error_count}, {m.error_rate:.1%})",
            f"Tokens: {m.total_tokens:,} (prompt {m.prompt_tokens:,}, completion {m.completion_tokens:,})",
            f"Cost: ${m.total_cost:.4f}",
            f"Latency: avg {m.avg_latency_ms:.0f} ms, p50 {m.p50_latency_ms:.0f} ms, "
            f"p95 {m.p95_latency_ms:.0f} ms, p99 {m.p99_latency_ms:.0f} ms",
            f"Time to first token: avg {m.avg_ttft_ms:.0f} ms, p95 {m.p95_ttft_ms:.0f} ms",
            f"Cache: {m.cache_hits} hits of {lookups} ({m.cache_hit_rate:.1%})",
            f"Throughput: {m.requests_per_second:.2f} req/s, {m.tokens_per_second:.1f} tokens/s",
        ]
    )
