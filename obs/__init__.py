"""obs: observability for applications that talk to llama.cpp's llama-server.

The public API, re-exported from the modules that define it.
"""

from obs.clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock
from obs.ids import (
    IdGenerator,
    RandomIdGenerator,
    SequentialIdGenerator,
    TraceParent,
    format_traceparent,
    is_valid_span_id,
    is_valid_trace_id,
    parse_traceparent,
)
from obs.spans import Span, SpanEvent, add_span_event, create_span, end_span, set_span_attributes
from obs.traces import (
    SpanNode,
    Trace,
    add_span_to_trace,
    children_of,
    create_trace,
    critical_path,
    critical_path_duration,
    end_trace,
    root_spans,
    span_depth,
    span_tree,
)

__version__ = "0.1.0"

__all__ = [
    "SYSTEM_CLOCK",
    "Clock",
    "FakeClock",
    "IdGenerator",
    "RandomIdGenerator",
    "SequentialIdGenerator",
    "Span",
    "SpanEvent",
    "SpanNode",
    "SystemClock",
    "Trace",
    "TraceParent",
    "add_span_event",
    "add_span_to_trace",
    "children_of",
    "create_span",
    "create_trace",
    "critical_path",
    "critical_path_duration",
    "end_span",
    "end_trace",
    "format_traceparent",
    "is_valid_span_id",
    "is_valid_trace_id",
    "parse_traceparent",
    "root_spans",
    "set_span_attributes",
    "span_depth",
    "span_tree",
]
