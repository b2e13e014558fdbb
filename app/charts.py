"""Chart builders for the dashboard: frames from `obs.dashboard` in, Plotly figures out.

Every function here is pure: it reads the DataFrame (or trace) it is given and
returns a new `plotly.graph_objects.Figure`; nothing imports streamlit, reads a
clock or touches the network, so each chart is tested without a browser.

The frames follow `obs.dashboard.generate_dashboard_data`: `requests` has one row
per LLM request (time, latency_ms, ttft_ms, tokens, cost, llama.cpp timings),
`timeline` one row per time bucket of the collector. Charts only reshape those
numbers for display (cumulative sums, per-bucket ratios, per-second rates);
the numbers themselves come from obs.

Threshold lines (alert settings) are passed in as `Threshold` values and drawn
as dashed horizontal lines in the unit of the chart's y axis. Tables drawn as
they are (the waterfall's rows, the cost of each model) are shaped here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.basedatatypes import BaseTraceType

from obs.trace.traces import Trace, span_tree

if TYPE_CHECKING:
    from obs.metrics._pricing import ModelCost

__all__ = [
    "COST_COLUMNS",
    "STATUS_COLORS",
    "WEBGL_POINTS",
    "Threshold",
    "cost_by_model_frame",
    "cumulative_cost",
    "error_rate_over_time",
    "latency_breakdown",
    "latency_histogram",
    "latency_over_time",
    "sampling_over_time",
    "throughput_over_time",
    "tokens_per_request",
    "ttft_distribution",
    "waterfall",
    "waterfall_frame",
]

STATUS_COLORS: dict[str, str] = {"success": "#16a34a", "error": "#dc2626", "running": "#9ca3af"}
_BREACH_COLOR = "#f59e0b"
_PROMPT_COLOR = "#6366f1"
_COMPLETION_COLOR = "#14b8a6"
_OTHER_COLOR = "#9ca3af"
_HEIGHT = 320
_WATERFALL_INDENT = "\u00a0\u00a0\u00a0"  # plotly trims plain spaces from tick labels
COST_COLUMNS = ["model", "requests", "cost", "priced_by", "unpriced", "server_s"]
_PRICED_BY = {"tokens": "tokens", "compute": "server time", "free": "free", "cache": "response cache",
              "unknown": "server time (no timings)", "mixed": "mixed (the prices changed)"}
_NO_MODEL = "(no model)"
# Plotly's own "plotly_white" template, loaded (and checked) once: see `_white`.
_TEMPLATE = pio.templates["plotly_white"]
# Beyond this many points a scatter is drawn with WebGL (one canvas), not one SVG element per point.
WEBGL_POINTS = 1000


@dataclass(frozen=True, slots=True)
class Threshold:
    """A horizontal reference line on a chart, e.g. an alert rule's threshold.

    `value` is in the unit of the chart's y axis (ms for latency charts, a
    fraction 0..1 for the error-rate chart). Points above the lowest threshold
    of a latency chart are drawn in the breach colour.
    """

    value: float
    label: str
    color: str = "#dc2626"


def _white(fig: go.Figure) -> None:
    """Give `fig` the "plotly_white" look.

    A template named in `update_layout` is copied and checked property by
    property on every figure (about 25 ms each, most of a dashboard
    refresh); this one was checked when Plotly loaded it, so it is set the
    way Plotly sets its default template on a new figure: unchecked.
    """
    layout = fig.layout
    layout._validate = False
    try:
        layout.template = _TEMPLATE
    finally:
        layout._validate = True


_Line = tuple[dict[str, object], dict[str, object]]  # a shape and its label, as Plotly's layout holds them


def _figure(traces: Sequence[BaseTraceType], title: str, *, x_title: str | None = None,
            y_title: str | None = None, height: int = _HEIGHT, layout: Mapping[str, object] | None = None,
            lines: Sequence[_Line] = ()) -> go.Figure:
    """A figure of `traces` with the dashboard's layout, `layout`'s settings and `lines` (shape, label) on it.

    The whole layout goes to the constructor at once: Plotly checks it there
    in a few ms, where each `update_layout`, `update_xaxes` or `add_hline`
    takes 5 to 20 ms, and a dashboard draws eight figures per refresh.
    """
    full: dict[str, object] = {
        "title": {"text": title, "x": 0.0, "xanchor": "left"},
        "height": height,
        "margin": {"l": 10, "r": 10, "t": 50, "b": 10},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        **(layout or {}),
    }
    for axis, text in (("xaxis", x_title), ("yaxis", y_title)):
        if text is not None:
            full[axis] = {**full.get(axis, {}), "title": {"text": text}}  # type: ignore[dict-item]
    if lines:
        full["shapes"] = [shape for shape, _ in lines]
        full["annotations"] = [label for _, label in lines]
    fig = go.Figure(list(traces), layout=full)
    _white(fig)
    return fig


def _hline(y: float, dash: str, color: str, text: str, where: str) -> _Line:
    """What `Figure.add_hline(y, annotation_position=where)` adds: a line across the plot and its label
    ("top left" or "bottom right")."""
    vertical, horizontal = where.split()
    shape = {"type": "line", "x0": 0, "x1": 1, "xref": "x domain", "y0": y, "y1": y, "yref": "y",
             "line": {"color": color, "dash": dash}}  # fmt: skip
    label = {"showarrow": False, "text": text, "x": 0 if horizontal == "left" else 1, "xanchor": horizontal,
             "xref": "x domain", "y": y, "yanchor": "bottom" if vertical == "top" else "top",
             "yref": "y"}  # fmt: skip
    return shape, label


def _vline(x: float, dash: str, color: str, text: str) -> _Line:
    """What `Figure.add_vline(x, annotation_text=text)` adds: a line up the plot, labelled top right."""
    shape = {"type": "line", "x0": x, "x1": x, "xref": "x", "y0": 0, "y1": 1, "yref": "y domain",
             "line": {"color": color, "dash": dash}}  # fmt: skip
    label = {"showarrow": False, "text": text, "x": x, "xanchor": "left", "xref": "x", "y": 1,
             "yanchor": "top", "yref": "y domain"}  # fmt: skip
    return shape, label


def _empty(title: str, message: str = "No requests yet") -> go.Figure:
    note = {"text": message, "showarrow": False, "x": 0.5, "y": 0.5, "xref": "paper", "yref": "paper",
            "font": {"size": 14, "color": "#6b7280"}}  # fmt: skip
    return _figure([], title, layout={"annotations": [note], "xaxis": {"visible": False},
                                      "yaxis": {"visible": False}})  # fmt: skip


def _thresholds(thresholds: Sequence[Threshold]) -> list[_Line]:
    return [_hline(t.value, "dash", t.color, t.label, "top left") for t in thresholds]


def _numbers(frame: pd.DataFrame, column: str) -> pd.Series:
    """Column as floats with missing values as NaN (absent column: all NaN)."""
    if column not in frame:
        return pd.Series([float("nan")] * len(frame), index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def _request_numbers(requests: pd.DataFrame) -> list[int]:
    return list(range(1, len(requests) + 1))


def latency_over_time(
    requests: pd.DataFrame,
    percentiles: Mapping[str, float] | None = None,
    thresholds: Sequence[Threshold] = (),
) -> go.Figure:
    """Each request's latency (ms) at its time, coloured by status, with p50/p95 lines.

    `percentiles` is `DashboardData.percentiles` ('p50', 'p95', ... in ms); its
    p50 and p95 are drawn as dotted lines. With `thresholds`, successful
    requests slower than the lowest threshold are drawn in the breach colour.
    More than `WEBGL_POINTS` requests are drawn with WebGL (`scattergl`),
    and more than 200 with smaller markers.
    """
    title = "Latency per request"
    if requests.empty:
        return _empty(title)
    latency = _numbers(requests, "latency_ms")
    status = requests["status"].astype(str) if "status" in requests else pd.Series("success",
                                                                                    index=requests.index)
    limit = min((t.value for t in thresholds), default=None)
    groups: list[tuple[str, pd.Series, str]] = []
    if limit is not None:
        breached = (latency > limit) & (status != "error")
        groups.append(("breached", breached, _BREACH_COLOR))
        groups.append(("success", (status != "error") & ~breached, STATUS_COLORS["success"]))
    else:
        groups.append(("success", status != "error", STATUS_COLORS["success"]))
    groups.append(("error", status == "error", STATUS_COLORS["error"]))
    scatter = go.Scattergl if len(requests) > WEBGL_POINTS else go.Scatter
    traces = []
    for name, mask, color in groups:
        if not mask.any():
            continue
        part = requests[mask]
        traces.append(scatter(
            x=part["time"], y=latency[mask], mode="markers", name=name,
            marker={"color": color, "size": 5 if len(requests) > 200 else 9},
            customdata=part.get("trace_id"),
            hovertemplate="%{y:.0f} ms<br>trace %{customdata}<extra></extra>",
        ))
    lines = []
    for key, dash in (("p50", "dot"), ("p95", "dashdot")):
        value = (percentiles or {}).get(key)
        if value:
            lines.append(_hline(value, dash, "#4f46e5", f"{key} {value:.0f} ms", "bottom right"))
    return _figure(traces, title, y_title="latency (ms)", lines=[*lines, *_thresholds(thresholds)])


def latency_histogram(histogram: pd.DataFrame) -> go.Figure:
    """Bars of request counts per latency bucket (`bucket`, `count` columns, in order)."""
    title = "Latency distribution"
    if histogram.empty or int(_numbers(histogram, "count").fillna(0).sum()) == 0:
        return _empty(title)
    bars = go.Bar(x=histogram["bucket"].astype(str), y=histogram["count"], marker_color=_PROMPT_COLOR,
                  name="requests")
    return _figure([bars], title, x_title="latency", y_title="requests",
                   layout={"xaxis": {"type": "category"}})


def throughput_over_time(timeline: pd.DataFrame, bucket_s: float = 1.0) -> go.Figure:
    """Requests per second (bars) and generated tokens per second (line) per time bucket.

    `timeline` is the collector's time series with buckets `bucket_s` seconds
    wide; counts are divided by the bucket width to give rates.
    """
    title = "Throughput"
    if timeline.empty:
        return _empty(title)
    if not bucket_s > 0:
        raise ValueError(f"throughput_over_time: bucket_s must be > 0, got {bucket_s!r}")
    # Bars as wide as their bucket (ms on a date axis), not stretched across the gaps between buckets.
    bars = go.Bar(x=timeline["time"], y=_numbers(timeline, "requests") / bucket_s, width=bucket_s * 1000.0,
                  offset=0, name="requests/s", marker_color=_PROMPT_COLOR, opacity=0.7)
    line = go.Scatter(x=timeline["time"], y=_numbers(timeline, "completion_tokens") / bucket_s, yaxis="y2",
                      name="tokens/s", mode="lines+markers", line={"color": _COMPLETION_COLOR})
    # The layout plotly.subplots.make_subplots(specs=[[{"secondary_y": True}]]) makes, without its cost.
    return _figure([bars, line], title, layout={
        "xaxis": {"anchor": "y", "domain": [0.0, 0.94]},
        "yaxis": {"anchor": "x", "domain": [0.0, 1.0], "title": {"text": "requests/s"},
                  "rangemode": "tozero"},
        "yaxis2": {"anchor": "x", "overlaying": "y", "side": "right", "title": {"text": "generated tokens/s"},
                   "rangemode": "tozero"},
    })  # fmt: skip


def _cost_text(cost: ModelCost) -> str:
    # A model priced at zero is "free", and one whose cost could not be worked out is "unknown":
    # neither is ever a bare $0 that reads like either.
    if cost.pricing in ("free", "unknown"):
        return cost.pricing
    if cost.cost_usd == 0:
        return "$0"
    return f"${cost.cost_usd:.1e}" if cost.cost_usd < 1e-6 else f"${cost.cost_usd:,.6f}"


def cost_by_model_frame(costs: Mapping[str | None, ModelCost]) -> pd.DataFrame:
    """One row per model of `MetricsCollector.cost_by_model()`, the most expensive first, as people read it.

    Columns `COST_COLUMNS`: model ("(no model)" for requests without one),
    requests, cost ("free" for a model priced at zero, "unknown" when no
    request could be priced, else dollars), priced_by ("tokens", "server
    time", "free", "response cache", "server time (no timings)", "mixed (the
    prices changed)"), unpriced (requests priced by server time that reported
    none, counted as $0) and server_s (the server time the requests reported).
    """
    rows = [
        {
            "model": _NO_MODEL if model is None else model,
            "requests": cost.requests,
            "cost": _cost_text(cost),
            "priced_by": _PRICED_BY.get(cost.pricing, cost.pricing),
            "unpriced": int(cost.by_pricing.get("unknown", 0)),
            "server_s": round(cost.server_ms / 1000.0, 3),
            "_usd": cost.cost_usd,
        }
        for model, cost in costs.items()
    ]
    rows.sort(key=lambda row: -row["_usd"])  # stable: equal costs keep the order models were first seen
    return pd.DataFrame([{k: row[k] for k in COST_COLUMNS} for row in rows], columns=COST_COLUMNS)


def cumulative_cost(requests: pd.DataFrame) -> go.Figure:
    """Running total of the requests' cost in dollars over time, as a step line."""
    title = "Cumulative cost"
    if requests.empty:
        return _empty(title)
    total = _numbers(requests, "cost").fillna(0.0).cumsum()
    line = go.Scatter(x=requests["time"], y=total, mode="lines+markers", line_shape="hv", name="cost",
                      line={"color": _PROMPT_COLOR}, hovertemplate="$%{y:.6f}<extra></extra>")
    # Plotly's default SI suffixes read "$150µ" for local-model cents; plain decimals instead.
    peak = float(total.max()) if len(total) else 0.0
    digits = 6 if peak < 0.01 else 4 if peak < 10 else 2
    return _figure([line], title, y_title="dollars", layout={
        "yaxis": {"tickprefix": "$", "tickformat": f",.{digits}f", "rangemode": "tozero"}})


def tokens_per_request(requests: pd.DataFrame) -> go.Figure:
    """Prompt and completion tokens of each request as stacked bars (request 1 = oldest)."""
    title = "Tokens per request"
    if requests.empty:
        return _empty(title)
    x = _request_numbers(requests)
    bars = [go.Bar(x=x, y=_numbers(requests, "prompt_tokens"), name="prompt", marker_color=_PROMPT_COLOR),
            go.Bar(x=x, y=_numbers(requests, "completion_tokens"), name="completion",
                   marker_color=_COMPLETION_COLOR)]  # fmt: skip
    return _figure(bars, title, x_title="request", y_title="tokens", layout={"barmode": "stack"})


def ttft_distribution(requests: pd.DataFrame, thresholds: Sequence[Threshold] = ()) -> go.Figure:
    """Histogram of time to first token (ms) over the requests that measured it.

    Thresholds are drawn as vertical lines, since the ms axis is horizontal here.
    """
    title = "Time to first token"
    ttft = _numbers(requests, "ttft_ms").dropna() if not requests.empty else pd.Series(dtype=float)
    if ttft.empty:
        return _empty(title, "No streamed requests yet")
    bars = go.Histogram(x=ttft, name="requests", marker_color=_COMPLETION_COLOR, nbinsx=20)
    lines = [_vline(t.value, "dash", t.color, t.label) for t in thresholds]
    return _figure([bars], title, x_title="time to first token (ms)", y_title="requests", lines=lines)


def error_rate_over_time(timeline: pd.DataFrame, thresholds: Sequence[Threshold] = ()) -> go.Figure:
    """Share of failed requests per time bucket (y axis in percent; buckets without requests left out).

    Threshold values are fractions (0.05 = 5%), like the collector's error rate.
    With `thresholds`, buckets above the lowest one are marked again in the
    breach colour (trace "above threshold").
    """
    title = "Error rate"
    requests = _numbers(timeline, "requests") if not timeline.empty else pd.Series(dtype=float)
    busy = requests > 0
    if timeline.empty or not busy.any():
        return _empty(title)
    times = timeline["time"][busy]
    rate = _numbers(timeline, "errors")[busy] / requests[busy]
    traces = [go.Scatter(x=times, y=rate, mode="lines+markers", name="error rate",
                         line={"color": STATUS_COLORS["error"]}, hovertemplate="%{y:.1%}<extra></extra>")]
    limit = min((t.value for t in thresholds), default=None)
    if limit is not None and (rate > limit).any():
        above = rate > limit
        traces.append(go.Scatter(x=times[above], y=rate[above], mode="markers", name="above threshold",
                                 marker={"color": _BREACH_COLOR, "size": 11,
                                         "line": {"color": STATUS_COLORS["error"], "width": 1}},
                                 hovertemplate="%{y:.1%} above the alert threshold<extra></extra>"))
    axis = {"tickformat": ".0%", "range": [0, max([1.0, *(t.value for t in thresholds)])]}
    return _figure(traces, title, y_title="errors / requests", layout={"yaxis": axis},
                   lines=_thresholds(thresholds))


def latency_breakdown(requests: pd.DataFrame) -> go.Figure:
    """Per request, stacked: prompt processing, generation and not-in-model time (ms).

    The split comes from llama.cpp's timings (`prompt_ms`, `predicted_ms`) and
    obs's `non_model_ms` (client latency minus both); requests without timings
    show no bar.
    """
    title = "Latency breakdown"
    if requests.empty:
        return _empty(title)
    x = _request_numbers(requests)
    bars = [
        go.Bar(x=x, y=_numbers(requests, column), name=name, marker_color=color)
        for column, name, color in (
            ("prompt_ms", "prompt processing", _PROMPT_COLOR),
            ("predicted_ms", "generation", _COMPLETION_COLOR),
            ("non_model_ms", "not in model", _OTHER_COLOR),
        )
    ]
    return _figure(bars, title, x_title="request", y_title="ms", layout={"barmode": "stack"})


def sampling_over_time(timeline: pd.DataFrame, bucket_s: float = 1.0) -> go.Figure:
    """Finished traces per time bucket: kept by head sampling, kept by tail rules, dropped (stacked bars),
    and the traces seen (their sum) as a mark on top of each stack.

    Bars are as wide as their bucket of `bucket_s` seconds; buckets in which
    no trace ended are left out.
    """
    title = "Traces kept and dropped"
    columns = ("traces_kept_head", "traces_kept_tail", "traces_dropped")
    if timeline.empty or all(_numbers(timeline, c).fillna(0).sum() == 0 for c in columns):
        return _empty(title, "No finished traces yet")
    if not bucket_s > 0:
        raise ValueError(f"sampling_over_time: bucket_s must be > 0, got {bucket_s!r}")
    counts = {column: _numbers(timeline, column).fillna(0) for column in columns}
    busy = sum(counts.values()) > 0
    times = timeline["time"][busy]
    traces: list[BaseTraceType] = []
    for column, name, color in zip(
        columns, ("kept (head)", "kept (tail)", "dropped"), (STATUS_COLORS["success"], _PROMPT_COLOR,
                                                             _OTHER_COLOR), strict=True,
    ):
        traces.append(go.Bar(x=times, y=counts[column][busy], name=name, marker_color=color,
                             width=bucket_s * 1000.0, offset=0))
    seen = sum(counts.values())[busy]
    # Marks, not a line: a line would suggest traces ended in the idle time between buckets.
    traces.append(go.Scatter(x=times + pd.Timedelta(seconds=bucket_s / 2), y=seen, name="seen",
                             mode="markers", marker={"color": "#111827", "symbol": "line-ew-open", "size": 16,
                                                     "line": {"width": 2}},
                             hovertemplate="%{y} seen<extra></extra>"))
    return _figure(traces, title, y_title="traces",
                   layout={"barmode": "stack", "yaxis": {"rangemode": "tozero"}})


_WATERFALL_COLUMNS = ["span_id", "parent_id", "name", "label", "depth", "start_ms", "duration_ms",
                      "status", "kind"]


def _plotly_text(text: str) -> str:
    # Plotly reads `<span style=...>`, `<a href=...>` and other tags in text as markup, and a style's
    # url(...) makes the browser fetch it; as entities, they show as the characters they are.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def waterfall_frame(trace: Trace) -> pd.DataFrame:
    """One row per span of `trace` in tree order (`obs.trace.traces.span_tree`), times relative to the trace.

    Columns: span_id, parent_id, name, label (name indented by depth), depth,
    start_ms (offset from the trace start), duration_ms (running spans: 0),
    status, kind.
    """
    rows = []
    for node in span_tree(trace):
        span = node.span
        rows.append({
            "span_id": span.id,
            "parent_id": span.parent_id,
            "name": span.name,
            "label": _WATERFALL_INDENT * node.depth + span.name,
            "depth": node.depth,
            "start_ms": span.start_time - trace.start_time,
            "duration_ms": span.duration or 0.0,
            "status": span.status,
            "kind": span.kind,
        })
    return pd.DataFrame(rows, columns=_WATERFALL_COLUMNS)


def waterfall(frame: pd.DataFrame, title: str = "Waterfall") -> go.Figure:
    """A span timeline from `waterfall_frame`: one bar per span, top to bottom in tree order.

    Bars start at the span's offset from the trace start and are coloured by
    status; labels are indented by depth. Span names are shown as plain text
    (`_plotly_text`): a name may come from a server or another program.
    """
    if frame.empty:
        return _empty(title, "This trace has no spans")
    # Very short spans get a sliver of width so they stay visible next to long ones.
    visible = max(0.5, float((frame["start_ms"] + frame["duration_ms"]).max()) * 0.004)
    bars = []
    for status, color in STATUS_COLORS.items():
        part = frame[frame["status"] == status]
        if part.empty:
            continue
        bars.append(go.Bar(
            y=part["span_id"], x=part["duration_ms"].clip(lower=visible), base=part["start_ms"],
            orientation="h", name=status, marker_color=color,
            customdata=list(zip(part["name"].map(_plotly_text), part["duration_ms"], part["start_ms"],
                                strict=True)),
            hovertemplate="%{customdata[0]}<br>%{customdata[1]:.1f} ms, starts at +%{customdata[2]:.1f} ms"
                          "<extra></extra>",
            text=[f"{d:.0f} ms" for d in part["duration_ms"]], textposition="auto",
        ))
    axis = {
        "categoryorder": "array", "categoryarray": list(frame["span_id"]), "autorange": "reversed",
        "tickmode": "array", "tickvals": list(frame["span_id"]),
        "ticktext": [_plotly_text(t) for t in frame["label"]],
    }  # fmt: skip
    height = 110 + 40 * len(frame)
    return _figure(bars, title, x_title="ms since trace start", height=height,
                   layout={"yaxis": axis, "xaxis": {"rangemode": "tozero"}})
