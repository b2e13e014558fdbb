"""An OTLP/HTTP trace request body into obs Traces, with the spans that cannot be taken set aside.

`check_request(payload, kind)` parses the body as the request's content type
says (protobuf, or OTLP/JSON with hex ids), checks each span, and returns a
`Checked`: the message without the bad spans, how many spans there were, how
many were rejected and why, and how many traces the rest make; its
`traces()` builds them (`obs.export.from_otlp`). That is all a receiver needs
to answer; the building can wait. `decode_request(payload, kind)` does both
and returns a `Decoded` with the traces. A span is
rejected when its trace id is not 16 bytes or is all zeros, its span id not
8 bytes or all zeros, its parent id neither empty nor 8 non-zero bytes, it
has no start time, or it ends before it starts: what the specification
calls a partial success, answered with 200 (a client must not retry it).
A body that does not parse at all raises `BadRequest` (answered with 400).
Never raises anything else for what a client sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from obs.export.otlp_decode import from_otlp, parse_otlp
from obs.receive.wire import Kind
from obs.trace.traces import Trace

__all__ = ["BadRequest", "Checked", "Decoded", "check_request", "decode_request"]

_MAX_REASONS = 3  # reasons named in the error message; the rest are counted


class BadRequest(ValueError):
    """The body is not an `ExportTraceServiceRequest` in the format its content type names."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one request held: the traces of its accepted spans, and what was rejected."""

    traces: list[Trace]
    spans: int  # every span in the request
    accepted: int
    rejected: int
    error_message: str  # empty when nothing was rejected


@dataclass(frozen=True, slots=True)
class Checked:
    """One request parsed and checked: the spans that can be taken, their traces not built yet."""

    message: ExportTraceServiceRequest  # without the rejected spans
    spans: int  # every span in the request
    accepted: int
    rejected: int
    error_message: str  # empty when nothing was rejected
    trace_count: int  # how many traces `traces()` gives

    def traces(self) -> list[Trace]:
        """The traces of the accepted spans. Raises ValueError only if a check missed a malformed span."""
        return from_otlp(self.message) if self.accepted else []


def check_request(payload: bytes, kind: Kind) -> Checked:
    """`payload` (already decompressed) in `kind`'s format, parsed and checked; see the module docstring."""
    message = _parse(payload, kind)
    total = 0
    reasons: list[str] = []
    trace_ids: set[bytes] = set()
    for r, resource_spans in enumerate(message.resource_spans):
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            spans = scope_spans.spans
            bad = []
            for i, span in enumerate(spans):
                reason = _problem(span)
                if reason is None:
                    trace_ids.add(span.trace_id)
                else:
                    bad.append(i)
                    reasons.append(f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}] {reason}")
            total += len(spans)
            for i in reversed(bad):
                del spans[i]
    rejected = len(reasons)
    message_text = ""
    if rejected:
        shown = "; ".join(reasons[:_MAX_REASONS])
        more = f"; and {rejected - _MAX_REASONS} more" if rejected > _MAX_REASONS else ""
        message_text = f"{rejected} span(s) rejected: {shown}{more}"
    return Checked(message, total, total - rejected, rejected, message_text, len(trace_ids))


def decode_request(payload: bytes, kind: Kind) -> Decoded:
    """The traces of `payload` (already decompressed) in `kind`'s format; see the module docstring."""
    checked = check_request(payload, kind)
    try:
        traces = checked.traces()
    except Exception as exc:  # a check missed something: refuse the rest too, never crash
        total = checked.spans
        return Decoded([], total, 0, total, f"{total} span(s) rejected: {exc}")
    return Decoded(traces, checked.spans, checked.accepted, checked.rejected, checked.error_message)


def _parse(payload: bytes, kind: Kind) -> ExportTraceServiceRequest:
    if kind == "protobuf":
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(payload)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise BadRequest(f"the body is not a protobuf ExportTraceServiceRequest ({exc})") from None
        return message
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the JSON body is not UTF-8 ({exc})") from None
    if not text.strip():
        return ExportTraceServiceRequest()
    try:
        return parse_otlp(text)
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply") from None
    except Exception as exc:  # ValueError from the parser; anything else must not escape either
        raise BadRequest(str(exc).removeprefix("from_otlp: ")) from None


def _problem(span: object) -> str | None:
    """Why this protobuf span cannot be taken, or None when it can."""
    trace_id: bytes = span.trace_id  # type: ignore[attr-defined]
    span_id: bytes = span.span_id  # type: ignore[attr-defined]
    parent: bytes = span.parent_span_id  # type: ignore[attr-defined]
    if len(trace_id) != 16 or not any(trace_id):
        return f"has traceId {trace_id.hex()!r}: it must be 16 bytes, not all zeros"
    if len(span_id) != 8 or not any(span_id):
        return f"has spanId {span_id.hex()!r}: it must be 8 bytes, not all zeros"
    if parent and (len(parent) != 8 or not any(parent)):
        return f"has parentSpanId {parent.hex()!r}: it must be empty or 8 bytes, not all zeros"
    start: int = span.start_time_unix_nano  # type: ignore[attr-defined]
    end: int = span.end_time_unix_nano  # type: ignore[attr-defined]
    if not start:
        return "has no startTimeUnixNano"
    if end < start:
        return f"ends (endTimeUnixNano {end}) before it starts ({start})"
    return None
