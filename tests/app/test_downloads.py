"""AppTest of the OTLP JSON, Jaeger and Zipkin download buttons on the Traces and Sessions pages.

The files the buttons serve are caught where Streamlit stores them, parsed,
and checked to hold exactly the right trace(s): OTLP/JSON through the
protobuf messages' own JSON parser and `from_otlp`, Jaeger's and Zipkin's
JSON by their ids, names and parent links.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import pytest
from google.protobuf.json_format import Parse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from app import state
from app.conversations import conversation_of
from obs.clock import FakeClock
from obs.export import from_otlp, to_jaeger, to_otlp_json, to_zipkin
from obs.trace.ids import SequentialIdGenerator
from obs.trace.spans import create_span, end_span
from obs.trace.traces import Trace, add_span_to_trace, create_trace, end_trace
from tests.app.conftest import open_app, record_request

LABELS = ["OTLP JSON", "Jaeger", "Zipkin"]


@pytest.fixture
def files(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[bytes, str | None]]:
    """Every file handed to Streamlit's media storage, by file id: (content, download file name)."""
    caught: dict[str, tuple[bytes, str | None]] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def load_and_get_id(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        data = path_or_data.encode("utf-8") if isinstance(path_or_data, str) else bytes(path_or_data)
        caught[file_id] = (data, filename)
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", load_and_get_id)
    return caught


def _served(at, files: dict[str, tuple[bytes, str | None]]) -> dict[str, tuple[Any, str | None]]:
    """{button label: (parsed JSON, file name)} for the three format buttons on the page."""
    out = {}
    for button in at.get("download_button"):
        if button.proto.label in LABELS:
            file_id = PurePosixPath(button.proto.url).stem
            data, name = files[file_id]
            out[button.proto.label] = (json.loads(data), name)
    return out


def _nested_trace(clock: FakeClock, ids: SequentialIdGenerator, name: str) -> Trace:
    trace = create_trace(name, clock=clock, id_generator=ids)
    root = create_span(name, trace.id, clock=clock, id_generator=ids)
    child = create_span("lookup", trace.id, root.id, attributes={"gen_ai.usage.input_tokens": 12},
                        clock=clock, id_generator=ids)
    clock.advance(40)
    for span in (end_span(child, "success", clock=clock), end_span(root, "success", clock=clock)):
        trace = add_span_to_trace(trace, span)
    clock.advance(1000)
    return end_trace(trace, clock=clock)


def _check_files(served: dict[str, tuple[Any, str | None]], expected: list[Trace]) -> None:
    assert set(served) == set(LABELS)
    otlp, otlp_name = served["OTLP JSON"]
    message = Parse(json.dumps(otlp), ExportTraceServiceRequest())  # the protobuf JSON parser takes it
    assert len([s for r in message.resource_spans for sc in r.scope_spans for s in sc.spans]) == sum(
        len(t.spans) for t in expected)
    spans = [s for r in otlp["resourceSpans"] for sc in r["scopeSpans"] for s in sc["spans"]]
    assert {s["traceId"] for s in spans} == {t.id for t in expected}  # OTLP/JSON: ids in hex
    assert otlp == to_otlp_json(expected)
    read = from_otlp(otlp)
    assert [t.id for t in read] == [t.id for t in expected]

    def shape(trace: Trace) -> set[tuple[Any, ...]]:
        tokens = "gen_ai.usage.input_tokens"
        return {(s.id, s.parent_id, s.name, s.attributes.get(tokens)) for s in trace.spans}

    for got, want in zip(read, expected, strict=True):
        assert shape(got) == shape(want)
    jaeger, jaeger_name = served["Jaeger"]
    assert jaeger == to_jaeger(expected)
    assert [t["traceID"] for t in jaeger["data"]] == [t.id for t in expected]
    zipkin, zipkin_name = served["Zipkin"]
    assert zipkin == to_zipkin(expected)
    by_id = {s["id"]: s for s in zipkin}
    for trace in expected:
        for span in trace.spans:
            assert by_id[span.id]["traceId"] == trace.id and by_id[span.id].get("parentId") == span.parent_id
    assert otlp_name.endswith(".otlp-json.json") and jaeger_name.endswith(".jaeger.json")
    assert zipkin_name.endswith(".zipkin.json")


def test_traces_page_downloads_the_selected_trace_in_each_format(files) -> None:
    at = open_app(state.TRACES_PAGE)
    app = at.session_state[state.APP]
    clock, ids = FakeClock(), SequentialIdGenerator()
    first, second = _nested_trace(clock, ids, "first pipeline"), _nested_trace(clock, ids, "second pipeline")
    app.db.add(first)  # the history file the page reads
    app.db.add(second)
    at.session_state[state.SELECTED_TRACE] = first.id
    at.selectbox(key=state.W_RANGE).set_value("All")
    at.selectbox(key=state.W_SCOPE).set_value("Everything")
    at.run()
    assert not at.exception, at.exception
    served = _served(at, files)
    _check_files(served, [first])
    assert served["Zipkin"][1] == f"trace-{first.id}.zipkin.json"


def test_sessions_page_downloads_the_open_sessions_turns_only(files) -> None:
    at = open_app(state.SESSIONS_PAGE)
    app = at.session_state[state.APP]
    first = [record_request(app, latency_ms=10), record_request(app, latency_ms=20)]
    conversation = app.conversation_id()
    app.new_conversation()
    other = record_request(app, latency_ms=30)
    at.session_state[state.W_SESSION_PICK] = conversation
    at.run()
    assert not at.exception, at.exception
    stored = {t.id: t for t in app.traces()}
    assert conversation_of(stored[other]) != conversation
    expected = sorted((stored[i] for i in first), key=lambda t: t.start_time)
    served = _served(at, files)
    _check_files(served, expected)
    assert served["OTLP JSON"][1] == f"session-{conversation}.otlp-json.json"


def test_no_buttons_without_traces() -> None:
    at = open_app(state.TRACES_PAGE)
    assert not [b for b in at.get("download_button") if b.proto.label in LABELS]
