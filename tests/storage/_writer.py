"""A process writing numbered traces into a SQLite file, for the tests that kill it or run others beside it.

    python -m tests.storage._writer loop PATH           # until killed; prints each index once written
    python -m tests.storage._writer count PATH FIRST N  # "ready", waits for "go", writes N, "done"

Trace `i` is always the same (`numbered_trace(i)`), so whoever reads the file
can check that each trace is complete.
"""

from __future__ import annotations

import sys

from obs.storage.exporter import SqliteExporter
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.spans import Span, SpanEvent
from obs.trace.traces import Trace
from tests.storage._traces import BASE_MS, request_span, trace_of


def numbered_trace(i: int) -> Trace:
    """Trace number `i`: a turn with a call under it and a step with an event (three spans)."""
    trace_id, start = f"{i + 1:032x}", BASE_MS + i * 250.0
    root = Span(f"{3 * i + 1:016x}", trace_id, None, "turn", start, start + 120.0, 120.0, "success",
                {"gen_ai.conversation.id": f"conv-{i // 3}", "i": i})  # fmt: skip
    call = request_span(trace_id, f"{3 * i + 2:016x}", start + 1.0, 100.0 + i % 50, parent=root.id,
                        conversation=f"conv-{i // 3}", question=f"question {i}", inputs=i % 97)  # fmt: skip
    step = Span(f"{3 * i + 3:016x}", trace_id, call.id, "parse", start + 101.0, start + 110.0, 9.0, "success",
                {"n": i}, (SpanEvent("parsed", start + 105.0, {"ok": True}),))  # fmt: skip
    return trace_of(trace_id, "turn", [root, call, step], service=f"writer-{i % 2}")


def _loop(path: str) -> None:
    store = SqliteTraceStore(path, timeout_s=30.0)
    i = 0
    while True:
        if i % 2:  # a batch of five in one transaction, then single adds
            batch = [numbered_trace(j) for j in range(i, i + 5)]
            if store.add_many(batch) == 5:
                print(*range(i, i + 5), sep="\n", flush=True)
            i += 5
        else:
            store.add(numbered_trace(i))
            if store.write_errors == 0:
                print(i, flush=True)
            i += 1


def _count(path: str, first: int, n: int) -> None:
    exporter = SqliteExporter(path, timeout_s=30.0)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected go")
    i = first
    while i < first + n:
        size = min(7, first + n - i)
        result = exporter.export([numbered_trace(j) for j in range(i, i + size)])
        if result.value != "success":
            raise SystemExit(f"export failed at {i}")
        i += size
    exporter.shutdown()
    print("done", flush=True)


if __name__ == "__main__":
    mode, file_path, *rest = sys.argv[1:]
    if mode == "loop":
        _loop(file_path)
    else:
        _count(file_path, int(rest[0]), int(rest[1]))
