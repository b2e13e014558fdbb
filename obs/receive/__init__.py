"""Receiving OTLP/HTTP traces from any OpenTelemetry program: `make_receiver_app` and its parts.

- `make_receiver_app(exporter, collector=None, token=None)`: the ASGI app
  (`POST /v1/traces`, `GET /metrics`), one call to mount or serve
  (`python -m obs.receiver --port 4318 --db FILE` serves it alone);
- `MergingStoreExporter(store)`: stores received traces whose spans come in
  several requests as one trace (`merge_traces`);
- `record_genai_spans(collector, traces)`: received model calls as requests
  in a MetricsCollector;
- `Ingest`: the bounded queue in front of the exporter, and its stats.
"""

from obs.receive.app import make_receiver_app
from obs.receive.genai import genai_call, record_genai_spans
from obs.receive.ingest import Admission, Ingest, IngestStats
from obs.receive.merge import MergingStoreExporter, merge_traces

__all__ = [
    "Admission",
    "Ingest",
    "IngestStats",
    "MergingStoreExporter",
    "genai_call",
    "make_receiver_app",
    "merge_traces",
    "record_genai_spans",
]
