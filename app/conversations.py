"""Conversations as sessions: chat turns that share a conversation id, summed up per conversation.

Each chat turn is a trace of its own; the turns of one conversation carry
the same `gen_ai.conversation.id` (and `session.id`) on their spans. This
module groups traces by that id, for the Sessions page: `session_rows` makes
one row per conversation (the only place those numbers are computed, so a
SQL query can take its place), `session_turns` lists one conversation's
turns in order with what was asked and answered.

Pure: traces in, frames and values out; no streamlit import, no clock, no
I/O. Texts are read from the opt-in content attributes and returned as
they are: whoever draws them treats them as untrusted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from obs import semconv
from obs.dashboard import is_llm_span, requests_frame
from obs.metrics.quantiles import exact_quantile
from obs.storage.results import SessionSummary
from obs.trace.spans import Span
from obs.trace.traces import Trace, span_tree

__all__ = [
    "SESSION_COLUMNS", "SessionTurn", "conversation_of", "session_rows", "session_turns", "summary_rows",
]

# Column -> dtype of `session_rows`. Text columns are `object` so a missing value stays None.
_SCHEMA: dict[str, str] = {
    "conversation_id": "object",
    "first_message": "object",
    "turns": "int64",
    "prompt_tokens": "int64",
    "completion_tokens": "int64",
    "cost": "float64",
    "total_ms": "float64",
    "p95_ms": "float64",
    "errors": "int64",
    "models": "object",
    "started": "datetime64[ns, UTC]",
    "last_activity": "datetime64[ns, UTC]",
}
SESSION_COLUMNS: tuple[str, ...] = tuple(_SCHEMA)


@dataclass(frozen=True, slots=True)
class SessionTurn:
    """One turn of a conversation: its finished trace and what was asked and answered.

    `question` and `answer` are None when message contents were not recorded
    (content capture off); `answer` is what arrived before a failure when the
    turn broke off. `request` is the turn's last LLM request span (the one
    that answered), None if the turn made none; `error` is the message of the
    turn's first failed span, None if nothing failed.
    """

    trace: Trace
    question: str | None
    answer: str | None
    request: Span | None
    error: str | None


def conversation_of(trace: Trace) -> str | None:
    """The conversation of `trace`: the first `gen_ai.conversation.id` (else `session.id`) on its spans.

    Spans are read root first, in tree order; None when no span names one.
    """
    for key in (semconv.GEN_AI_CONVERSATION_ID, semconv.SESSION_ID):
        for node in span_tree(trace):
            value = node.span.attributes.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def session_turns(traces: Iterable[Trace], conversation_id: str) -> list[SessionTurn]:
    """The finished turns of conversation `conversation_id`, oldest first (by start time)."""
    turns = [t for t in traces if t.end_time is not None and conversation_of(t) == conversation_id]
    turns.sort(key=lambda t: t.start_time)
    return [_turn(trace) for trace in turns]


def session_rows(
    traces: Iterable[Trace], *, search: str = "", model: str | None = None, errors_only: bool = False
) -> pd.DataFrame:
    """One row per conversation among the finished `traces`, the most recently active first.

    Columns (`SESSION_COLUMNS`): conversation_id; first_message (the first
    turn's question, None if not recorded); turns; prompt_tokens and
    completion_tokens (summed over the turns' LLM requests); cost (summed,
    dollars); total_ms (the turns' durations added up) and p95_ms (their
    nearest-rank 95th percentile); errors (turns that failed); models (a
    sorted list of the models its requests named); started and
    last_activity (UTC: the first turn's start, the last turn's end).
    Traces without a conversation id are not sessions and are left out.

    Filters: `search` (case-insensitive) keeps conversations whose id, or any
    turn's question or answer, contains it; `model` keeps those a model of
    that name answered in; `errors_only` keeps those with a failed turn.
    """
    grouped: dict[str, list[Trace]] = {}
    for trace in traces:
        if trace.end_time is None:
            continue
        conversation = conversation_of(trace)
        if conversation is not None:
            grouped.setdefault(conversation, []).append(trace)
    needle = search.strip().lower()
    requests = requests_frame(t for turns in grouped.values() for t in turns)
    by_trace = {trace_id: rows for trace_id, rows in requests.groupby("trace_id", sort=False)}
    rows = []
    for conversation, turns in grouped.items():
        turns.sort(key=lambda t: t.start_time)
        details = [_turn(t) for t in turns]
        llm = [by_trace[t.id] for t in turns if t.id in by_trace]
        models = sorted({m for rows in llm for m in rows["model"] if isinstance(m, str) and m})
        if errors_only and not any(t.status == "error" for t in turns):
            continue
        if model and model not in models:
            continue
        if needle and not _mentions(conversation, details, needle):
            continue
        durations = [t.duration for t in turns if t.duration is not None]
        rows.append({
            "conversation_id": conversation,
            "first_message": details[0].question,
            "turns": len(turns),
            "prompt_tokens": sum(int(r["prompt_tokens"].sum()) for r in llm),
            "completion_tokens": sum(int(r["completion_tokens"].sum()) for r in llm),
            "cost": sum(float(r["cost"].sum()) for r in llm),
            "total_ms": sum(durations),
            "p95_ms": exact_quantile(durations, 0.95) if durations else math.nan,
            "errors": sum(1 for t in turns if t.status == "error"),
            "models": models,
            "started": turns[0].start_time,
            "last_activity": max(t.end_time for t in turns if t.end_time is not None),
        })
    rows.sort(key=lambda row: row["last_activity"], reverse=True)
    return _frame(rows)


def summary_rows(items: Iterable[SessionSummary]) -> pd.DataFrame:
    """The rows of `session_rows`, from the conversations the history file summed up (SQL, a page of them).

    Same columns; `models` holds the conversation's model as the file
    records it (its first request's), and a p95 of a conversation with no
    finished turn is NaN.
    """
    rows = [{
        "conversation_id": item.conversation_id,
        "first_message": item.first_message,
        "turns": item.turns,
        "prompt_tokens": item.input_tokens,
        "completion_tokens": item.output_tokens,
        "cost": item.cost,
        "total_ms": item.total_latency_ms,
        "p95_ms": item.p95_latency_ms if item.turns else math.nan,
        "errors": item.errors,
        "models": [item.model] if item.model else [],
        "started": item.first_at * 1000.0,
        "last_activity": item.last_activity * 1000.0,
    } for item in items]
    return _frame(rows)


def _frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    columns: dict[str, pd.Series] = {}
    for column, dtype in _SCHEMA.items():
        values = [row[column] for row in rows]
        if dtype.startswith("datetime"):
            times = pd.to_datetime(pd.Series(values, dtype="float64"), unit="ms", utc=True)
            columns[column] = times.astype(dtype)
        else:
            columns[column] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(columns, columns=list(_SCHEMA))


def _mentions(conversation: str, turns: Sequence[SessionTurn], needle: str) -> bool:
    texts = [conversation, *(t.question or "" for t in turns), *(t.answer or "" for t in turns)]
    return any(needle in text.lower() for text in texts)


def _turn(trace: Trace) -> SessionTurn:
    ordered = [node.span for node in span_tree(trace)]
    question = next((q for q in (_question(s) for s in ordered) if q is not None), None)
    requests = sorted((s for s in ordered if is_llm_span(s)), key=lambda s: s.start_time)
    request = requests[-1] if requests else None
    failed = next((s for s in ordered if s.status == "error"), None)
    error = None
    if failed is not None:
        message = failed.attributes.get(semconv.ERROR_MESSAGE)
        error = str(message) if message else f"{failed.name} failed"
    return SessionTurn(trace, question, _answer(request) if request else None, request, error)


def _messages(span: Span, key: str) -> list[Mapping[str, Any]]:
    raw = span.attributes.get(key)
    if not isinstance(raw, str):
        return []
    try:
        parsed = json.loads(raw)
    except ValueError:
        return []
    return [m for m in parsed if isinstance(m, Mapping)] if isinstance(parsed, list) else []


def _text(message: Mapping[str, Any]) -> str:
    parts = message.get("parts")
    if not isinstance(parts, list):
        return ""
    return "".join(
        str(p.get("content", "")) for p in parts if isinstance(p, Mapping) and p.get("type") == "text"
    )


def _question(span: Span) -> str | None:
    """The last user message of the span's `gen_ai.input.messages`, or None."""
    users = [m for m in _messages(span, semconv.GEN_AI_INPUT_MESSAGES) if m.get("role") == "user"]
    return _text(users[-1]) if users else None


def _answer(span: Span) -> str | None:
    """The answer's text from `gen_ai.output.messages`, else the partial output of a broken stream."""
    outputs = _messages(span, semconv.GEN_AI_OUTPUT_MESSAGES)
    if outputs:
        return _text(outputs[0])
    partial = span.attributes.get(semconv.OBS_PARTIAL_OUTPUT)
    return partial if isinstance(partial, str) else None
