"""Traces to a file, in a format another tool opens: OTLP/JSON, Jaeger's JSON, or Zipkin v2 JSON.

`write_traces(traces, path, format)` writes the whole file or nothing: the
JSON goes to a temporary file beside `path`, is flushed to disk, and then
replaces `path` in one step (`os.replace`), so a reader never sees half a
file and a failure leaves any earlier file as it was. The file is readable
by its owner only, since traces can hold prompts and answers.

- `otlp-json`: one `ExportTraceServiceRequest` in OTLP/JSON (what the
  OpenTelemetry Collector's file exporter writes, and what Jaeger's UI opens);
- `jaeger`: `{"data": [...]}` as Jaeger's UI loads it from a file;
- `zipkin`: the list of Zipkin v2 spans Zipkin's UI opens (`POST /api/v2/spans` takes it too).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from obs.export._values import as_traces
from obs.export.jaeger import to_jaeger
from obs.export.otlp import to_otlp_json
from obs.export.zipkin import to_zipkin
from obs.trace.traces import Trace

__all__ = ["FORMATS", "write_traces"]

FORMATS = ("otlp-json", "jaeger", "zipkin")


def _encode(traces: Iterable[Trace], format: str) -> Any:
    if format == "otlp-json":
        return to_otlp_json(traces)
    if format == "jaeger":
        return to_jaeger(traces)
    return to_zipkin(traces)


def write_traces(
    traces: Trace | Iterable[Trace], path: str | os.PathLike[str], format: str = "otlp-json"
) -> int:
    """Write `traces` to `path` as `format` (otlp-json, jaeger, zipkin) atomically; return the span count.

    ValueError for another format or a path that is a directory; OSError
    (the directory is missing, full, or not writable) leaves `path` untouched.
    """
    if format not in FORMATS:
        raise ValueError(f"write_traces: format must be one of {FORMATS}, got {format!r}")
    target = Path(path)
    if target.is_dir():
        raise ValueError(
            f"write_traces: path {str(target)!r} is a directory; give a file name, e.g. traces.json"
        )
    traces = as_traces("write_traces", traces)
    data = _encode(traces, format)
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    spans = _span_count(data, format)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return spans


def _span_count(data: Any, format: str) -> int:
    if format == "zipkin":
        return len(data)
    if format == "jaeger":
        return sum(len(trace["spans"]) for trace in data["data"])
    return sum(len(scope.get("spans", ())) for resource in data.get("resourceSpans", ())
               for scope in resource.get("scopeSpans", ()))
