"""A MetricsCollector in the Prometheus text exposition format (version 0.0.4).

`to_prometheus(collector)` writes, each with one `# HELP` and one `# TYPE`
line before its samples:

| metric | type | labels |
|---|---|---|
| `obs_llm_requests_total` | counter | |
| `obs_llm_errors_total` | counter | |
| `obs_llm_cache_hits_total` | counter | |
| `obs_llm_tokens_total` | counter | `gen_ai_token_type` = input, output |
| `obs_llm_cost_usd_total` | counter | |
| `obs_traces_total` | counter | `decision` = head, tail, dropped (sampling) |
| `gen_ai_client_operation_duration_seconds` | histogram | |
| `gen_ai_client_operation_time_to_first_chunk_seconds` | histogram | |
| `gen_ai_client_token_usage` | histogram | `gen_ai_token_type` = input, output |

Names follow OpenTelemetry's Prometheus rules: base units (`_seconds`),
counters end in `_total`, a unit in braces (`{token}`) is dropped, dots
become underscores, no colons. Histograms use the GenAI bucket boundaries,
counted exactly by the collector (see `obs.metrics.histograms`), buckets increasing
and ending with `le="+Inf"` equal to `_count`, then `_sum`. The text ends
with a newline. Serve it as `CONTENT_TYPE`. A pure function of one
consistent read of the collector.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from obs.export.histograms import Histogram, collector_histograms

__all__ = ["CONTENT_TYPE", "to_prometheus"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TOKEN_TYPE = "gen_ai_token_type"


def to_prometheus(collector: Any) -> str:
    """The collector's counters and GenAI histograms as Prometheus text (see the module docstring).

    ValueError if `collector` has no `get_metrics()` (a MetricsCollector is what it takes).
    """
    if not callable(getattr(collector, "get_metrics", None)):
        raise ValueError(
            f"to_prometheus: collector must be a MetricsCollector (with get_metrics()), "
            f"got {type(collector).__name__}"
        )
    histograms = collector_histograms(collector)
    m = collector.get_metrics()
    lines: list[str] = []
    _counter(lines, "obs_llm_requests_total", "LLM requests recorded.", [((), m.request_count)])
    _counter(lines, "obs_llm_errors_total", "LLM requests that failed.", [((), m.error_count)])
    _counter(lines, "obs_llm_cache_hits_total", "LLM requests answered from the response cache.",
             [((), m.cache_hits)])
    _counter(lines, "obs_llm_tokens_total", "Tokens of LLM requests, by gen_ai.token.type.", [
        (((_TOKEN_TYPE, "input"),), m.prompt_tokens),
        (((_TOKEN_TYPE, "output"),), m.completion_tokens),
    ])
    _counter(lines, "obs_llm_cost_usd_total", "Cost of LLM requests in US dollars.", [((), m.total_cost)])
    _counter(lines, "obs_traces_total", "Finished traces, by sampling decision (head, tail, dropped).", [
        ((("decision", "head"),), m.traces_kept_head),
        ((("decision", "tail"),), m.traces_kept_tail),
        ((("decision", "dropped"),), m.traces_dropped),
    ])
    _histogram(lines, "gen_ai_client_operation_duration_seconds",
               "Duration of GenAI client operations (gen_ai.client.operation.duration).",
               [((), histograms["duration"])])
    _histogram(lines, "gen_ai_client_operation_time_to_first_chunk_seconds",
               "Time to the first chunk of streamed GenAI responses "
               "(gen_ai.client.operation.time_to_first_chunk).",
               [((), histograms["ttft"])])
    _histogram(lines, "gen_ai_client_token_usage",
               "Tokens per GenAI request, by gen_ai.token.type (gen_ai.client.token.usage).", [
                   (((_TOKEN_TYPE, "input"),), histograms["input_tokens"]),
                   (((_TOKEN_TYPE, "output"),), histograms["output_tokens"]),
               ])
    return "\n".join(lines) + "\n"


Labels = tuple[tuple[str, str], ...]


def _header(lines: list[str], name: str, help_text: str, kind: str) -> None:
    escaped = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    lines.append(f"# HELP {name} {escaped}")
    lines.append(f"# TYPE {name} {kind}")


def _counter(lines: list[str], name: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
    _header(lines, name, help_text, "counter")
    for labels, value in samples:
        lines.append(f"{name}{_labels(labels)} {_number(value)}")


def _histogram(
    lines: list[str], name: str, help_text: str, series: Iterable[tuple[Labels, Histogram]]
) -> None:
    _header(lines, name, help_text, "histogram")
    for labels, histogram in series:
        for bound, count in zip(histogram.bounds, histogram.cumulative, strict=True):
            lines.append(f"{name}_bucket{_labels((*labels, ('le', _number(bound))))} {count}")
        lines.append(f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {histogram.count}")
        lines.append(f"{name}_sum{_labels(labels)} {_number(histogram.sum)}")
        lines.append(f"{name}_count{_labels(labels)} {histogram.count}")


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value or bound as Prometheus reads it: ints plainly, floats by repr, +Inf, -Inf, NaN."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)
