"""Alerting on the dashboard: rules from the sidebar settings, the Alerts page's tables, the banner.

The rules are obs's `default_rules()` with the thresholds (and, if set, the
minimum number of requests) chosen in the sidebar; each session's
`obs.alerting.manager.AlertManager` holds them, and one
`obs.alerting.evaluator.AlertEvaluator` per app process evaluates every
session's manager in the background, every `OBS_ALERT_INTERVAL_S` seconds
(default 5), whether a page is open or not; firing and resolving also go to
the webhook at `OBS_ALERT_WEBHOOK_URL`, when set. This module only derives
rules, chart lines and tables from those objects and formats their numbers
for people: every value shown comes from the manager's states and history.

Pure: no streamlit, no clock, no network (the banner itself is drawn by
`app.sidebar.render_alert_banner`; the environment is passed in), so
everything here is tested directly.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from app.charts import Threshold
from obs.alerting.evaluator import MAX_INTERVAL_S, MIN_INTERVAL_S
from obs.alerting.manager import AlertRule, AlertState, AlertTransition, default_rules

__all__ = [
    "CHART_OF_METRIC",
    "DEFAULT_INTERVAL_S",
    "ERROR_RATE_METRIC",
    "INTERVAL_ENV",
    "P95_LATENCY_METRIC",
    "WEBHOOK_ENV",
    "banner_text",
    "chart_thresholds",
    "dashboard_rules",
    "evaluation_text",
    "format_metric",
    "history_frame",
    "interval_from_env",
    "notification_text",
    "rules_frame",
    "states_frame",
    "webhook_url_from_env",
]

ERROR_RATE_METRIC = "error_rate"
P95_LATENCY_METRIC = "p95_latency_ms"
INTERVAL_ENV = "OBS_ALERT_INTERVAL_S"
WEBHOOK_ENV = "OBS_ALERT_WEBHOOK_URL"
DEFAULT_INTERVAL_S = 5.0

# Which dashboard chart (see AppSession.thresholds) shows a rule's threshold, by the rule's metric.
CHART_OF_METRIC: dict[str, str] = {
    "error_rate": "error_rate",
    "avg_latency_ms": "latency_ms",
    "p95_latency_ms": "latency_ms",
    "p99_latency_ms": "latency_ms",
    "p95_ttft_ms": "ttft_ms",
}

_METRIC_NAMES: dict[str, str] = {
    "error_rate": "error rate",
    "avg_latency_ms": "average latency",
    "p95_latency_ms": "p95 latency",
    "p99_latency_ms": "p99 latency",
    "p95_ttft_ms": "p95 time to first token",
    "cost_per_hour": "cost per hour",
    "tokens_per_second": "tokens per second",
    "requests_per_minute": "requests per minute",
}
_NA = "n/a"


def dashboard_rules(error_rate: float, p95_ms: float, min_requests: int | None = None) -> list[AlertRule]:
    """`default_rules()` with the error-rate threshold `error_rate` (a fraction) and p95 `p95_ms`.

    `min_requests`, when given, replaces every rule's minimum number of
    requests in the window; None keeps the defaults. Names, windows and the
    other fields stay as shipped, so a rule keeps its state in the manager
    when only its threshold changes. Raises ValueError for an error rate
    outside [0, 1] and for anything `AlertRule` refuses (it names the field).
    """
    if isinstance(error_rate, bool) or not isinstance(error_rate, int | float) or not (
        math.isfinite(error_rate) and 0.0 <= error_rate <= 1.0
    ):
        shown = f"{error_rate * 100:.4g}%" if isinstance(error_rate, int | float) else repr(error_rate)
        raise ValueError(f"alert error rate must be between 0% and 100%, got {shown}")
    rules = []
    for rule in default_rules():
        changes: dict[str, object] = {}
        if rule.metric == ERROR_RATE_METRIC:
            changes["threshold"] = float(error_rate)
        elif rule.metric == P95_LATENCY_METRIC:
            changes["threshold"] = p95_ms
        if min_requests is not None:
            changes["min_requests"] = min_requests
        rules.append(dataclasses.replace(rule, **changes))
    return rules


def interval_from_env(environ: Mapping[str, str]) -> float:
    """Seconds between background evaluations: `OBS_ALERT_INTERVAL_S`, or 5 when unset or blank.

    Raises ValueError naming the variable, its value and the accepted range
    for anything but a number of seconds from 0.05 to 86,400.
    """
    raw = environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and MIN_INTERVAL_S <= value <= MAX_INTERVAL_S):
        raise ValueError(f"{INTERVAL_ENV} must be a number of seconds from {MIN_INTERVAL_S:g} to "
                         f"{MAX_INTERVAL_S:,.0f}, got {raw!r}: set it to e.g. 5, or unset it for the "
                         f"default ({DEFAULT_INTERVAL_S:g} s)")
    return value


def webhook_url_from_env(environ: Mapping[str, str]) -> str | None:
    """The URL in `OBS_ALERT_WEBHOOK_URL` (firing and resolving are POSTed there), or None when unset.

    Not checked here: `obs.alerting.notifiers.WebhookNotifier` refuses a
    URL that is not http(s).
    """
    return environ.get(WEBHOOK_ENV, "").strip() or None


def evaluation_text(interval_s: float, last_pass_at: float | None, now: float) -> str:
    """What the Alerts page says about the background evaluation: how often, and when it last ran.

    `last_pass_at` (None before the first pass) and `now` are epoch seconds.
    """
    text = (f"Rules are evaluated in the background every {interval_s:g} s, whether a page is open or "
            "not.")
    if last_pass_at is None:
        return text + " The first evaluation is due within one interval."
    ago = max(0.0, now - last_pass_at)
    stamp = time.strftime("%H:%M:%S", time.gmtime(last_pass_at))
    return text + f" Last evaluated at {stamp} UTC ({ago:.0f} s ago)."


def notification_text(webhook_url: str | None, sent: int = 0, failures: int = 0,
                      last_error: str | None = None, problem: str | None = None) -> str:
    """Where firing and resolving go: the Logs page always, and the webhook (its shown URL) when set.

    `problem` says why a configured webhook is not in use; `sent`, `failures`
    and `last_error` come from the webhook notifier.
    """
    text = "Firing and resolving are written to the Logs page"
    if webhook_url is None:
        note = f" {problem}." if problem else f" Set {WEBHOOK_ENV} to have them POSTed as JSON as well."
        return text + "." + note
    text += f" and POSTed to {webhook_url} ({sent} sent, {failures} failed"
    text += f"; last failure: {last_error})." if failures and last_error else ")."
    return text


def format_metric(metric: str, value: float | None) -> str:
    """`value` of `metric` in its unit for people: 12.5%, 812 ms, $0.0300/h, 4.0 req/min; None is n/a."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _NA
    if metric == "error_rate":
        return f"{value:.1%}"
    if metric.endswith("_ms"):
        # Whole ms unless that would hide the difference of a small threshold (0.9 ms is not 1 ms).
        return f"{value:,.0f} ms" if value >= 10 or value == round(value) else f"{value:.1f} ms"
    if metric == "cost_per_hour":
        return f"${value:.4f}/h"
    if metric == "tokens_per_second":
        return f"{value:,.1f} tok/s"
    if metric == "requests_per_minute":
        return f"{value:,.1f} req/min"
    return f"{value:.4g}"


def _metric_name(metric: str) -> str:
    return _METRIC_NAMES.get(metric, metric)


def chart_thresholds(rules: Iterable[AlertRule]) -> dict[str, list[Threshold]]:
    """The threshold lines of `rules` by chart name ("latency_ms", "error_rate", "ttft_ms").

    A rule whose metric has no chart draws no line. Values stay in the
    metric's unit (ms, or a fraction for the error rate), as the charts expect.
    """
    lines: dict[str, list[Threshold]] = {}
    for rule in rules:
        chart = CHART_OF_METRIC.get(rule.metric)
        if chart is None:
            continue
        label = f"{rule.name} {rule.op} {format_metric(rule.metric, rule.threshold)}"
        lines.setdefault(chart, []).append(Threshold(rule.threshold, label))
    return lines


def banner_text(state: AlertState) -> tuple[str, str]:
    """Plain-text headline and detail about a firing or pending rule: its name, value, condition, window.

    ("Alert firing: slow_p95_latency", "p95 latency is 812 ms, > 500 ms over
    the last 300 s (3 requests).")
    """
    rule = state.rule
    value = format_metric(rule.metric, state.value)
    threshold = format_metric(rule.metric, rule.threshold)
    requests = f"{state.request_count} request{'' if state.request_count == 1 else 's'}"
    head = f"Alert {'firing' if state.status == 'firing' else 'pending'}: {rule.name}"
    detail = (f"{_metric_name(rule.metric)} is {value}, {rule.op} {threshold} "
              f"over the last {rule.window_s:g} s ({requests})")
    if state.status == "pending":
        detail += f"; fires if it lasts {rule.for_s:g} s"
    return head, detail + "."


def _times(seconds: Sequence[float | None]) -> pd.Series:
    return pd.to_datetime(pd.Series([math.nan if s is None else s for s in seconds], dtype=float),
                          unit="s", utc=True)


def rules_frame(rules: Sequence[AlertRule]) -> pd.DataFrame:
    """One row per rule: name, metric, op, threshold and clears-at (in its unit), window, min requests,
    for, cooldown (seconds)."""
    return pd.DataFrame(
        {
            "name": [r.name for r in rules],
            "metric": [r.metric for r in rules],
            "op": [r.op for r in rules],
            "threshold": [format_metric(r.metric, r.threshold) for r in rules],
            "clears_at": [format_metric(r.metric, r.clear_threshold) for r in rules],
            "window_s": [r.window_s for r in rules],
            "min_requests": [r.min_requests for r in rules],
            "for_s": [r.for_s for r in rules],
            "cooldown_s": [r.cooldown_s for r in rules],
        },
        columns=["name", "metric", "op", "threshold", "clears_at", "window_s", "min_requests", "for_s",
                 "cooldown_s"],
    )


def states_frame(states: Sequence[AlertState]) -> pd.DataFrame:
    """One row per rule: name, status, value (in its unit; n/a with too few requests), since, requests."""
    return pd.DataFrame(
        {
            "name": [s.name for s in states],
            "status": [s.status for s in states],
            "value": [format_metric(s.rule.metric, s.value) for s in states],
            "since": _times([s.since for s in states]),
            "requests": [s.request_count for s in states],
            "evaluated_at": _times([s.evaluated_at for s in states]),
        },
        columns=["name", "status", "value", "since", "requests", "evaluated_at"],
    )


def history_frame(history: Sequence[AlertTransition]) -> pd.DataFrame:
    """One row per change of state, newest first: time, rule, from, to, value, condition, requests."""
    newest_first = list(reversed(history))
    return pd.DataFrame(
        {
            "time": _times([t.at for t in newest_first]),
            "rule": [t.rule for t in newest_first],
            "from_status": [t.from_status for t in newest_first],
            "to_status": [t.to_status for t in newest_first],
            "value": [format_metric(t.metric, t.value) for t in newest_first],
            "condition": [f"{t.metric} {t.op} {format_metric(t.metric, t.threshold)}" for t in newest_first],
            "requests": [t.request_count for t in newest_first],
        },
        columns=["time", "rule", "from_status", "to_status", "value", "condition", "requests"],
    )
