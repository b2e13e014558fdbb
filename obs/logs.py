"""LLMLogger: structured log entries tied to trace and span ids.

Each entry carries a timestamp (epoch ms, from an injectable clock), a level,
a message, a dict of data and, when known, the trace and span it belongs to.
Entries are kept in memory, bounded (the oldest go first), and may also be
written as JSON lines to a stream or an appended file. A sink that fails is
counted in `write_errors` and logged through the standard `logging` module;
it never raises into the code that logged. Data JSON cannot hold (nested
deeper than 64 levels, containing itself, an object whose `str()` fails) is
replaced by a marked placeholder, in the entry and in the line, and counted
in `sanitized`. Every line is valid JSON: NaN and the infinities are written
as the strings "NaN", "Infinity" and "-Infinity", and lone surrogates as
`\\udXXX` escapes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from obs._validate import JSON_MAX_DEPTH, is_finite_number, json_safe, placeholder
from obs.clock import SYSTEM_CLOCK, Clock

__all__ = ["LEVELS", "LLMLogger", "LogEntry", "LogLevel", "SupportsWrite"]

_log = logging.getLogger(__name__)

LogLevel = Literal["debug", "info", "warn", "error"]
LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warn", "error")
_RANK = {level: rank for rank, level in enumerate(LEVELS)}
_ALIASES = {"warning": "warn"}
_PLAIN = frozenset({str, int, float, bool, type(None)})
_STR = frozenset({str})


class SupportsWrite(Protocol):
    """Anything with a `write(str)` method, such as an open text file or `sys.stderr`."""

    def write(self, text: str, /) -> Any:
        """Write `text`; the return value is ignored."""
        ...


def _normalize_level(level: object, argument: str = "level") -> LogLevel:
    """Return the canonical level for `level` ("WARNING" -> "warn"); ValueError if unknown."""
    if isinstance(level, str):
        name = level.strip().lower()
        name = _ALIASES.get(name, name)
        if name in _RANK:
            return name  # type: ignore[return-value]
    raise ValueError(
        f"{argument} must be one of {', '.join(LEVELS)} (or 'warning' for warn), got {level!r}"
    )


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One structured log record: when, how severe, what, with which data, in which trace/span."""

    timestamp: float
    level: LogLevel
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    trace_id: str | None = None
    span_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of this entry (keys in a fixed order)."""
        return {
            "timestamp": self.timestamp,
            "level": self.level,
            "message": self.message,
            "data": dict(self.data),
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }


def _text(value: object) -> str:
    """`str(value)`, or a placeholder when that raises."""
    try:
        return str(value)
    except Exception as exc:
        return placeholder(f"a {type(value).__name__} whose str() raised {type(exc).__name__}")


def _safe_payload(data: object) -> tuple[dict[str, Any], list[str]]:
    """The entry's data dict, with what JSON cannot hold replaced, and the replacements made."""
    if data is None:
        return {}, []
    if isinstance(data, Mapping):
        try:
            payload = dict(data)
        except Exception as exc:  # a mapping that cannot be read
            reason = f"a {type(data).__name__} that could not be read ({type(exc).__name__})"
            return {"value": placeholder(reason)}, [reason]
    else:
        payload = {"value": data}
    # The common case (text keys, plain values) is checked by types, without a walk.
    if {type(key) for key in payload} <= _STR and {type(value) for value in payload.values()} <= _PLAIN:
        return payload, []
    safe, reasons = json_safe(payload, max_depth=JSON_MAX_DEPTH + 1)
    return safe, reasons


def _json_line(entry: LogEntry) -> tuple[str, list[str]]:
    """One line of valid JSON for `entry`, ending in a newline, and any replacement it needed."""
    record = entry.to_dict()
    reasons: list[str] = []
    try:
        # default=str: a value JSON cannot hold is written as its text rather than lost.
        line = json.dumps(record, default=str, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or an infinity (or an int too long for text): spell them as JSON can
        safe, reasons = json_safe(record, finite=True)
        line = json.dumps(safe, ensure_ascii=False, allow_nan=False)
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates (only ever inside JSON strings) become \udXXX escapes: still valid
            # JSON, read back exactly, and writable to any UTF-8 file.
            line = line.encode("utf-8", "backslashreplace").decode("utf-8")
    return line + "\n", reasons


class LLMLogger:
    """Structured, bounded, thread-safe logs that can be tied to traces and spans.

    >>> from obs import FakeClock
    >>> logger = LLMLogger(min_level="info", clock=FakeClock(start_ms=1000.0))
    >>> logger.debug("too quiet") is None
    True
    >>> logger.info("request sent", {"model": "m"}).to_dict()["timestamp"]
    1000.0
    """

    def __init__(
        self,
        min_level: str = "info",
        max_entries: int = 10000,
        *,
        stream: SupportsWrite | None = None,
        path: str | os.PathLike[str] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """Keep entries at `min_level` or above, at most `max_entries` of them.

        `stream` (anything with `.write(str)`) and `path` (a file opened for
        appending) each receive one JSON object per line, flushed per entry.
        Raises ValueError for an unknown level, `max_entries` not an int >= 1,
        a `stream` without `write`, or a `path` whose directory does not exist
        or that cannot be opened.
        """
        self._min_level = _normalize_level(min_level, "min_level")
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"LLMLogger: max_entries must be an int >= 1, got {max_entries!r}")
        if stream is not None and not callable(getattr(stream, "write", None)):
            raise ValueError(
                f"LLMLogger: stream must have a write(str) method, got {type(stream).__name__}"
            )
        self._max_entries = max_entries
        self._clock = clock
        self._stream = stream
        self._lock = threading.Lock()
        self._entries: deque[LogEntry] = deque(maxlen=max_entries)
        self._write_errors = 0
        self._sanitized = 0
        self._dropped = 0
        self._file: IO[str] | None = None
        self._path = None if path is None else Path(path)
        if self._path is not None:
            if not self._path.parent.is_dir():
                raise ValueError(
                    f"LLMLogger: path {str(self._path)!r} is in directory {str(self._path.parent)!r}, "
                    "which does not exist: create the directory or choose another path"
                )
            try:
                self._file = open(self._path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
            except OSError as exc:
                raise ValueError(f"LLMLogger: cannot open {str(self._path)!r} for appending: {exc}") from exc

    @property
    def min_level(self) -> LogLevel:
        """The lowest level that is kept."""
        return self._min_level

    def set_min_level(self, level: str) -> None:
        """Keep entries at `level` or above from now on (ValueError if unknown)."""
        self._min_level = _normalize_level(level, "min_level")

    @property
    def max_entries(self) -> int:
        """The bound this logger was made with."""
        return self._max_entries

    @property
    def write_errors(self) -> int:
        """How many entries could not be written to the stream or file."""
        with self._lock:
            return self._write_errors

    @property
    def sanitized(self) -> int:
        """How many entries had data JSON cannot hold replaced by placeholders (see `log`)."""
        with self._lock:
            return self._sanitized

    @property
    def dropped(self) -> int:
        """How many entries were pushed out of memory by the bound."""
        with self._lock:
            return self._dropped

    def is_enabled_for(self, level: str) -> bool:
        """True if an entry at `level` would be kept (ValueError if the level is unknown)."""
        return _RANK[_normalize_level(level)] >= _RANK[self._min_level]

    def log(
        self,
        level: str,
        message: str,
        data: Mapping[str, Any] | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        *,
        timestamp: float | None = None,
    ) -> LogEntry | None:
        """Record an entry stamped now (or at `timestamp`, epoch ms: what happened earlier); return it,
        or None if `level` is below `min_level`.

        Raises ValueError for an unknown level or a `timestamp` that is not
        finite epoch ms >= 0, and nothing else. Data that is
        not a mapping is kept as `{"value": data}`; a message that is not a
        string is converted. Data JSON cannot hold is replaced by marked
        placeholders (see the module docstring), counted in `sanitized` and
        reported through `logging`, so the entry can always be written and read.
        """
        canonical = _normalize_level(level)
        if timestamp is not None and not (is_finite_number(timestamp) and timestamp >= 0):
            raise ValueError(f"LLMLogger.log: timestamp must be finite epoch ms >= 0, got {timestamp!r}")
        if _RANK[canonical] < _RANK[self._min_level]:
            return None
        payload, reasons = _safe_payload(data)
        if reasons:
            self._count_sanitized(reasons)
        entry = LogEntry(
            timestamp=self._clock.time_ms() if timestamp is None else float(timestamp),
            level=canonical,
            message=message if type(message) is str else _text(message),
            data=payload,
            trace_id=trace_id,
            span_id=span_id,
        )
        line = None
        if self._stream is not None or self._file is not None:
            try:
                line, late = _json_line(entry)
            except Exception as exc:  # not expected once the payload is safe; never raised anyway
                self._count_write_error("encode", exc)
            else:
                if late and not reasons:
                    self._count_sanitized(late)
        with self._lock:
            if len(self._entries) == self._max_entries:
                self._dropped += 1
            self._entries.append(entry)
            # Written under the lock so lines from several threads never interleave.
            if line is not None:
                self._write_locked(line)
        return entry

    def _count_sanitized(self, reasons: list[str]) -> None:
        with self._lock:
            self._sanitized += 1
            first = self._sanitized == 1
        # Only the first is a warning, as for write errors: a caller doing it in a loop would flood.
        level = logging.WARNING if first else logging.DEBUG
        _log.log(level, "LLMLogger: log data replaced by placeholders: %s", "; ".join(dict.fromkeys(reasons)))

    def _count_write_error(self, where: str, exc: BaseException) -> None:
        with self._lock:
            self._write_errors += 1
            first = self._write_errors == 1
        self._report(where, exc, first)

    def _report(self, where: str, exc: BaseException, first: bool) -> None:
        # Only the first failure is a warning: a broken sink would otherwise flood the log.
        level = logging.WARNING if first else logging.DEBUG
        _log.log(level, "LLMLogger: could not %s a log entry: %r", where, exc)

    def _write_locked(self, line: str) -> None:
        for sink, where in ((self._stream, "write to the stream"), (self._file, "write to the file")):
            if sink is None:
                continue
            try:
                sink.write(line)
                flush = getattr(sink, "flush", None)
                if callable(flush):
                    flush()
            except Exception as exc:
                self._write_errors += 1
                self._report(where, exc, self._write_errors == 1)

    def debug(self, message: str, data: Mapping[str, Any] | None = None) -> LogEntry | None:
        """Record a debug entry (see `log`)."""
        return self.log("debug", message, data)

    def info(self, message: str, data: Mapping[str, Any] | None = None) -> LogEntry | None:
        """Record an info entry (see `log`)."""
        return self.log("info", message, data)

    def warn(self, message: str, data: Mapping[str, Any] | None = None) -> LogEntry | None:
        """Record a warn entry (see `log`)."""
        return self.log("warn", message, data)

    warning = warn

    def error(self, message: str, data: Mapping[str, Any] | None = None) -> LogEntry | None:
        """Record an error entry (see `log`)."""
        return self.log("error", message, data)

    def log_with_trace(
        self,
        level: str,
        message: str,
        trace_id: str,
        span_id: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> LogEntry | None:
        """Record an entry tied to trace `trace_id` (and span `span_id`); see `log`."""
        return self.log(level, message, data, trace_id=trace_id, span_id=span_id)

    def get_logs(
        self, level: str | None = None, trace_id: str | None = None, limit: int | None = None
    ) -> list[LogEntry]:
        """Kept entries, newest first, filtered by exact `level` and `trace_id` when given.

        `limit` caps how many are returned. Raises ValueError for an unknown
        level or a `limit` that is not None or an int >= 0.
        """
        wanted = None if level is None else _normalize_level(level)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"get_logs: limit must be None or an int >= 0, got {limit!r}")
        with self._lock:
            entries = list(self._entries)
        out: list[LogEntry] = []
        for entry in reversed(entries):
            if limit is not None and len(out) >= limit:
                break
            if wanted is not None and entry.level != wanted:
                continue
            if trace_id is not None and entry.trace_id != trace_id:
                continue
            out.append(entry)
        return out

    def get_logs_by_level(self, level: str) -> list[LogEntry]:
        """Kept entries at exactly `level`, newest first (ValueError if unknown)."""
        return self.get_logs(level=level)

    def get_logs_for_trace(self, trace_id: str) -> list[LogEntry]:
        """Kept entries tied to trace `trace_id`, newest first."""
        return self.get_logs(trace_id=trace_id)

    def clear(self) -> None:
        """Forget every kept entry (what was written to a stream or file stays there)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        """How many entries are kept."""
        with self._lock:
            return len(self._entries)

    def flush_soon(self) -> None:
        """Ask the stream to store what it queued now, if it can (a SqliteLogSink can); returns at once.

        Never raises: a stream whose `flush_soon` fails is counted in `write_errors` and reported once.
        """
        ask = getattr(self._stream, "flush_soon", None)
        if not callable(ask):
            return
        try:
            ask()
        except Exception as exc:
            self._count_write_error("flush", exc)

    def close(self) -> None:
        """Close the file opened for `path` (the stream belongs to the caller and stays open).

        Entries logged afterwards are still kept in memory and written to the stream.
        """
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError as exc:
                    self._write_errors += 1
                    self._report("close the file of", exc, self._write_errors == 1)
                self._file = None

    def __enter__(self) -> LLMLogger:
        """Use the logger in a `with` block that closes its file."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the logger's file."""
        self.close()

    def __repr__(self) -> str:
        return f"LLMLogger(min_level={self._min_level!r}, max_entries={self._max_entries}, size={len(self)})"
