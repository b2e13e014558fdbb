"""SqliteTraceStore against hostile input and hostile files.

What goes in: values no JSON holds (lone surrogates, 100,000-deep nesting, a
dict that contains itself, a non-numeric event timestamp). The store never
raises into the traced application, never writes a row it cannot read back,
and never drops a trace silently: what cannot be stored as it is is replaced
by a marked placeholder and counted. What is already in a file and cannot be
decoded is skipped and counted, so one bad row never makes the store
unreadable.

What it opens: a locked database, a read-only directory or file, a file it
may not read, a damaged database and a file that is no database at all. Each
is refused with its own cause and advice. Permission cases run in a child
process as an unprivileged user when the tests run as root (root ignores
file permissions).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obs._validate import json_safe
from obs.clock import FakeClock
from obs.storage._rows import HUGE_INT
from obs.storage.sqlite import REPLACED_KEY, SqliteTraceStore
from obs.trace.ids import SequentialIdGenerator
from obs.trace.spans import Span, SpanEvent, add_span_event, create_span, end_span
from obs.trace.traces import Trace, add_span_to_trace, create_trace, end_trace

ROOT = Path(__file__).resolve().parents[2]


def _trace(name: str = "t", attributes: dict[str, Any] | None = None, *, ids: SequentialIdGenerator) -> Trace:
    clock = FakeClock()
    trace = create_trace(name, {"user": "u1"}, clock=clock, id_generator=ids)
    span = create_span("work", trace.id, attributes=attributes or {"k": 1}, clock=clock, id_generator=ids)
    span = add_span_event(span, "step", {"n": 2}, clock=clock)
    clock.advance(10)
    span = end_span(span, clock=clock)
    return end_trace(add_span_to_trace(trace, span), clock=clock)


@pytest.fixture
def ids() -> SequentialIdGenerator:
    return SequentialIdGenerator()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteTraceStore]:
    with SqliteTraceStore(tmp_path / "traces.db") as opened:
        yield opened


def _nested(depth: int) -> list[Any]:
    root: list[Any] = []
    current = root
    for _ in range(depth):
        child: list[Any] = []
        current.append(child)
        current = child
    return root


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list) and value:
        value = value[0]
        depth += 1
    return depth


# ---------------------------------------------------------------------------
# Writing what JSON cannot hold


def test_a_non_numeric_event_timestamp_is_stored_readably_and_marked(
    tmp_path: Path, ids: SequentialIdGenerator, caplog: pytest.LogCaptureFixture
) -> None:
    trace = _trace("odd event", ids=ids)
    span = trace.spans[0]
    bad = Span(**{**{f: getattr(span, f) for f in Span.__dataclass_fields__},
                  "events": [*span.events, SpanEvent("tick", "soon", {"n": 3})]})  # type: ignore[arg-type]  # fmt: skip
    trace = add_span_to_trace(trace, bad)
    good = _trace("good", ids=ids)
    path = tmp_path / "traces.db"
    with caplog.at_level(logging.WARNING, logger="obs.storage.sqlite"), SqliteTraceStore(path) as store:
        store.add(trace)  # must not raise
        store.add(good)
        assert store.stats().sanitized == 1 and store.write_errors == 0
    assert trace.id in caplog.text and "timestamp" in caplog.text
    with SqliteTraceStore(path) as reopened:  # readable, even after reopening
        assert [t.name for t in reopened.all()] == ["odd event", "good"]
        got = reopened.get(trace.id)
    assert got is not None
    tick = got.spans[0].events[-1]
    assert tick.name == "tick" and tick.timestamp == span.start_time
    assert tick.attributes["n"] == 3
    assert "timestamp" in tick.attributes[REPLACED_KEY] and "'soon'" in tick.attributes[REPLACED_KEY]


def test_non_numeric_and_non_finite_times_of_traces_and_spans_are_replaced(
    store: SqliteTraceStore, ids: SequentialIdGenerator
) -> None:
    trace = _trace("times", ids=ids)
    span = trace.spans[0]
    bad_span = Span(**{**{f: getattr(span, f) for f in Span.__dataclass_fields__},
                       "start_time": float("nan"), "duration": "long"})  # type: ignore[arg-type]  # fmt: skip
    bad = Trace(trace.id, trace.name, trace.start_time, end_time=float("inf"), duration=None,
                status="success", metadata={}, spans=[bad_span])  # fmt: skip
    store.add(bad)
    got = store.get(trace.id)
    assert got is not None
    assert got.end_time is None and "end_time" in got.metadata[REPLACED_KEY]
    assert got.spans[0].start_time == trace.start_time and got.spans[0].duration is None
    assert "start_time" in got.spans[0].attributes[REPLACED_KEY]
    assert "duration" in got.spans[0].attributes[REPLACED_KEY]


def test_lone_surrogates_are_stored_and_read_back_exactly(
    store: SqliteTraceStore, ids: SequentialIdGenerator
) -> None:
    attributes = {"text": "half a pair \ud83d", "key \udfff": ["\ud800", {"deep \udc00": "x"}]}
    trace = _trace("name \udc80 with a lone surrogate", attributes, ids=ids)
    store.add(trace)  # must not raise
    assert store.write_errors == 0 and store.stats().sanitized == 0
    got = store.get(trace.id)
    assert got is not None and got.to_dict() == trace.to_dict()
    assert [t.name for t in store.get_recent()] == [trace.name]


def test_a_100000_deep_value_is_cut_with_a_placeholder_and_counted(
    store: SqliteTraceStore, ids: SequentialIdGenerator, caplog: pytest.LogCaptureFixture
) -> None:
    trace = _trace("deep", {"deep": _nested(100_000), "fine": "kept"}, ids=ids)
    with caplog.at_level(logging.WARNING, logger="obs.storage.sqlite"):
        store.add(trace)  # must not raise
    assert store.stats().sanitized == 1 and store.write_errors == 0
    assert trace.id in caplog.text and "deeper than" in caplog.text
    got = store.get(trace.id)
    assert got is not None
    attributes = got.spans[0].attributes
    assert attributes["fine"] == "kept"
    assert 10 <= _depth(attributes["deep"]) <= 64
    assert "nested deeper than" in json.dumps(attributes["deep"])
    assert "deep" in attributes[REPLACED_KEY]


def test_a_value_that_contains_itself_is_stored_with_a_placeholder(
    store: SqliteTraceStore, ids: SequentialIdGenerator
) -> None:
    looped: dict[str, Any] = {"name": "loop"}
    looped["self"] = looped
    trace = _trace("loop", {"loop": looped, "other": 1}, ids=ids)
    store.add(trace)
    assert store.write_errors == 0 and store.stats().sanitized == 1 and len(store) == 1
    got = store.get(trace.id)
    assert got is not None
    stored = got.spans[0].attributes["loop"]
    assert stored["name"] == "loop" and "contains itself" in stored["self"]
    assert got.spans[0].attributes["other"] == 1


def test_values_whose_text_fails_or_is_too_long_are_placeholders(
    store: SqliteTraceStore, ids: SequentialIdGenerator
) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text for you")

    trace = _trace(
        "odd values", {"unprintable": Unprintable(), "huge": 10**5000, (1, 2): "tuple key"}, ids=ids
    )
    store.add(trace)
    assert store.write_errors == 0 and store.stats().sanitized == 1
    got = store.get(trace.id)
    assert got is not None
    attributes = got.spans[0].attributes
    assert "Unprintable" in attributes["unprintable"] and "replaced" in attributes["unprintable"]
    assert "5001 digits" in attributes["huge"]
    assert attributes["(1, 2)"] == "tuple key"


def test_arrays_are_kept_as_json_safe_keeps_them_and_cut_where_it_cuts(
    store: SqliteTraceStore, ids: SequentialIdGenerator
) -> None:
    """Arrays of plain values (OTLP's arrays) are stored as they are, and read back as lists; an array
    holding an int json_safe replaces (4001 digits and more) gets the same placeholder and note."""
    assert json_safe([HUGE_INT - 1])[1] == [] and json_safe([HUGE_INT])[1] == ["an int of 4001 digits"]
    plain = {"ok": [1, 2.5, "x", None, True], "pair": (0.9, 0.4), "empty": [], "edge": [HUGE_INT - 1, -1]}
    trace = _trace("arrays", {**plain, "huge": [7, HUGE_INT], "nested": [[1], (2,)], "nan": [float("nan")]},
                   ids=ids)  # fmt: skip
    store.add(trace)
    assert store.write_errors == 0 and store.stats().sanitized == 1
    got = store.get(trace.id)
    assert got is not None
    attributes = got.spans[0].attributes
    assert {key: attributes[key] for key in plain} == {key: list(value) for key, value in plain.items()}
    assert attributes["nested"] == [[1], [2]] and math.isnan(attributes["nan"][0])
    assert attributes["huge"] == [7, "[obs replaced a value: an int of 4001 digits]"]
    assert attributes[REPLACED_KEY] == "'huge': an int of 4001 digits"


_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.sampled_from(["\ud800", "a\udfffb", "\x00", "\U0001f600"]),
    st.integers(min_value=10**4000, max_value=10**4200), st.builds(object),
    st.builds(Path, st.text(max_size=4)),
)  # fmt: skip
_VALUES = st.recursive(
    _LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers(), st.none()), inner, max_size=3),
    ),
    max_leaves=12,
)
_TIMES = st.one_of(st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.integers(), st.just(10**400))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    attributes=st.dictionaries(st.text(max_size=5), _VALUES, max_size=4),
    stamp=_TIMES,
    name=st.text(max_size=5),
)
def test_any_trace_is_stored_and_read_back(
    tmp_path: Path, attributes: dict[str, Any], stamp: Any, name: str
) -> None:
    ids = SequentialIdGenerator()
    trace = _trace(name or "t", attributes, ids=ids)
    span = trace.spans[0]
    odd = Span(**{**{f: getattr(span, f) for f in Span.__dataclass_fields__},
                  "events": [SpanEvent("e", stamp, dict(attributes))]})  # fmt: skip
    trace = add_span_to_trace(trace, odd)
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "t.db"
    with SqliteTraceStore(path) as store:
        store.add(trace)
        assert store.write_errors == 0
    with SqliteTraceStore(path) as reopened:
        got = reopened.get(trace.id)
        assert got is not None and reopened.stats().unreadable == 0
        assert got.name == trace.name and len(got.spans[0].events) == 1


# ---------------------------------------------------------------------------
# Reading rows that cannot be decoded


def test_rows_that_cannot_be_decoded_are_skipped_and_counted(
    tmp_path: Path, ids: SequentialIdGenerator, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "traces.db"
    first, last = _trace("first", ids=ids), _trace("last", ids=ids)
    broken = _trace("broken", ids=ids).to_dict()
    broken["spans"][0]["events"][0]["timestamp"] = "soon"  # what an older version could write
    with SqliteTraceStore(path) as store:
        store.add(first)
    conn = sqlite3.connect(path)
    with conn:
        for row_id, data in (("b" * 32, json.dumps(broken)), ("c" * 32, "{not json"),
                             ("d" * 32, "[" * 100_000 + "]" * 100_000)):  # fmt: skip
            conn.execute(
                "INSERT INTO traces (id, name, start_time, status, data) VALUES (?, 'x', 1.0, 'error', ?)",
                (row_id, data),
            )
    conn.close()
    with SqliteTraceStore(path) as store:
        store.add(last)
        with caplog.at_level(logging.WARNING, logger="obs.storage.sqlite"):
            assert [t.name for t in store.all()] == ["first", "last"]
            assert [t.name for t in store.get_recent()] == ["last", "first"]
            assert store.get_errors() == []
            assert store.get("b" * 32) is None
            assert len(store.query(lambda t: True)) == 2
        assert store.stats().unreadable == 3  # each bad row counted once, however often it is read
        assert store.unreadable == 3
        assert "b" * 32 in caplog.text and "cannot be decoded" in caplog.text
        assert len(store) == 5  # the rows stay in the file for whoever wants to inspect them


# ---------------------------------------------------------------------------
# Opening files that cannot be used


def test_a_locked_database_is_reported_as_locked(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    SqliteTraceStore(path).close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("PRAGMA journal_mode=DELETE")
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ValueError) as caught:
            SqliteTraceStore(path, timeout_s=0.05)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    message = str(caught.value)
    assert "is locked by another connection" in message and "timeout_s" in message
    assert "not a SQLite database" not in message and "delete" not in message


def test_a_damaged_database_is_reported_as_damaged(tmp_path: Path, ids: SequentialIdGenerator) -> None:
    path = tmp_path / "traces.db"
    with SqliteTraceStore(path) as store:
        store.add(_trace(ids=ids))
    raw = bytearray(path.read_bytes())
    raw[100:4096] = b"\xff" * (4096 - 100)  # page 1 after the header: the schema table
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError) as caught:
        SqliteTraceStore(path)
    assert "is damaged" in str(caught.value) and "move it aside" in str(caught.value)


def _unprivileged() -> list[str]:
    """The command prefix that runs a child without root's power to ignore file permissions."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")  # util-linux, on every Debian
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions cannot be tested")
    # Still uid 0 (so the interpreter under a private home stays reachable), but without the
    # capabilities that let root read and write whatever it likes.
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all"]


def _open_in_child(path: Path) -> str:
    """Open a store on `path` in a child process without privileges; return what it says."""
    code = (
        "import sys\n"
        "from obs.storage.sqlite import SqliteTraceStore\n"
        "try:\n"
        "    SqliteTraceStore(sys.argv[1], timeout_s=0.2).close()\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    print('opened')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [*_unprivileged(), sys.executable, "-c", code, str(path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def restore_modes(tmp_path: Path) -> Iterator[None]:
    """Give every file and directory under tmp_path its permissions back, so it can be removed."""
    yield
    for path in [tmp_path, *tmp_path.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_a_read_only_directory_is_reported_as_such(tmp_path: Path, restore_modes: None) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    SqliteTraceStore(folder / "traces.db").close()
    folder.chmod(0o555)
    assert _open_in_child(tmp_path / "rw.db") == "opened"  # the child can open a store where it may
    for path in (folder / "traces.db", folder / "new.db"):
        said = _open_in_child(path)
        assert "read-only" in said and "directory" in said and "writable directory" in said, said
        assert "not a SQLite database" not in said and "delete" not in said


def test_a_read_only_file_is_reported_as_such(tmp_path: Path, restore_modes: None) -> None:
    path = tmp_path / "traces.db"
    SqliteTraceStore(path).close()
    path.chmod(0o444)
    said = _open_in_child(path)
    assert "is read-only" in said and "make it writable" in said, said
    assert "not a SQLite database" not in said and "delete" not in said


def test_a_file_that_may_not_be_read_is_reported_as_a_permission_problem(
    tmp_path: Path, restore_modes: None
) -> None:
    path = tmp_path / "traces.db"
    SqliteTraceStore(path).close()
    path.chmod(0o000)
    said = _open_in_child(path)
    assert "permission" in said and "fix its permissions" in said, said
    assert "not a SQLite database" not in said and "delete" not in said


def test_a_file_that_is_no_database_still_says_so(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("plain text, not a database\n" * 100)
    said = _open_in_child(path)
    assert "is not a SQLite database" in said and "delete it" in said, said
