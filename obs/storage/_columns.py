"""How a trace becomes one `traces` row and one `spans` row per span, and back.

`encode_trace` reads the trace as storable (`obs.storage._rows.storable`:
every value JSON can hold, every time finite), then reads the columns the
dashboard filters and sums on out of the span attributes: service, model,
conversation, whether the span is an LLM request (it has
`gen_ai.operation.name`), tokens, cost, time to first token, latency and
cache hit, with the request's minute, hour and latency/TTFT bins for the rollups.
Text columns are what SQLite can bind (`column`); a span field whose exact
text differs (a lone surrogate) is kept in `exact` as JSON, so `decode_trace`
gives back exactly what was stored.

Cost: `obs.cost.usd` counts when a finite number >= 0 (`_number`); text, NaN,
infinities and negatives are no cost (`cost`, `cost_units` NULL). `cost_units`
(integer picodollars, what the sums add) is clamped to 2**62, so an absurd cost
(1e300 USD: its picodollars overflow a float) is stored with its trace.

It tries the quick path first: most traces need nothing replaced, and those
are encoded straight from their Span and SpanEvent objects (`_object_rows`),
without the `to_dict()` copies; anything unusual takes the general path
(`storable`, then `_rows`), which gives the same rows.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

from obs import semconv
from obs.storage._rollup_sql import HOUR_BINS
from obs.storage._rows import (
    column,
    events_json,
    metadata_json,
    plain_items,
    plain_json,
    storable,
    text_columns,
    times_kept,
)
from obs.trace.spans import FrozenDict, Span
from obs.trace.traces import Trace

__all__ = [
    "COST_UNITS_PER_USD",
    "SPAN_COLUMNS",
    "TRACE_COLUMNS",
    "ZERO_BIN",
    "EncodedTrace",
    "bin_of",
    "bin_value",
    "decode_trace",
    "encode_trace",
    "hour_of",
    "minute_of",
]

ZERO_BIN = -(2**31)  # the bin of exact zeros, read back as 0.0
# Cost is summed as integer picodollars, as the MetricsCollector does: exact sums, exact removals.
COST_UNITS_PER_USD = 10**12
_MAX_UNITS = 2**62
_UNITS_LIMIT = float(_MAX_UNITS)  # the same number, compared with a float product without an int
PREVIEW_CHARS = 300

TRACE_COLUMNS = (
    "id", "name", "start_time", "end_time", "duration", "status", "data", "service", "conversation_id",
    "model", "span_count", "requests", "input_tokens", "output_tokens", "cost_units", "input_preview",
    "output_preview",
)  # fmt: skip
SPAN_COLUMNS = (
    "trace_id", "position", "span_id", "parent_id", "name", "kind", "start_time", "end_time", "duration",
    "status", "service", "model", "conversation_id", "request", "error", "input_tokens", "output_tokens",
    "cost", "cost_units", "ttft_ms", "latency_ms", "server_ms", "cache_hit", "minute", "hour", "latency_bin",
    "ttft_bin", "attributes", "events", "exact",
)  # fmt: skip
_HEADER = ("id", "name", "start_time", "end_time", "duration", "status", "metadata")
_SPAN_TEXT = ("id", "parent_id", "name", "kind", "status")


@dataclass(frozen=True, slots=True)
class EncodedTrace:
    """One trace as rows: the `traces` row, the `spans` rows, and what had to be replaced."""

    trace_id: str
    trace_row: tuple[Any, ...]
    span_rows: list[tuple[Any, ...]]
    notes: list[str]


def minute_of(ms: float) -> int:
    """The minute (since the epoch) that epoch time `ms` falls in."""
    return math.floor(ms / 60_000.0)


def hour_of(minute: int) -> int:
    """The first minute of the hour that `minute` falls in."""
    return minute - minute % 60


def bin_of(value: float | None) -> int | None:
    """The hourly histogram bin of a latency or TTFT in ms (None stays None)."""
    if value is None:
        return None
    if value <= 0.0:
        return ZERO_BIN
    return HOUR_BINS.index(value)


def bin_value(index: int) -> float:
    """The value a histogram bin reads back as (within 4% of every value in it)."""
    return 0.0 if index == ZERO_BIN else HOUR_BINS.value(index)


def _number(value: Any) -> float | None:
    """A finite number >= 0 as float, else None (bools, text, NaN and negatives are not numbers here)."""
    if type(value) is float:
        return value if value >= 0.0 and math.isfinite(value) else None
    if type(value) is int:
        return float(value) if 0 <= value < 2**63 else None
    return None


def _text(value: Any) -> str | None:
    return column(value) if isinstance(value, str) and value else None


def _message_text(raw: Any, role: str | None) -> str | None:
    """The text of the last message with `role` (any role if None) in a GenAI messages JSON string, cut."""
    if not isinstance(raw, str):
        return None
    try:
        messages = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if not isinstance(message, dict) or (role is not None and message.get("role") != role):
            continue
        parts = message.get("parts")
        texts = [
            p["content"] for p in parts or () if isinstance(p, dict) and isinstance(p.get("content"), str)
        ] if isinstance(parts, list) else []  # fmt: skip
        text = " ".join(texts).strip()
        return column(text[:PREVIEW_CHARS]) if text else None
    return None


def _request_columns(attrs: dict[str, Any], duration: Any) -> tuple[Any, ...]:
    """The columns input_tokens to cache_hit of a request span, then its latency and TTFT bins. Cost
    units are clamped before round(), which raises for the infinity of an absurd cost."""
    get = attrs.get
    inputs, outputs = get(semconv.GEN_AI_USAGE_INPUT_TOKENS), get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS)
    if not (type(inputs) is int and 0 <= inputs < _MAX_UNITS):  # a count
        inputs = None
    if not (type(outputs) is int and 0 <= outputs < _MAX_UNITS):
        outputs = None
    cost, ttft, latency = get(semconv.OBS_COST_USD), get(semconv.OBS_TTFT_MS), get(semconv.OBS_LATENCY_MS)
    units = None  # `_number` only for the attributes there are
    if cost is not None and (cost := _number(cost)) is not None:
        units = round(units) if (units := cost * COST_UNITS_PER_USD) < _UNITS_LIMIT else _MAX_UNITS
    if ttft is not None:
        ttft = _number(ttft)
    if latency is None or (latency := _number(latency)) is None:
        latency = _number(duration)
    prompt, predicted = get(semconv.LLAMA_CPP_TIMINGS_PROMPT_MS), get(semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS)
    server_ms = None
    if prompt is not None and predicted is not None:
        prompt, predicted = _number(prompt), _number(predicted)
        server_ms = None if prompt is None or predicted is None else prompt + predicted
    return (
        inputs, outputs, cost, units, ttft, latency, server_ms,
        1 if get(semconv.OBS_CACHE_HIT) is True else 0,
        None if latency is None else bin_of(latency), None if ttft is None else bin_of(ttft),
    )  # fmt: skip


def _names(attrs: dict[str, Any], trace_service: str | None) -> tuple[str | None, str | None, str | None]:
    """The service (else the trace's), model and conversation columns of a span."""
    if attrs.keys().isdisjoint(_NAMING_KEY_SET):  # (iterates the smaller of the two)
        return trace_service, None, None
    service, request_model, response_model, conversation_id, session_id = map(attrs.get, _NAMING_KEYS)
    return (
        _text(service) or trace_service, _text(request_model) or _text(response_model),
        _text(conversation_id) or _text(session_id),
    )  # fmt: skip


_NAMING_KEYS = (semconv.SERVICE_NAME, semconv.GEN_AI_REQUEST_MODEL, semconv.GEN_AI_RESPONSE_MODEL,
                semconv.GEN_AI_CONVERSATION_ID, semconv.SESSION_ID)  # fmt: skip
_NAMING_KEY_SET = frozenset(_NAMING_KEYS)
_NOT_A_REQUEST = (None, None, None, None, None, None, None, 0, None, None)


_SPAN_TEXT_OF = operator.itemgetter(*_SPAN_TEXT)
# Where the trace row's sums are read in a span row.
_SERVICE, _MODEL, _CONVERSATION, _INPUTS, _OUTPUTS, _COST_UNITS = (
    SPAN_COLUMNS.index(name)
    for name in ("service", "model", "conversation_id", "input_tokens", "output_tokens", "cost_units")
)


def _span_row(
    trace_id: str, position: int, span: dict[str, Any], trace_service: str | None
) -> tuple[tuple[Any, ...], tuple[str | None, str | None] | None]:
    """The `spans` row of one storable span dict (`trace_id` as `column` made it), and for a request
    span the previews of its input and output (None for other spans)."""
    attrs = span["attributes"]
    service, model, conversation = _names(attrs, trace_service)
    request = semconv.GEN_AI_OPERATION_NAME in attrs
    start = span["start_time"]
    minute = math.floor(start / 60_000.0)  # minute_of, inline
    previews = None
    (inputs, outputs, cost, cost_units, ttft, latency, server_ms, hit, latency_bin, ttft_bin) = (
        _request_columns(attrs, span["duration"]) if request else _NOT_A_REQUEST
    )
    if request:
        previews = (_message_text(attrs.get(semconv.GEN_AI_INPUT_MESSAGES), "user"),
                    _message_text(attrs.get(semconv.GEN_AI_OUTPUT_MESSAGES), None))  # fmt: skip
    text = text_columns(*_SPAN_TEXT_OF(span), span["trace_id"], trace_id)
    if text is None:  # cannot be: `storable` makes every text field text or None
        raise ValueError(f"span {position} of trace {trace_id!r} has a text field that is not text or None")
    span_id, parent_id, name, kind, status, exact = text
    events = span["events"]
    row = (
        trace_id, position, span_id, parent_id, name, kind, start, span["end_time"], span["duration"], status,
        service, model, conversation, int(request), int(status == "error"), inputs, outputs, cost, cost_units,
        ttft, latency, server_ms, hit, minute, minute - minute % 60, latency_bin, ttft_bin,
        _json(attrs) if attrs else "{}", _json(events) if events else "[]", exact,
    )  # fmt: skip
    return row, previews


# ensure_ascii (the default) writes lone surrogates as \udXXX escapes, which read back exactly.
_json = json.JSONEncoder(separators=(",", ":")).encode


def _rows(data: dict[str, Any]) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    metadata = data["metadata"]
    trace_id = data["id"]
    service = _text(metadata.get(semconv.SERVICE_NAME))
    span_rows = []
    conversation = model = input_preview = output_preview = None
    requests = inputs = outputs = cost_units = 0
    bound_id = column(trace_id)
    for position, span in enumerate(data["spans"]):
        row, previews = _span_row(bound_id, position, span, service)
        span_rows.append(row)
        conversation = conversation or row[_CONVERSATION]
        if previews is not None:
            requests += 1
            model = model or row[_MODEL]
            inputs += row[_INPUTS] or 0
            outputs += row[_OUTPUTS] or 0
            cost_units += row[_COST_UNITS] or 0
            input_preview = input_preview or previews[0]
            output_preview = previews[1] or output_preview
    if service is None:
        service = next((row[_SERVICE] for row in span_rows if row[_SERVICE] is not None), None)
    header = _json({name: data[name] for name in _HEADER})
    trace_row = (
        column(trace_id), column(data["name"]), data["start_time"], data["end_time"], data["duration"],
        column(data["status"]), header, service, conversation, model, len(span_rows), requests,
        min(inputs, _MAX_UNITS), min(outputs, _MAX_UNITS), min(cost_units, _MAX_UNITS), input_preview,
        output_preview,
    )  # fmt: skip
    return trace_row, span_rows


_floor = math.floor
_text_json, _float_json = encode_basestring_ascii, float.__repr__  # JSON's own, for text and finite floats
_SERVICE_KEY, _OPERATION_KEY = semconv.SERVICE_NAME, semconv.GEN_AI_OPERATION_NAME
_QUESTION_KEY, _ANSWER_KEY = semconv.GEN_AI_INPUT_MESSAGES, semconv.GEN_AI_OUTPUT_MESSAGES
_contains = dict.__contains__  # `in` on a dict subclass looks `__contains__` up at every call


def _object_rows(trace: Trace) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]] | None:
    """`_rows(storable(trace)[0])` read straight from the Span and SpanEvent objects, or None.

    None (take the general path) unless `storable` would change nothing: the
    checks of `obs.storage._rows._unchanged`, made on the objects, each of
    the very class (Trace, Span, SpanEvent, FrozenDict, tuple) whose
    `to_dict()` those checks assume. The columns come from the rules
    `_span_row` uses too (`_names`, `_request_columns`, `text_columns`),
    without the `to_dict()` copies (tests hold the two paths equal). Plain
    Python steps, not sets of types: for the few fields and attributes of a
    span they are the quicker.
    """
    if type(trace) is not Trace:
        return None
    trace_id, name, status, metadata, spans = trace.id, trace.name, trace.status, trace.metadata, trace.spans
    start, end, duration = trace.start_time, trace.end_time, trace.duration
    if not (
        type(metadata) is FrozenDict and type(spans) is tuple
        and (trace_id is None or type(trace_id) is str) and (name is None or type(name) is str)
        and (status is None or type(status) is str) and times_kept(start, end, duration)
    ):  # fmt: skip
        return None
    metadata_text = metadata_json(metadata)
    if metadata_text is None:
        return None
    trace_service = metadata.get(_SERVICE_KEY)
    # `_text`, inline: a value of a plain mapping is text only when its type is exactly str.
    trace_service = column(trace_service) if type(trace_service) is str and trace_service else None
    bound_id = trace_id if type(trace_id) is str and trace_id.isascii() else column(trace_id)
    span_rows = []
    conversation = model = input_preview = output_preview = None
    requests = inputs = outputs = cost_units = 0
    for position, span in enumerate(spans):
        if type(span) is not Span:
            return None
        attrs = span.attributes
        events = span.events
        span_start = span.start_time
        span_end = span.end_time
        span_duration = span.duration
        if type(span_start) is float and type(span_end) is float and type(span_duration) is float:
            if (span_start - span_start) + (span_end - span_end) + (span_duration - span_duration) != 0.0:
                return None  # not finite: NaN for NaN and the infinities
        elif not times_kept(span_start, span_end, span_duration):
            return None
        if type(attrs) is not FrozenDict or type(events) is not tuple:
            return None
        for key, value in attrs.items():  # `plain_mapping`, with the types compared by identity
            kind = type(value)
            if type(key) is not str or not (
                kind is str or kind is int or kind is float or value is None or kind is bool
                or ((kind is list or kind is tuple) and plain_items(value))
            ):  # fmt: skip
                return None
        span_id = span.id
        span_trace = span.trace_id
        parent_id = span.parent_id
        span_name = span.name
        kind = span.kind
        span_status = span.status
        exact = None
        if not (  # the usual span: ASCII text (which `column` hands back as it is) in its trace
            type(span_id) is str and type(span_name) is str and type(kind) is str and type(span_status) is str
            and (span_id + span_name + kind + span_status).isascii() and type(span_trace) is str
            and span_trace == bound_id
            and (parent_id is None or (type(parent_id) is str and parent_id.isascii()))
        ):  # fmt: skip
            text = text_columns(span_id, parent_id, span_name, kind, span_status, span_trace, bound_id)
            if text is None:
                return None
            # The columns from here on (`column(status) == "error"` just when `status == "error"`).
            span_id, parent_id, span_name, kind, span_status, exact = text
        if events:
            events_text = events_json(events)
            if events_text is None:
                return None
        else:
            events_text = "[]"
        if attrs.keys().isdisjoint(_NAMING_KEY_SET):  # what `_names` says then, without the call
            service, span_model, span_conversation = trace_service, None, None
        else:
            service, span_model, span_conversation = _names(attrs, trace_service)
            conversation = conversation or span_conversation
        minute = _floor(span_start / 60_000.0)  # minute_of, inline
        if _contains(attrs, _OPERATION_KEY):
            request = 1
            measures = _request_columns(attrs, span_duration)
            requests += 1
            model = model or span_model
            inputs += measures[0] or 0
            outputs += measures[1] or 0
            cost_units += measures[3] or 0
            get = attrs.get
            question, answer = get(_QUESTION_KEY), get(_ANSWER_KEY)  # `_message_text` of None is None
            if question is not None:
                input_preview = input_preview or _message_text(question, "user")
            if answer is not None:
                output_preview = _message_text(answer, None) or output_preview
        else:
            request, measures = 0, _NOT_A_REQUEST
        tokens_in, tokens_out, cost, units, ttft, latency, server_ms, hit, latency_bin, ttft_bin = measures
        span_rows.append((
            bound_id, position, span_id, parent_id, span_name, kind, span_start, span_end, span_duration,
            span_status, service, span_model, span_conversation, request, 1 if span_status == "error" else 0,
            tokens_in, tokens_out, cost, units, ttft, latency, server_ms, hit, minute, minute - minute % 60,
            latency_bin, ttft_bin, plain_json(attrs) if attrs else "{}", events_text, exact,
        ))  # fmt: skip
    if trace_service is None:
        trace_service = next((row[_SERVICE] for row in span_rows if row[_SERVICE] is not None), None)
    header = "".join((  # the JSON `_json` writes for the header of `_rows`, piece by piece
        '{"id":', "null" if trace_id is None else _text_json(trace_id), ',"name":',
        "null" if name is None else _text_json(name), ',"start_time":', _float_json(start), ',"end_time":',
        "null" if end is None else _float_json(end), ',"duration":',
        "null" if duration is None else _float_json(duration), ',"status":',
        "null" if status is None else _text_json(status), ',"metadata":', metadata_text, "}",
    ))  # fmt: skip
    trace_row = (
        bound_id, name if type(name) is str and name.isascii() else column(name), start, end, duration,
        status if type(status) is str and status.isascii() else column(status), header, trace_service,
        conversation, model, len(span_rows), requests, inputs if inputs < _MAX_UNITS else _MAX_UNITS,
        outputs if outputs < _MAX_UNITS else _MAX_UNITS,
        cost_units if cost_units < _MAX_UNITS else _MAX_UNITS, input_preview, output_preview,
    )  # fmt: skip
    return trace_row, span_rows


# An EncodedTrace made without the dataclass __init__ (which sets each frozen field through
# object.__setattr__): its slots are set directly, for the many traces of the quick path.
_new, _set_trace_id, _set_trace_row, _set_span_rows, _set_notes = object.__new__, *(
    getattr(EncodedTrace, name).__set__ for name in ("trace_id", "trace_row", "span_rows", "notes"))


def encode_trace(trace: Trace) -> EncodedTrace:
    """The rows of `trace` and the notes of what was replaced to store it.

    Raises only for a Trace whose fields are not what they claim to be.
    """
    try:
        rows = _object_rows(trace)
    except ValueError:  # an int too long to write as text (`plain_json`): the general path checks
        rows = None
    if rows is not None:
        encoded = _new(EncodedTrace)
        _set_trace_id(encoded, rows[0][0])
        _set_trace_row(encoded, rows[0])
        _set_span_rows(encoded, rows[1])
        _set_notes(encoded, [])
        return encoded
    data, notes = storable(trace)
    try:
        trace_row, span_rows = _rows(data)
    except ValueError:  # an int too long to write as text: check every int this time
        data, notes = storable(trace, strict=True)
        trace_row, span_rows = _rows(data)
    return EncodedTrace(trace_row[0], trace_row, span_rows, notes)


# Columns `decode_trace` reads from `spans`, in this order.
SPAN_READ = (
    "trace_id, span_id, parent_id, name, kind, start_time, end_time, duration, status, "
    "attributes, events, exact"
)


def span_dict(row: Sequence[Any]) -> dict[str, Any]:
    """The `Span.to_dict()` form of one `spans` row read with `SPAN_READ`."""
    trace_id, span_id, parent_id, name, kind, start, end, duration, status, attrs, events, exact = row
    span = {
        "id": span_id, "trace_id": trace_id, "parent_id": parent_id, "name": name, "kind": kind,
        "start_time": start, "end_time": end, "duration": duration, "status": status,
        "attributes": json.loads(attrs), "events": json.loads(events),
    }  # fmt: skip
    if exact is not None:
        span.update(json.loads(exact))
    return span


def decode_trace(data: str, spans: Sequence[Sequence[Any]]) -> Trace:
    """The Trace of a `traces.data` text and its `spans` rows (read with `SPAN_READ`, in position order).

    A `data` that holds the spans itself (a row of the one-table layout, or
    written by something else) is read whole. Raises (even RecursionError)
    when it cannot be decoded.
    """
    header = json.loads(data)
    if not isinstance(header, dict):
        raise ValueError(f"a trace row's data must be a JSON object, got {type(header).__name__}")
    if "spans" not in header:
        header["spans"] = [span_dict(row) for row in spans]
    return Trace.from_dict(header)
