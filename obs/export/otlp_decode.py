"""OTLP back into Traces: `from_otlp` reads the protobuf message, its bytes, or OTLP/JSON.

Spans are grouped into traces by trace id, in the order they first appear;
spans keep their order. A trace is what its spans say (named after its
earliest root span, from the earliest start to the latest end, in error
when a span is, with the resource's attributes as metadata), corrected by
the `obs.trace.*` attributes `to_otlp` puts on the root span when the
trace holds more than its spans (those keys are removed from the span).
Statuses: ERROR is "error" (its message becomes the span's `error.message`
when the span has none), OK and UNSET are "success". Attribute values come
back as str, bool, int, float, bytes, None, lists, and dicts for OTLP's
key-value lists.

What does not come back from OTLP: the monotonic start readings
(`start_mono`, not part of `==` anyway); durations, which are recomputed as
`end_time - start_time` (a duration the tracer measured on the monotonic
clock can differ from that by less than a microsecond); times finer than a
nanosecond; tuples (lists), nested values and ints beyond 64 bits (sent as
text); running spans and traces without ended spans (never sent). A pure
function: bad input raises ValueError saying where it is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from obs import semconv
from obs.export._values import (
    TRACE_END_KEY,
    TRACE_METADATA_PREFIX,
    TRACE_NAME_KEY,
    TRACE_PREFIX,
    TRACE_START_KEY,
    TRACE_STATUS_KEY,
    derived_root,
    ns_to_ms,
)
from obs.trace.spans import Span, SpanEvent
from obs.trace.traces import Trace

__all__ = ["from_otlp", "parse_otlp"]

_KINDS = {0: "internal", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_ERROR = 2
_STATUSES = ("success", "error", "running")


def parse_otlp(data: ExportTraceServiceRequest | bytes | bytearray | memoryview | str | Mapping[str, Any]
               ) -> ExportTraceServiceRequest:
    """`data` as an `ExportTraceServiceRequest`: the message itself, protobuf bytes, or OTLP/JSON.

    JSON comes as text, bytes beginning with `{`, or a dict; its ids are hex
    (OTLP/JSON), converted before protobuf's JSON parser sees them (it would
    read hex as base64 into ids of the wrong length); unknown fields are
    ignored, as OTLP asks of receivers. ValueError says what does not parse.
    """
    if isinstance(data, ExportTraceServiceRequest):
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if raw.lstrip()[:1] == b"{":
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"from_otlp: the JSON body is not UTF-8 ({exc})") from None
            return _parse_json_text(text)
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(raw)
        except DecodeError as exc:
            raise ValueError(f"from_otlp: the body is not an OTLP protobuf ExportTraceServiceRequest ({exc})"
                             ) from None
        return message
    if isinstance(data, str):
        return _parse_json_text(data)
    if isinstance(data, Mapping):
        return _parse_json_dict(data)
    raise ValueError(
        "from_otlp: data must be an ExportTraceServiceRequest, protobuf bytes, OTLP/JSON text or a "
        f"dict; got {type(data).__name__}"
    )


def _parse_json_text(text: str) -> ExportTraceServiceRequest:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"from_otlp: the body is not JSON ({exc})") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"from_otlp: OTLP/JSON must be an object, got {type(data).__name__}")
    return _parse_json_dict(data)


def _parse_json_dict(data: Mapping[str, Any]) -> ExportTraceServiceRequest:
    data = _ids_to_base64(data)
    message = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise ValueError(f"from_otlp: not an OTLP/JSON ExportTraceServiceRequest ({exc})") from None
    return message


def _ids_to_base64(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the JSON request with every trace and span id turned from hex into base64."""
    out = dict(data)
    resource_spans = out.get("resourceSpans", out.get("resource_spans"))
    if not isinstance(resource_spans, list):
        return out
    out_rs = []
    for r, resource_span in enumerate(resource_spans):
        if not isinstance(resource_span, Mapping):
            out_rs.append(resource_span)
            continue
        resource_span = dict(resource_span)
        scope_key = "scopeSpans" if "scopeSpans" in resource_span else "scope_spans"
        scope_spans = resource_span.get(scope_key)
        if isinstance(scope_spans, list):
            new_scopes = []
            for s, scope_span in enumerate(scope_spans):
                if isinstance(scope_span, Mapping) and isinstance(scope_span.get("spans"), list):
                    scope_span = dict(scope_span)
                    where = f"resourceSpans[{r}].scopeSpans[{s}].spans"
                    scope_span["spans"] = [_span_ids(span, f"{where}[{i}]")
                                           for i, span in enumerate(scope_span["spans"])]
                new_scopes.append(scope_span)
            resource_span[scope_key] = new_scopes
        out_rs.append(resource_span)
    out["resourceSpans" if "resourceSpans" in out else "resource_spans"] = out_rs
    return out


_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")


def _span_ids(span: Any, where: str) -> Any:
    if not isinstance(span, Mapping):
        return span
    span = dict(span)
    for key in _ID_KEYS:
        if key in span:
            span[key] = _hex_to_base64(span[key], f"{where}.{key}")
    links = span.get("links")
    if isinstance(links, list):
        span["links"] = [
            {**link, **{k: _hex_to_base64(link[k], f"{where}.links[{j}].{k}") for k in _ID_KEYS if k in link}}
            if isinstance(link, Mapping) else link
            for j, link in enumerate(links)
        ]
    return span


def _hex_to_base64(value: Any, where: str) -> str:
    if value == "" or value is None:
        return ""
    try:
        return base64.b64encode(bytes.fromhex(value)).decode("ascii")
    except (ValueError, TypeError, binascii.Error):
        raise ValueError(f"from_otlp: {where} must be hex (OTLP/JSON ids are hex, not base64), got {value!r}"
                         ) from None


def from_otlp(
    data: ExportTraceServiceRequest | bytes | bytearray | memoryview | str | Mapping[str, Any],
) -> list[Trace]:
    """The traces in an OTLP trace export: a message, protobuf bytes, OTLP/JSON text or a dict.

    `from_otlp(to_otlp(traces)) == traces` for finished traces the Tracer
    made (see the module docstring for what cannot come back), and the same
    through `to_otlp_json`. ValueError says which span is malformed (ids of
    the wrong length, an end before the start) or why the data does not parse.
    """
    message = parse_otlp(data)
    spans_by_trace: dict[str, list[Span]] = {}
    extras_by_trace: dict[str, dict[str, Any]] = {}
    resource_by_trace: dict[str, dict[str, Any]] = {}
    for r, resource_span in enumerate(message.resource_spans):
        resource = _attributes(resource_span.resource.attributes)
        for s, scope_span in enumerate(resource_span.scope_spans):
            for i, pb in enumerate(scope_span.spans):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                span, extras = _span(pb, where)
                group = spans_by_trace.get(span.trace_id)
                if group is None:
                    group = spans_by_trace[span.trace_id] = []
                    resource_by_trace[span.trace_id] = resource
                group.append(span)
                if extras:
                    extras_by_trace.setdefault(span.trace_id, {}).update(extras)
    return [
        _trace(trace_id, spans, extras_by_trace.get(trace_id, {}), resource_by_trace[trace_id])
        for trace_id, spans in spans_by_trace.items()
    ]


def _span(pb: Any, where: str) -> tuple[Span, dict[str, Any]]:
    trace_id, span_id, parent = bytes(pb.trace_id), bytes(pb.span_id), bytes(pb.parent_span_id)
    if len(trace_id) != 16 or trace_id == bytes(16):
        raise ValueError(
            f"from_otlp: {where}.traceId must be 16 bytes, not all zeros; got {trace_id.hex()!r}"
        )
    if len(span_id) != 8 or span_id == bytes(8):
        raise ValueError(f"from_otlp: {where}.spanId must be 8 bytes, not all zeros; got {span_id.hex()!r}")
    if parent and (len(parent) != 8 or parent == bytes(8)):
        raise ValueError(f"from_otlp: {where}.parentSpanId must be 8 bytes or empty; got {parent.hex()!r}")
    start_ns, end_ns = pb.start_time_unix_nano, pb.end_time_unix_nano
    if end_ns < start_ns:
        raise ValueError(f"from_otlp: {where} ends ({end_ns}) before it starts ({start_ns})")
    attributes = _attributes(pb.attributes)
    extras = {k: attributes.pop(k) for k in [k for k in attributes if k.startswith(TRACE_PREFIX)]}
    status = "success"
    if pb.status.code == _ERROR:
        status = "error"
        if pb.status.message and semconv.ERROR_MESSAGE not in attributes:
            attributes[semconv.ERROR_MESSAGE] = pb.status.message
    start, end = ns_to_ms(start_ns), ns_to_ms(end_ns)
    events = tuple(
        SpanEvent(event.name, ns_to_ms(event.time_unix_nano), _attributes(event.attributes))
        for event in pb.events
    )
    span = Span(
        id=span_id.hex(),
        trace_id=trace_id.hex(),
        parent_id=parent.hex() if parent else None,
        name=pb.name,
        start_time=start,
        end_time=end,
        duration=end - start,
        status=status,  # type: ignore[arg-type]
        attributes=attributes,
        events=events,
        kind=_KINDS.get(pb.kind, "internal"),  # type: ignore[arg-type]
    )
    return span, extras


def _trace(trace_id: str, spans: list[Span], extras: dict[str, Any], resource: dict[str, Any]) -> Trace:
    root = derived_root(spans)
    name = extras.get(TRACE_NAME_KEY)
    if not isinstance(name, str) or not name:
        name = root.name if root is not None and root.name else trace_id
    start_ns = extras.get(TRACE_START_KEY)
    start = ns_to_ms(start_ns) if isinstance(start_ns, int) else min(s.start_time for s in spans)
    status = extras.get(TRACE_STATUS_KEY)
    if status not in _STATUSES:
        status = "error" if any(s.status == "error" for s in spans) else "success"
    end: float | None = None
    if status != "running":
        end_ns = extras.get(TRACE_END_KEY)
        end = ns_to_ms(end_ns) if isinstance(end_ns, int) else max(start, *(s.end_time for s in spans))  # type: ignore[type-var]
    metadata = dict(resource)
    for key, value in extras.items():
        if key.startswith(TRACE_METADATA_PREFIX):
            metadata[key[len(TRACE_METADATA_PREFIX):]] = value
    return Trace(
        id=trace_id,
        name=name,
        start_time=start,
        end_time=end,
        duration=None if end is None else end - start,
        status=status,
        metadata=metadata,
        spans=tuple(spans),
    )


def _attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in key_values}


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bool_value":
        return value.bool_value
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return bytes(value.bytes_value)
    return None
