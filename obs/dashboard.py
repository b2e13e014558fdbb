"""Dashboard data: metrics and traces turned into display strings and chart-ready frames.

`generate_dashboard_data(metrics, traces)` reads a `MetricsCollector` (or a
`MetricsSnapshot`) and a sequence of finished traces and returns a
`DashboardData`: the summary tiles as display strings, a latency histogram
with fixed buckets, error rate, throughput, latency percentiles, and pandas
DataFrames for charts (one row per LLM request, per time bucket, per trace).
It only reads what it is given: no clock, no I/O, nothing is mutated.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from obs import semconv
from obs.trace.spans import Span
from obs.trace.traces import Trace

if TYPE_CHECKING:
    from obs.metrics.collector import MetricsCollector, MetricsSnapshot

__all__ = [
    "LATENCY_BUCKETS",
    "REQUEST_COLUMNS",
    "TIMELINE_COLUMNS",
    "TRACE_COLUMNS",
    "DashboardData",
    "generate_dashboard_data",
    "is_llm_span",
    "latency_histogram",
    "requests_frame",
    "traces_frame",
]

_UTC_TIME = "datetime64[ns, UTC]"

# (label, low ms inclusive, high ms exclusive); a latency v falls where low <= v < high.
LATENCY_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("0-100ms", 0.0, 100.0),
    ("100-250ms", 100.0, 250.0),
    ("250-500ms", 250.0, 500.0),
    ("500ms-1s", 500.0, 1_000.0),
    ("1-2.5s", 1_000.0, 2_500.0),
    ("2.5-5s", 2_500.0, 5_000.0),
    ("5-10s", 5_000.0, 10_000.0),
    ("10s+", 10_000.0, math.inf),
)

# Column -> dtype. Text columns are `object` so a missing value stays None on every pandas version.
_REQUEST_SCHEMA: dict[str, str] = {
    "time": _UTC_TIME,
    "trace_id": "object",
    "span_id": "object",
    "name": "object",
    "model": "object",
    "status": "object",
    "latency_ms": "float64",
    "ttft_ms": "float64",
    "prompt_tokens": "int64",
    "completion_tokens": "int64",
    "cached_tokens": "int64",
    "total_tokens": "int64",
    "cost": "float64",
    "tokens_per_second": "float64",
    "prompt_ms": "float64",
    "predicted_ms": "float64",
    "non_model_ms": "float64",
    "error_type": "object",
}

_TIMELINE_SCHEMA: dict[str, str] = {
    "time": _UTC_TIME,
    "start": "float64",
    "requests": "int64",
    "errors": "int64",
    "prompt_tokens": "int64",
    "completion_tokens": "int64",
    "cost": "float64",
    "avg_latency_ms": "float64",
    "p50_latency_ms": "float64",
    "p95_latency_ms": "float64",
    "p95_ttft_ms": "float64",
    "cache_hits": "int64",
    "traces_kept_head": "int64",
    "traces_kept_tail": "int64",
    "traces_dropped": "int64",
}

_TRACE_SCHEMA: dict[str, str] = {
    "time": _UTC_TIME,
    "trace_id": "object",
    "name": "object",
    "duration_ms": "float64",
    "status": "object",
    "spans": "int64",
    "prompt_tokens": "int64",
    "completion_tokens": "int64",
    "cost": "float64",
}

REQUEST_COLUMNS: tuple[str, ...] = tuple(_REQUEST_SCHEMA)
TIMELINE_COLUMNS: tuple[str, ...] = tuple(_TIMELINE_SCHEMA)
TRACE_COLUMNS: tuple[str, ...] = tuple(_TRACE_SCHEMA)

HistogramSource = Literal["requests", "traces", "none"]
_RowsPerTrace = Sequence[Sequence[dict[str, Any]]]


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class DashboardData:
    """Everything a dashboard page shows, computed once from metrics and traces.

    - `summary`: tile label -> display value, in this order: 'Total Requests'
      (int), 'Total Tokens' (int), 'Total Cost' ('$0.0500'), 'Avg Latency'
      ('123ms'), 'P95 Latency' ('456ms'), 'Error Rate' ('2.0%'), 'Cache Hit
      Rate' ('50.0%'), 'Throughput' ('0.50 req/s').
    - `latency_histogram`: `[{"bucket": "0-100ms", "count": 3}, ...]`, every
      bucket of `LATENCY_BUCKETS` in order, zero counts included.
    - `histogram_source`: "requests" when the histogram counts LLM request
      latencies, "traces" when there were none and trace durations were
      counted instead, "none" when there was nothing to count.
    - `error_rate`: errors / requests from the metrics, a fraction 0..1.
    - `throughput`: requests per second over the traces' span of time (traces
      per second when the traces hold no LLM request spans).
    - `percentiles`: latency in ms, keys 'p50', 'p90', 'p95', 'p99'.
    - `requests`, `timeline`, `traces`: DataFrames with the columns of
      `REQUEST_COLUMNS`, `TIMELINE_COLUMNS` and `TRACE_COLUMNS`, oldest first.
    - `snapshot`: the metrics snapshot everything above was computed from.
    """

    summary: dict[str, str | int]
    latency_histogram: list[dict[str, str | int]]
    histogram_source: HistogramSource
    error_rate: float
    throughput: float
    percentiles: dict[str, float]
    requests: pd.DataFrame
    timeline: pd.DataFrame
    traces: pd.DataFrame
    snapshot: Any = None


def is_llm_span(span: Span) -> bool:
    """True if `span` is an LLM request: it has the `gen_ai.operation.name` attribute."""
    return semconv.GEN_AI_OPERATION_NAME in span.attributes


def latency_histogram(latencies_ms: Iterable[float]) -> list[dict[str, str | int]]:
    """Count latencies (ms) into `LATENCY_BUCKETS`; every bucket listed, in order.

    A value v is counted where low <= v < high; NaN and None are skipped and
    values below 0 count in the first bucket.
    """
    counts = [0] * len(LATENCY_BUCKETS)
    for value in latencies_ms:
        number = _number(value)
        if number is None:
            continue
        for index, (_, _, high) in enumerate(LATENCY_BUCKETS):
            if number < high:
                counts[index] += 1
                break
    labels = [label for label, _, _ in LATENCY_BUCKETS]
    return [{"bucket": label, "count": count} for label, count in zip(labels, counts, strict=True)]


def _number(value: object) -> float | None:
    """`value` as a finite float, or None for None, NaN, infinities, bools and non-numbers."""
    kind = type(value)
    if kind is float or kind is int:  # the common case, checked first: this runs per attribute
        number = float(value)  # type: ignore[arg-type]
    elif value is None or isinstance(value, bool):
        return None
    elif isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _float(attributes: Mapping[str, Any], key: str) -> float:
    number = _number(attributes.get(key))
    return math.nan if number is None else number


def _int(attributes: Mapping[str, Any], *keys: str) -> int:
    for key in keys:
        number = _number(attributes.get(key))
        if number is not None:
            return int(number)
    return 0


def _text(attributes: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = attributes.get(key)
        if value is not None and value != "":
            return str(value)
    return None


def _request_row(span: Span) -> dict[str, Any]:
    attrs = span.attributes
    latency = _float(attrs, semconv.OBS_LATENCY_MS)
    if math.isnan(latency) and span.duration is not None:
        latency = span.duration
    prompt = _int(attrs, semconv.GEN_AI_USAGE_INPUT_TOKENS)
    completion = _int(attrs, semconv.GEN_AI_USAGE_OUTPUT_TOKENS)
    cost = _number(attrs.get(semconv.OBS_COST_USD))
    return {
        "time": span.start_time,
        "trace_id": span.trace_id,
        "span_id": span.id,
        "name": span.name,
        "model": _text(attrs, semconv.GEN_AI_RESPONSE_MODEL, semconv.GEN_AI_REQUEST_MODEL),
        "status": span.status,
        "latency_ms": latency,
        "ttft_ms": _float(attrs, semconv.OBS_TTFT_MS),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": _int(
            attrs, semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, semconv.LLAMA_CPP_TIMINGS_CACHE_N
        ),
        "total_tokens": prompt + completion,
        "cost": 0.0 if cost is None else cost,
        "tokens_per_second": _float(attrs, semconv.OBS_TOKENS_PER_SECOND),
        "prompt_ms": _float(attrs, semconv.LLAMA_CPP_TIMINGS_PROMPT_MS),
        "predicted_ms": _float(attrs, semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS),
        "non_model_ms": _float(attrs, semconv.OBS_NON_MODEL_MS),
        "error_type": _text(attrs, semconv.ERROR_TYPE),
    }


def _frame(rows: Sequence[Mapping[str, Any]], schema: Mapping[str, str], time_unit: str) -> pd.DataFrame:
    """A frame with exactly `schema`'s columns and dtypes; `time` made from the raw `time` numbers."""
    if not rows:
        return pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in schema.items()})
    columns: dict[str, Any] = {}
    for column, dtype in schema.items():
        values = [row.get(column) for row in rows]
        if column == "time":
            columns[column] = pd.to_datetime(pd.Series(values, dtype="float64"), unit=time_unit, utc=True)
        elif dtype == "object":
            columns[column] = pd.Series(values, dtype="object")
        elif dtype == "int64":
            columns[column] = pd.Series([0 if v is None else int(v) for v in values], dtype="int64")
        else:
            columns[column] = pd.Series(
                [math.nan if v is None else float(v) for v in values], dtype="float64"
            )
    frame = pd.DataFrame(columns)
    frame["time"] = frame["time"].astype(_UTC_TIME)
    return frame


def _request_rows(traces: Sequence[Trace]) -> list[list[dict[str, Any]]]:
    """The request rows of each trace, in the traces' order (spans in the trace's order)."""
    return [[_request_row(span) for span in trace.spans if is_llm_span(span)] for trace in traces]


def _requests_frame(rows_per_trace: _RowsPerTrace) -> pd.DataFrame:
    rows = [row for rows in rows_per_trace for row in rows]
    rows.sort(key=lambda row: row["time"])  # stable: ties keep trace order
    return _frame(rows, _REQUEST_SCHEMA, "ms")


def _traces_frame(traces: Sequence[Trace], rows_per_trace: _RowsPerTrace) -> pd.DataFrame:
    rows = []
    for trace, llm in zip(traces, rows_per_trace, strict=True):
        rows.append({
            "time": trace.start_time,
            "trace_id": trace.id,
            "name": trace.name,
            "duration_ms": trace.duration,
            "status": trace.status,
            "spans": len(trace.spans),
            "prompt_tokens": sum(row["prompt_tokens"] for row in llm),
            "completion_tokens": sum(row["completion_tokens"] for row in llm),
            "cost": sum(row["cost"] for row in llm),
        })
    rows.sort(key=lambda row: row["time"])
    return _frame(rows, _TRACE_SCHEMA, "ms")


def requests_frame(traces: Iterable[Trace]) -> pd.DataFrame:
    """Only the `requests` frame of `generate_dashboard_data` (one row per LLM request span)."""
    return _requests_frame(_request_rows(list(traces)))


def traces_frame(traces: Iterable[Trace]) -> pd.DataFrame:
    """Only the `traces` frame of `generate_dashboard_data` (one row per trace), without metrics."""
    trace_list = list(traces)
    return _traces_frame(trace_list, _request_rows(trace_list))


def _timeline_frame(collector: Any, bucket_s: int, since: float | None) -> pd.DataFrame:
    if collector is None:
        return _frame([], _TIMELINE_SCHEMA, "s")
    buckets = collector.time_series(bucket_s, since=since)
    if not buckets:
        return _frame([], _TIMELINE_SCHEMA, "s")
    # Fields are read directly: `to_dict()` (dataclasses.asdict) deep-copies and costs ~10x more.
    names = (
        [f.name for f in dataclasses.fields(buckets[0])]
        if dataclasses.is_dataclass(buckets[0])
        else list(buckets[0].to_dict())
    )
    rows = []
    for bucket in buckets:
        row = {name: getattr(bucket, name) for name in names}
        row["time"] = row.get("start")
        rows.append(row)
    frame = _frame(rows, _TIMELINE_SCHEMA, "s")
    # Fields a newer TimeBucket may carry are kept, after the known ones.
    for name in names:
        if name not in frame.columns:
            frame[name] = [row[name] for row in rows]
    return frame


def _latest_end(trace: Trace) -> float:
    """A trace's end; for a running trace, the latest end (or start) of its spans."""
    if trace.end_time is not None:
        return trace.end_time
    ends = [span.end_time if span.end_time is not None else span.start_time for span in trace.spans]
    return max([trace.start_time, *ends])


def _throughput(traces: Sequence[Trace], request_count: int) -> float:
    """Requests (traces when there are no request spans) per second from the earliest
    start to the latest end; 0.0 when that span is zero."""
    if not traces:
        return 0.0
    first = min(trace.start_time for trace in traces)
    last = max(_latest_end(trace) for trace in traces)
    span_s = (last - first) / 1000.0
    count = request_count or len(traces)
    return count / span_s if span_s > 0 else 0.0


def _summary(snapshot: Any, throughput: float) -> dict[str, str | int]:
    return {
        "Total Requests": int(snapshot.request_count),
        "Total Tokens": int(snapshot.total_tokens),
        "Total Cost": f"${snapshot.total_cost:.4f}",
        "Avg Latency": f"{snapshot.avg_latency_ms:.0f}ms",
        "P95 Latency": f"{snapshot.p95_latency_ms:.0f}ms",
        "Error Rate": f"{snapshot.error_rate * 100:.1f}%",
        "Cache Hit Rate": f"{snapshot.cache_hit_rate * 100:.1f}%",
        "Throughput": f"{throughput:.2f} req/s",
    }


def generate_dashboard_data(
    metrics: MetricsCollector | MetricsSnapshot,
    traces: Sequence[Trace],
    *,
    bucket_s: int = 1,
    since: float | None = None,
) -> DashboardData:
    """Compute a `DashboardData` from `metrics` and finished `traces` (see its fields).

    `metrics` is a collector (its `get_metrics()` gives the snapshot and its
    `time_series(bucket_s, since=since)` the timeline; `since` is epoch
    seconds, None for all that is retained) or a snapshot alone (the timeline
    is then an empty frame with its columns). Summary numbers, error rate and
    percentiles come from the metrics; the request rows, the trace rows and
    the throughput come from the traces.

    Request rows are the spans that have `gen_ai.operation.name`, oldest first,
    read from their semconv attributes: latency is `obs.latency_ms` (else the
    span's duration), tokens and cost default to 0 when absent, the other
    timings to NaN. The latency histogram counts those request latencies; when
    there are no request rows it counts trace durations instead (see
    `histogram_source`). Throughput is the number of request rows (or of
    traces, when there are none) divided by the seconds from the earliest trace
    start to the latest trace end (a running trace ends at its latest span
    end), 0.0 when there are no traces or that span is zero.

    Raises ValueError if `bucket_s` is not an int >= 1, TypeError if
    `metrics` is neither a collector nor a snapshot.
    """
    if isinstance(bucket_s, bool) or not isinstance(bucket_s, int) or bucket_s < 1:
        raise ValueError(f"generate_dashboard_data: bucket_s must be an int >= 1, got {bucket_s!r}")
    if callable(getattr(metrics, "get_metrics", None)):
        collector: Any = metrics
        snapshot: Any = collector.get_metrics()
    elif hasattr(metrics, "request_count") and hasattr(metrics, "p95_latency_ms"):
        collector, snapshot = None, metrics
    else:
        raise TypeError(
            "generate_dashboard_data: metrics must be a MetricsCollector or a MetricsSnapshot, "
            f"got {type(metrics).__name__}"
        )
    trace_list = list(traces)
    rows_per_trace = _request_rows(trace_list)
    requests = _requests_frame(rows_per_trace)
    if len(requests):
        source: HistogramSource = "requests"
        histogram = latency_histogram(requests["latency_ms"].tolist())
    elif trace_list:
        source = "traces"
        histogram = latency_histogram(trace.duration for trace in trace_list)
    else:
        source = "none"
        histogram = latency_histogram(())
    throughput = _throughput(trace_list, len(requests))
    return DashboardData(
        summary=_summary(snapshot, throughput),
        latency_histogram=histogram,
        histogram_source=source,
        error_rate=float(snapshot.error_rate),
        throughput=throughput,
        percentiles={
            "p50": float(snapshot.p50_latency_ms),
            "p90": float(snapshot.p90_latency_ms),
            "p95": float(snapshot.p95_latency_ms),
            "p99": float(snapshot.p99_latency_ms),
        },
        requests=requests,
        timeline=_timeline_frame(collector, bucket_s, since),
        traces=_traces_frame(trace_list, rows_per_trace),
        snapshot=snapshot,
    )
