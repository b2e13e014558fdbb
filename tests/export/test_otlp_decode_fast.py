"""from_otlp's fast paths against independent readings of the same spans.

Every expected value here comes from somewhere else than the decoder: the
span objects OpenTelemetry's SDK recorded (rebuilt as obs values with the
dataclasses' own constructors), or protobuf's own JSON mapping of messages
built by hand for the kinds of values the SDK cannot send (bytes, key-value
lists, empty values, arrays of mixed kinds). What a fast path could get
wrong is pinned: a key whose kind of value changes from span to span (the
decoder tries the kind a key had last time), values equal to their field's
default, `obs.trace.*` keys and keys that only look like them, statuses, and
the ValueError naming the bad span.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import math
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from obs import semconv
from obs.export import from_otlp, otlp_decode
from obs.trace.spans import FrozenDict, Span, SpanEvent, set_span_attributes
from obs.trace.traces import Trace

RESOURCE = {"service.name": "decode-test", "host.name": "box"}


def _sdk_spans(record: Callable[[Tracer], None]) -> list[ReadableSpan]:
    """The finished spans of what `record` does with a tracer of OpenTelemetry's SDK."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource(RESOURCE))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    record(provider.get_tracer("decode-test", "1.0"))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def _plain(value: Any) -> Any:
    """An SDK attribute value as OTLP carries it back: sequences come back as lists."""
    return list(value) if isinstance(value, tuple) else value


def _reference_span(sdk: ReadableSpan) -> Span:
    """What the SDK recorded, as the Span obs should make of it, built by Span's own constructor."""
    attributes = {key: _plain(value) for key, value in sdk.attributes.items()}
    status = "error" if sdk.status.status_code is StatusCode.ERROR else "success"
    if status == "error" and sdk.status.description and semconv.ERROR_MESSAGE not in attributes:
        attributes[semconv.ERROR_MESSAGE] = sdk.status.description
    start, end = sdk.start_time / 1_000_000, sdk.end_time / 1_000_000
    return Span(
        id=format(sdk.context.span_id, "016x"),
        trace_id=format(sdk.context.trace_id, "032x"),
        parent_id=format(sdk.parent.span_id, "016x") if sdk.parent else None,
        name=sdk.name,
        start_time=start,
        end_time=end,
        duration=end - start,
        status=status,  # type: ignore[arg-type]
        attributes=attributes,
        events=tuple(
            SpanEvent(e.name, e.timestamp / 1_000_000, {k: _plain(v) for k, v in e.attributes.items()})
            for e in sdk.events
        ),
        kind=sdk.kind.name.lower(),  # type: ignore[arg-type]
    )


def _comparable(value: Any) -> Any:
    """`value` with every NaN replaced by a marker and -0.0 told from 0.0, so `==` compares exactly."""
    if isinstance(value, float):
        if math.isnan(value):
            return ("NaN",)
        return (value, math.copysign(1.0, value))
    if isinstance(value, list | tuple):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, Span):
        return {f.name: _comparable(getattr(value, f.name)) for f in dataclasses.fields(Span)}
    if isinstance(value, SpanEvent):
        return (value.name, value.timestamp, _comparable(dict(value.attributes)))
    return (type(value).__name__, value)


@pytest.fixture(autouse=True)
def _no_remembered_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with the decoder remembering no key's kind (and leaves the module's memory alone).

    The memory is module-wide and capped: tests sharing it would fill it, and
    later tests would no longer read keys through their remembered kind.
    """
    monkeypatch.setattr(otlp_decode, "_KIND_BY_KEY", {})


def _decoded_spans(sdk: list[ReadableSpan]) -> list[Span]:
    return [span for trace in from_otlp(encode_spans(sdk)) for span in trace.spans]


def _plain_keys(sdk: list[ReadableSpan]) -> set[str]:
    """The keys the SDK sent at least once with a single value (not a sequence): resource, spans, events."""
    keys = {key for key, value in sdk[0].resource.attributes.items() if not isinstance(value, tuple)}
    for s in sdk:
        for attributes in (s.attributes, *(e.attributes for e in s.events)):
            keys.update(key for key, value in attributes.items() if not isinstance(value, tuple))
    return keys


def _assert_as_recorded(sdk: list[ReadableSpan]) -> None:
    """Decoding the SDK's spans (twice: the second time with every key's kind remembered) gives them back."""
    expected = [_comparable(_reference_span(s)) for s in sdk]
    assert otlp_decode._KIND_BY_KEY == {}
    for round_ in range(2):
        decoded = _decoded_spans(sdk)
        by_id = {span.id: _comparable(span) for span in decoded}
        assert [by_id[format(s.context.span_id, "016x")] for s in sdk] == expected
        if round_ == 0:
            # So the second round reads every such key through its remembered kind first.
            assert _plain_keys(sdk) <= set(otlp_decode._KIND_BY_KEY)


EVERY_KIND = {
    "text": "answer", "empty text": "", "unicode": "naïve ✓ 字",
    "true": True, "false": False,
    "zero": 0, "one": 1, "minus one": -1, "int64 max": 2**63 - 1, "int64 min": -(2**63),
    "float": 1.5, "float zero": 0.0, "negative zero": -0.0, "nan": math.nan, "inf": math.inf,
    "minus inf": -math.inf, "tiny": 5e-324,
    "texts": ("stop", "", "length"), "bools": (False, True), "ints": (0, -(2**63), 2**63 - 1),
    "floats": (0.0, -0.0, math.nan, 2.5), "no items": (),
}


def test_every_kind_of_value_the_sdk_sends_comes_back_as_recorded() -> None:
    def record(tracer: Tracer) -> None:
        with tracer.start_as_current_span("root", attributes=EVERY_KIND, kind=SpanKind.SERVER) as root:
            root.add_event("with values", {"index": 0, "note": "", "flag": False, "ratio": -0.0})
            root.add_event("without values")
            with tracer.start_as_current_span("child", kind=SpanKind.CLIENT) as child:
                child.add_event("only event")

    _assert_as_recorded(_sdk_spans(record))


def test_a_key_whose_kind_of_value_changes_between_spans_is_read_right_each_time() -> None:
    # The decoder first tries the kind a key had last time; a value equal to its field's default
    # (empty, zero, False) could be mistaken for a value of that kind.
    sequence = ["text", 0, False, "", 0.0, -0.0, 7, True, "", 1.25, math.nan, 0, ("a",), (0, 1), (), "again",
                0]

    def record(tracer: Tracer) -> None:
        with tracer.start_as_current_span("root"):
            for i, value in enumerate(sequence):
                with tracer.start_as_current_span(f"step {i}", attributes={"shifting": value, "steady": i}):
                    pass

    _assert_as_recorded(_sdk_spans(record))


def _by_protobuf(value: dict[str, Any]) -> Any:
    """A value as protobuf's own JSON mapping (MessageToDict) shows it, turned into the Python value."""
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return value["boolValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    if "arrayValue" in value:
        return [_by_protobuf(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return {kv["key"]: _by_protobuf(kv.get("value", {})) for kv in value["kvlistValue"].get("values", [])}
    return None  # an empty value (or a kind obs does not read)


def _any(value: Any) -> AnyValue:
    """An AnyValue holding `value` (dicts as key-value lists, None as an empty value)."""
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend([_any(v) for v in value])
        return out
    out = AnyValue()
    out.kvlist_value.values.extend([KeyValue(key=k, value=_any(v)) for k, v in value.items()])
    return out


BY_HAND = {
    "bytes": b"\x00\xffraw", "no bytes": b"", "empty": None,
    "mixed": [1, "a", None, 2.5, True, b"x", [1, [2, []]], {"k": "v", "n": None}, 0, "", False, -0.0],
    "zeros then one": [0, 0, 1], "one then zero": [1, 0, -1], "texts then empty": ["a", "", "b"],
    "floats": [0.0, -0.0, math.nan, math.inf, 1.5], "bools": [True, False, True],
    "nested": {"level": {"deeper": {"list": [{"x": 1}, {"x": ""}], "bytes": b"\x01"}}, "empty": {}},
    "no items": [], "no keys": {},
}


def _message(span_attributes: list[KeyValue], event_attributes: list[KeyValue] | None = None
             ) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    resource_spans = message.resource_spans.add()
    span = resource_spans.scope_spans.add().spans.add(
        trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)), name="by hand",
        start_time_unix_nano=1_700_000_000_000_000_000, end_time_unix_nano=1_700_000_000_250_000_001)
    span.attributes.extend(span_attributes)
    if event_attributes is not None:
        event = span.events.add(time_unix_nano=1_700_000_000_100_000_000, name="event")
        event.attributes.extend(event_attributes)
    return message


def test_values_the_sdk_cannot_send_come_back_as_protobuf_reads_them() -> None:
    attributes = [KeyValue(key=key, value=_any(value)) for key, value in BY_HAND.items()]
    attributes.append(KeyValue(key="strindex", value=AnyValue(string_value_strindex=3)))
    attributes.append(KeyValue(key="no value"))  # a KeyValue without its value field
    message = _message(attributes, event_attributes=attributes)
    shown = json_format.MessageToDict(message)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    expected = {kv["key"]: _by_protobuf(kv.get("value", {})) for kv in shown["attributes"]}
    for form in (message, message.SerializeToString()):
        [trace] = from_otlp(form)
        [span] = trace.spans
        assert _comparable(dict(span.attributes)) == _comparable(expected)
        assert _comparable(dict(span.events[0].attributes)) == _comparable(expected)
        assert list(span.attributes) == list(expected)  # in the order they were sent


def test_a_key_sent_twice_keeps_its_first_place_and_its_last_value() -> None:
    attributes = [KeyValue(key="a", value=_any(1)), KeyValue(key="b", value=_any("x")),
                  KeyValue(key="a", value=_any("again"))]
    [trace] = from_otlp(_message(attributes))
    as_python = dict([("a", 1), ("b", "x"), ("a", "again")])
    assert list(trace.spans[0].attributes.items()) == list(as_python.items())


def test_trace_keys_on_a_child_span_are_taken_and_look_alikes_are_left() -> None:
    look_alikes = {"x.obs.trace.name": "kept", "obs.tracex": "kept", "obs.trace": "kept",
                   "a\nobs.trace.b": "kept", "OBS.TRACE.NAME": "kept"}

    def record(tracer: Tracer) -> None:
        child = {"obs.trace.name": "renamed", "obs.trace.metadata.user": "ann", "own": 1}
        with tracer.start_as_current_span("root", attributes=look_alikes), \
                tracer.start_as_current_span("child", attributes=child):
            pass

    sdk = _sdk_spans(record)
    for round_ in range(2):  # the second time, every key but the obs.trace.* ones has been seen before
        [trace] = from_otlp(encode_spans(sdk))
        child, root = trace.spans
        assert dict(child.attributes) == {"own": 1}
        assert dict(root.attributes) == look_alikes
        assert trace.name == "renamed"
        assert trace.metadata == {**RESOURCE, "user": "ann"}
        if round_ == 0:
            remembered = set(otlp_decode._KIND_BY_KEY)
            assert {*look_alikes, "own"} <= remembered
            assert not [key for key in remembered if key.startswith("obs.trace.")]


def test_statuses_and_error_messages_are_what_the_sdk_recorded() -> None:
    def record(tracer: Tracer) -> None:
        with tracer.start_as_current_span("root") as root:
            root.set_status(Status(StatusCode.OK))
            with tracer.start_as_current_span("error with message") as span:
                span.set_status(Status(StatusCode.ERROR, "model overloaded"))
            with tracer.start_as_current_span("error without message") as span:
                span.set_status(Status(StatusCode.ERROR))
            with tracer.start_as_current_span("error with its own message",
                                              attributes={semconv.ERROR_MESSAGE: "own words"}) as span:
                span.set_status(Status(StatusCode.ERROR, "status words"))
            with tracer.start_as_current_span("unset"):
                pass

    sdk = _sdk_spans(record)
    _assert_as_recorded(sdk)
    [trace] = from_otlp(encode_spans(sdk))
    assert trace.status == "error"
    by_name = {span.name: span for span in trace.spans}
    assert by_name["error without message"].attributes == {}
    assert by_name["error with its own message"].attributes == {semconv.ERROR_MESSAGE: "own words"}


def test_traces_are_what_their_sdk_spans_say() -> None:
    def record(tracer: Tracer) -> None:
        for n in range(3):
            with tracer.start_as_current_span(f"request {n}", kind=SpanKind.SERVER):
                with tracer.start_as_current_span("step", kind=SpanKind.PRODUCER):
                    pass
                with tracer.start_as_current_span("other", kind=SpanKind.CONSUMER):
                    pass

    sdk = _sdk_spans(record)
    traces = from_otlp(encode_spans(sdk))
    assert [t.id for t in traces] == list(dict.fromkeys(format(s.context.trace_id, "032x") for s in sdk))
    for trace in traces:
        mine = [s for s in sdk if format(s.context.trace_id, "032x") == trace.id]
        root = next(s for s in mine if s.parent is None)
        assert trace.name == root.name
        assert trace.start_time == min(s.start_time for s in mine) / 1_000_000
        assert trace.end_time == max(s.end_time for s in mine) / 1_000_000
        assert trace.duration == trace.end_time - trace.start_time
        assert (trace.status, trace.metadata) == ("success", RESOURCE)
        assert [_comparable(s) for s in trace.spans] == [_comparable(_reference_span(s)) for s in mine]


def test_decoded_values_are_the_dataclasses_themselves() -> None:
    def record(tracer: Tracer) -> None:
        with tracer.start_as_current_span("root", attributes={"k": "v"}) as root:
            root.add_event("tick", {"n": 1})

    [sdk] = _sdk_spans(record)
    [trace] = from_otlp(encode_spans([sdk]))
    [span] = trace.spans
    [event] = span.events
    assert (type(trace), type(span), type(event)) == (Trace, Span, SpanEvent)
    assert type(span.attributes) is FrozenDict and type(event.attributes) is FrozenDict
    assert type(trace.metadata) is FrozenDict and type(trace.spans) is tuple and type(span.events) is tuple
    assert (span.start_mono, trace.start_mono) == (0.0, 0.0)
    # Equal (the dataclasses' own `==`, which also compares the classes) to what the constructors
    # build from what the SDK recorded.
    reference = _reference_span(sdk)
    assert span == reference
    assert event == SpanEvent("tick", sdk.events[0].timestamp / 1_000_000, {"n": 1})
    assert trace == Trace(
        id=format(sdk.context.trace_id, "032x"), name="root", start_time=reference.start_time,
        end_time=reference.end_time, duration=reference.end_time - reference.start_time,  # type: ignore[operator]
        status="success", metadata=RESOURCE, spans=(reference,),
    )
    assert pickle.loads(pickle.dumps(trace)) == trace and copy.deepcopy(trace) == trace
    assert dataclasses.replace(span, name="renamed").name == "renamed"
    assert set_span_attributes(span, {"extra": 1}).attributes == {"k": "v", "extra": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        span.name = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only"):
        span.attributes["k"] = "changed"  # type: ignore[index]


def test_many_distinct_keys_do_not_grow_the_remembered_kinds_past_their_bound() -> None:
    kept = otlp_decode._KINDS_KEPT
    attributes = [KeyValue(key=f"key {i}", value=_any(i)) for i in range(kept + 100)]
    for _ in range(2):  # the second time, the first keys are read through their remembered kind, the rest not
        [trace] = from_otlp(_message(attributes))
        assert dict(trace.spans[0].attributes) == {f"key {i}": i for i in range(kept + 100)}
        # Filled from empty up to its bound, with the keys it met first, and no further.
        remembered = otlp_decode._KIND_BY_KEY
        assert remembered == {f"key {i}": "int_value" for i in range(kept)}


GOOD = {"trace_id": bytes(range(1, 17)), "span_id": bytes(range(1, 9)), "parent_span_id": b"",
        "start_time_unix_nano": 5, "end_time_unix_nano": 6}


@pytest.mark.parametrize(("change", "says"), [
    ({"trace_id": bytes(range(1, 16))}, ".traceId must be 16 bytes, not all zeros; got '{trace_id}'"),
    ({"trace_id": bytes(16)}, ".traceId must be 16 bytes, not all zeros; got '{trace_id}'"),
    ({"trace_id": b""}, ".traceId must be 16 bytes, not all zeros; got ''"),
    ({"span_id": bytes(range(1, 10))}, ".spanId must be 8 bytes, not all zeros; got '{span_id}'"),
    ({"span_id": bytes(8)}, ".spanId must be 8 bytes, not all zeros; got '{span_id}'"),
    ({"parent_span_id": bytes(range(1, 8))},
     ".parentSpanId must be 8 bytes or empty; got '{parent_span_id}'"),
    ({"parent_span_id": bytes(8)}, ".parentSpanId must be 8 bytes or empty; got '{parent_span_id}'"),
    ({"start_time_unix_nano": 7}, " ends (6) before it starts (7)"),
    # Checked in this order: the trace id first, then the span id, the parent id, the times.
    ({"trace_id": bytes(16), "span_id": bytes(8), "start_time_unix_nano": 9},
     ".traceId must be 16 bytes, not all zeros; got '{trace_id}'"),
    ({"span_id": bytes(8), "parent_span_id": bytes(8)},
     ".spanId must be 8 bytes, not all zeros; got '{span_id}'"),
])
def test_a_bad_span_is_named_by_its_place(change: dict[str, Any], says: str) -> None:
    message = ExportTraceServiceRequest()
    for _ in range(2):
        resource_spans = message.resource_spans.add()
        for _ in range(2):
            spans = resource_spans.scope_spans.add().spans
            for i in range(3):
                spans.add(name=f"span {i}", **{**GOOD, "span_id": bytes([9, 9, 9, 9, 9, 9, 9, i + 1])})
    bad = message.resource_spans[1].scope_spans[1].spans[2]
    for field, value in change.items():
        setattr(bad, field, value)
    fields = {field: getattr(bad, field).hex() for field in ("trace_id", "span_id", "parent_span_id")}
    expected = "from_otlp: resourceSpans[1].scopeSpans[1].spans[2]" + says.format(**fields)
    for form in (message, message.SerializeToString()):
        with pytest.raises(ValueError) as info:
            from_otlp(form)
        assert str(info.value) == expected
