"""Traces as Zipkin v2 JSON spans (`POST /api/v2/spans`, the `ListOfSpans` of zipkin2-api.yaml).

`to_zipkin(traces)` follows OpenTelemetry's Zipkin exporter rules, and
Zipkin's own model where the two differ:

- `traceId` (32 hex), `id`, `parentId`; `name` and `localEndpoint.serviceName`
  in lowercase (Zipkin lowercases both on ingest); `kind` CLIENT, SERVER,
  PRODUCER or CONSUMER, omitted for internal spans (OpenTelemetry's encoder
  writes `null`, which the schema refuses); `timestamp` and `duration` in
  integer microseconds, rounded half up from the nanoseconds, the duration at
  least 1 as the schema asks (OpenTelemetry's can be 0); no `debug` flag
  (OpenTelemetry sets it on every sampled span, which tells Zipkin to keep the
  span past its own sampling).
- `tags`, strings only: booleans `"true"`/`"false"`, numbers as `str()`
  writes them, flat lists as a JSON list of those strings, nested values
  (dicts, lists of lists) as JSON, bytes as base64, None left out; then
  `otel.scope.name` and `otel.scope.version`, `otel.status_code` OK or ERROR,
  and `error` (the span's `error.message`, or "") on errors.
- `annotations` from span events: the event's time, and as value the JSON
  `{"<event name>": {attributes}}` with sorted keys.

`max_tag_value_length` cuts tag values (and string event attributes) as
OpenTelemetry's exporter does (it cuts at 128 by default; obs keeps whole
values unless asked): strings at that length, lists at an element boundary.
Running spans are left out. A pure function.
"""

from __future__ import annotations

import base64
import json
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

from obs import semconv
from obs._validate import json_safe
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

__all__ = ["to_zipkin"]

_KINDS = {"client": "CLIENT", "server": "SERVER", "producer": "PRODUCER", "consumer": "CONSUMER"}


def to_zipkin(
    traces: Trace | Iterable[Trace], *, max_tag_value_length: int | None = None
) -> list[dict[str, Any]]:
    """The Zipkin v2 spans of `traces` (one Trace or many), in trace order, ready for `json.dumps`.

    `max_tag_value_length`: None (keep whole values) or an int >= 1, as
    OpenTelemetry's `max_tag_value_length`. ValueError for anything else.
    """
    traces = as_traces("to_zipkin", traces)
    if max_tag_value_length is not None and (
        isinstance(max_tag_value_length, bool)
        or not isinstance(max_tag_value_length, int)
        or max_tag_value_length < 1
    ):
        raise ValueError(
            f"to_zipkin: max_tag_value_length must be None (no limit) or an int >= 1, e.g. 128; "
            f"got {max_tag_value_length!r}"
        )
    scope_tags = {"otel.scope.name": SCOPE_NAME, "otel.scope.version": scope_version()}
    out: list[dict[str, Any]] = []
    for trace in traces:
        endpoint = {"serviceName": service_name(trace).lower()}
        for span in ended_spans(trace):
            out.append(_span(span, endpoint, scope_tags, max_tag_value_length))
    return out


def _span(
    span: Span, endpoint: dict[str, str], scope_tags: dict[str, str], limit: int | None
) -> dict[str, Any]:
    start = ms_to_ns(span.start_time)
    end = ms_to_ns(span.end_time)  # type: ignore[arg-type]
    encoded: dict[str, Any] = {"traceId": span.trace_id}
    if span.parent_id:
        encoded["parentId"] = span.parent_id
    encoded["id"] = span.id
    kind = _KINDS.get(span.kind)
    if kind is not None:
        encoded["kind"] = kind
    encoded["name"] = span.name.lower()
    encoded["timestamp"] = (start + 500) // 1000
    encoded["duration"] = max(1, (end - start + 500) // 1000)
    encoded["localEndpoint"] = dict(endpoint)
    if span.events:
        encoded["annotations"] = _annotations(span, limit)
    tags = _tags(span.attributes, limit)
    tags.update(scope_tags)
    if span.status == "error":
        message = span.attributes.get(semconv.ERROR_MESSAGE)
        tags["otel.status_code"] = "ERROR"
        tags["error"] = message if isinstance(message, str) else ""
    else:
        tags["otel.status_code"] = "OK"
    encoded["tags"] = tags
    return encoded


def _tags(attributes: Any, limit: int | None) -> dict[str, str]:
    tags: dict[str, str] = {}
    for key, value in attributes.items():
        text = tag_text(value, limit)
        if text is not None:
            tags[str(key)] = text
    return tags


def tag_text(value: Any, limit: int | None = None) -> str | None:
    """One attribute value as a Zipkin tag string (see the module docstring); None to leave it out."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = str.__str__(value)
    elif isinstance(value, numbers.Integral):
        text = json_text(int(value))  # as str() writes it, and safe for ints too long for str()
    elif isinstance(value, numbers.Real):
        text = str(float(value))
    elif value is None:
        return None
    elif isinstance(value, bytes | bytearray | memoryview):
        text = base64.b64encode(bytes(value)).decode("ascii")
    elif isinstance(value, list | tuple) and all(
        v is None or isinstance(v, str | numbers.Real) for v in value
    ):
        return _sequence_text(value, limit)
    else:
        text = json_text(value)
    return text[:limit] if limit else text


def _element(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return None
    return tag_text(value)


def _sequence_text(values: Sequence[Any], limit: int | None) -> str | None:
    """A flat list as OpenTelemetry writes it: a JSON list of element strings, cut at an element boundary."""
    if limit == 1:
        return None
    elements: list[str | None] = []
    length = 2  # the brackets
    for value in values:
        element = _element(value)
        if limit:
            length += 4 if element is None else len(element) + 2
            if elements:
                length += 1
            if length > limit:
                break
        elements.append(element)
    return json.dumps(elements, separators=(",", ":"))


def _annotations(span: Span, limit: int | None) -> list[dict[str, Any]]:
    annotations: list[dict[str, Any]] = []
    seen: set[tuple[int, str]] = set()
    for event in span.events:
        attributes: dict[str, Any] = {}
        for key, value in event.attributes.items():
            if isinstance(value, str) and limit:
                value = value[:limit]
            attributes[str(key)] = value
        safe, _ = json_safe({event.name: attributes})
        annotation = ((ms_to_ns(event.timestamp) + 500) // 1000, json.dumps(safe, sort_keys=True))
        if annotation not in seen:  # the schema wants annotations unique
            seen.add(annotation)
            annotations.append({"timestamp": annotation[0], "value": annotation[1]})
    return annotations
