"""Traces as OTLP: the `ExportTraceServiceRequest` message, and its OTLP/JSON form.

`to_otlp(traces)` builds the message of the `opentelemetry-proto` package,
field for field what OpenTelemetry's own encoder (`encode_spans` of
`opentelemetry-exporter-otlp-proto-common`) makes of the same spans:

- one `ResourceSpans` per run of traces of the same service (`service.name`
  from the `resource` argument, else the trace's metadata, else
  `unknown_service`), with one `ScopeSpans` of scope `obs` at obs's version;
- ids as bytes; times in integer nanoseconds; kinds INTERNAL, SERVER,
  CLIENT, PRODUCER, CONSUMER; status OK for "success", ERROR with the span's
  `error.message` for "error"; `flags` saying whether the parent is remote
  (a parent outside the trace is one), as OpenTelemetry's SDK sets them;
- attributes of every type: strings, booleans, 64-bit ints, doubles, bytes,
  None (an empty value), flat lists as arrays, and anything nested (a dict,
  a list holding lists or dicts) as JSON text; ints beyond 64 bits as their
  decimal text. Event attributes the same way.

Running spans have no end and are left out; a trace with no ended span has
nothing to send. What the trace holds beyond its spans travels on its root
span under `obs.trace.*` keys, only when needed (see `obs.export._values`).
A string with a lone surrogate (not valid UTF-8) is sent with U+FFFD in its
place. `to_otlp_json` is the same message under the OTLP/JSON rules: ids as
hex (not base64), enums as integers, 64-bit integers as decimal strings,
lowerCamelCase keys. Both are pure functions.
"""

from __future__ import annotations

import base64
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from obs import semconv
from obs.export._values import (
    SCOPE_NAME,
    as_traces,
    clean_text,
    derived_root,
    ended_spans,
    json_text,
    ms_to_ns,
    scope_version,
    service_name,
    trace_extras,
)
from obs.trace.spans import Span
from obs.trace.traces import Trace

__all__ = ["KINDS", "to_otlp", "to_otlp_json"]

KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
_STATUS_OK = Status(code=Status.STATUS_CODE_OK)
_ERROR = Status.STATUS_CODE_ERROR
_LOCAL_PARENT = 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK: "we know whether the parent is remote"
_REMOTE_PARENT = 0x300  # ... | SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_FLAT = (str, bool, int, float, bytes, type(None))
_ZERO_TRACE, _ZERO_SPAN = bytes(16), bytes(8)
_EMPTY = AnyValue()


def to_otlp(
    traces: Trace | Iterable[Trace], resource: Mapping[str, Any] | None = None
) -> ExportTraceServiceRequest:
    """The `ExportTraceServiceRequest` for `traces` (one Trace or many), in trace order.

    `resource` adds resource attributes (its `service.name`, if any, names
    the service of every trace). ValueError names the trace and span for an
    id that is not hex of the right length or is all zeros, and for a time
    that is not a finite number.
    """
    traces = as_traces("to_otlp", traces)
    if resource is not None and not isinstance(resource, Mapping):
        raise ValueError(
            f"to_otlp: resource must be a mapping of resource attributes such as "
            f"{{'service.name': 'chat-api'}}, or None; got {type(resource).__name__}"
        )
    scope = InstrumentationScope(name=SCOPE_NAME, version=scope_version())
    message = ExportTraceServiceRequest()
    current: str | None = None
    spans: Any = None
    for trace in traces:
        ended = ended_spans(trace)
        if not ended:
            continue
        service = service_name(trace, resource)
        if service != current:
            current = service
            # Spans are built in place (`add`), not built and then copied into the message.
            spans = _resource_spans(message, service, resource, scope).spans
        _encode_trace(trace, ended, spans)
    return message


def to_otlp_json(
    traces: Trace | Iterable[Trace], resource: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`to_otlp(traces, resource)` as an OTLP/JSON dict, ready for `json.dumps`.

    Trace and span ids are lowercase hex, enums integers, 64-bit integers
    (times, `intValue`) decimal strings, doubles that are not finite the
    strings "NaN", "Infinity", "-Infinity", keys lowerCamelCase; fields left
    at their default are omitted, as receivers expect.
    """
    message = to_otlp(traces, resource)
    data = json_format.MessageToDict(message, use_integers_for_enums=True)
    for resource_span in data.get("resourceSpans", ()):
        for scope_span in resource_span.get("scopeSpans", ()):
            for span in scope_span.get("spans", ()):
                _ids_to_hex(span)
                for link in span.get("links", ()):
                    _ids_to_hex(link)
    return data


def _ids_to_hex(item: dict[str, Any]) -> None:
    for key in ("traceId", "spanId", "parentSpanId"):
        if key in item:
            item[key] = base64.b64decode(item[key]).hex()


def _resource_spans(
    message: ExportTraceServiceRequest, service: str, resource: Mapping[str, Any] | None,
    scope: InstrumentationScope,
) -> ScopeSpans:
    """A new ResourceSpans at the end of `message` for `service`; its one ScopeSpans."""
    attributes = dict(resource) if resource else {}
    attributes[semconv.SERVICE_NAME] = service
    added = message.resource_spans.add(resource=Resource(attributes=_key_values(attributes)))
    return added.scope_spans.add(scope=scope)


def _encode_trace(trace: Trace, ended: list[Span], out: Any) -> None:
    extras = trace_extras(trace, ended)
    carrier = derived_root(ended) if extras else None
    ids = {span.id for span in ended}
    trace_bytes: dict[str, bytes] = {}
    for span in ended:
        tid = trace_bytes.get(span.trace_id)
        if tid is None:
            try:
                tid = trace_bytes[span.trace_id] = _id_bytes(span.trace_id, 16, "trace id", trace, span)
            except _BadSpan as exc:
                raise ValueError(str(exc)) from None
        more = extras if span is carrier else None
        try:
            try:
                _span(out, span, tid, ids, more, clean=False)
            except _BadSpan:
                raise
            except (ValueError, TypeError, UnicodeError):
                # A string that is not valid UTF-8 (a lone surrogate): send it repaired. A failed
                # `add` leaves nothing behind.
                _span(out, span, tid, ids, more, clean=True)
        except _BadSpan as exc:
            raise ValueError(str(exc)) from None


class _BadSpan(ValueError):
    """A span that cannot be encoded as it is (bad id or time); not retried with cleaned strings."""


def _id_bytes(text: str, size: int, what: str, trace: Trace, span: Span) -> bytes:
    try:
        value = bytes.fromhex(text) if isinstance(text, str) else b""
    except ValueError:
        value = b""
    if len(value) != size or value == bytes(size):
        raise _BadSpan(
            f"to_otlp: span {span.name!r} of trace {trace.id!r} has {what} {text!r}: it must be "
            f"{size * 2} hex characters, not all zeros"
        )
    return value


def _time(ms: Any, what: str, span: Span) -> int:
    try:
        return ms_to_ns(ms)
    except (ValueError, TypeError, OverflowError):
        raise _BadSpan(
            f"to_otlp: span {span.name!r} ({span.id}) has {what} {ms!r}: it must be finite epoch milliseconds"
        ) from None


def _span(
    out: Any, span: Span, trace_id: bytes, ids: set[str], extras: dict[str, Any] | None, *, clean: bool
) -> None:
    """Add `span` to `out` (a repeated Span field) as OTLP."""
    text = clean_text if clean else str
    value = _any_clean if clean else _any
    attributes = [KeyValue(key=text(k), value=value(v)) for k, v in span.attributes.items()]
    if extras:
        attributes += [KeyValue(key=text(k), value=value(v)) for k, v in extras.items()]
    events = [
        PbSpan.Event(
            time_unix_nano=_time(event.timestamp, "an event time", span),
            name=text(event.name),
            attributes=[KeyValue(key=text(k), value=value(v)) for k, v in event.attributes.items()],
        )
        for event in span.events
    ]
    if span.status == "error":
        message = span.attributes.get(semconv.ERROR_MESSAGE)
        status = Status(code=_ERROR, message=text(message) if isinstance(message, str) else "")
    else:
        status = _STATUS_OK
    parent = span.parent_id
    if parent:
        parent_bytes = _span_id(parent)
        if parent_bytes is None:
            raise _BadSpan(
                f"to_otlp: span {span.name!r} ({span.id}) has parent id {parent!r}: it must be 16 hex "
                "characters, not all zeros, or None"
            )
        flags = _LOCAL_PARENT if parent in ids else _REMOTE_PARENT
    else:
        parent_bytes = b""
        flags = _LOCAL_PARENT
    span_id = _span_id(span.id)
    if span_id is None:
        raise _BadSpan(f"to_otlp: span {span.name!r} has span id {span.id!r}: it must be 16 hex characters, "
                       "not all zeros")
    out.add(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_bytes,
        flags=flags,
        name=text(span.name),
        kind=KINDS.get(span.kind, 1),
        start_time_unix_nano=_time(span.start_time, "start time", span),
        end_time_unix_nano=_time(span.end_time, "end time", span),
        attributes=attributes,
        events=events,
        status=status,
    )


def _span_id(text: object) -> bytes | None:
    """A span id's 8 bytes, or None when it is not 16 hex characters or is all zeros."""
    if not isinstance(text, str) or len(text) != 16:
        return None
    try:
        value = bytes.fromhex(text)
    except ValueError:
        return None
    return None if value == _ZERO_SPAN else value


def _key_values(attributes: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=str(k), value=_any(v)) for k, v in attributes.items()]


def _any(value: Any) -> AnyValue:
    """One attribute value as an AnyValue (see the module docstring for the mapping)."""
    kind = type(value)
    if kind is str:
        return AnyValue(string_value=value)
    if kind is int:
        if _I64_MIN <= value <= _I64_MAX:
            return AnyValue(int_value=value)
        return AnyValue(string_value=json_text(value))
    if kind is float:
        return AnyValue(double_value=value)
    if kind is bool:
        return AnyValue(bool_value=value)
    if value is None:
        return _EMPTY
    if (kind is list or kind is tuple) and all(type(v) in _FLAT for v in value):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    return _any_other(value)


def _any_other(value: Any) -> AnyValue:
    """The rarer kinds: subclasses (numpy numbers, str enums), bytes, nested values."""
    if isinstance(value, bool):
        return AnyValue(bool_value=bool(value))
    if isinstance(value, str):
        return AnyValue(string_value=str.__str__(value))
    if isinstance(value, numbers.Integral):
        return _any(int(value))
    if isinstance(value, numbers.Real):
        return AnyValue(double_value=float(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return AnyValue(bytes_value=bytes(value))
    if isinstance(value, list | tuple) and all(
        v is None or isinstance(v, str | numbers.Real | bytes) for v in value
    ):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    return AnyValue(string_value=json_text(value))


def _any_clean(value: Any) -> AnyValue:
    """`_any` for a value holding strings that are not valid UTF-8: each repaired first."""
    if isinstance(value, str):
        return AnyValue(string_value=clean_text(value))
    if isinstance(value, list | tuple) and all(
        v is None or isinstance(v, str | numbers.Real | bytes) for v in value
    ):
        return AnyValue(array_value=ArrayValue(values=[_any_clean(v) for v in value]))
    if value is None or isinstance(value, numbers.Real | bytes | bytearray | memoryview):
        return _any(value)
    return AnyValue(string_value=clean_text(json_text(value)))
