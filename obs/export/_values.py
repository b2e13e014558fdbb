"""What every encoder of obs.export shares: times, ids, service names, values as text.

Times: obs keeps epoch milliseconds as floats; OTLP wants integer
nanoseconds, Zipkin and Jaeger integer microseconds. `ms_to_ns` converts
exactly (the float's integer part is exact, its fraction is scaled alone), so
`ns_to_ms(ms_to_ns(t)) == t` for every time of this century: a float there is
about 0.24 µs wide, far wider than the half nanosecond the rounding costs.

The keys under `obs.trace.` carry what a trace holds beyond its spans (a
name other than its root span's, explicit start and end times, a status no
span explains, metadata) on its root span, and only when the spans alone do
not say it, so `from_otlp` can rebuild the trace exactly. Spans of traces
the tracer made implicitly carry none of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from obs import semconv
from obs._validate import json_safe
from obs.trace.spans import Span
from obs.trace.traces import Trace

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "SCOPE_NAME",
    "TRACE_END_KEY",
    "TRACE_METADATA_PREFIX",
    "TRACE_NAME_KEY",
    "TRACE_PREFIX",
    "TRACE_START_KEY",
    "TRACE_STATUS_KEY",
    "as_traces",
    "clean_text",
    "derived_root",
    "ended_spans",
    "finite_or_text",
    "json_text",
    "ms_to_ns",
    "ms_to_us",
    "ns_to_ms",
    "scope_version",
    "service_name",
    "trace_extras",
]

SCOPE_NAME = "obs"
# What OpenTelemetry SDKs call a service that did not name itself.
DEFAULT_SERVICE_NAME = "unknown_service"

TRACE_PREFIX = semconv.OBS_TRACE_PREFIX
TRACE_NAME_KEY = semconv.OBS_TRACE_NAME
TRACE_START_KEY = semconv.OBS_TRACE_START_TIME_UNIX_NANO
TRACE_END_KEY = semconv.OBS_TRACE_END_TIME_UNIX_NANO
TRACE_STATUS_KEY = semconv.OBS_TRACE_STATUS
TRACE_METADATA_PREFIX = semconv.OBS_TRACE_METADATA_PREFIX


def scope_version() -> str:
    """obs's version, the instrumentation scope's version (read late: `obs` may still be importing us)."""
    import obs

    return str(getattr(obs, "__version__", ""))


def as_traces(owner: str, traces: Trace | Iterable[Trace]) -> Sequence[Trace]:
    """`traces` as a sequence of Trace (one Trace is accepted too); ValueError naming `owner` otherwise."""
    if isinstance(traces, Trace):
        return (traces,)
    if isinstance(traces, str | bytes | Mapping) or not isinstance(traces, Iterable):
        raise ValueError(f"{owner}: traces must be a list of Trace values, got {type(traces).__name__}")
    out = traces if isinstance(traces, list | tuple) else list(traces)
    for index, trace in enumerate(out):
        if not isinstance(trace, Trace):
            raise ValueError(
                f"{owner}: traces[{index}] must be a Trace, got {type(trace).__name__}; pass finished "
                "traces (from a TraceExporter, a store, or from_otlp)"
            )
    return out


def ms_to_ns(ms: float) -> int:
    """Epoch milliseconds as integer nanoseconds, exactly rounded. ValueError for NaN or an infinity."""
    whole = int(ms)  # ValueError / OverflowError for NaN and infinities
    return whole * 1_000_000 + round((ms - whole) * 1e6)


def ns_to_ms(ns: int) -> float:
    """Integer nanoseconds as epoch milliseconds (the nearest float)."""
    return ns / 1_000_000


def ms_to_us(ms: float) -> int:
    """Epoch milliseconds as integer microseconds, rounded half up from the nanoseconds (as OpenTelemetry)."""
    return (ms_to_ns(ms) + 500) // 1000


def service_name(trace: Trace, resource: Mapping[str, Any] | None = None) -> str:
    """The service of a trace: the resource's `service.name`, else the trace's, else `unknown_service`."""
    if resource:
        name = resource.get(semconv.SERVICE_NAME)
        if isinstance(name, str) and name:
            return name
    name = trace.metadata.get(semconv.SERVICE_NAME)
    return name if isinstance(name, str) and name else DEFAULT_SERVICE_NAME


def json_text(value: Any) -> str:
    """`value` as compact JSON text; never raises (what JSON cannot hold becomes marked text, NaN "NaN")."""
    safe, _ = json_safe(value, finite=True)
    return json.dumps(safe, separators=(",", ":"), ensure_ascii=False)


def clean_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD, so it encodes as UTF-8 (what protobuf needs)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def ended_spans(trace: Trace) -> list[Span]:
    """The spans of `trace` that have ended, in trace order (running ones have no end to export)."""
    return [s for s in trace.spans if s.status != "running" and s.end_time is not None]


def derived_root(spans: Sequence[Span]) -> Span | None:
    """The span a trace is named after: the earliest-starting span whose parent is not in `spans`.

    The first span when every one has a parent among them (a cycle); None for no spans.
    """
    if not spans:
        return None
    ids = {s.id for s in spans}
    best: Span | None = None
    for span in spans:
        if (span.parent_id is None or span.parent_id not in ids) and (
            best is None or span.start_time < best.start_time
        ):
            best = span
    return best if best is not None else spans[0]


def trace_extras(trace: Trace, spans: Sequence[Span]) -> dict[str, Any]:
    """The `obs.trace.*` attributes the root span must carry so that `trace` comes back whole.

    Empty when the trace is what its spans say: named after its root span,
    from the earliest start to the latest end, in error exactly when a span
    is, and with no metadata but `service.name`. That is every trace the
    Tracer makes implicitly.
    """
    extras: dict[str, Any] = {}
    root = derived_root(spans)
    if root is None:
        return extras
    if trace.name != root.name:
        extras[TRACE_NAME_KEY] = trace.name
    start = min(s.start_time for s in spans)
    if trace.start_time != start:
        extras[TRACE_START_KEY] = ms_to_ns(trace.start_time)
    derived_status = "error" if any(s.status == "error" for s in spans) else "success"
    if trace.status == "running" or trace.end_time is None:
        extras[TRACE_STATUS_KEY] = "running"
    else:
        end = max(trace.start_time, max(s.end_time for s in spans))  # type: ignore[type-var]
        if trace.end_time != end:
            extras[TRACE_END_KEY] = ms_to_ns(trace.end_time)
        if trace.status != derived_status:
            extras[TRACE_STATUS_KEY] = trace.status
    for key, value in trace.metadata.items():
        if key != semconv.SERVICE_NAME:
            extras[TRACE_METADATA_PREFIX + str(key)] = value
    return extras


def finite_or_text(value: float) -> float | str:
    """A finite float as is; NaN and the infinities as "NaN", "Infinity", "-Infinity" (for JSON)."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
