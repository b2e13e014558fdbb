"""Traces as the JSON the Jaeger UI loads from a file (and its query API returns).

`to_jaeger(traces)` gives `{"data": [trace, ...]}`, one entry per trace:
`{traceID, spans, processes, warnings}`, each trace's spans pointing at
its one process `p1` (`{serviceName, tags}`). A span is `{traceID, spanID,
flags, operationName, references, startTime, duration, tags, logs,
processID, warnings}` with times in integer microseconds and a `CHILD_OF`
reference to its parent. The mapping is the one Jaeger applies to OTLP:

- tags `{key, type, value}` of type `string`, `bool`, `int64` (ints beyond
  64 bits as strings), `float64` (NaN and the infinities as strings, which
  JSON cannot hold), `binary` (base64); lists and nested values as JSON
  strings; None left out;
- `span.kind` (`internal`, `client`, ...), `otel.scope.name` and
  `otel.scope.version`, `otel.status_code` (`OK` or `ERROR`), and on errors
  `error` = true and `otel.status_description` (the span's `error.message`);
- span events become logs: their time, a field `event` with the event name,
  then the event's attributes as fields.

Running spans and traces with no ended span are left out. A pure function.
"""

from __future__ import annotations

import base64
import math
import numbers
from collections.abc import Iterable
from typing import Any

from obs import semconv
from obs.export._values import (
    SCOPE_NAME,
    as_traces,
    ended_spans,
    json_text,
    ms_to_ns,
    scope_version,
    service_name,
)
from obs.trace.spans import Span
from obs.trace.traces import Trace

__all__ = ["jaeger_tag", "to_jaeger"]

_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_PROCESS = "p1"


def to_jaeger(traces: Trace | Iterable[Trace]) -> dict[str, Any]:
    """`{"data": [...]}` for `traces` (one Trace or many), in trace order, ready for `json.dumps`."""
    traces = as_traces("to_jaeger", traces)
    scope_tags = [_string("otel.scope.name", SCOPE_NAME), _string("otel.scope.version", scope_version())]
    data: list[dict[str, Any]] = []
    for trace in traces:
        spans = ended_spans(trace)
        if not spans:
            continue
        data.append({
            "traceID": trace.id,
            "spans": [_span(span, scope_tags) for span in spans],
            "processes": {_PROCESS: {"serviceName": service_name(trace), "tags": []}},
            "warnings": None,
        })
    return {"data": data}


def _span(span: Span, scope_tags: list[dict[str, Any]]) -> dict[str, Any]:
    start = ms_to_ns(span.start_time)
    end = ms_to_ns(span.end_time)  # type: ignore[arg-type]
    tags = _tags(span.attributes)
    tags.append(_string("span.kind", span.kind))
    tags.extend(scope_tags)
    if span.status == "error":
        tags.append(_string("otel.status_code", "ERROR"))
        tags.append({"key": "error", "type": "bool", "value": True})
        message = span.attributes.get(semconv.ERROR_MESSAGE)
        if isinstance(message, str) and message:
            tags.append(_string("otel.status_description", message))
    else:
        tags.append(_string("otel.status_code", "OK"))
    references = []
    if span.parent_id:
        references.append({"refType": "CHILD_OF", "traceID": span.trace_id, "spanID": span.parent_id})
    logs = [
        {
            "timestamp": (ms_to_ns(event.timestamp) + 500) // 1000,
            "fields": [_string("event", event.name), *_tags(event.attributes)],
        }
        for event in span.events
    ]
    return {
        "traceID": span.trace_id,
        "spanID": span.id,
        "flags": 1,
        "operationName": span.name,
        "references": references,
        "startTime": (start + 500) // 1000,
        "duration": (end - start + 500) // 1000,
        "tags": tags,
        "logs": logs,
        "processID": _PROCESS,
        "warnings": None,
    }


def _string(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "type": "string", "value": value}


def _tags(attributes: Any) -> list[dict[str, Any]]:
    tags = []
    for key, value in attributes.items():
        tag = jaeger_tag(str(key), value)
        if tag is not None:
            tags.append(tag)
    return tags


def jaeger_tag(key: str, value: Any) -> dict[str, Any] | None:
    """One attribute as a Jaeger tag `{key, type, value}` (see the module docstring); None for None."""
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": bool(value)}
    if isinstance(value, str):
        return _string(key, str.__str__(value))
    if isinstance(value, numbers.Integral):
        number = int(value)
        if _I64_MIN <= number <= _I64_MAX:
            return {"key": key, "type": "int64", "value": number}
        return _string(key, json_text(number))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isfinite(number):
            return {"key": key, "type": "float64", "value": number}
        return _string(key, json_text(number).strip('"'))
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return {"key": key, "type": "binary", "value": base64.b64encode(bytes(value)).decode("ascii")}
    return _string(key, json_text(value))
