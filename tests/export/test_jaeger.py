"""to_jaeger: the JSON the Jaeger UI loads from a file."""

from __future__ import annotations

import json
import math

import obs
from obs.export import to_jaeger
from obs.trace.spans import Span
from obs.trace.traces import Trace
from tests.export.support import sample_traces

_TYPES = {"string": str, "bool": bool, "int64": int, "float64": float, "binary": str}


def test_the_file_has_one_entry_per_trace_with_processes_every_span_points_at() -> None:
    traces = sample_traces()
    data = json.loads(json.dumps(to_jaeger(traces), allow_nan=False))
    assert set(data) == {"data"} and len(data["data"]) == len(traces)
    for entry, trace in zip(data["data"], traces, strict=True):
        assert set(entry) == {"traceID", "spans", "processes", "warnings"} and entry["traceID"] == trace.id
        assert entry["processes"] == {"p1": {"serviceName": trace.metadata["service.name"], "tags": []}}
        assert [s["spanID"] for s in entry["spans"]] == [s.id for s in trace.spans]
        for span in entry["spans"]:
            assert set(span) == {"traceID", "spanID", "flags", "operationName", "references", "startTime",
                                 "duration", "tags", "logs", "processID", "warnings"}
            assert span["processID"] in entry["processes"] and span["traceID"] == trace.id
            for tag in span["tags"] + [f for log in span["logs"] for f in log["fields"]]:
                assert set(tag) == {"key", "type", "value"}
                assert isinstance(tag["value"], _TYPES[tag["type"]])


def test_references_times_tags_and_logs() -> None:
    traces = sample_traces()
    spans = {s["operationName"]: s for e in to_jaeger(traces)["data"] for s in e["spans"]}
    retrieve, rag = spans["retrieve"], spans["rag"]
    parent = {"refType": "CHILD_OF", "traceID": traces[0].id, "spanID": rag["spanID"]}
    assert retrieve["references"] == [parent]
    assert rag["references"] == []
    assert retrieve["startTime"] == 1_700_000_000_125_500 and retrieve["duration"] == 10_000
    llm = [s for e in to_jaeger(traces)["data"] for s in e["spans"] if s["operationName"] == "chat smollm2"]
    tags = {t["key"]: (t["type"], t["value"]) for t in llm[0]["tags"]}
    assert tags["gen_ai.usage.input_tokens"] == ("int64", 42)
    assert tags["gen_ai.request.temperature"] == ("float64", 0.75)
    assert tags["gen_ai.request.stream"] == ("bool", True)
    assert tags["gen_ai.request.stop_sequences"] == ("string", '["\\n\\n","END"]')
    assert tags["obs.raw"] == ("binary", "AP9ieXRlcw==")
    assert tags["span.kind"] == ("string", "client") and tags["otel.status_code"] == ("string", "OK")
    assert tags["otel.scope.name"] == ("string", "obs")
    assert tags["otel.scope.version"] == ("string", obs.__version__)
    first = llm[0]["logs"][0]
    assert first["timestamp"] == 1_700_000_000_175_500
    assert first["fields"][0] == {"key": "event", "type": "string", "value": "first_token"}
    failed = {t["key"]: (t["type"], t["value"]) for t in llm[1]["tags"]}
    assert failed["error"] == ("bool", True) and failed["otel.status_code"] == ("string", "ERROR")
    assert failed["otel.status_description"] == ("string", "model overloaded")
    assert spans["rag"]["tags"][-1] == {"key": "otel.status_code", "type": "string", "value": "OK"}


def test_values_json_cannot_hold_become_strings_and_running_spans_are_left_out() -> None:
    span = Span("00000000000000a1", "0" * 31 + "1", None, "s", 1000.0, 1001.0, 1.0, "success",
                {"nan": math.nan, "inf": -math.inf, "huge": 2**70, "nested": {"a": 1}, "none": None})
    running = Span("00000000000000a2", "0" * 31 + "1", "00000000000000a1", "r", 1000.5)
    trace = Trace("0" * 31 + "1", "s", 1000.0, 1001.0, 1.0, "success", {}, [span, running])
    empty = Trace("0" * 31 + "2", "e", 1000.0, 1001.0, 1.0, "success", {}, [])
    data = to_jaeger([trace, empty])
    json.dumps(data, allow_nan=False)
    [entry] = data["data"]
    assert [s["operationName"] for s in entry["spans"]] == ["s"]
    tags = {t["key"]: (t["type"], t["value"]) for t in entry["spans"][0]["tags"]}
    assert tags["nan"] == ("string", "NaN") and tags["inf"] == ("string", "-Infinity")
    assert tags["huge"] == ("string", str(2**70)) and tags["nested"] == ("string", '{"a":1}')
    assert "none" not in tags and entry["processes"]["p1"]["serviceName"] == "unknown_service"
