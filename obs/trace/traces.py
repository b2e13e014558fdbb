"""Traces: the spans of one request flow, with metadata and hierarchy helpers.

Like spans, traces are immutable values: `add_span_to_trace` and `end_trace`
return new traces, metadata is a read-only mapping and spans a tuple, and
equality is by content (the monotonic start reading takes no part). The
hierarchy helpers (roots, children, depth, the span tree in start order, the
critical path) read a trace and never change it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from obs.clock import SYSTEM_CLOCK, Clock
from obs.trace.ids import IdGenerator, RandomIdGenerator, is_valid_trace_id
from obs.trace.spans import FrozenDict, Span

__all__ = [
    "SpanNode",
    "Trace",
    "TraceStatus",
    "add_span_to_trace",
    "children_of",
    "create_trace",
    "critical_path",
    "critical_path_duration",
    "end_trace",
    "root_spans",
    "span_depth",
    "span_tree",
]

TraceStatus = Literal["running", "success", "error"]
_DEFAULT_IDS = RandomIdGenerator()


@dataclass(frozen=True, slots=True)
class Trace:
    """A request flow: id, name, times in epoch ms, status, metadata and spans.

    `end_time` and `duration` are None until the trace is ended. Metadata
    comes as a read-only mapping, spans as a tuple; `start_mono` (the
    monotonic start reading) is left out of `==`.
    """

    id: str
    name: str
    start_time: float
    end_time: float | None = None
    duration: float | None = None
    status: TraceStatus = "running"
    metadata: Mapping[str, Any] = field(default_factory=FrozenDict)
    spans: tuple[Span, ...] = ()
    start_mono: float = field(default=0.0, compare=False)

    def __post_init__(self) -> None:
        # Traces built by the tracer's handles come frozen already and skip this (see handles.py).
        if type(self.metadata) is not FrozenDict:
            object.__setattr__(self, "metadata", FrozenDict(self.metadata))
        if type(self.spans) is not tuple:
            object.__setattr__(self, "spans", tuple(self.spans))

    def span(self, span_id: str) -> Span | None:
        """The span with id `span_id`, or None."""
        for span in self.spans:
            if span.id == span_id:
                return span
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of this trace and its spans."""
        return {
            "id": self.id,
            "name": self.name,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration": self.duration,
            "status": self.status,
            "metadata": dict(self.metadata),
            "spans": [span.to_dict() for span in self.spans],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trace:
        """Rebuild a trace from `to_dict()` output."""
        return cls(
            id=data["id"],
            name=data["name"],
            start_time=float(data["start_time"]),
            end_time=None if data.get("end_time") is None else float(data["end_time"]),
            duration=None if data.get("duration") is None else float(data["duration"]),
            status=data.get("status", "running"),
            metadata=dict(data.get("metadata") or {}),
            spans=tuple(Span.from_dict(s) for s in data.get("spans") or []),
        )


def create_trace(
    name: str,
    metadata: Mapping[str, Any] | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    id_generator: IdGenerator = _DEFAULT_IDS,
    trace_id: str | None = None,
) -> Trace:
    """Start a new running trace named `name` with optional metadata."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"create_trace: name must be a non-empty string, got {name!r}")
    if trace_id is None:
        trace_id = id_generator.trace_id()
    elif not is_valid_trace_id(trace_id):
        raise ValueError(
            f"create_trace: trace_id must be 32 lowercase hex characters, not all zeros; "
            f"got {trace_id!r}"
        )
    return Trace(
        id=trace_id,
        name=name,
        start_time=clock.time_ms(),
        metadata=dict(metadata) if metadata else {},
        start_mono=clock.monotonic_ms(),
    )


def add_span_to_trace(trace: Trace, span: Span) -> Trace:
    """Return `trace` with `span` added, or replacing the span with the same id.

    Raises ValueError if the span belongs to another trace.
    """
    if span.trace_id != trace.id:
        raise ValueError(
            f"add_span_to_trace: span {span.name!r} belongs to trace {span.trace_id}, "
            f"not {trace.id}; create it with this trace's id"
        )
    spans = list(trace.spans)
    for index, existing in enumerate(spans):
        if existing.id == span.id:
            spans[index] = span
            break
    else:
        spans.append(span)
    return replace(trace, spans=spans)


def end_trace(trace: Trace, *, clock: Clock = SYSTEM_CLOCK) -> Trace:
    """Return `trace` ended now: status "error" if any span errored, else "success".

    The end time is the later of now and the latest span end. Ending a trace
    twice raises ValueError.
    """
    if trace.status != "running":
        raise ValueError(
            f"end_trace: trace {trace.name!r} ({trace.id}) already ended; end a trace once"
        )
    duration = max(0.0, clock.monotonic_ms() - trace.start_mono)
    end_time = trace.start_time + duration
    span_ends = [s.end_time for s in trace.spans if s.end_time is not None]
    if span_ends and max(span_ends) > end_time:
        end_time = max(span_ends)
        duration = end_time - trace.start_time
    status: TraceStatus = (
        "error" if any(s.status == "error" for s in trace.spans) else "success"
    )
    return replace(trace, end_time=end_time, duration=duration, status=status)


def root_spans(trace: Trace) -> list[Span]:
    """Spans with no parent in this trace (parent None or not present), in start order."""
    ids = {s.id for s in trace.spans}
    roots = [s for s in trace.spans if s.parent_id is None or s.parent_id not in ids]
    return sorted(roots, key=lambda s: s.start_time)


def children_of(trace: Trace, span_id: str) -> list[Span]:
    """Direct children of span `span_id`, in start order."""
    return sorted(
        (s for s in trace.spans if s.parent_id == span_id and s.id != span_id),
        key=lambda s: s.start_time,
    )


def span_depth(trace: Trace, span_id: str) -> int:
    """Depth of span `span_id`: 0 for a root, 1 for its children, and so on.

    Raises KeyError if the span is not in the trace.
    """
    by_id = {s.id: s for s in trace.spans}
    if span_id not in by_id:
        raise KeyError(f"span {span_id} is not in trace {trace.id}")
    depth = 0
    seen = {span_id}
    current = by_id[span_id]
    while current.parent_id is not None and current.parent_id in by_id:
        if current.parent_id in seen:  # a cycle: stop rather than loop forever
            break
        seen.add(current.parent_id)
        current = by_id[current.parent_id]
        depth += 1
    return depth


@dataclass(frozen=True, slots=True)
class SpanNode:
    """A span with its depth in the tree (for waterfall charts)."""

    span: Span
    depth: int


def span_tree(trace: Trace) -> list[SpanNode]:
    """All spans depth-first, each parent before its children, siblings in start order.

    Every span appears exactly once: spans caught in a parent cycle (possible
    only in hand-made or imported data) follow as extra roots, in start order.
    """
    children: dict[str | None, list[Span]] = {}
    for span in trace.spans:
        children.setdefault(span.parent_id, []).append(span)
    for group in children.values():
        group.sort(key=lambda s: s.start_time)
    out: list[SpanNode] = []
    seen: set[str] = set()

    def walk(roots: list[Span]) -> None:
        stack = [(root, 0) for root in reversed(roots)]
        while stack:
            span, depth = stack.pop()
            if span.id in seen:
                continue
            seen.add(span.id)
            out.append(SpanNode(span, depth))
            for child in reversed(children.get(span.id, [])):
                stack.append((child, depth + 1))

    walk(root_spans(trace))
    if len(seen) < len(trace.spans):
        for span in sorted(trace.spans, key=lambda s: s.start_time):
            if span.id not in seen:
                walk([span])
    return out


def _end(span: Span) -> float:
    return span.end_time if span.end_time is not None else span.start_time


def critical_path(trace: Trace) -> list[tuple[Span, float]]:
    """The spans that set the trace's end-to-end time, with each one's share in ms.

    Walking back from the end of each root, the latest-finishing child owns the
    time it covers; the parent owns the gaps. Segments come out in time order;
    their shares add up to the roots' covered time.
    """
    segments: list[tuple[Span, float]] = []

    def walk(span: Span, until: float) -> None:
        cursor = min(_end(span), until)
        kids = [c for c in children_of(trace, span.id) if c.start_time < cursor]
        kids.sort(key=_end, reverse=True)
        parts: list[tuple[Span, float]] = []
        for child in kids:
            child_end = min(_end(child), cursor)
            if child_end <= span.start_time or child.start_time >= cursor:
                continue
            if child_end < cursor:
                parts.append((span, cursor - child_end))
            sub: list[tuple[Span, float]] = []
            segments_before = len(segments)
            walk(child, child_end)
            sub = segments[segments_before:]
            del segments[segments_before:]
            parts.extend(reversed(sub))
            cursor = max(child.start_time, span.start_time)
        if cursor > span.start_time:
            parts.append((span, cursor - span.start_time))
        segments.extend(reversed(parts))

    for root in root_spans(trace):
        walk(root, _end(root))
    return [(span, share) for span, share in segments if share > 0]


def critical_path_duration(trace: Trace) -> float:
    """Total ms on the critical path (see `critical_path`); 0 for an empty trace."""
    return sum(share for _, share in critical_path(trace))
