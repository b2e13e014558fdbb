"""Telemetry that leaves: encoders for OTLP, Zipkin, Jaeger and Prometheus, and the exporters that send them.

Encoders are pure functions (`otlp`, `otlp_decode`, `zipkin`, `jaeger`,
`prometheus` with `histograms`); the exporters (`exporters`, on
`_http`'s retrying sender, configured by `otlp_config`) are thin senders on
the processor seam of `obs.trace.processors`; `files` writes traces to a
file atomically. Shared helpers live in `_values`.
"""

from obs.export.exporters import ExporterStats, OtlpHttpExporter, ZipkinExporter
from obs.export.files import write_traces
from obs.export.histograms import Histogram, collector_histograms
from obs.export.jaeger import to_jaeger
from obs.export.otlp import to_otlp, to_otlp_json
from obs.export.otlp_config import OtlpConfig
from obs.export.otlp_decode import from_otlp
from obs.export.prometheus import to_prometheus
from obs.export.zipkin import to_zipkin

__all__ = [
    "ExporterStats",
    "Histogram",
    "OtlpConfig",
    "OtlpHttpExporter",
    "ZipkinExporter",
    "collector_histograms",
    "from_otlp",
    "to_jaeger",
    "to_otlp",
    "to_otlp_json",
    "to_prometheus",
    "to_zipkin",
    "write_traces",
]
