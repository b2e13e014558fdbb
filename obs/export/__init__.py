"""Telemetry that leaves: encoders for OTLP, Zipkin, Jaeger and Prometheus, and the exporters that send them.

Encoders are pure functions (`otlp`, `otlp_decode`, `zipkin`, `jaeger`,
`prometheus` with `histograms`); shared helpers live in `_values`.
"""

from obs.export.histograms import Histogram, collector_histograms
from obs.export.jaeger import to_jaeger
from obs.export.otlp import to_otlp, to_otlp_json
from obs.export.otlp_decode import from_otlp
from obs.export.prometheus import to_prometheus
from obs.export.zipkin import to_zipkin

__all__ = [
    "Histogram",
    "collector_histograms",
    "from_otlp",
    "to_jaeger",
    "to_otlp",
    "to_otlp_json",
    "to_prometheus",
    "to_zipkin",
]
