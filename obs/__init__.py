"""obs: observability for applications that talk to llama.cpp's llama-server.

The public API, re-exported from the modules that define it.
"""

import importlib
from typing import TYPE_CHECKING, Any

from obs.alerting.manager import (
    ALERT_METRICS,
    ALERT_OPS,
    AlertEvent,
    AlertManager,
    AlertRule,
    AlertState,
    AlertStatus,
    AlertTransition,
    CallbackNotifier,
    LoggerNotifier,
    Notifier,
    WebhookNotifier,
    default_rules,
    load_rules,
    parse_rules,
)
from obs.clock import (
    SYSTEM_CLOCK,
    Clock,
    FakeClock,
    SystemClock,
)
from obs.config import configure, default_tracer
from obs.llm.async_client import AsyncChatStream, AsyncInstrumentedClient
from obs.llm.cache import (
    ResponseCache,
)
from obs.llm.client import (
    BASE_URL_ENV,
    CAPTURE_CONTENT_ENV,
    DEFAULT_BASE_URL,
    ChatResult,
    ChatStream,
    InstrumentedClient,
)
from obs.llm.conversation import Conversation, conversation_attributes, current_conversation_id
from obs.llm.errors import (
    AuthenticationError,
    BadResponse,
    HTTPStatusError,
    LLMServerError,
    ServerLoading,
    ServerTimeout,
    ServerUnavailable,
    StreamInterrupted,
)
from obs.llm.llama.props import (
    ServerMetrics,
    ServerProps,
    check_health,
    fetch_metrics,
    fetch_props,
)
from obs.llm.llama.responses import (
    ChatCompletion,
    Timings,
    Usage,
)
from obs.logs import (
    LEVELS,
    LLMLogger,
    LogEntry,
    LogLevel,
    SupportsWrite,
)
from obs.metrics._pricing import ModelCost, ModelPrice
from obs.metrics.collector import (
    MetricsCollector,
    MetricsSnapshot,
    SamplingDecision,
    TimeBucket,
    WindowStats,
)
from obs.metrics.quantiles import (
    LogMapping,
    QuantileSketch,
    exact_quantile,
)
from obs.metrics.rebuild import rebuild_collector
from obs.storage.base import StoreStats, TraceStoreProtocol
from obs.storage.exporter import SqliteExporter, SqliteLogSink
from obs.storage.memory import TraceStore
from obs.storage.queries import DashboardQueries
from obs.storage.results import RetentionPolicy
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.core import TraceHandle
from obs.trace.handles import SpanHandle
from obs.trace.ids import (
    IdGenerator,
    RandomIdGenerator,
    SequentialIdGenerator,
    TraceParent,
    format_traceparent,
    is_valid_span_id,
    is_valid_trace_id,
    parse_traceparent,
)
from obs.trace.processors import (
    BatchProcessor,
    ExportResult,
    InMemoryExporter,
    ProcessorStats,
    SimpleProcessor,
    StoreExporter,
    TraceExporter,
    TraceProcessor,
)
from obs.trace.sampling.head import (
    SAMPLER_ARG_ENV,
    SAMPLER_ENV,
    SAMPLER_NAMES,
    AlwaysOff,
    AlwaysOn,
    HeadSampler,
    ParentBased,
    TraceIdRatio,
    sampler_from_env,
)
from obs.trace.sampling.tail import (
    KeepErrors,
    KeepMatching,
    KeepPredicate,
    KeepProbability,
    KeepSlow,
    TailRule,
    TailSampler,
    trace_duration_ms,
    trace_has_error,
)
from obs.trace.spans import (
    FrozenDict,
    Span,
    SpanEvent,
    SpanKind,
    SpanStatus,
    add_span_event,
    create_span,
    end_span,
    set_span_attributes,
)
from obs.trace.tracer import Tracer
from obs.trace.traces import (
    SpanNode,
    Trace,
    TraceStatus,
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

if TYPE_CHECKING:  # loaded on first use: pandas for dashboard data, protobuf for export, the server launcher
    from obs.dashboard import (
        LATENCY_BUCKETS,
        REQUEST_COLUMNS,
        TIMELINE_COLUMNS,
        TRACE_COLUMNS,
        DashboardData,
        generate_dashboard_data,
        is_llm_span,
        latency_histogram,
        requests_frame,
        traces_frame,
    )
    from obs.export.exporters import ExporterStats, OtlpHttpExporter, ZipkinExporter
    from obs.export.files import write_traces
    from obs.export.jaeger import to_jaeger
    from obs.export.otlp import to_otlp, to_otlp_json
    from obs.export.otlp_decode import from_otlp
    from obs.export.prometheus import to_prometheus
    from obs.export.zipkin import to_zipkin
    from obs.llm.llama.server import (
        EmbeddedServer,
        EmbeddedServerError,
        find_free_port,
        start_embedded_server,
    )
    from obs.receive import MergingStoreExporter, make_receiver_app

_LAZY = {
    "MergingStoreExporter": "obs.receive",
    "make_receiver_app": "obs.receive",
    "ExporterStats": "obs.export.exporters",
    "OtlpHttpExporter": "obs.export.exporters",
    "ZipkinExporter": "obs.export.exporters",
    "write_traces": "obs.export.files",
    "to_jaeger": "obs.export.jaeger",
    "to_otlp": "obs.export.otlp",
    "to_otlp_json": "obs.export.otlp",
    "from_otlp": "obs.export.otlp_decode",
    "to_prometheus": "obs.export.prometheus",
    "to_zipkin": "obs.export.zipkin",
    "DashboardData": "obs.dashboard",
    "LATENCY_BUCKETS": "obs.dashboard",
    "REQUEST_COLUMNS": "obs.dashboard",
    "TIMELINE_COLUMNS": "obs.dashboard",
    "TRACE_COLUMNS": "obs.dashboard",
    "generate_dashboard_data": "obs.dashboard",
    "is_llm_span": "obs.dashboard",
    "latency_histogram": "obs.dashboard",
    "requests_frame": "obs.dashboard",
    "traces_frame": "obs.dashboard",
    "EmbeddedServer": "obs.llm.llama.server",
    "EmbeddedServerError": "obs.llm.llama.server",
    "find_free_port": "obs.llm.llama.server",
    "start_embedded_server": "obs.llm.llama.server",
}


def __getattr__(name: str) -> Any:
    """Import the dashboard-data (pandas), export (protobuf) and launcher names on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'obs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "ALERT_METRICS",
    "ALERT_OPS",
    "BASE_URL_ENV",
    "CAPTURE_CONTENT_ENV",
    "DEFAULT_BASE_URL",
    "LATENCY_BUCKETS",
    "LEVELS",
    "REQUEST_COLUMNS",
    "SAMPLER_ARG_ENV",
    "SAMPLER_ENV",
    "SAMPLER_NAMES",
    "SYSTEM_CLOCK",
    "TIMELINE_COLUMNS",
    "TRACE_COLUMNS",
    "AlertEvent",
    "AlertManager",
    "AlertRule",
    "AlertState",
    "AlertStatus",
    "AlertTransition",
    "AlwaysOff",
    "AlwaysOn",
    "AsyncChatStream",
    "AsyncInstrumentedClient",
    "AuthenticationError",
    "BadResponse",
    "BatchProcessor",
    "CallbackNotifier",
    "ChatCompletion",
    "ChatResult",
    "ChatStream",
    "Clock",
    "Conversation",
    "DashboardData",
    "DashboardQueries",
    "EmbeddedServer",
    "EmbeddedServerError",
    "ExportResult",
    "ExporterStats",
    "FakeClock",
    "FrozenDict",
    "HTTPStatusError",
    "HeadSampler",
    "IdGenerator",
    "InMemoryExporter",
    "InstrumentedClient",
    "KeepErrors",
    "KeepMatching",
    "KeepPredicate",
    "KeepProbability",
    "KeepSlow",
    "LLMLogger",
    "LLMServerError",
    "LogEntry",
    "LogLevel",
    "LogMapping",
    "LoggerNotifier",
    "MergingStoreExporter",
    "MetricsCollector",
    "MetricsSnapshot",
    "ModelCost",
    "ModelPrice",
    "Notifier",
    "OtlpHttpExporter",
    "ParentBased",
    "ProcessorStats",
    "QuantileSketch",
    "RandomIdGenerator",
    "ResponseCache",
    "RetentionPolicy",
    "SamplingDecision",
    "SequentialIdGenerator",
    "ServerLoading",
    "ServerMetrics",
    "ServerProps",
    "ServerTimeout",
    "ServerUnavailable",
    "SimpleProcessor",
    "Span",
    "SpanEvent",
    "SpanHandle",
    "SpanKind",
    "SpanNode",
    "SpanStatus",
    "SqliteExporter",
    "SqliteLogSink",
    "SqliteTraceStore",
    "StoreExporter",
    "StoreStats",
    "StreamInterrupted",
    "SupportsWrite",
    "SystemClock",
    "TailRule",
    "TailSampler",
    "TimeBucket",
    "Timings",
    "Trace",
    "TraceExporter",
    "TraceHandle",
    "TraceIdRatio",
    "TraceParent",
    "TraceProcessor",
    "TraceStatus",
    "TraceStore",
    "TraceStoreProtocol",
    "Tracer",
    "Usage",
    "WebhookNotifier",
    "WindowStats",
    "ZipkinExporter",
    "add_span_event",
    "add_span_to_trace",
    "check_health",
    "children_of",
    "configure",
    "conversation_attributes",
    "create_span",
    "create_trace",
    "critical_path",
    "critical_path_duration",
    "current_conversation_id",
    "default_rules",
    "default_tracer",
    "end_span",
    "end_trace",
    "exact_quantile",
    "fetch_metrics",
    "fetch_props",
    "find_free_port",
    "format_traceparent",
    "from_otlp",
    "generate_dashboard_data",
    "is_llm_span",
    "is_valid_span_id",
    "is_valid_trace_id",
    "latency_histogram",
    "load_rules",
    "make_receiver_app",
    "parse_rules",
    "parse_traceparent",
    "rebuild_collector",
    "requests_frame",
    "root_spans",
    "sampler_from_env",
    "set_span_attributes",
    "span_depth",
    "span_tree",
    "start_embedded_server",
    "to_jaeger",
    "to_otlp",
    "to_otlp_json",
    "to_prometheus",
    "to_zipkin",
    "trace_duration_ms",
    "trace_has_error",
    "traces_frame",
    "write_traces",
]
