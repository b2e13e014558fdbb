"""The values the SQLite store's settings and queries are made of: plain, immutable, JSON-ready.

Times are epoch seconds here (as the MetricsCollector's), durations and
latencies milliseconds, costs dollars. `Tiles` has the field names of
`MetricsSnapshot`, `SeriesBucket` those of `TimeBucket`, so code that draws
the one draws the other.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from obs.logs import LogEntry

__all__ = [
    "DEFAULT_MAX_AGE_S",
    "DEFAULT_MAX_LOG_ENTRIES",
    "DEFAULT_MAX_TRACES",
    "FileInfo",
    "LogPage",
    "RequestPoint",
    "RetentionPolicy",
    "RetentionReport",
    "SeriesBucket",
    "SessionPage",
    "SessionSummary",
    "Tiles",
    "TracePage",
    "TraceSummary",
]

DEFAULT_MAX_AGE_S = 7 * 86400.0
DEFAULT_MAX_TRACES = 100_000
DEFAULT_MAX_LOG_ENTRIES = 1_000_000


def _check_bound(name: str, value: object, minimum: float, integer: bool, example: str) -> None:
    if value is None:
        return
    kind_ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not kind_ok or not math.isfinite(value) or value < minimum:  # type: ignore[arg-type]
        kind = "an int" if integer else "a number"
        raise ValueError(
            f"RetentionPolicy: {name} must be None (no limit) or {kind} >= {minimum:g} ({example}), "
            f"got {value!r}"
        )


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How much history a file keeps: traces (with their spans) and log entries.

    `max_age_s`: traces, log entries and alert transitions older than this
    many seconds are removed (7 days by default); `max_traces`: beyond this
    many traces the oldest (by start time) are removed (100,000);
    `max_log_entries`: the same for log entries (1,000,000). None means no
    limit. ValueError names a field out of range.
    """

    max_age_s: float | None = DEFAULT_MAX_AGE_S
    max_traces: int | None = DEFAULT_MAX_TRACES
    max_log_entries: int | None = DEFAULT_MAX_LOG_ENTRIES

    def __post_init__(self) -> None:
        _check_bound("max_age_s", self.max_age_s, 1.0, False, "seconds; 604800 is 7 days")
        _check_bound("max_traces", self.max_traces, 1, True, "for example 100000")
        _check_bound("max_log_entries", self.max_log_entries, 1, True, "for example 1000000")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the three settings."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention pass removed."""

    traces: int = 0
    logs: int = 0
    alert_transitions: int = 0


@dataclass(frozen=True, slots=True)
class FileInfo:
    """The file behind a store: where it is, how big, what it holds and how long it keeps it.

    `size_bytes` counts the database and its -wal and -shm files (0 in
    memory); `oldest_trace_at` / `newest_trace_at` are the earliest and latest
    trace starts (epoch s), None when there is no trace.
    """

    path: str
    size_bytes: int
    trace_count: int
    request_count: int
    log_count: int
    oldest_trace_at: float | None
    newest_trace_at: float | None
    retention: RetentionPolicy
    schema_version: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (the retention as a nested dict)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Tiles:
    """The dashboard's summary over a time range and scope; every number 0 when there is no request.

    Requests are the LLM request spans (those with `gen_ai.operation.name`)
    that started in the range. Latency is `obs.latency_ms` (else the span's
    duration); `p50_latency_ms` and `p95_latency_ms` are exact (nearest rank,
    as `obs.metrics.quantiles.exact_quantile`). `requests_per_second` and
    `tokens_per_second` divide by the range in seconds (from the first
    request when `since` is None, up to now when `until` is None), at least 1.
    """

    request_count: int
    error_count: int
    error_rate: float
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    total_cost: float
    avg_latency_ms: float
    p50_latency_ms: float
    p95_latency_ms: float
    cache_hits: int
    cache_misses: int
    cache_hit_rate: float
    requests_per_second: float
    tokens_per_second: float
    avg_ttft_ms: float
    first_request_at: float | None
    last_request_at: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SeriesBucket:
    """One time bucket of requests: `start` in epoch seconds, counts, sums and percentiles.

    Percentiles of 60 s and 3600 s buckets come from the file's histograms:
    each within 2% of the exact value (the MetricsCollector's series
    accuracy); those of 1 s buckets are exact. 0 when the bucket has none,
    NaN when they were not asked for (`DashboardQueries.series(...,
    percentiles=False)`).
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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RequestPoint:
    """One request as a point of a chart: when it started (epoch s), its trace, status and latencies (ms).

    `ttft_ms` is None when the request measured no time to first token
    (it was not streamed).
    """

    start: float
    trace_id: str
    status: str
    latency_ms: float | None
    ttft_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """One row of the traces list: a trace without its spans (`DashboardQueries.trace` gives those).

    `requests`, tokens and `cost` sum the trace's LLM request spans; `model`
    is the first request's; the previews are the first request's last user
    message and the last request's answer, when message content was captured
    (cut to 300 characters).
    """

    trace_id: str
    name: str
    start_time: float
    end_time: float | None
    duration_ms: float | None
    status: str
    service: str | None
    conversation_id: str | None
    model: str | None
    span_count: int
    requests: int
    input_tokens: int
    output_tokens: int
    cost: float
    input_preview: str | None
    output_preview: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TracePage:
    """A page of the traces list, newest first; `has_more` says whether another page follows."""

    items: tuple[TraceSummary, ...]
    offset: int
    limit: int
    has_more: bool


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One conversation (all traces with its `gen_ai.conversation.id` / `session.id`).

    `turns` counts its traces; `errors` the turns that failed; `total_latency_ms`
    and `p95_latency_ms` are over the turns' durations; `first_message` is
    the first turn's user message when content was captured;
    `last_activity` is the latest turn end (epoch s).
    """

    conversation_id: str
    turns: int
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost: float
    total_latency_ms: float
    p95_latency_ms: float
    first_message: str | None
    first_at: float
    last_activity: float
    service: str | None
    model: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SessionPage:
    """A page of conversations, most recently active first."""

    items: tuple[SessionSummary, ...]
    offset: int
    limit: int
    has_more: bool


@dataclass(frozen=True, slots=True)
class LogPage:
    """A page of log entries, newest first (the service that wrote each is in `services`)."""

    items: tuple[LogEntry, ...]
    services: tuple[str | None, ...]
    offset: int
    limit: int
    has_more: bool


