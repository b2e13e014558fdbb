"""How a trace becomes a row of the SQLite store, and back.

`storable(trace)` is the trace's `to_dict()` made safe to encode: every
value JSON can hold, every time a finite number, so that `decode(encode(...))`
always gives a Trace back. What had to be replaced is marked under
`REPLACED_KEY` where it happened and listed for the log. `column` makes text
SQLite can bind (lone surrogates, which UTF-8 cannot hold, become U+FFFD).

For traces that need nothing replaced, `obs.storage._columns` skips
`to_dict()` and writes the JSON from the objects with the functions here
(`plain_json`, `metadata_json`, `events_json`, `text_columns`), each
checking what `storable` would check and saying None where it would change
something.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from json import encoder as _json_encoder
from typing import Any

from obs import semconv
from obs._validate import JSON_MAX_DEPTH, json_safe, placeholder, short_repr
from obs.trace.spans import FrozenDict, SpanEvent
from obs.trace.traces import Trace

__all__ = [
    "REPLACED_KEY", "column", "decode", "encode", "events_json", "metadata_json", "plain_items", "plain_json",
    "plain_mapping", "storable", "text_columns", "times_kept",
]

# The attribute (metadata for a trace) that says which values of a span, event or trace were
# replaced to make it storable, and why.
REPLACED_KEY = semconv.OBS_REPLACED

# Value types kept without a closer look. An int of more than 4300 digits is one too, which makes
# `json.dumps` raise: `encode` then retries with `strict`, which checks every int.
_PLAIN = frozenset({str, int, float, bool, type(None)})
_ARRAYS = frozenset({list, tuple})
_TEXT = frozenset({str, type(None)})
_SPAN_TEXT = operator.itemgetter("id", "trace_id", "parent_id", "name", "kind", "status")
_BIG_INT = 10**18
HUGE_INT = 10**4000  # an int this large or larger is what `json_safe` replaces by a placeholder

Where = tuple[str, ...]  # ("span", id, "event", name): formatted only when a note is made


def plain_items(value: list[Any] | tuple[Any, ...]) -> bool:
    """True when `json_safe` keeps every item of `value` as it is: plain values (str, int, float, bool,
    None; their types compared by identity), no int it would replace. Item by item: for the few items
    of an attribute a loop is quicker than sets of their types."""
    for item in value:
        kind = type(item)
        if not (kind is str or kind is float or item is None or kind is bool or (
            kind is int and -HUGE_INT < item < HUGE_INT
        )):  # fmt: skip
            return False
    return True


def plain_mapping(container: dict[Any, Any]) -> bool:
    """True when every key is text and every value one `json_safe` keeps as it is (ints unchecked):
    then `storable` keeps the mapping as it is."""
    for key, value in container.items():
        if type(key) is not str:
            return False
        if type(value) not in _PLAIN and (type(value) not in _ARRAYS or not plain_items(value)):
            return False
    return True


def _unchanged(data: dict[str, Any]) -> bool:
    """True when `storable` would leave `trace.to_dict()` as it is (and note nothing), found quickly.

    Text fields text or None, times floats that are finite (an end or a
    duration may be None), attributes and metadata plain (`plain_mapping`).
    A float is finite when it minus itself is 0.0 (for NaN and the infinities
    that is NaN, which equals nothing).
    """
    if not (
        set(map(type, (data["id"], data["name"], data["status"]))) <= _TEXT
        and times_kept(data["start_time"], data["end_time"], data["duration"])
        and plain_mapping(data["metadata"])
    ):  # fmt: skip
        return False
    for span in data["spans"]:
        if not (
            set(map(type, _SPAN_TEXT(span))) <= _TEXT
            and times_kept(span["start_time"], span["end_time"], span["duration"])
            and plain_mapping(span["attributes"])
        ):  # fmt: skip
            return False
        for event in span["events"]:
            name, stamp = event["name"], event["timestamp"]
            if not (
                (name is None or type(name) is str) and type(stamp) is float and stamp - stamp == 0.0
                and plain_mapping(event["attributes"])
            ):  # fmt: skip
                return False
    return True


def times_kept(start: Any, end: Any, duration: Any) -> bool:
    """True when `storable` keeps these times of a trace or span as they are: floats that are finite
    (end and duration may be None). `_unchanged` checks a trace's and its spans' times with it."""
    return (
        type(start) is float and start - start == 0.0
        and (end is None or (type(end) is float and end - end == 0.0))
        and (duration is None or (type(duration) is float and duration - duration == 0.0))
    )  # fmt: skip


def _encoder_without_setup() -> Callable[[Any], str]:
    """`json.dumps(value, separators=(",", ":"))` without its setup at every call: C's encoder, made once
    and without the check for cycles, for values `plain_mapping` passed (they cannot hold one). The
    whole `json.dumps` where C's encoder is missing or writes other text."""
    def slow_json(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"))

    make = getattr(_json_encoder, "c_make_encoder", None)
    try:
        encode = make(None, json.JSONEncoder().default, _json_encoder.encode_basestring_ascii, None, ":", ",",
                      False, False, True)  # type: ignore[misc]  # fmt: skip
    except TypeError:  # no C encoder (None), or one of another signature
        return slow_json

    def plain_json(value: Any) -> str:
        """The JSON text `json.dumps(value, separators=(",", ":"))` gives, for plain values."""
        return "".join(encode(value, 0))

    probe = [{"a": [1, 2.5, None, True, "\ud800\u00e9\n"], "b": FrozenDict(c=(1e300, -0.0, 10**30))}, 0.1]
    return plain_json if plain_json(probe) == slow_json(probe) else slow_json


plain_json = _encoder_without_setup()
# The types of values that never change, by identity.
_IMMUTABLE_TYPE_IDS = frozenset(map(id, (str, int, bool, type(None))))
# The last metadata `metadata_json` wrote: its keys, its values (all of `_IMMUTABLE_TYPE_IDS`) and its
# JSON. The traces of one program carry the same metadata (OTLP's resource), and its JSON is much of
# what writing a trace row costs.
_last_metadata: list[tuple[tuple[Any, ...], tuple[Any, ...], str]] = [((), (), "{}")]


def metadata_json(metadata: dict[str, Any]) -> str | None:
    """`plain_json(metadata)` when `storable` keeps `metadata` as it is (`plain_mapping`), else None.

    The last JSON written is given again for metadata that holds the very
    same key and value objects (compared by identity, so never a value that
    merely equals another: 1 == True == 1.0, 0.0 == -0.0).
    """
    keys, values, text = _last_metadata[0]
    if len(metadata) == len(keys) and all(map(operator.is_, metadata, keys)) and all(
        map(operator.is_, metadata.values(), values)
    ):
        return text
    if not plain_mapping(metadata):
        return None
    text = plain_json(metadata)
    values = tuple(metadata.values())
    if set(map(id, map(type, values))) <= _IMMUTABLE_TYPE_IDS:
        _last_metadata[0] = (tuple(metadata), values, text)
    return text


_text_json, _float_json = _json_encoder.encode_basestring_ascii, float.__repr__  # JSON's own
_TEXT_FIELDS = ("id", "parent_id", "name", "kind", "status")


def text_columns(
    span_id: Any, parent_id: Any, name: Any, kind: Any, status: Any, span_trace: Any, trace_id: str
) -> tuple[Any, ...] | None:
    """The text columns of a span whose text `column` may change or that names another trace
    `trace_id` (as `column` made it): id, parent, name, kind, status as `column` makes them, and the
    JSON of the exact text of those that differ (None when none does); None when a field is neither
    text nor None (`storable` would change it)."""
    text = (span_id, parent_id, name, kind, status)
    if not set(map(type, (*text, span_trace))) <= _TEXT:
        return None
    bound = (column(span_id), None if parent_id is None else column(parent_id), column(name), column(kind),
             column(status))  # fmt: skip
    exact = {field: value for field, value in zip(_TEXT_FIELDS, text, strict=True)
             if value is not None and column(value) != value}  # fmt: skip
    if span_trace != trace_id:
        exact["trace_id"] = span_trace
    return (*bound, plain_json(exact) if exact else None)


def events_json(events: tuple[Any, ...]) -> str | None:
    """The JSON of `[event.to_dict() for event in events]`, or None when `storable` would change one."""
    texts = []
    for event in events:
        if type(event) is not SpanEvent:
            return None
        name, stamp, attrs = event.name, event.timestamp, event.attributes
        if not (
            (name is None or type(name) is str) and type(stamp) is float and stamp - stamp == 0.0
            and type(attrs) is FrozenDict and plain_mapping(attrs)
        ):  # fmt: skip
            return None
        texts.append("".join((  # the JSON of `event.to_dict()`, piece by piece
            '{"name":', "null" if name is None else _text_json(name), ',"timestamp":', _float_json(stamp),
            ',"attributes":', plain_json(attrs) if attrs else "{}", "}",
        )))  # fmt: skip
    return "[" + ",".join(texts) + "]"


def _place(where: Where) -> str:
    return " ".join(part if index % 2 == 0 else short_repr(part, 40) for index, part in enumerate(where))


def _time(value: Any) -> float | None:
    """`value` as a finite float, or None when it is not a finite real number."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    return None


class _Fixer:
    """Makes one trace's `to_dict()` storable in place, noting what it replaced."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.notes: list[str] = []

    def mark(self, container: dict[str, Any], where: Where, note: str) -> None:
        self.notes.append(f"{_place(where)}: {note}")
        earlier = container.get(REPLACED_KEY)
        container[REPLACED_KEY] = f"{earlier}; {note}" if isinstance(earlier, str) and earlier else note

    def times(self, item: dict[str, Any], marks: dict[str, Any], where: Where, fallback: float) -> None:
        """Start, end and duration of a trace or span: finite numbers (start) or None (end, duration)."""
        start = _time(item["start_time"])
        if start is None:
            instead = "0.0 (1970-01-01)" if where[0] == "trace" else "the trace's start"
            self.mark(marks, where, f"start_time {short_repr(item['start_time'])} is not a finite number; "
                                    f"{instead} is stored")  # fmt: skip
            start = fallback
        item["start_time"] = start
        for name in ("end_time", "duration"):
            value = item[name]
            if value is not None:
                number = _time(value)
                if number is None:
                    note = f"{name} {short_repr(value)} is not a finite number; None is stored"
                    self.mark(marks, where, note)
                item[name] = number

    def _plain(self, key: object, value: object) -> bool:
        kind = type(value)
        if type(key) is not str or kind not in _PLAIN:
            return False
        return not (self.strict and kind is int and not -_BIG_INT < value < _BIG_INT)  # type: ignore[operator]

    def mapping(self, container: dict[Any, Any], where: Where) -> dict[str, Any]:
        """Attributes or metadata, with every value JSON can hold (see `obs._validate.json_safe`)."""
        if not self.strict and plain_mapping(container):
            return container
        out: dict[str, Any] = {}
        notes = []
        for key, value in container.items():
            if self._plain(key, value):
                out[key] = value
                continue
            # One entry at a time, so the note can name the key; +1 for the entry's own dict.
            safe, reasons = json_safe({key: value}, max_depth=JSON_MAX_DEPTH + 1)
            ((safe_key, safe_value),) = safe.items()
            if reasons:
                notes.append(f"{short_repr(safe_key, 40)}: {', '.join(dict.fromkeys(reasons))}")
            out[safe_key if isinstance(safe_key, str) else str(safe_key)] = safe_value
        for note in notes:
            self.mark(out, where, note)
        return out

    def text(self, item: dict[str, Any], name: str, where: Where) -> None:
        """A field that must be text (or None): anything else becomes its text."""
        value = item[name]
        if value is None or type(value) is str:
            return
        try:
            item[name] = str(value)
        except Exception as exc:
            item[name] = placeholder(f"a {type(value).__name__} whose str() raised {type(exc).__name__}")
            self.notes.append(f"{_place(where)}: {name} {item[name]}")


def storable(trace: Trace, *, strict: bool = False) -> tuple[dict[str, Any], list[str]]:
    """`trace.to_dict()` with every value JSON can hold and `Trace.from_dict` reads back.

    Times that are not finite numbers are replaced (a start by the enclosing
    start, an event time by its span's start, an end or duration by None);
    attribute and metadata values go through `json_safe` (too deep, circular,
    unprintable: a placeholder). Each replacement is noted under
    `REPLACED_KEY` where it happened and returned in the list. Without
    `strict`, ints are not checked for size (see `encode`).
    """
    data = trace.to_dict()
    if not strict and _unchanged(data):
        return data, []
    fix = _Fixer(strict)
    here: Where = ("trace",)
    data["metadata"] = fix.mapping(data["metadata"], here)
    for name in ("id", "name", "status"):
        fix.text(data, name, here)
    fix.times(data, data["metadata"], here, 0.0)
    for span in data["spans"]:
        where: Where = ("span", span["id"])
        span["attributes"] = fix.mapping(span["attributes"], where)
        for name in ("id", "trace_id", "parent_id", "name", "kind", "status"):
            fix.text(span, name, where)
        fix.times(span, span["attributes"], where, data["start_time"])
        for event in span["events"]:
            event_where: Where = (*where, "event", event["name"])
            event["attributes"] = fix.mapping(event["attributes"], event_where)
            fix.text(event, "name", event_where)
            stamp = _time(event["timestamp"])
            if stamp is None:
                bad = short_repr(event["timestamp"])
                fix.mark(event["attributes"], event_where,
                         f"timestamp {bad} is not a finite number; the span's start is stored")  # fmt: skip
                stamp = span["start_time"]
            event["timestamp"] = stamp
    return data, fix.notes


def column(value: object) -> str:
    """Text SQLite can bind: lone surrogates (which UTF-8 cannot hold) become U+FFFD."""
    if type(value) is str and value.isascii():  # the common case, without encoding it
        return value
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def encode(trace: Trace) -> tuple[str, dict[str, Any], list[str]]:
    """The JSON text of `storable(trace)`, that dict and its notes.

    ensure_ascii (json's default) writes lone surrogates as `\\udXXX` escapes,
    which read back exactly. Raises only for a Trace whose fields are not
    what they claim to be (`to_dict` fails).
    """
    data, notes = storable(trace)
    try:
        return json.dumps(data, separators=(",", ":")), data, notes
    except ValueError:  # an int too long to write as text: check every int this time
        data, notes = storable(trace, strict=True)
        return json.dumps(data, separators=(",", ":")), data, notes


def decode(data: str) -> Trace:
    """The Trace a row's JSON text holds; raises (even RecursionError) when it cannot be decoded."""
    return Trace.from_dict(json.loads(data))
