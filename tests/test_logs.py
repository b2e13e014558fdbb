"""Tests for obs.logs: LLMLogger and LogEntry."""

from __future__ import annotations

import doctest
import io
import json
import logging
import math
import threading
from pathlib import Path
from typing import Any

import pytest

import obs.logs
from obs.clock import FakeClock
from obs.logs import LEVELS, LLMLogger, LogEntry

T0 = 1_700_000_000_000.0
TRACE = "0" * 31 + "1"
SPAN = "0" * 15 + "1"


class _BrokenStream:
    """A stream whose write always fails, as a closed pipe would."""

    def __init__(self) -> None:
        self.calls = 0

    def write(self, text: str) -> int:
        self.calls += 1
        raise OSError("broken pipe")


class _ListStream:
    """A stream without flush: only write is required."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.append(text)
        return len(text)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ms=T0)


def test_entries_are_structured_with_clock_timestamps(clock: FakeClock) -> None:
    logger = LLMLogger(clock=clock)
    first = logger.info("request sent", {"model": "m", "tokens": 3})
    clock.advance(250)
    second = logger.log_with_trace("error", "request failed", TRACE, SPAN, {"status": 500})
    assert first == LogEntry(T0, "info", "request sent", {"model": "m", "tokens": 3}, None, None)
    assert second == LogEntry(T0 + 250, "error", "request failed", {"status": 500}, TRACE, SPAN)
    assert second is not None and second.to_dict() == {
        "timestamp": T0 + 250,
        "level": "error",
        "message": "request failed",
        "data": {"status": 500},
        "trace_id": TRACE,
        "span_id": SPAN,
    }


def test_an_entry_may_be_stamped_with_when_it_happened(clock: FakeClock) -> None:
    logger = LLMLogger(clock=clock)
    clock.advance(1000)
    entry = logger.log("info", "request started", {"stream": True}, TRACE, SPAN, timestamp=T0 + 10)
    assert entry is not None and entry.timestamp == T0 + 10
    assert logger.get_logs()[0].timestamp == T0 + 10
    for bad in (-1, math.nan, math.inf, True, "now"):
        with pytest.raises(ValueError, match="timestamp must be finite epoch ms >= 0"):
            logger.log("info", "x", timestamp=bad)  # type: ignore[arg-type]
    assert len(logger.get_logs()) == 1


def test_min_level_filters_and_returns_none(clock: FakeClock) -> None:
    logger = LLMLogger(min_level="warn", clock=clock)
    assert logger.debug("d") is None
    assert logger.info("i") is None
    assert logger.warn("w") is not None
    assert logger.error("e") is not None
    assert [e.level for e in logger.get_logs()] == ["error", "warn"]
    assert len(logger) == 2
    logger.set_min_level("debug")
    assert logger.debug("now kept") is not None
    assert logger.min_level == "debug"


def test_warning_is_an_alias_of_warn_and_levels_ignore_case(clock: FakeClock) -> None:
    logger = LLMLogger(min_level="WARNING", clock=clock)
    assert logger.min_level == "warn"
    entry = logger.log("Warning", "disk almost full")
    assert entry is not None and entry.level == "warn"
    assert logger.warning("again") is not None
    assert [e.message for e in logger.get_logs_by_level("warning")] == ["again", "disk almost full"]
    assert logger.is_enabled_for("error") and not logger.is_enabled_for("info")


@pytest.mark.parametrize("bad", ["verbose", "", None, 3])
def test_unknown_level_lists_the_allowed_levels(clock: FakeClock, bad: object) -> None:
    logger = LLMLogger(clock=clock)
    with pytest.raises(ValueError, match=r"level must be one of debug, info, warn, error") as info:
        logger.log(bad, "x")  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)
    with pytest.raises(ValueError, match=r"min_level must be one of debug, info, warn, error"):
        LLMLogger(min_level=bad)  # type: ignore[arg-type]
    assert len(logger) == 0


@pytest.mark.parametrize("bad", [0, -5, 1.5, "10", True])
def test_max_entries_is_validated(bad: object) -> None:
    with pytest.raises(ValueError, match=r"max_entries must be an int >= 1") as info:
        LLMLogger(max_entries=bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)


def test_stream_without_write_is_refused() -> None:
    with pytest.raises(ValueError, match=r"stream must have a write\(str\) method, got int"):
        LLMLogger(stream=42)  # type: ignore[arg-type]


def test_memory_is_bounded_oldest_dropped(clock: FakeClock) -> None:
    logger = LLMLogger(max_entries=3, clock=clock)
    for i in range(5):
        logger.info(f"m{i}")
    assert len(logger) == 3
    assert [e.message for e in logger.get_logs()] == ["m4", "m3", "m2"]
    assert logger.dropped == 2


def test_queries_by_level_trace_and_limit(clock: FakeClock) -> None:
    other = "0" * 31 + "2"
    logger = LLMLogger(min_level="debug", clock=clock)
    logger.debug("d1")
    logger.log_with_trace("info", "t1-a", TRACE)
    logger.log_with_trace("error", "t1-b", TRACE, SPAN)
    logger.log_with_trace("info", "t2-a", other)
    logger.info("i1")
    assert [e.message for e in logger.get_logs()] == ["i1", "t2-a", "t1-b", "t1-a", "d1"]
    assert [e.message for e in logger.get_logs_by_level("info")] == ["i1", "t2-a", "t1-a"]
    assert [e.message for e in logger.get_logs_for_trace(TRACE)] == ["t1-b", "t1-a"]
    assert [e.message for e in logger.get_logs(level="info", trace_id=TRACE)] == ["t1-a"]
    assert [e.message for e in logger.get_logs(limit=2)] == ["i1", "t2-a"]
    assert logger.get_logs(limit=0) == []
    assert logger.get_logs_for_trace("f" * 32) == []
    with pytest.raises(ValueError, match=r"limit must be None or an int >= 0"):
        logger.get_logs(limit=-1)


def test_clear_forgets_entries(clock: FakeClock) -> None:
    logger = LLMLogger(clock=clock)
    logger.info("a")
    logger.clear()
    assert len(logger) == 0
    assert logger.get_logs() == []


def test_data_is_copied_and_odd_inputs_are_kept(clock: FakeClock) -> None:
    logger = LLMLogger(clock=clock)
    data = {"k": 1}
    entry = logger.info("copy", data)
    data["k"] = 2
    assert entry is not None and entry.data == {"k": 1}
    odd = logger.info(404, [1, 2])  # type: ignore[arg-type]
    assert odd is not None and (odd.message, odd.data) == ("404", {"value": [1, 2]})


def test_json_lines_to_a_stream(clock: FakeClock) -> None:
    stream = io.StringIO()
    logger = LLMLogger(stream=stream, clock=clock)
    logger.debug("filtered out")
    logger.log_with_trace("info", "héllo", TRACE, data={"path": Path("a") / "b"})
    clock.advance(1)
    logger.error("bad", {"n": 1})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == {
        "timestamp": T0,
        "level": "info",
        "message": "héllo",
        "data": {"path": str(Path("a") / "b")},
        "trace_id": TRACE,
        "span_id": None,
    }
    assert json.loads(lines[1])["timestamp"] == T0 + 1
    assert logger.write_errors == 0


def test_stream_needs_only_write(clock: FakeClock) -> None:
    stream = _ListStream()
    logger = LLMLogger(stream=stream, clock=clock)
    logger.info("one")
    assert len(stream.lines) == 1
    assert stream.lines[0].endswith("\n")
    assert json.loads(stream.lines[0])["message"] == "one"


def test_json_lines_appended_to_a_file(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "obs.jsonl"
    path.write_text('{"message": "from before"}\n', encoding="utf-8")
    with LLMLogger(path=path, clock=clock) as logger:
        logger.info("first")
        # Flushed per entry: readable before the logger is closed.
        assert json.loads(path.read_text(encoding="utf-8").splitlines()[-1])["message"] == "first"
        logger.warn("second", {"x": 1})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["from before", "first", "second"]
    with LLMLogger(path=str(path), clock=clock) as again:
        again.error("third")
    assert len(path.read_text(encoding="utf-8").splitlines()) == 4


def test_file_path_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"does not exist: create the directory or choose another path"):
        LLMLogger(path=tmp_path / "missing" / "obs.jsonl")


def test_file_path_that_cannot_be_opened_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot open .* for appending"):
        LLMLogger(path=tmp_path)  # a directory


def test_failing_stream_is_counted_never_raised(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    stream = _BrokenStream()
    logger = LLMLogger(stream=stream, clock=clock)
    with caplog.at_level(logging.DEBUG, logger="obs.logs"):
        first = logger.info("a")
        second = logger.error("b")
    assert first is not None and second is not None
    assert stream.calls == 2
    assert logger.write_errors == 2
    assert len(logger) == 2  # kept in memory regardless
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the first failure warns; the rest only count
    assert "broken pipe" in warnings[0].getMessage()


_FULL_DEVICE = Path("/dev/full")  # every write to it fails with "no space left on device"


@pytest.mark.skipif(not _FULL_DEVICE.exists(), reason="needs the Linux /dev/full device")
def test_full_disk_file_is_counted_never_raised(clock: FakeClock) -> None:
    with LLMLogger(path=_FULL_DEVICE, clock=clock) as logger:
        assert logger.info("lost line") is not None
        assert logger.error("lost too") is not None
        assert logger.write_errors == 2
        assert len(logger) == 2


def test_data_that_contains_itself_is_written_with_a_placeholder_and_counted(clock: FakeClock) -> None:
    stream = io.StringIO()
    logger = LLMLogger(stream=stream, clock=clock)
    looped: dict[str, object] = {"name": "loop"}
    looped["self"] = looped
    entry = logger.info("loop", {"loop": looped, "n": 1})
    assert entry is not None
    assert logger.write_errors == 0 and logger.sanitized == 1
    written = _strict_json(stream.getvalue())["data"]
    assert written["n"] == 1 and written["loop"]["name"] == "loop"
    assert "contains itself" in written["loop"]["self"]
    assert entry.data == written  # what is kept in memory is what was written
    assert len(logger) == 1


def test_close_leaves_memory_and_stream_working(tmp_path: Path, clock: FakeClock) -> None:
    stream = io.StringIO()
    path = tmp_path / "obs.jsonl"
    logger = LLMLogger(stream=stream, path=path, clock=clock)
    logger.info("both")
    logger.close()
    logger.info("stream only")
    assert len(path.read_text(encoding="utf-8").splitlines()) == 1
    assert len(stream.getvalue().splitlines()) == 2
    assert len(logger) == 2
    assert logger.write_errors == 0


def test_concurrent_logging_keeps_exact_counts_and_whole_lines(clock: FakeClock) -> None:
    threads_n, per_thread = 8, 300
    stream = io.StringIO()
    logger = LLMLogger(min_level="debug", max_entries=threads_n * per_thread, stream=stream, clock=clock)
    barrier = threading.Barrier(threads_n)

    def work(worker: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            logger.log(LEVELS[i % 4], f"w{worker}-{i}", {"worker": worker, "i": i})

    threads = [threading.Thread(target=work, args=(w,)) for w in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = threads_n * per_thread
    assert len(logger) == total
    assert logger.dropped == 0
    lines = stream.getvalue().splitlines()
    assert len(lines) == total
    parsed = [json.loads(line) for line in lines]  # every line is one whole JSON object
    expected = {f"w{w}-{i}" for w in range(threads_n) for i in range(per_thread)}
    assert {p["message"] for p in parsed} == expected
    assert len(logger.get_logs_by_level("error")) == total // 4
    # Memory order and file order agree.
    assert [e.message for e in reversed(logger.get_logs())] == [p["message"] for p in parsed]


def test_concurrent_logging_beyond_the_bound(clock: FakeClock) -> None:
    threads_n, per_thread, bound = 6, 200, 100
    logger = LLMLogger(max_entries=bound, clock=clock)
    threads = [
        threading.Thread(target=lambda: [logger.info("x") for _ in range(per_thread)])
        for _ in range(threads_n)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(logger) == bound
    assert logger.dropped == threads_n * per_thread - bound


def test_docstring_examples_run() -> None:
    result = doctest.testmod(obs.logs)
    assert result.attempted > 0
    assert result.failed == 0


# -- values JSON cannot hold ---------------------------------------------------------------------


def _strict_json(line: str) -> Any:
    """Parse one JSON line as any standard reader would: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not valid JSON")

    (only,) = line.splitlines()
    return json.loads(only, parse_constant=refuse)


def _nested(depth: int) -> list[Any]:
    root: list[Any] = []
    current = root
    for _ in range(depth):
        child: list[Any] = []
        current.append(child)
        current = child
    return root


def test_nan_and_infinities_are_written_as_json_strings(clock: FakeClock) -> None:
    stream = io.StringIO()
    logger = LLMLogger(stream=stream, clock=clock)
    entry = logger.info("ratios", {"x": math.nan, "y": math.inf, "z": [-math.inf, 1.5]})
    written = _strict_json(stream.getvalue())
    assert written["data"] == {"x": "NaN", "y": "Infinity", "z": ["-Infinity", 1.5]}
    assert logger.write_errors == 0 and logger.sanitized == 0  # a faithful spelling, not a loss
    assert entry is not None and math.isnan(entry.data["x"])  # the entry itself keeps the float


def test_100000_deep_data_is_cut_with_a_placeholder_never_raised(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    stream = io.StringIO()
    logger = LLMLogger(stream=stream, clock=clock)
    with caplog.at_level(logging.WARNING, logger="obs.logs"):
        entry = logger.error("deep", {"deep": _nested(100_000), "kept": "yes"})
    assert entry is not None
    written = _strict_json(stream.getvalue())["data"]
    assert written["kept"] == "yes" and "nested deeper than" in json.dumps(written["deep"])
    assert json.dumps(entry.data) == json.dumps(written)  # readers of the entry cannot choke either
    assert logger.sanitized == 1 and logger.write_errors == 0
    assert "replaced" in caplog.text


def test_deep_data_without_a_sink_is_made_safe_in_memory(clock: FakeClock) -> None:
    logger = LLMLogger(clock=clock)
    entry = logger.info("deep", {"deep": _nested(100_000)})
    assert entry is not None
    json.dumps(entry.data)  # what the logs page does with it
    assert logger.sanitized == 1


def test_lone_surrogates_reach_the_file_as_valid_json(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "obs.jsonl"
    with LLMLogger(path=path, clock=clock) as logger:
        logger.info("half a pair \udc80", {"text": "\ud800 alone", "\udfff key": 1, "fine": "é ✓"})
        assert logger.write_errors == 0 and logger.sanitized == 0
    written = _strict_json(path.read_text(encoding="utf-8"))
    assert written["message"] == "half a pair \udc80"
    assert written["data"] == {"text": "\ud800 alone", "\udfff key": 1, "fine": "é ✓"}


def test_values_whose_text_fails_are_placeholders(clock: FakeClock) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

        __repr__ = __str__

    stream = io.StringIO()
    logger = LLMLogger(stream=stream, clock=clock)
    entry = logger.warn(Unprintable(), {"odd": Unprintable(), (1, 2): "tuple key", "big": 10**5000})  # type: ignore[arg-type]
    assert entry is not None
    written = _strict_json(stream.getvalue())
    assert "Unprintable" in written["message"] and "Unprintable" in written["data"]["odd"]
    assert written["data"]["(1, 2)"] == "tuple key" and "5001 digits" in written["data"]["big"]
    assert logger.sanitized == 1 and logger.write_errors == 0
