"""Telemetry that leaves: encoders for OTLP, Zipkin, Jaeger and Prometheus, and the exporters that send them.

Encoders are pure functions (`otlp`, `otlp_decode`); shared helpers live in `_values`.
"""

from obs.export.otlp import to_otlp, to_otlp_json
from obs.export.otlp_decode import from_otlp

__all__ = ["from_otlp", "to_otlp", "to_otlp_json"]
