"""Encoding a trace into its SQLite rows: the quick path gives exactly what the general path gives.

`encode_trace` reads most traces straight from their Span and SpanEvent
objects; anything `storable` would change goes the general way (`storable`,
then the rows of that dict). The general way is the reference here: for
traces the OTLP receiver decodes from OpenTelemetry's SDK, traces the
instrumented client records against the real llama-server, and generated
traces with every odd value (NaN and infinite times, keys that are not
text, lone surrogates, huge ints, nested values, tuples, odd event times, a
span of another trace), the trace row, the span rows (with the JSON text of
attributes and events byte for byte) and the notes are the same, compared
by `repr` so that 1, 1.0 and True, 0.0 and -0.0, tuples and lists all
differ. Whatever `storable` changes never takes the quick path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from obs import semconv
from obs.export.otlp_decode import from_otlp
from obs.llm.client import InstrumentedClient
from obs.llm.errors import LLMServerError
from obs.llm.llama.server import EmbeddedServer
from obs.storage._columns import EncodedTrace, _object_rows, _rows, encode_trace
from obs.storage._rows import HUGE_INT, plain_items, plain_mapping, storable
from obs.trace.spans import FrozenDict, Span, SpanEvent
from obs.trace.traces import Trace
from tests.storage._traces import random_traces

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_IDS = ("b7ad6b7169203331", "00f067aa0ba902b7", "53995c3f42cd8ad8")
START = 1_796_130_706_647.464


def _reference(trace: Trace) -> tuple[Any, ...]:
    """The rows and notes of the general path: `storable`, then the rows of that dict (and, for an int
    too long to write as text, both again with every int checked), as `encode_trace` falls back to."""
    data, notes = storable(trace)
    try:
        trace_row, span_rows = _rows(data)
    except ValueError:
        data, notes = storable(trace, strict=True)
        trace_row, span_rows = _rows(data)
    return trace_row[0], trace_row, span_rows, notes


def _quick(trace: Trace) -> bool:
    """True when `encode_trace` takes the quick path for `trace` (it returns rows, without raising)."""
    try:
        return _object_rows(trace) is not None
    except Exception:
        return False


def assert_encoded_as_reference(trace: Trace) -> None:
    """`encode_trace(trace)` is exactly the general path's result, or raises exactly what it raises."""
    try:
        expected = _reference(trace)
    except Exception as exc:
        with pytest.raises(type(exc)) as raised:
            encode_trace(trace)
        assert str(raised.value) == str(exc)
        return
    encoded = encode_trace(trace)
    assert type(encoded) is EncodedTrace
    assert repr((encoded.trace_id, encoded.trace_row, encoded.span_rows, encoded.notes)) == repr(expected)


def _changed_by_storable(trace: Trace) -> bool:
    """True when the general path stores anything other than `trace.to_dict()` as it is, notes
    anything or raises: `storable` replaces a value, an int is too long to write (then every int is
    checked), or the trace is not what it claims to be."""
    try:
        data, notes = storable(trace)
        json.dumps(data)
    except Exception:
        return True
    return bool(notes) or repr(data) != repr(trace.to_dict())


# -- traces decoded from OpenTelemetry's SDK, as the receiver gets them -----------------------------


def _sdk_traces(count: int) -> list[Trace]:
    """`count` RAG traces recorded by OpenTelemetry's SDK (a root, a retrieval, a GenAI chat span with an
    event, a tool call; some failed, some with non-ASCII names), encoded as its OTLP exporter sends them
    and decoded by `from_otlp`, in batches of 64 spans."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "rag-app"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests", "1.0")
    for i in range(count):
        with tracer.start_as_current_span("rag", attributes={"user.tier": "premium", "request": i}):
            with tracer.start_as_current_span("retrieve", attributes={"docs": 3, "scores": (0.9, 0.7, 0.4)}):
                pass
            name = "chat smollm2" if i % 3 else "chat 模型"
            with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "llama.cpp",
                "gen_ai.request.model": "smollm2", "gen_ai.request.temperature": 0.7,
                "gen_ai.request.max_tokens": 256, "gen_ai.response.model": "smollm2",
                "gen_ai.response.finish_reasons": ("stop",), "gen_ai.usage.input_tokens": 412 + i,
                "gen_ai.usage.output_tokens": 96, "server.address": "127.0.0.1", "server.port": 8080,
                "gen_ai.response.time_to_first_chunk": 0.042, "gen_ai.conversation.id": f"c{i % 4}",
            }) as chat:  # fmt: skip
                chat.add_event("first_token", {"index": 0})
                if i % 5 == 0:
                    chat.set_status(Status(StatusCode.ERROR, "boom"))
            with tracer.start_as_current_span("tool lookup", attributes={"tool": "weather"}):
                pass
    provider.shutdown()
    spans = list(memory.get_finished_spans())
    return [trace for at in range(0, len(spans), 64) for trace in from_otlp(encode_spans(spans[at:at + 64]))]


def test_traces_from_opentelemetry_take_the_quick_path_with_the_same_rows() -> None:
    traces = _sdk_traces(40)
    assert sum(len(trace.spans) for trace in traces) == 160
    for trace in traces:
        assert _quick(trace)
        assert_encoded_as_reference(trace)
    rows = [row for trace in traces for row in encode_trace(trace).span_rows]
    chat = next(row for row in rows if row[4].startswith("chat"))
    attributes = json.loads(chat[27])
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert json.loads(chat[28])[0]["name"] == "first_token"


# -- traces the instrumented client records against the real llama-server --------------------------


@pytest.fixture(scope="module")
def client_traces(embedded_server: EmbeddedServer) -> Iterator[list[Trace]]:
    """Traces of real calls: plain, streamed, in a conversation, answered from the cache, and one that
    failed (nothing listens on port 9), recorded with message contents."""
    with InstrumentedClient(embedded_server.url, timeout=60, capture_content=True, cache_size=8) as client:
        question = [{"role": "user", "content": "Name a colour. Ünïcode ok?"}]
        client.chat(question, max_tokens=6, seed=1)
        client.chat(question, max_tokens=6, seed=1)  # the cache answers
        client.chat([{"role": "user", "content": "Count to three."}], max_tokens=8, conversation_id="c-1")
        with client.chat_stream([{"role": "user", "content": "Say hi."}], max_tokens=6) as stream:
            "".join(stream)
        traces = list(client.store.all())
    with InstrumentedClient("http://127.0.0.1:9", timeout=5) as refused:
        with pytest.raises(LLMServerError):
            refused.chat([{"role": "user", "content": "hi"}])
        traces += list(refused.store.all())
    yield traces


def test_traces_of_the_instrumented_client_take_the_quick_path_with_the_same_rows(
    client_traces: list[Trace],
) -> None:
    assert len(client_traces) == 5
    for trace in client_traces:
        assert _quick(trace)
        assert_encoded_as_reference(trace)
    rows = [encode_trace(trace) for trace in client_traces]
    assert any(row.trace_row[15] == "Name a colour. Ünïcode ok?" for row in rows)  # input preview
    assert any(span[22] == 1 for row in rows for span in row.span_rows)  # a cache hit
    assert any(span[14] == 1 for row in rows for span in row.span_rows)  # the refused call


def test_client_shaped_traces_take_the_quick_path_with_the_same_rows() -> None:
    for trace in random_traces(200):
        assert _quick(trace)
        assert_encoded_as_reference(trace)


# -- the odd cases, one by one ----------------------------------------------------------------------


def _span(
    span_id: Any = SPAN_IDS[0], *, trace_id: Any = TRACE_ID, parent_id: Any = None, name: Any = "work",
    start: Any = START, end: Any = START + 5.0, duration: Any = 5.0, status: Any = "success",
    kind: Any = "internal", attributes: Any = None, events: Any = (),
) -> Span:
    return Span(
        id=span_id, trace_id=trace_id, parent_id=parent_id, name=name, start_time=start, end_time=end,
        duration=duration, status=status, attributes=attributes or {}, events=events, kind=kind,
    )  # fmt: skip


def _trace(*spans: Span, trace_id: Any = TRACE_ID, metadata: Any = None, **fields: Any) -> Trace:
    values = {"name": "t", "start_time": START, "end_time": START + 5.0, "duration": 5.0, "status": "success"}
    values.update(fields)
    return Trace(id=trace_id, metadata=metadata or {"service.name": "svc"}, spans=spans, **values)


class _Text(str):
    """Text of another type: `storable` makes plain text of it, so it must not take the quick path."""

    def __str__(self) -> str:
        return "changed"


class _Number(int):
    """An int of another type."""


class _Subspan(Span):
    """A Span whose `to_dict` is its own: only its own `to_dict` says what it stores."""

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["name"] = "from to_dict"
        return data


class _Subtrace(Trace):
    """A Trace whose `to_dict` is its own."""

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["metadata"] = {"from": "to_dict"}
        return data


_INPUTS, _OUTPUTS = semconv.GEN_AI_USAGE_INPUT_TOKENS, semconv.GEN_AI_USAGE_OUTPUT_TOKENS


def _request(span_id: str, question: str, answer: str, **attributes: Any) -> Span:
    """A request span with its messages and usage, as the client records one."""
    attributes = {
        semconv.GEN_AI_OPERATION_NAME: "chat",
        semconv.GEN_AI_INPUT_MESSAGES: json.dumps([{"role": "user", "parts": [{"content": question}]}]),
        semconv.GEN_AI_OUTPUT_MESSAGES: json.dumps([{"role": "assistant", "parts": [{"content": answer}]}]),
        **attributes,
    }  # fmt: skip
    return _span(span_id, kind="client", attributes=attributes)


_ODD_TRACES = {
    "NaN start of a span": _trace(_span(start=math.nan)),
    "infinite end of a span": _trace(_span(end=math.inf)),
    "NaN duration of the trace": _trace(_span(), duration=math.nan),
    "int start of the trace": _trace(_span(), start_time=1_796_130_706_647),
    "int times of a span": _trace(_span(start=1_796_130_706_647, end=1_796_130_706_652, duration=5)),
    "huge int time": _trace(_span(end=10**400)),
    "running span": _trace(_span(end=None, duration=None, status="running")),
    "running trace": _trace(_span(), end_time=None, duration=None, status="running"),
    "int attribute key": _trace(_span(attributes={1: "one", "k": "v"})),
    "None attribute key": _trace(_span(attributes={None: "nothing"})),
    "tuple metadata key": _trace(_span(), metadata={("a", 1): "pair"}),
    "text-subclass key": _trace(_span(attributes={_Text("k"): "v"})),
    "text-subclass value": _trace(_span(attributes={"k": _Text("v")})),
    "int-subclass value": _trace(_span(attributes={"k": _Number(3)})),
    "lone surrogate in ids and names": _trace(
        _span("b7ad6b71\ud80031", name="w\udfffork", parent_id="\udc00p", kind="cl\ud800", status="su\udc00",
              trace_id="0af76519\ud800"),
        trace_id="0af76519\ud800",
    ),
    "lone surrogate in attributes and metadata": _trace(
        _span(attributes={"k\ud800": "v\udfff", "list": ["\udc00", 1]}), metadata={"m": "\ud800"}
    ),
    "non-ASCII names": _trace(_span(name="chat 模型", kind="client", status="succès")),
    "None ids and names": _trace(_span(None, name=None, kind=None, status=None), trace_id=None, name=None),
    "int id": _trace(_span(12345)),
    "span of another trace": _trace(_span(trace_id="ffffffffffffffffffffffffffffffff")),
    "span of another trace, with a surrogate": _trace(_span(trace_id="\ud800")),
    "huge int attribute (over 4300 digits)": _trace(_span(attributes={"big": 10**5000, "k": 1})),
    "huge int attribute (under 4300 digits)": _trace(_span(attributes={"big": 10**4000 - 1})),
    "huge int in a list": _trace(_span(attributes={"big": [1, HUGE_INT]})),
    "huge negative int in a tuple": _trace(_span(attributes={"big": (-HUGE_INT, 2)})),
    "huge int metadata": _trace(_span(), metadata={"big": 10**5000}),
    "nested dict": _trace(_span(attributes={"nested": {"a": [1, {"b": 2}]}})),
    "list of lists": _trace(_span(attributes={"matrix": [[1, 2], [3, 4]]})),
    "tuples and lists": _trace(_span(attributes={"t": (1, "a", None, True, 2.5), "l": [1, "a", None]})),
    "NaN and infinite attribute values": _trace(_span(attributes={"n": math.nan, "i": -math.inf, "z": -0.0})),
    "bytes and sets": _trace(_span(attributes={"b": b"\x00\xff", "s": {1, 2}})),
    "circular list": _trace(_span(attributes={"loop": (loop := [1])})),
    "event with NaN timestamp": _trace(_span(events=(SpanEvent("e", math.nan, {"a": 1}),))),
    "event with int timestamp": _trace(_span(events=(SpanEvent("e", 1_796_130_706_650, {}),))),
    "event with None name and odd attributes": _trace(
        _span(events=(SpanEvent(None, START + 1.0, {2: "x", "n": {"deep": [1]}}),))  # type: ignore[arg-type]
    ),
    "event of another type": _trace(_span(events=({"name": "e", "timestamp": START},))),
    "Span subclass with its own to_dict": _trace(
        _Subspan(SPAN_IDS[0], TRACE_ID, None, "work", START, START + 5.0, 5.0, "success")
    ),
    "Trace subclass with its own to_dict": _Subtrace(
        TRACE_ID, "t", START, START + 5.0, 5.0, "success", {}, (_span(),)
    ),
    "two requests: the first question, the last answer": _trace(
        _request(SPAN_IDS[0], "first?", "first."), _request(SPAN_IDS[1], "second?", "second.")
    ),
    "costs and tokens beyond what the sums hold": _trace(  # 5e6 USD is over 2**62 picodollars
        _request(SPAN_IDS[0], "q", "a", **{semconv.OBS_COST_USD: 5e6, _INPUTS: 2**62 - 1}),
        _request(SPAN_IDS[1], "q", "a", **{semconv.OBS_COST_USD: 4611686.018427388, _OUTPUTS: 2**62 - 1}),
        _request(SPAN_IDS[2], "q", "a", **{_INPUTS: 2, _OUTPUTS: 3}),
    ),
    "cost too large for a float product": _trace(
        _span(attributes={semconv.GEN_AI_OPERATION_NAME: "chat", semconv.OBS_COST_USD: 1e300})
    ),
}
loop.append(loop)


# The odd traces the quick path takes (nothing in them for `storable` to replace); the others must not.
_QUICK_ODD = {
    "running span", "running trace", "lone surrogate in ids and names",
    "lone surrogate in attributes and metadata", "non-ASCII names", "None ids and names",
    "span of another trace", "span of another trace, with a surrogate",
    "huge int attribute (under 4300 digits)", "tuples and lists", "NaN and infinite attribute values",
    "two requests: the first question, the last answer", "costs and tokens beyond what the sums hold",
    "cost too large for a float product",
}  # fmt: skip


@pytest.mark.parametrize(("case", "trace"), _ODD_TRACES.items(), ids=_ODD_TRACES.keys())
def test_an_odd_trace_gives_the_rows_and_notes_of_the_general_path(case: str, trace: Trace) -> None:
    assert_encoded_as_reference(trace)
    if _changed_by_storable(trace):
        assert not _quick(trace)
    assert _quick(trace) == (case in _QUICK_ODD)


def test_text_that_column_changes_is_kept_exactly_on_the_quick_path() -> None:
    trace = _ODD_TRACES["lone surrogate in ids and names"]
    assert _quick(trace)
    row = encode_trace(trace).span_rows[0]
    assert row[2] == "b7ad6b71\ufffd31"
    assert json.loads(row[29]) == {
        "id": "b7ad6b71\ud80031", "parent_id": "\udc00p", "name": "w\udfffork", "kind": "cl\ud800",
        "status": "su\udc00", "trace_id": "0af76519\ud800",
    }  # fmt: skip


def test_a_span_of_another_trace_is_kept_exactly_on_the_quick_path() -> None:
    trace = _ODD_TRACES["span of another trace"]
    assert _quick(trace)
    assert json.loads(encode_trace(trace).span_rows[0][29]) == {"trace_id": "f" * 32}


def test_metadata_changed_in_place_is_written_as_it_is_now() -> None:
    """The JSON of the last metadata is given again only for its very objects: metadata changed through
    dict's own methods (which FrozenDict refuses, dict does not) is written anew."""
    metadata = FrozenDict({"service.name": "svc", "host": "a"})
    first = encode_trace(_trace(_span(), metadata=metadata))
    dict.__setitem__(metadata, "host", "b")
    second = encode_trace(_trace(_span(), metadata=metadata))
    assert json.loads(first.trace_row[6])["metadata"]["host"] == "a"
    assert json.loads(second.trace_row[6])["metadata"]["host"] == "b"
    assert_encoded_as_reference(_trace(_span(), metadata=metadata))


def test_metadata_equal_in_value_but_not_in_type_is_written_as_its_own() -> None:
    """One trace after another with metadata that compares equal (1 == True == 1.0, 0.0 == -0.0,
    text == text of another type) is each written as it is, not as the one before."""
    service = "service.name"
    variants = [
        {service: "svc", "n": 1}, {service: "svc", "n": True}, {service: "svc", "n": 1.0},
        {service: "svc", "n": 0.0}, {service: "svc", "n": -0.0}, {service: "svc", "n": 1},
        {service: _Text("svc"), "n": 1}, {_Text(service): "svc", "n": 1}, {"n": 1, service: "svc"},
    ]  # fmt: skip
    for metadata in variants * 2:
        trace = _trace(_span(), metadata=metadata)
        assert_encoded_as_reference(trace)


# -- generated traces -------------------------------------------------------------------------------

_SURROGATES = st.sampled_from(["\ud800", "a\udc00b", "\udfff\ud800"])
_TEXT = st.one_of(st.text(max_size=6), st.text(st.characters(exclude_categories=()), max_size=4), _SURROGATES)
_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e300, 5e-324, START])
)
_INTS = st.one_of(st.integers(), st.sampled_from([2**62, 2**63, 10**18, HUGE_INT - 1, 1 - HUGE_INT]))
_PLAIN = st.one_of(st.none(), st.booleans(), _INTS, _FLOATS, _TEXT)
# Replaced in arrays; too long for JSON to write (built, as hypothesis cannot print it).
_HUGE = st.one_of(st.sampled_from([HUGE_INT, -HUGE_INT]), st.builds(pow, st.just(10), st.just(5000)))
_PLAIN_VALUES = st.one_of(_PLAIN, st.lists(_PLAIN, max_size=4), st.lists(_PLAIN, max_size=4).map(tuple))
_ANY_VALUES = st.recursive(
    st.one_of(
        _PLAIN, _HUGE, st.binary(max_size=3), st.builds(_Text, st.text(max_size=3)), st.builds(_Number, _INTS)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.one_of(_TEXT, st.integers(), st.none(), st.booleans()), inner, max_size=3),
    ),
    max_leaves=6,
)  # fmt: skip
_KNOWN_KEYS = st.sampled_from([
    semconv.GEN_AI_OPERATION_NAME, semconv.GEN_AI_REQUEST_MODEL, semconv.GEN_AI_RESPONSE_MODEL,
    semconv.GEN_AI_CONVERSATION_ID, semconv.SESSION_ID, semconv.SERVICE_NAME,
    semconv.GEN_AI_USAGE_INPUT_TOKENS, semconv.GEN_AI_USAGE_OUTPUT_TOKENS, semconv.OBS_COST_USD,
    semconv.OBS_TTFT_MS, semconv.OBS_LATENCY_MS,
    semconv.OBS_CACHE_HIT, semconv.LLAMA_CPP_TIMINGS_PROMPT_MS, semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS,
    semconv.GEN_AI_INPUT_MESSAGES, semconv.GEN_AI_OUTPUT_MESSAGES,
])  # fmt: skip
_MESSAGES = st.sampled_from([
    '[{"role": "user", "parts": [{"type": "text", "content": "hi \\ud800"}]}]',
    '[{"role": "assistant", "parts": [{"type": "text", "content": "  "}]}, 3]', "not json", "[[[",
])  # fmt: skip


def _mappings(values: st.SearchStrategy[Any], keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.dictionaries(st.one_of(_KNOWN_KEYS, keys), st.one_of(values, _MESSAGES), max_size=6)


def _traces(plain: bool) -> st.SearchStrategy[Trace]:
    """Traces of 1 to 3 spans. `plain`: only values `storable` keeps (finite float times, text or None,
    attribute values JSON holds as they are); else anything at all in any field."""
    if plain:
        text, optional = _TEXT, st.one_of(st.none(), _TEXT)
        times = st.floats(min_value=-1e15, max_value=1e15)
        mapping = _mappings(_PLAIN_VALUES, _TEXT)
    else:
        text = optional = st.one_of(_TEXT, st.none(), st.integers())
        times = st.one_of(_FLOATS, _INTS, st.none(), st.booleans())
        mapping = _mappings(_ANY_VALUES, st.one_of(_TEXT, st.integers(), st.none(), st.booleans()))
    span_ids = st.one_of(st.sampled_from(SPAN_IDS), text)
    events = st.lists(
        st.builds(SpanEvent, text if not plain else optional, times, mapping), max_size=2
    ).map(tuple)
    statuses = st.sampled_from(["success", "error", "running"]) | text
    kinds = st.sampled_from(["client", "internal"]) | text
    spans = st.lists(
        st.builds(
            Span, span_ids, st.one_of(st.just(TRACE_ID), text),
            st.one_of(st.sampled_from(SPAN_IDS), optional), text, times, st.one_of(st.none(), times),
            st.one_of(st.none(), times), statuses, mapping, events, kinds,
        ),
        min_size=1, max_size=3,
    ).map(tuple)  # fmt: skip
    return st.builds(
        Trace, st.one_of(st.just(TRACE_ID), text), text, times, st.one_of(st.none(), times),
        st.one_of(st.none(), times), st.sampled_from(["success", "error"]) | text, mapping, spans,
    )  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_traces(plain=True))
def test_generated_plain_traces_take_the_quick_path_with_the_same_rows(trace: Trace) -> None:
    assert not _changed_by_storable(trace)
    assert _quick(trace)
    assert_encoded_as_reference(trace)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_traces(plain=False))
def test_generated_odd_traces_give_the_rows_and_notes_of_the_general_path(trace: Trace) -> None:
    assert_encoded_as_reference(trace)
    if _changed_by_storable(trace):
        assert not _quick(trace)


# -- the check that decides -------------------------------------------------------------------------


def _plain_mapping_as_before(container: dict[Any, Any]) -> bool:
    """The check as the general path first had it, written out item by item."""

    def plain_array(value: Any) -> bool:
        kinds = {type(item) for item in value}
        if not kinds <= {str, int, float, bool, type(None)}:
            return False
        return int not in kinds or all(-HUGE_INT < item < HUGE_INT for item in value if type(item) is int)

    if not {type(key) for key in container} <= {str}:
        return False
    kinds = {type(value) for value in container.values()}
    return kinds <= {str, int, float, bool, type(None)} or (
        kinds <= {str, int, float, bool, type(None), list, tuple}
        and all(plain_array(value) for value in container.values() if type(value) in (list, tuple))
    )


@settings(max_examples=400, deadline=None)
@given(st.one_of(_mappings(_PLAIN_VALUES, _TEXT), _mappings(_ANY_VALUES, st.one_of(_TEXT, st.integers()))))
def test_plain_mapping_says_what_it_said_before(mapping: dict[Any, Any]) -> None:
    assert plain_mapping(mapping) == _plain_mapping_as_before(mapping)
    assert plain_mapping(FrozenDict(mapping)) == _plain_mapping_as_before(mapping)
    arrays = [value for value in mapping.values() if type(value) in (list, tuple)]
    for array in arrays:  # items compared by identity of their types: the same answer for these types
        assert plain_items(array) == _plain_mapping_as_before({"k": array})
