"""Download buttons that hand traces to other tools: OTLP JSON, Jaeger's JSON and Zipkin v2 JSON.

`render(traces, name, key)` draws one button per format for the traces
given (the trace shown on the Traces page; a session's turns on the
Sessions page). Each file is what `python -m obs.export` writes for the same
traces: OTLP/JSON (an `ExportTraceServiceRequest`, which the OpenTelemetry
Collector and Jaeger's UI open), `{"data": [...]}` for Jaeger's UI, and the
span list Zipkin's UI opens. A trace that cannot be encoded disables its
buttons with the reason rather than breaking the page.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import streamlit as st

from app.conversations import conversation_of
from obs.export.jaeger import to_jaeger
from obs.export.otlp import to_otlp_json
from obs.export.zipkin import to_zipkin
from obs.trace.traces import Trace

__all__ = ["FORMATS", "encode", "render", "render_session"]

_log = logging.getLogger(__name__)

# (format, button label, encoder)
FORMATS: tuple[tuple[str, str, Callable[[Sequence[Trace]], Any]], ...] = (
    ("otlp-json", "OTLP JSON", to_otlp_json),
    ("jaeger", "Jaeger", to_jaeger),
    ("zipkin", "Zipkin", to_zipkin),
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def encode(traces: Sequence[Trace], format: str) -> str:
    """`traces` as the JSON text of `format` ("otlp-json", "jaeger" or "zipkin"); ValueError for another."""
    for name, _, encoder in FORMATS:
        if name == format:
            return json.dumps(encoder(list(traces)), ensure_ascii=False, allow_nan=False,
                              separators=(",", ":"))
    raise ValueError(f"format must be one of {[f[0] for f in FORMATS]}, got {format!r}")


def render(traces: Iterable[Trace], name: str, key: str) -> None:
    """Draw "Download as" buttons (OTLP JSON, Jaeger, Zipkin) for `traces`; files are `<name>.<format>.json`.

    `key` tells these buttons apart from others on the page. Nothing is
    drawn for no traces; an encoding failure is shown, never raised.
    """
    traces = list(traces)
    if not traces:
        return
    stem = _UNSAFE.sub("-", name).strip("-") or "traces"
    columns = st.columns([1.2, 1, 1, 1, 2], vertical_alignment="center")
    columns[0].caption(f"Download {len(traces)} trace(s) as")
    for column, (format, label, _) in zip(columns[1:], FORMATS, strict=False):
        try:
            data, problem = encode(traces, format), ""
        except Exception as exc:  # a trace another tool cannot take must not break the page
            _log.exception("encoding %d trace(s) as %s failed", len(traces), format)
            data, problem = "", f"cannot encode as {label}: {exc}"
        column.download_button(
            label, data, file_name=f"{stem}.{format}.json", mime="application/json",
            icon=":material/download:", key=f"download_{key}_{format}", disabled=bool(problem),
            help=problem or f"The {label} JSON file another tool opens",
        )


def render_session(traces: Iterable[Trace], conversation_id: str) -> None:
    """Draw the download buttons for the turns of one conversation among `traces`, in start order."""
    turns = sorted((t for t in traces if conversation_of(t) == conversation_id), key=lambda t: t.start_time)
    render(turns, f"session-{conversation_id}", key="session")
