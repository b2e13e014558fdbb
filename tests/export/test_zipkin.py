"""to_zipkin against Zipkin's own API schema and OpenTelemetry's Zipkin JSON encoder."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint

import obs
from obs.export import to_zipkin
from obs.trace.spans import Span, SpanEvent
from obs.trace.traces import Trace
from tests.export.support import LONG_TEXT, otel_spans, sample_traces

SCHEMA = Path(__file__).with_name("zipkin2-api.yaml")
ID = re.compile(r"^([0-9a-f]{16}|[0-9a-f]{32})$")


def _validator() -> jsonschema.Draft4Validator:
    definitions = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))["definitions"]
    return jsonschema.Draft4Validator({"$ref": "#/definitions/ListOfSpans", "definitions": definitions})


def _otel_zipkin(traces: list[Trace], limit: int | None) -> list[dict[str, Any]]:
    """What OpenTelemetry's Zipkin JSON v2 encoder makes of the same spans, one service per trace."""
    spans = otel_spans(traces)
    out: list[dict[str, Any]] = []
    for trace in traces:
        endpoint = NodeEndpoint()
        endpoint.service_name = trace.metadata["service.name"]
        mine = [s for s in spans if format(s.context.trace_id, "032x") == trace.id]
        out += json.loads(JsonV2Encoder(limit).serialize(mine, endpoint))
    return out


def _as_obs_writes(otel: dict[str, Any]) -> dict[str, Any]:
    """OpenTelemetry's span with the differences obs makes on purpose, each for a stated reason."""
    span = dict(otel)
    if span.get("kind") is None:  # it writes null for internal spans; the schema allows no null: omit
        span.pop("kind", None)
    span.pop("debug", None)  # it marks every sampled span debug, forcing storage past Zipkin's sampling
    span["name"] = span["name"].lower()  # Zipkin names are lowercase (Zipkin lowercases them on ingest)
    span["localEndpoint"] = {"serviceName": span["localEndpoint"]["serviceName"].lower()}  # likewise
    span["duration"] = max(1, span["duration"])  # the schema's minimum
    tags = dict(span["tags"])
    for key in ("otel.library.name", "otel.library.version"):  # deprecated twins of otel.scope.*
        tags.pop(key)
    tags.pop("service.name")  # resource attributes copied into tags: localEndpoint says it already
    span["tags"] = tags
    return span


@pytest.mark.parametrize("limit", [None, 128, 40])
def test_to_zipkin_matches_opentelemetrys_encoder_field_for_field(limit: int | None) -> None:
    traces = sample_traces()
    ours = to_zipkin(traces, max_tag_value_length=limit)
    theirs = [_as_obs_writes(s) for s in _otel_zipkin(traces, limit)]
    assert len(ours) == len(theirs) == sum(len(t.spans) for t in traces)
    for mine, other in zip(ours, theirs, strict=True):
        raw = mine["tags"].pop("obs.raw", None)
        expected_raw = other["tags"].pop("obs.raw", None)
        # bytes: OpenTelemetry writes them as a list of numbers; obs as base64 text.
        if raw is not None:
            assert raw == "AP9ieXRlcw=="[: limit or None] and expected_raw.startswith('["0","255"')
        assert mine == other


def test_the_128_character_cut_is_opentelemetrys_only_when_asked() -> None:
    traces = sample_traces()
    llm = next(s for s in to_zipkin(traces) if s["tags"].get("gen_ai.operation.name") == "chat")
    assert llm["tags"]["obs.long_text"] == LONG_TEXT  # obs keeps whole values by default
    cut = next(s for s in to_zipkin(traces, max_tag_value_length=128)
           if s["tags"].get("gen_ai.operation.name") == "chat")
    assert cut["tags"]["obs.long_text"] == LONG_TEXT[:128]
    # Lists are cut at an element boundary: two quoted 60-character strings fit in 128, three do not.
    assert json.loads(cut["tags"]["obs.long_list"]) == ["y" * 60, "z" * 60]
    assert json.loads(cut["annotations"][0]["value"])["first_token"]["note"] == LONG_TEXT[:128]


def test_to_zipkin_validates_against_the_zipkin_api_schema_with_anchored_ids() -> None:
    traces = sample_traces()
    spans = to_zipkin(traces)
    _validator().validate(spans)
    for span in spans:
        assert ID.match(span["traceId"]) and ID.match(span["id"])
        assert "parentId" not in span or ID.match(span["parentId"])
        assert all(isinstance(v, str) for v in span["tags"].values())


def test_a_hostile_id_fails_the_anchored_check_the_schema_alone_lets_through() -> None:
    trace = sample_traces()[3]
    span = trace.spans[0]
    odd = Span("0123456789abcdefXX", span.trace_id, None, span.name, span.start_time, span.end_time,
               span.duration, "success")
    [encoded] = to_zipkin(Trace(trace.id, trace.name, 1.0, 2.0, 1.0, "success", trace.metadata, [odd]))
    assert not ID.match(encoded["id"])
    with pytest.raises(jsonschema.ValidationError):  # caught by its length here, not its pattern
        _validator().validate([encoded])


def test_mapping_details() -> None:
    traces = sample_traces()
    spans = {s["name"]: s for s in to_zipkin(traces)}
    assert "kind" not in spans["rag"] and spans["handle request"]["kind"] == "SERVER"
    assert spans["publish"]["kind"] == "PRODUCER" and spans["consume"]["kind"] == "CONSUMER"
    assert spans["retrieve"]["parentId"] == spans["rag"]["id"] and "parentId" not in spans["rag"]
    assert spans["retrieve"]["timestamp"] == 1_700_000_000_125_500 and spans["retrieve"]["duration"] == 10_000
    tags = [s for s in to_zipkin(traces) if s["tags"].get("gen_ai.operation.name") == "chat"]
    ok, failed = tags[0]["tags"], tags[1]["tags"]
    assert ok["gen_ai.request.stream"] == "true" and ok["gen_ai.usage.input_tokens"] == "42"
    assert ok["gen_ai.request.temperature"] == "0.75"
    assert ok["gen_ai.request.stop_sequences"] == '["\\n\\n","END"]' and ok["obs.flags"] == '["true","false"]'
    assert ok["otel.status_code"] == "OK" and "error" not in ok
    assert ok["otel.scope.name"] == "obs" and ok["otel.scope.version"] == obs.__version__
    assert failed["otel.status_code"] == "ERROR" and failed["error"] == "model overloaded"
    assert json.loads(tags[0]["annotations"][1]["value"]) == {"response_received": {}}
    assert spans["charge"]["localEndpoint"] == {"serviceName": "billing"}


def test_zero_length_spans_last_one_microsecond_and_duplicate_annotations_go() -> None:
    event = SpanEvent("tick", 1000.0, {"n": 1})
    span = Span("00000000000000a1", "0" * 31 + "1", None, "Tiny", 1000.0, 1000.0, 0.0, "error",
                {"nested": {"a": [1]}, "none": None}, (event, event))
    trace = Trace("0" * 31 + "1", "Tiny", 1000.0, 1000.0, 0.0, "error", {}, [span])
    [encoded] = to_zipkin(trace)
    _validator().validate([encoded])
    assert encoded["duration"] == 1 and encoded["name"] == "tiny"
    assert encoded["tags"]["nested"] == '{"a":[1]}' and "none" not in encoded["tags"]
    assert encoded["tags"]["error"] == "" and encoded["localEndpoint"] == {"serviceName": "unknown_service"}
    assert encoded["annotations"] == [{"timestamp": 1_000_000, "value": '{"tick": {"n": 1}}'}]


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "128"])
def test_a_bad_tag_limit_is_refused(limit: object) -> None:
    with pytest.raises(ValueError, match="max_tag_value_length must be None"):
        to_zipkin([], max_tag_value_length=limit)  # type: ignore[arg-type]
