"""Synthetic history files: many LLM requests, written fast, exactly as the SQLite store writes them.

`synthetic_requests(n, end_ms=...)` draws the numbers of `n` chat calls spread
over some days (three services, three models, conversations of five turns,
3% errors without usage, half of them streamed with a time to first token,
10% prompt-cache hits, log-normal latencies) as numpy columns.
`trace_at(requests, i)` is the Trace the instrumented client would have
recorded for call `i`: one client span with the GenAI attributes, in a
trace of its own. `write_store(path, requests)` puts them all in a history
file. Encoding a million Trace objects one by one takes minutes, so the
rows are built here directly from the columns, and the rollups summed in
SQL once they are all in; `tests/app/test_dashboard_scale.py` checks that
a file written so holds, table for table, what `SqliteTraceStore` writes
for the same traces (`trace_at`).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from obs import semconv
from obs.storage._columns import COST_UNITS_PER_USD, SPAN_COLUMNS, TRACE_COLUMNS, bin_of, hour_of, minute_of
from obs.storage._rollup_sql import SPAN_SUMS, SUM_COLUMNS
from obs.storage.results import RetentionPolicy
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.spans import Span, SpanEvent
from obs.trace.traces import Trace

__all__ = [
    "MODELS", "SERVICES", "SPAN_WRITTEN", "TRACE_WRITTEN", "TURNS_PER_CONVERSATION", "Requests", "frame",
    "synthetic_requests", "trace_at", "write_store",
]  # fmt: skip

SERVICES = ("chat-app", "rag-service", "batch")
MODELS = ("smollm2", "qwen2.5-0.5b", "llama-3.2-1b")
DAY_MS = 86_400_000.0
TURNS_PER_CONVERSATION = 5
# The columns written here are the store's own (the inserts name them, so the file's column order does not
# matter).
TRACE_WRITTEN, SPAN_WRITTEN = TRACE_COLUMNS, SPAN_COLUMNS
_BATCH = 20_000


@dataclass(frozen=True, slots=True)
class Requests:
    """The numbers of `n` calls, oldest first, one numpy array per field (NaN: not measured)."""

    start_ms: np.ndarray
    latency_ms: np.ndarray
    ttft_ms: np.ndarray  # NaN for calls that were not streamed
    input_tokens: np.ndarray  # -1 for calls without usage (the failed ones)
    output_tokens: np.ndarray
    cost_usd: np.ndarray  # NaN for calls without a cost
    error: np.ndarray
    cache_hit: np.ndarray
    service: np.ndarray  # index into SERVICES
    model: np.ndarray  # index into MODELS

    def __len__(self) -> int:
        return len(self.start_ms)


def synthetic_requests(n: int, *, end_ms: float, days: float = 7.0, seed: int = 7) -> Requests:
    """`n` calls that started in the `days` before `end_ms` (epoch ms), oldest first, drawn from `seed`."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"synthetic_requests: n must be an int >= 1, got {n!r}")
    if not days > 0:
        raise ValueError(f"synthetic_requests: days must be > 0, got {days!r}")
    rng = np.random.default_rng(seed)
    start = np.sort(end_ms - rng.random(n) * days * DAY_MS)
    # Whole microseconds, as a clock gives them: every time and sum below is then exact in a float.
    start = np.floor(start * 1000.0) / 1000.0
    latency = np.round(rng.lognormal(6.5, 0.8, n), 3)
    streamed = rng.random(n) < 0.5
    ttft = np.where(streamed, np.round(latency * rng.uniform(0.05, 0.3, n), 3), np.nan)
    error = rng.random(n) < 0.03
    inputs = np.where(error, -1, rng.integers(20, 2000, n))
    outputs = np.where(error, -1, rng.integers(1, 400, n))
    cost = np.where(error, np.nan, inputs * 1e-7 + outputs * 2e-7)
    return Requests(
        start_ms=start, latency_ms=latency, ttft_ms=ttft, input_tokens=inputs, output_tokens=outputs,
        cost_usd=cost, error=error, cache_hit=(rng.random(n) < 0.1) & ~error,
        service=rng.integers(0, len(SERVICES), n), model=rng.integers(0, len(MODELS), n),
    )  # fmt: skip


def _key(name: str) -> str:
    return json.dumps(name)


# Attribute keys and fixed values as JSON text, for `_Call.attributes_json`.
_OPERATION = f"{_key(semconv.GEN_AI_OPERATION_NAME)}:{_key(semconv.OPERATION_CHAT)}"
_PROVIDER = f"{_key(semconv.GEN_AI_PROVIDER_NAME)}:{_key(semconv.PROVIDER_LLAMA_CPP)}"
_SERVER = f'{_key(semconv.SERVER_ADDRESS)}:"127.0.0.1",{_key(semconv.SERVER_PORT)}:8033'
(_REQUEST_MODEL, _CONVERSATION, _SESSION, _LATENCY, _CACHE_HIT, _STREAM, _TTFT, _ERROR_TYPE, _RESPONSE_MODEL,
 _INPUTS, _OUTPUTS, _PROMPT_MS, _PREDICTED_MS, _COST, _SERVICE_NAME) = (_key(name) for name in (
    semconv.GEN_AI_REQUEST_MODEL, semconv.GEN_AI_CONVERSATION_ID, semconv.SESSION_ID, semconv.OBS_LATENCY_MS,
    semconv.OBS_CACHE_HIT, semconv.GEN_AI_REQUEST_STREAM, semconv.OBS_TTFT_MS, semconv.ERROR_TYPE,
    semconv.GEN_AI_RESPONSE_MODEL, semconv.GEN_AI_USAGE_INPUT_TOKENS, semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
    semconv.LLAMA_CPP_TIMINGS_PROMPT_MS, semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS, semconv.OBS_COST_USD,
    semconv.SERVICE_NAME,
))  # fmt: skip


class _Call:
    """Call `i` (its values in `_columns` order) as Python values: its span's attributes and events.

    `attributes()` is the dict the span carries; `attributes_json()` the JSON
    text the store writes for it, made by hand because `json.dumps` is most
    of the cost of a row (the file test checks the two agree, as
    `SqliteTraceStore` writes them).
    """

    __slots__ = ("cache", "conversation", "cost", "end", "error", "inputs", "latency", "model", "outputs",
                 "service", "span_id", "start", "trace_id", "ttft")  # fmt: skip

    def __init__(self, i: int, values: tuple[Any, ...]) -> None:
        self.start, self.latency, ttft, inputs, outputs, cost, self.error, self.cache, service, model = values
        self.ttft = None if ttft != ttft else ttft  # NaN: not streamed
        self.inputs = None if inputs < 0 else inputs
        self.outputs = None if outputs < 0 else outputs
        self.cost = None if cost != cost else cost
        self.service, self.model = SERVICES[service], MODELS[model]
        self.end = self.start + self.latency
        self.trace_id, self.span_id = f"{i + 1:032x}", f"{i + 1:016x}"
        self.conversation = f"conv-{i // TURNS_PER_CONVERSATION:x}"

    @property
    def status(self) -> str:
        return "error" if self.error else "success"

    def attributes(self) -> dict[str, Any]:
        """The span's attributes, as the instrumented client records them."""
        attrs: dict[str, Any] = {
            semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_CHAT,
            semconv.GEN_AI_PROVIDER_NAME: semconv.PROVIDER_LLAMA_CPP,
            semconv.GEN_AI_REQUEST_MODEL: self.model,
            semconv.SERVER_ADDRESS: "127.0.0.1",
            semconv.SERVER_PORT: 8033,
            semconv.GEN_AI_CONVERSATION_ID: self.conversation,
            semconv.SESSION_ID: self.conversation,
            semconv.OBS_LATENCY_MS: self.latency,
            semconv.OBS_CACHE_HIT: bool(self.cache),
        }
        if self.ttft is not None:
            attrs[semconv.GEN_AI_REQUEST_STREAM] = True
            attrs[semconv.OBS_TTFT_MS] = self.ttft
        if self.error:
            attrs[semconv.ERROR_TYPE] = "ServerError"
        else:
            attrs[semconv.GEN_AI_RESPONSE_MODEL] = self.model
            attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] = self.inputs
            attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = self.outputs
            attrs[semconv.LLAMA_CPP_TIMINGS_PROMPT_MS] = self.latency * 0.25
            attrs[semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS] = self.latency * 0.5
            attrs[semconv.OBS_COST_USD] = self.cost
        return attrs

    def attributes_json(self) -> str:
        """`json.dumps(self.attributes(), separators=(",", ":"))`, written out (floats as `repr`, as json)."""
        text = (f'{{{_OPERATION},{_PROVIDER},{_REQUEST_MODEL}:"{self.model}",{_SERVER},'
                f'{_CONVERSATION}:"{self.conversation}",{_SESSION}:"{self.conversation}",'
                f'{_LATENCY}:{self.latency!r},{_CACHE_HIT}:{"true" if self.cache else "false"}')  # fmt: skip
        if self.ttft is not None:
            text += f",{_STREAM}:true,{_TTFT}:{self.ttft!r}"
        if self.error:
            return text + f',{_ERROR_TYPE}:"ServerError"}}'
        return text + (f',{_RESPONSE_MODEL}:"{self.model}",{_INPUTS}:{self.inputs},{_OUTPUTS}:{self.outputs},'
                       f"{_PROMPT_MS}:{self.latency * 0.25!r},{_PREDICTED_MS}:{self.latency * 0.5!r},"
                       f"{_COST}:{self.cost!r}}}")  # fmt: skip

    def events(self) -> list[tuple[str, float]]:
        """The span's events: (name, time)."""
        events = [(semconv.EVENT_REQUEST_START, self.start)]
        if self.ttft is not None:
            events.append((semconv.EVENT_FIRST_TOKEN, self.start + self.ttft))
        events.append((semconv.EVENT_RESPONSE_RECEIVED, self.end))
        return events


def _columns(requests: Requests, part: slice) -> tuple[list[Any], ...]:
    r = requests
    return (
        r.start_ms[part].tolist(), r.latency_ms[part].tolist(), r.ttft_ms[part].tolist(),
        r.input_tokens[part].tolist(), r.output_tokens[part].tolist(), r.cost_usd[part].tolist(),
        r.error[part].tolist(), r.cache_hit[part].tolist(), r.service[part].tolist(), r.model[part].tolist(),
    )  # fmt: skip


def _call(requests: Requests, i: int) -> _Call:
    return _Call(i, tuple(column[0] for column in _columns(requests, slice(i, i + 1))))


def trace_at(requests: Requests, i: int) -> Trace:
    """The Trace the instrumented client records for call `i`: one client span, in a trace of its own."""
    call = _call(requests, i)
    events = tuple(SpanEvent(name, at) for name, at in call.events())
    span = Span(call.span_id, call.trace_id, None, f"chat {call.model}", call.start, call.end, call.latency,
                call.status, call.attributes(), events, "client")  # type: ignore[arg-type]  # fmt: skip
    return Trace(call.trace_id, span.name, call.start, call.end, call.latency, call.status,
                 {semconv.SERVICE_NAME: call.service}, (span,))  # type: ignore[arg-type]  # fmt: skip


def _rows(call: _Call) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    name = f"chat {call.model}"
    status = call.status
    start, end, latency = call.start, call.end, call.latency
    header = (f'{{"id":"{call.trace_id}","name":"{name}","start_time":{start!r},"end_time":{end!r},'
              f'"duration":{latency!r},"status":"{status}",'
              f'"metadata":{{{_SERVICE_NAME}:"{call.service}"}}}}')  # fmt: skip
    units = None if call.cost is None else round(call.cost * COST_UNITS_PER_USD)
    trace_row = (
        call.trace_id, name, start, end, latency, status, header, call.service, call.conversation, call.model,
        1, 1, call.inputs or 0, call.outputs or 0, units or 0, None, None,
    )  # fmt: skip
    server = None if call.error else latency * 0.25 + latency * 0.5
    minute = minute_of(start)
    events = ",".join(f'{{"name":"{n}","timestamp":{at!r},"attributes":{{}}}}' for n, at in call.events())
    span_row = (
        call.trace_id, 0, call.span_id, None, name, "client", start, end, latency, status, call.service,
        call.model, call.conversation, 1, int(call.error), call.inputs, call.outputs, call.cost, units,
        call.ttft, latency, server, int(call.cache), minute, hour_of(minute), bin_of(latency),
        bin_of(call.ttft), call.attributes_json(), f"[{events}]", None,
    )  # fmt: skip
    return trace_row, span_row


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _add_rollups(conn: sqlite3.Connection) -> None:
    """What the trigger on inserted request spans adds, for all the spans at once: sums per minute and per
    hour, service and model, latency and TTFT bins per hour (and service and model), the request count."""
    dims = "COALESCE(service, ''), COALESCE(model, '')"
    requests = "FROM spans WHERE request = 1"
    for table, key in (("rollup", "minute"), ("rollup_hour", "hour")):
        conn.execute(f"INSERT INTO {table} ({key}, service, model, {', '.join(SUM_COLUMNS)}) "
                     f"SELECT {key}, {dims}, {SPAN_SUMS} {requests} GROUP BY 1, 2, 3")  # fmt: skip
    for metric, column in ((0, "latency_bin"), (1, "ttft_bin")):
        where = f"{requests} AND {column} IS NOT NULL"
        conn.execute(f"INSERT INTO hour_bins (hour, service, model, metric, bin, n) SELECT hour, {dims}, "
                     f"{metric}, {column}, COUNT(*) {where} GROUP BY 1, 2, 3, 5")  # fmt: skip
        conn.execute(f"INSERT INTO hour_bins_all (hour, metric, bin, n) "
                     f"SELECT hour, {metric}, {column}, COUNT(*) {where} GROUP BY 1, 3")  # fmt: skip
    conn.execute("UPDATE counters SET n = n + (SELECT COUNT(*) FROM spans WHERE request = 1) "
                 "WHERE name = 'requests'")  # fmt: skip


def write_store(path: str | os.PathLike[str], requests: Requests) -> None:
    """A new history file at `path` holding one trace per call of `requests`, kept with no retention limit.

    The file is made by `SqliteTraceStore` (its schema and triggers); the rows
    go in through one connection of this function with the journal off, so
    a crash leaves a broken file: only for files made to be measured. The
    indexes of traces and spans are made again, and the request rollups
    summed, once all the rows are in (sorting and grouping once is faster
    than growing them row by row); the trigger that adds each request span
    to the rollups stands aside meanwhile and is made again after.
    """
    with SqliteTraceStore(path) as store:
        store.set_retention(RetentionPolicy(max_age_s=None, max_traces=None, max_log_entries=None))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MB: the indexes stay in memory while they grow
        later = conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND tbl_name = 'spans' "
            "AND (type = 'index' OR (type = 'trigger' AND sql LIKE '%AFTER INSERT ON spans%')) "
            "UNION ALL SELECT type, name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            "AND tbl_name = 'traces'"
        ).fetchall()
        for kind, name, _ in later:
            conn.execute(f'DROP {kind.upper()} "{name}"')
        add_trace, add_span = _insert("traces", TRACE_WRITTEN), _insert("spans", SPAN_WRITTEN)
        for first in range(0, len(requests), _BATCH):
            part = slice(first, min(first + _BATCH, len(requests)))
            values = zip(*_columns(requests, part), strict=True)
            rows = [_rows(_Call(i, one)) for i, one in enumerate(values, first)]
            conn.execute("BEGIN")
            conn.executemany(add_trace, [trace_row for trace_row, _ in rows])
            conn.executemany(add_span, [span_row for _, span_row in rows])
            conn.execute("COMMIT")
        conn.execute("BEGIN")
        _add_rollups(conn)
        for _, _, sql in later:
            conn.execute(sql)
        conn.execute("COMMIT")
    finally:
        conn.close()
    SqliteTraceStore(path).close()  # back in WAL mode, as the store keeps its files


def frame(requests: Requests) -> pd.DataFrame:
    """The calls as one pandas row each, for checks: start_ms (epoch ms), latency_ms, ttft_ms (NaN when not
    streamed), input_tokens and output_tokens (0 without usage), cost_units (picodollars, as stored: 0
    without a cost), error, cache_hit, service, model, conversation and trace_id."""
    costs = requests.cost_usd.tolist()
    units = [0 if math.isnan(cost) else round(cost * COST_UNITS_PER_USD) for cost in costs]
    n = len(requests)
    return pd.DataFrame({
        "start_ms": requests.start_ms, "latency_ms": requests.latency_ms, "ttft_ms": requests.ttft_ms,
        "input_tokens": np.where(requests.input_tokens < 0, 0, requests.input_tokens),
        "output_tokens": np.where(requests.output_tokens < 0, 0, requests.output_tokens),
        "cost_units": np.array(units, dtype=np.int64), "error": requests.error,
        "cache_hit": requests.cache_hit,
        "service": np.array(SERVICES)[requests.service], "model": np.array(MODELS)[requests.model],
        "conversation": [f"conv-{i // TURNS_PER_CONVERSATION:x}" for i in range(n)],
        "trace_id": [f"{i + 1:032x}" for i in range(n)],
    })  # fmt: skip
