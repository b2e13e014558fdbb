"""to_otlp / to_otlp_json / from_otlp against OpenTelemetry's own encoder and protobuf's own parsers."""

from __future__ import annotations

import base64
import copy
import json
import math

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import obs
from obs import semconv
from obs.clock import FakeClock
from obs.export import from_otlp, to_otlp, to_otlp_json
from obs.trace.ids import SequentialIdGenerator
from obs.trace.processors import InMemoryExporter, SimpleProcessor
from obs.trace.spans import Span, SpanEvent
from obs.trace.tracer import Tracer
from obs.trace.traces import Trace
from tests.export.support import REMOTE_TRACEPARENT, otel_spans, sample_traces


def _dict(message: ExportTraceServiceRequest) -> dict:
    return json_format.MessageToDict(message)


def test_to_otlp_is_field_for_field_what_opentelemetrys_encoder_makes_of_the_same_spans() -> None:
    traces = sample_traces()
    ours = to_otlp(traces)
    theirs = encode_spans(otel_spans(traces))
    # Field by field first (a readable diff when something differs), then the messages whole.
    assert _dict(ours) == _dict(theirs)
    assert ours == theirs
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)


def test_to_otlp_resource_scope_kinds_statuses_events_parents_and_flags() -> None:
    traces = sample_traces()
    message = to_otlp(traces)
    services = [
        {kv.key: kv.value.string_value for kv in rs.resource.attributes}["service.name"]
        for rs in message.resource_spans
    ]
    assert services == ["chat-api", "Billing"]
    scope = message.resource_spans[0].scope_spans[0].scope
    assert (scope.name, scope.version) == ("obs", obs.__version__)
    spans = {s.name + "/" + s.span_id.hex(): s for rs in message.resource_spans
             for ss in rs.scope_spans for s in ss.spans}
    by_name = {key.split("/")[0]: span for key, span in spans.items()}
    assert [by_name[n].kind for n in ("rag", "handle request", "publish", "consume")] == [1, 2, 4, 5]
    failed = [s for s in spans.values() if s.status.code == 2]
    assert len(failed) == 1 and failed[0].status.message == "model overloaded"
    assert by_name["rag"].status.code == 1
    retrieve = by_name["retrieve"]
    assert retrieve.parent_span_id == by_name["rag"].span_id and retrieve.flags == 0x100
    handle = by_name["handle request"]
    assert handle.trace_id.hex() == REMOTE_TRACEPARENT.split("-")[1]
    assert handle.parent_span_id.hex() == REMOTE_TRACEPARENT.split("-")[2]
    assert handle.flags == 0x300  # the parent is remote
    events = next(spans[k].events for k in spans if k.startswith("chat smollm2"))
    assert [e.name for e in events] == [semconv.EVENT_FIRST_TOKEN, semconv.EVENT_RESPONSE_RECEIVED]
    assert events[0].time_unix_nano == 1_700_000_000_175_500_000  # 123 + 2.5 + 10 + 40 ms


def test_attributes_of_every_type_and_nested_values_as_json() -> None:
    span = Span("00000000000000a1", "0" * 31 + "1", None, "s", 1000.0, 1001.0, 1.0, "success", {
        "s": "text", "b": False, "i": -(2**63), "f": 0.5, "nan": math.nan, "none": None,
        "list": ["a", "b"], "mixed": [1, "a", None], "tuple": (1, 2), "bytes": b"\x01",
        "dict": {"role": "user", "n": [1, {"x": None}]}, "nested_list": [[1], [2]],
        "huge": 2**64, "surrogate": "a\ud800b",
    })
    trace = Trace("0" * 31 + "1", "s", 1000.0, 1001.0, 1.0, "success", {"service.name": "x"}, [span])
    encoded = to_otlp([trace]).resource_spans[0].scope_spans[0].spans[0]
    values = {kv.key: kv.value for kv in encoded.attributes}
    assert values["s"].string_value == "text"
    assert values["b"].WhichOneof("value") == "bool_value" and values["b"].bool_value is False
    assert values["i"].int_value == -(2**63)
    assert values["f"].double_value == 0.5 and math.isnan(values["nan"].double_value)
    assert values["none"].WhichOneof("value") is None
    assert [v.string_value for v in values["list"].array_value.values] == ["a", "b"]
    assert [v.WhichOneof("value") for v in values["mixed"].array_value.values] == [
        "int_value", "string_value", None]
    assert [v.int_value for v in values["tuple"].array_value.values] == [1, 2]
    assert values["bytes"].bytes_value == b"\x01"
    assert json.loads(values["dict"].string_value) == {"role": "user", "n": [1, {"x": None}]}
    assert json.loads(values["nested_list"].string_value) == [[1], [2]]
    assert values["huge"].string_value == str(2**64)
    assert values["surrogate"].string_value == "a\ufffdb"


def test_otlp_json_follows_the_otlp_json_rules_and_parses_with_protobufs_parser() -> None:
    traces = sample_traces()
    data = to_otlp_json(traces)
    text = json.dumps(data, allow_nan=False)
    span = data["resourceSpans"][0]["scopeSpans"][0]["spans"][2]
    assert span["traceId"] == traces[0].id and len(span["traceId"]) == 32
    assert span["spanId"] == traces[0].spans[2].id and span["parentSpanId"] == traces[0].spans[0].id
    assert span["kind"] == 3 and span["status"] == {"code": 1}  # integers, not enum names
    assert isinstance(span["startTimeUnixNano"], str) and span["startTimeUnixNano"].isdigit()
    tokens = {a["key"]: a["value"] for a in span["attributes"]}[semconv.GEN_AI_USAGE_INPUT_TOKENS]
    assert tokens == {"intValue": "42"}
    assert "resource_spans" not in text and "scopeSpans" in text and "startTimeUnixNano" in text
    # The pitfall: protobuf's parser reads hex ids as base64 without complaint, into wrong ids.
    wrong = json_format.ParseDict(data, ExportTraceServiceRequest())
    assert len(wrong.resource_spans[0].scope_spans[0].spans[0].trace_id) != 16
    # Converted to base64 first, it gives back exactly the protobuf message, ids byte for byte.
    converted = copy.deepcopy(data)
    for rs in converted["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in s:
                        s[key] = base64.b64encode(bytes.fromhex(s[key])).decode()
    parsed = json_format.ParseDict(converted, ExportTraceServiceRequest())
    assert parsed == to_otlp(traces)
    parsed_spans = [s for rs in parsed.resource_spans for ss in rs.scope_spans for s in ss.spans]
    expected = [s for t in traces for s in t.spans]
    assert [s.trace_id for s in parsed_spans] == [bytes.fromhex(s.trace_id) for s in expected]
    assert [s.span_id for s in parsed_spans] == [bytes.fromhex(s.id) for s in expected]
    assert [s.parent_span_id for s in parsed_spans] == [
        bytes.fromhex(s.parent_id) if s.parent_id else b"" for s in expected]


def test_non_finite_doubles_are_json_strings_in_otlp_json() -> None:
    trace = sample_traces()[3]
    span = trace.spans[0]
    odd = Span(span.id, span.trace_id, None, span.name, span.start_time, span.end_time, span.duration,
               "success", {"up": math.inf, "nan": math.nan})
    data = to_otlp_json([Trace(trace.id, trace.name, trace.start_time, trace.end_time, trace.duration,
                               "success", trace.metadata, [odd])])
    json.dumps(data, allow_nan=False)  # valid JSON for any reader
    [span_data] = data["resourceSpans"][0]["scopeSpans"][0]["spans"]
    values = {a["key"]: a["value"] for a in span_data["attributes"]}
    assert values == {"up": {"doubleValue": "Infinity"}, "nan": {"doubleValue": "NaN"}}


@pytest.mark.parametrize("form", ["message", "bytes", "json dict", "json text", "json bytes"])
def test_from_otlp_gives_back_the_traces_the_tracer_made(form: str) -> None:
    traces = sample_traces()
    data = {
        "message": lambda: to_otlp(traces),
        "bytes": lambda: to_otlp(traces).SerializeToString(),
        "json dict": lambda: to_otlp_json(traces),
        "json text": lambda: json.dumps(to_otlp_json(traces)),
        "json bytes": lambda: json.dumps(to_otlp_json(traces)).encode(),
    }[form]()
    assert from_otlp(data) == traces


def _explicit_traces() -> list[Trace]:
    clock = FakeClock()
    exporter = InMemoryExporter()
    tracer = Tracer(processors=[SimpleProcessor(exporter)], clock=clock, id_generator=SequentialIdGenerator())
    conversation = tracer.begin_trace("conversation", {"user.id": "ann", "turns": [1, 2], "vip": True})
    clock.advance(3)
    with tracer.start_span("turn 1"):
        clock.advance(10)
    with tracer.start_span("turn 2"):
        clock.advance(4)
    clock.advance(2.5)
    tracer.end_trace(conversation)
    with pytest.raises(RuntimeError), tracer.begin_trace("failing job"):  # an error no span shows
        with tracer.start_span("step"):
            clock.advance(1)
        raise RuntimeError("job failed")
    return exporter.traces


def test_explicit_traces_round_trip_with_their_name_times_status_and_metadata() -> None:
    traces = _explicit_traces()
    assert traces[0].start_time < traces[0].spans[0].start_time < traces[0].end_time
    assert traces[1].status == "error" and traces[1].spans[0].status == "success"
    message = to_otlp(traces)
    root = message.resource_spans[0].scope_spans[0].spans[0]
    carried = {kv.key for kv in root.attributes}
    assert {"obs.trace.name", "obs.trace.start_time_unix_nano", "obs.trace.end_time_unix_nano",
            "obs.trace.metadata.user.id", "obs.trace.metadata.turns", "obs.trace.metadata.vip"} <= carried
    second = message.resource_spans[0].scope_spans[0].spans[1]
    assert not [kv.key for kv in second.attributes if kv.key.startswith("obs.trace.")]
    assert from_otlp(message) == traces
    assert from_otlp(to_otlp_json(traces)) == traces
    assert from_otlp(to_otlp(from_otlp(message))) == traces


def test_implicit_traces_carry_no_trace_attributes() -> None:
    message = to_otlp(sample_traces())
    keys = [kv.key for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans
            for kv in s.attributes]
    assert not [k for k in keys if k.startswith("obs.trace.")]


def test_with_the_system_clock_only_durations_finer_than_the_epoch_float_can_differ() -> None:
    exporter = InMemoryExporter()
    tracer = Tracer(processors=[SimpleProcessor(exporter)])
    with tracer.start_span("outer"), tracer.start_span("inner") as inner:
        inner.add_event("tick")
    traces = exporter.traces
    back = from_otlp(to_otlp(traces))
    for original, returned in zip(traces[0].spans, back[0].spans, strict=True):
        assert (returned.start_time, returned.end_time) == (original.start_time, original.end_time)
        assert returned.events == original.events and returned.attributes == original.attributes
        assert returned.duration == returned.end_time - returned.start_time
        assert abs(returned.duration - original.duration) < 1e-3  # under a microsecond
    assert back[0].start_time == traces[0].start_time and back[0].end_time == traces[0].end_time


def test_from_otlp_reads_what_opentelemetrys_sdk_sends() -> None:
    traces = sample_traces()
    foreign = from_otlp(encode_spans(otel_spans(traces)).SerializeToString())
    assert [t.id for t in foreign] == [t.id for t in traces]
    for theirs, ours in zip(foreign, traces, strict=True):
        assert [(s.name, s.parent_id, s.kind, s.status) for s in theirs.spans] == [
            (s.name, s.parent_id, s.kind, s.status) for s in ours.spans]
        assert [dict(s.attributes) for s in theirs.spans] == [dict(s.attributes) for s in ours.spans]
        assert theirs.metadata == {"service.name": ours.metadata["service.name"]}


def test_from_otlp_fills_in_what_foreign_spans_leave_out() -> None:
    data = {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "shop"}},
        {"key": "host.name", "value": {"stringValue": "box"}}]},
        "scopeSpans": [{"scope": {"name": "x"}, "unknownField": 1, "spans": [
            {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
             "name": "GET /", "startTimeUnixNano": "1000000", "endTimeUnixNano": 3000000,
             "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
             "attributes": [{"key": "kv", "value": {"kvlistValue": {"values": [
                 {"key": "a", "value": {"intValue": 1}}]}}}]},
            {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "00f067aa0ba902b7",
             "parentSpanId": "b7ad6b7169203331", "name": "db", "kind": 0,
             "startTimeUnixNano": "1500000", "endTimeUnixNano": "3500000"}]}]}]}
    [trace] = from_otlp(data)
    assert (trace.name, trace.start_time, trace.end_time, trace.status) == ("GET /", 1.0, 3.5, "error")
    assert trace.metadata == {"service.name": "shop", "host.name": "box"}
    root, child = trace.spans
    assert root.attributes == {"kv": {"a": 1}, "error.message": "boom"} and root.status == "error"
    assert child.kind == "internal" and child.status == "success" and child.duration == 2.0


@pytest.mark.parametrize(("data", "says"), [
    (b"\xff\xff\xff", "not an OTLP protobuf"),
    ("{not json", "not JSON"),
    ("[1]", "must be an object"),
    ({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]},
     "resourceSpans[0].scopeSpans[0].spans[0].traceId must be hex"),
    ({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0af7", "spanId": "b7ad6b7169203331"}]}]}]},
     "traceId must be 16 bytes"),
    ({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
         "startTimeUnixNano": "5", "endTimeUnixNano": "4"}]}]}]}, "ends (4) before it starts (5)"),
    ({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}, "not an OTLP/JSON"),
    (12, "must be an ExportTraceServiceRequest"),
])
def test_from_otlp_says_what_is_wrong(data: object, says: str) -> None:
    with pytest.raises(ValueError, match="from_otlp") as info:
        from_otlp(data)  # type: ignore[arg-type]
    assert says in str(info.value)


def test_to_otlp_refuses_bad_ids_and_times_naming_the_span() -> None:
    good = sample_traces()[3]
    span = good.spans[0]
    for bad, says in [
        (Span("xyz", span.trace_id, None, "s", 1.0, 2.0, 1.0, "success"), "span id 'xyz'"),
        (Span(span.id, span.trace_id, "0" * 16, "s", 1.0, 2.0, 1.0, "success"), "parent id"),
        (Span(span.id, "0" * 32, None, "s", 1.0, 2.0, 1.0, "success"), "trace id"),
        (Span(span.id, span.trace_id, None, "s", math.nan, 2.0, 1.0, "success"), "start time nan"),
    ]:
        trace = Trace(good.id, "t", 1.0, 2.0, 1.0, "success", {}, [bad])
        with pytest.raises(ValueError, match="to_otlp") as info:
            to_otlp([trace])
        assert says in str(info.value)
    with pytest.raises(ValueError, match="traces must be a list of Trace"):
        to_otlp("trace")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"traces\[1\] must be a Trace"):
        to_otlp([good, span])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="resource must be a mapping"):
        to_otlp([good], resource=["service.name"])  # type: ignore[arg-type]


def test_running_spans_and_empty_traces_are_left_out_and_a_resource_names_the_service() -> None:
    trace = sample_traces()[0]
    running = Span("00000000000000ff", trace.id, trace.spans[0].id, "still going", trace.start_time)
    with_running = Trace(trace.id, trace.name, trace.start_time, trace.end_time, trace.duration,
                         trace.status, trace.metadata, [*trace.spans, running])
    empty = Trace("0" * 31 + "9", "empty", 1.0, 2.0, 1.0, "success", {"service.name": "x"}, [])
    resource = {"service.name": "renamed", "deployment.environment": "dev"}
    message = to_otlp([with_running, empty], resource=resource)
    [resource_spans] = message.resource_spans
    assert [s.name for s in resource_spans.scope_spans[0].spans] == [s.name for s in trace.spans]
    assert {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes} == {
        "service.name": "renamed", "deployment.environment": "dev"}
    assert to_otlp(trace) == to_otlp([trace])  # one trace is accepted as it is
    assert to_otlp([]) == ExportTraceServiceRequest()


def test_event_attributes_and_error_spans_keep_their_values() -> None:
    trace = sample_traces()[1]
    [span] = from_otlp(to_otlp([trace]))[0].spans
    assert span.status == "error"
    assert span.attributes[semconv.ERROR_MESSAGE] == "model overloaded"
    assert [e.name for e in span.events] == [semconv.EVENT_EXCEPTION]
    assert isinstance(span.events[0], SpanEvent)
