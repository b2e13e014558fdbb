"""One trace whose spans arrive in several requests, put back together in the store.

An OpenTelemetry SDK exports spans as they end, in batches: the children of a
long request often leave in one batch and its root in a later one, so a
receiver sees the same trace id more than once. The trace stores replace a
trace that has the same id, which would keep only the last part.
`MergingStoreExporter` reads what the store holds under the id first and
stores the union (`merge_traces`), so the trace comes back whole.

`merge_traces(old, new)`: the spans of both, by span id (a span sent again
replaces the old copy, in its place; new spans follow); from the earliest
start to the latest end; in error when either part is; metadata of both (the
newer wins a key); named after its root span (the earliest span whose parent
is not in the trace), unless a part carried a name of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from obs.trace.processors import ExportResult
from obs.trace.spans import Span
from obs.trace.traces import Trace

__all__ = ["MergingStoreExporter", "merge_traces"]

_log = logging.getLogger(__name__)


def _root(spans: Sequence[Span]) -> Span | None:
    ids = {s.id for s in spans}
    best: Span | None = None
    for span in spans:
        if (span.parent_id is None or span.parent_id not in ids) and (
            best is None or span.start_time < best.start_time
        ):
            best = span
    return best if best is not None or not spans else spans[0]


def _derived_name(trace: Trace) -> str:
    root = _root(trace.spans)
    return root.name if root is not None and root.name else trace.id


def merge_traces(old: Trace, new: Trace) -> Trace:
    """The two parts of one trace as one (see the module docstring). ValueError if their ids differ."""
    if old.id != new.id:
        raise ValueError(f"merge_traces: the traces must have the same id, got {old.id!r} and {new.id!r}")
    by_id = {span.id: span for span in old.spans}
    by_id.update((span.id, span) for span in new.spans)
    spans = tuple(by_id.values())
    if new.name != _derived_name(new):
        name = new.name
    elif old.name != _derived_name(old):
        name = old.name
    else:
        root = _root(spans)
        name = root.name if root is not None and root.name else new.id
    start = min(old.start_time, new.start_time)
    ends = [t.end_time for t in (old, new) if t.end_time is not None]
    end = max(ends) if ends else None
    running = "running" in (old.status, new.status) and end is None
    status = "running" if running else "error" if "error" in (old.status, new.status) else "success"
    return Trace(
        id=new.id,
        name=name,
        start_time=start,
        end_time=end,
        duration=None if end is None else end - start,
        status=status,  # type: ignore[arg-type]
        metadata={**old.metadata, **new.metadata},
        spans=spans,
    )


def _coalesce(traces: Sequence[Trace]) -> list[Trace]:
    """`traces` with the parts that share an id merged, in order of first appearance."""
    merged: dict[str, Trace] = {}
    for trace in traces:
        seen = merged.get(trace.id)
        merged[trace.id] = trace if seen is None else merge_traces(seen, trace)
    return list(merged.values())


class MergingStoreExporter:
    """Stores received traces, each merged with the part of it already stored.

    `target` is a trace store (anything with `add(trace)`, `get(trace_id)`
    and `in`: `SqliteTraceStore`, `TraceStore`), or an exporter that writes
    into one and says which (`SqliteExporter(path)`, whose `.store` is read
    and whose `export` writes each batch in one transaction). A store with
    `add_many(traces)` gets each batch in one call, and one with
    `get_many(trace_ids)` is asked for the stored parts of a batch in one
    call. Parts of one trace in the same batch are merged first. Read and written from one thread at a time
    (the receiver's worker). `shutdown` passes on to an exporter target; a
    store is left open for its owner to close.
    """

    def __init__(self, target: Any) -> None:
        """Export into `target`; ValueError if it is neither a store nor an exporter holding one."""
        inner = target if callable(getattr(target, "export", None)) else None
        store = getattr(target, "store", None) if inner is not None else target
        for method in ("add", "get", "__contains__"):
            if not callable(getattr(store, method, None)):
                raise ValueError(
                    "MergingStoreExporter: target must be a trace store with add(trace), get(trace_id) and "
                    f"`in` (e.g. SqliteTraceStore(path)) or an exporter with one as .store (e.g. "
                    f"SqliteExporter(path)); {target!r} has no {method}"
                )
        self.store = store
        self.exporter = inner

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        """Merge each trace with its stored part and store it; FAILURE if the store raised or refused some."""
        errors_before = getattr(self.store, "write_errors", 0)
        try:
            batch = _coalesce(traces)
            stored = self._stored([trace.id for trace in batch])
            batch = [trace if trace.id not in stored else merge_traces(stored[trace.id], trace)
                     for trace in batch]  # fmt: skip
            if self.exporter is not None:
                return self.exporter.export(batch)  # type: ignore[no-any-return]
            add_many = getattr(self.store, "add_many", None)
            if callable(add_many):
                stored_count = add_many(batch)
                if isinstance(stored_count, int) and stored_count < len(batch):
                    return ExportResult.FAILURE
            else:
                for trace in batch:
                    self.store.add(trace)
            if getattr(self.store, "write_errors", 0) != errors_before:  # stores log failed writes, not raise
                return ExportResult.FAILURE
        except Exception as exc:
            _log.warning("obs: store %r failed to take %d received trace(s): %s: %s",
                         self.store, len(traces), type(exc).__name__, exc)
            return ExportResult.FAILURE
        return ExportResult.SUCCESS

    def _stored(self, trace_ids: list[str]) -> dict[str, Trace]:
        """The stored traces among `trace_ids`, by id (one query when the store has `get_many`)."""
        get_many = getattr(self.store, "get_many", None)
        if callable(get_many):
            return {trace.id: trace for trace in get_many(trace_ids)}
        found = {}
        for trace_id in trace_ids:
            if trace_id in self.store:
                trace = self.store.get(trace_id)
                if trace is not None:
                    found[trace_id] = trace
        return found

    def shutdown(self) -> None:
        """Shut an exporter target down; a store target belongs to its owner and stays open."""
        if self.exporter is not None:
            shutdown = getattr(self.exporter, "shutdown", None)
            if callable(shutdown):
                shutdown()

    def __repr__(self) -> str:
        return f"MergingStoreExporter({self.exporter if self.exporter is not None else self.store!r})"
