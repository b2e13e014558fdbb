"""Tests for obs.trace.ids: W3C ids, the generators, and traceparent formatting and parsing."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from obs.trace.ids import (
    IdGenerator,
    RandomIdGenerator,
    SequentialIdGenerator,
    TraceParent,
    format_traceparent,
    is_valid_span_id,
    is_valid_trace_id,
    parse_traceparent,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def test_random_ids_have_the_w3c_shape() -> None:
    ids = RandomIdGenerator()
    trace_ids = {ids.trace_id() for _ in range(200)}
    span_ids = {ids.span_id() for _ in range(200)}
    assert len(trace_ids) == 200 and len(span_ids) == 200
    assert all(is_valid_trace_id(t) for t in trace_ids)
    assert all(is_valid_span_id(s) for s in span_ids)
    assert isinstance(ids, IdGenerator)


def test_random_ids_never_all_zeros(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([0, 0, 7, 0, 9])
    monkeypatch.setattr(random, "getrandbits", lambda bits: next(draws))
    ids = RandomIdGenerator()
    assert ids.trace_id() == "0" * 31 + "7"
    assert ids.span_id() == "0" * 15 + "9"


def test_sequential_ids_count_up() -> None:
    ids = SequentialIdGenerator()
    assert [ids.trace_id(), ids.trace_id()] == ["0" * 31 + "1", "0" * 31 + "2"]
    assert [ids.span_id(), ids.span_id(), ids.span_id()] == ["0" * 15 + "1", "0" * 15 + "2", "0" * 15 + "3"]
    assert SequentialIdGenerator(start=255).span_id() == "00000000000000ff"


@pytest.mark.parametrize("start", [0, -1])
def test_sequential_ids_refuse_a_zero_start(start: int) -> None:
    with pytest.raises(ValueError, match="start must be >= 1"):
        SequentialIdGenerator(start=start)


def test_sequential_ids_are_unique_across_threads() -> None:
    ids = SequentialIdGenerator()
    seen: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [ids.span_id() for _ in range(500)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 3000
    assert sorted(int(s, 16) for s in seen) == list(range(1, 3001))


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (TRACE, True),
        ("0" * 32, False),
        (TRACE.upper(), False),
        (TRACE[:-1], False),
        (TRACE + "0", False),
        ("g" + TRACE[1:], False),
        (None, False),
        (123, False),
    ],
)
def test_trace_id_validity(value: object, valid: bool) -> None:
    assert is_valid_trace_id(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (SPAN, True),
        ("0" * 16, False),
        (SPAN.upper(), False),
        (SPAN[:-1], False),
        (b"00f067aa0ba902b7", False),
    ],
)
def test_span_id_validity(value: object, valid: bool) -> None:
    assert is_valid_span_id(value) is valid


def test_format_traceparent() -> None:
    assert format_traceparent(TRACE, SPAN) == f"00-{TRACE}-{SPAN}-01"
    assert format_traceparent(TRACE, SPAN, sampled=False) == f"00-{TRACE}-{SPAN}-00"


@pytest.mark.parametrize(
    ("trace_id", "span_id", "message"),
    [("0" * 32, SPAN, "trace_id"), (TRACE, "0" * 16, "span_id"), (TRACE.upper(), SPAN, "trace_id")],
)
def test_format_traceparent_refuses_bad_ids(trace_id: str, span_id: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        format_traceparent(trace_id, span_id)


def test_parse_traceparent() -> None:
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-01") == TraceParent(TRACE, SPAN, True, "00")
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00").sampled is False
    # Only the lowest flag bit means sampled; other bits are reserved.
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-03").sampled is True
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-02").sampled is False
    assert parse_traceparent(f"  00-{TRACE}-{SPAN}-01 ").trace_id == TRACE


def test_parse_traceparent_accepts_future_versions_with_more_fields() -> None:
    parsed = parse_traceparent(f"cc-{TRACE}-{SPAN}-01-what-the-future-holds")
    assert (parsed.version, parsed.trace_id, parsed.span_id, parsed.sampled) == ("cc", TRACE, SPAN, True)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (f"ff-{TRACE}-{SPAN}-01", "version ff"),
        (f"00-{TRACE}-{SPAN}-01-extra", "exactly four fields"),
        (f"00-{'0' * 32}-{SPAN}-01", "trace id is all zeros"),
        (f"00-{TRACE}-{'0' * 16}-01", "span id is all zeros"),
        (f"00-{TRACE.upper()}-{SPAN}-01", "must look like"),
        (f"00-{TRACE}-{SPAN}", "must look like"),
        (f"0-{TRACE}-{SPAN}-01", "must look like"),
        ("", "must look like"),
    ],
)
def test_parse_traceparent_refuses_malformed_headers(header: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_traceparent(header)


def test_parse_traceparent_refuses_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string, got bytes"):
        parse_traceparent(b"00-x")  # type: ignore[arg-type]


@given(
    trace=st.integers(min_value=1, max_value=2**128 - 1),
    span=st.integers(min_value=1, max_value=2**64 - 1),
    sampled=st.booleans(),
)
def test_traceparent_round_trips(trace: int, span: int, sampled: bool) -> None:
    trace_id, span_id = f"{trace:032x}", f"{span:016x}"
    parsed = parse_traceparent(format_traceparent(trace_id, span_id, sampled))
    assert parsed == TraceParent(trace_id, span_id, sampled)
