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
from obs.trace._build import SpanDraft, TraceDraft, new_event
from obs.trace.spans import FrozenDict, Span
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
    resource_by_trace: dict[str, FrozenDict] = {}
    hex_of_trace: dict[bytes, str] = {}  # one text per trace id, shared by the trace's spans
    for r, resource_span in enumerate(message.resource_spans):
        # One read-only mapping per resource, shared by the traces that need nothing added to it.
        resource = FrozenDict(_attributes(resource_span.resource.attributes)[0])
        for s, scope_span in enumerate(resource_span.scope_spans):
            # One span wrapper at a time: a slice would keep hundreds alive at once (measured slower).
            for i, pb in enumerate(scope_span.spans):
                try:
                    span, extras = _span(pb, hex_of_trace)
                except _BadSpan as exc:
                    # The place is put into words only for the span that is wrong.
                    where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                    raise ValueError(f"from_otlp: {where}{exc}") from None
                trace_id = span.trace_id
                group = spans_by_trace.get(trace_id)
                if group is None:
                    spans_by_trace[trace_id] = [span]
                    resource_by_trace[trace_id] = resource
                else:
                    group.append(span)
                if extras:
                    extras_by_trace.setdefault(trace_id, {}).update(extras)
    return [
        _trace(trace_id, spans, extras_by_trace.get(trace_id), resource_by_trace[trace_id])
        for trace_id, spans in spans_by_trace.items()
    ]


class _BadSpan(Exception):
    """A malformed span; its text is what follows the span's place in the ValueError."""


_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


def _span(pb: Any, hex_of_trace: dict[bytes, str]) -> tuple[Span, dict[str, Any] | None]:
    # upb hands out bytes fields as bytes already: no copies.
    trace_id, span_id, parent = pb.trace_id, pb.span_id, pb.parent_span_id
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID:
        raise _BadSpan(f".traceId must be 16 bytes, not all zeros; got {trace_id.hex()!r}")
    if len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
        raise _BadSpan(f".spanId must be 8 bytes, not all zeros; got {span_id.hex()!r}")
    if parent and (len(parent) != 8 or parent == _ZERO_SPAN_ID):
        raise _BadSpan(f".parentSpanId must be 8 bytes or empty; got {parent.hex()!r}")
    start_ns, end_ns = pb.start_time_unix_nano, pb.end_time_unix_nano
    if end_ns < start_ns:
        raise _BadSpan(f" ends ({end_ns}) before it starts ({start_ns})")
    trace_text = hex_of_trace.get(trace_id)
    if trace_text is None:
        trace_text = hex_of_trace[trace_id] = trace_id.hex()
    attributes, trace_keys = _attributes(pb.attributes)
    extras = None
    if trace_keys:
        extras = {k: attributes.pop(k) for k in [k for k in attributes if k.startswith(TRACE_PREFIX)]}
    status = "success"
    pb_status = pb.status
    if pb_status.code == _ERROR:
        status = "error"
        if pb_status.message and semconv.ERROR_MESSAGE not in attributes:
            attributes[semconv.ERROR_MESSAGE] = pb_status.message
    start, end = start_ns / 1_000_000, end_ns / 1_000_000  # ns_to_ms, without a call per time
    pb_events = pb.events
    span: Any = SpanDraft()  # becomes a Span below (see obs.trace._build)
    span.id = span_id.hex()
    span.trace_id = trace_text
    span.parent_id = parent.hex() if parent else None
    span.name = pb.name
    span.start_time = start
    span.end_time = end
    span.duration = end - start
    span.status = status
    span.attributes = FrozenDict(attributes)
    span.events = tuple([
        new_event(event.name, event.time_unix_nano / 1_000_000, _attributes(event.attributes)[0])  # ns_to_ms
        for event in pb_events[:]
    ]) if pb_events else ()
    span.kind = _KINDS.get(pb.kind, "internal")
    span.start_mono = 0.0
    span.__class__ = Span
    return span, extras


def _trace(trace_id: str, spans: list[Span], extras: dict[str, Any] | None, resource: FrozenDict) -> Trace:
    metadata = resource
    name = start_ns = status = end_ns = None
    if extras:
        name = extras.get(TRACE_NAME_KEY)
        start_ns = extras.get(TRACE_START_KEY)
        status = extras.get(TRACE_STATUS_KEY)
        end_ns = extras.get(TRACE_END_KEY)
        added = {key[len(TRACE_METADATA_PREFIX):]: value for key, value in extras.items()
                 if key.startswith(TRACE_METADATA_PREFIX)}
        if added:
            metadata = FrozenDict({**resource, **added})
    if not isinstance(name, str) or not name:
        root = derived_root(spans)
        name = root.name if root is not None and root.name else trace_id
    # The earliest start, the latest end and whether a span failed, in one pass over the spans.
    first = spans[0]
    earliest, latest, failed = first.start_time, first.end_time, first.status == "error"
    for span in spans:
        if span.start_time < earliest:
            earliest = span.start_time
        if span.end_time > latest:
            latest = span.end_time
        if span.status == "error":
            failed = True
    start = ns_to_ms(start_ns) if isinstance(start_ns, int) else earliest
    if status not in _STATUSES:
        status = "error" if failed else "success"
    end: float | None = None
    if status != "running":
        end = ns_to_ms(end_ns) if isinstance(end_ns, int) else max(start, latest)  # type: ignore[type-var]
    trace: Any = TraceDraft()
    trace.id = trace_id
    trace.name = name
    trace.start_time = start
    trace.end_time = end
    trace.duration = None if end is None else end - start
    trace.status = status
    trace.metadata = metadata
    trace.spans = tuple(spans)
    trace.start_mono = 0.0
    trace.__class__ = Trace
    return trace


# The kinds of AnyValue whose field is the value itself (upb gives bytes fields as bytes).
_PLAIN_VALUES = frozenset({"string_value", "int_value", "double_value", "bool_value", "bytes_value"})
# The kind of value each key had last time, tried first: a value that is not its field's default
# (empty, zero, False) can only be in the field that is set, so it needs no WhichOneof call. A hint
# only: what a value decodes to never depends on it. `obs.trace.*` keys are never remembered, so a
# key read through its hint is known not to be one.
_KIND_BY_KEY: dict[str, str] = {}
_KINDS_KEPT = 4096  # keys remembered at most (what clients send is not to fill the memory)


def _attributes(key_values: Any) -> tuple[dict[str, Any], bool]:
    """The attributes as a dict, and whether a key starts with TRACE_PREFIX."""
    out = {}
    trace_keys = False
    kind_of = _KIND_BY_KEY.get
    # A slice: a plain loop over a upb repeated field ends in an IndexError, which costs as much as
    # reading two attributes.
    for kv in key_values[:]:
        key = kv.key
        value = kv.value
        which = kind_of(key)
        if which is not None:
            got = getattr(value, which)
            if got:
                out[key] = got
                continue
        which = value.WhichOneof("value")
        out[key] = getattr(value, which) if which in _PLAIN_VALUES else _value(value, which)
        if key.startswith(TRACE_PREFIX):
            trace_keys = True
        elif which in _PLAIN_VALUES and len(_KIND_BY_KEY) < _KINDS_KEPT:
            _KIND_BY_KEY[key] = which
    return out, trace_keys


def _value(value: AnyValue, which: str | None) -> Any:
    """An array or a key-value list as a list or a dict (any other kind is None, as an empty AnyValue)."""
    if which == "array_value":
        out = []
        kind = None  # the kind of the elements so far: arrays rarely mix kinds
        for element in value.array_value.values[:]:
            if kind is not None:
                got = getattr(element, kind)
                if got:
                    out.append(got)
                    continue
            kind = element.WhichOneof("value")
            if kind in _PLAIN_VALUES:
                out.append(getattr(element, kind))
            else:
                out.append(_value(element, kind))
                kind = None
        return out
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)[0]
    return None
