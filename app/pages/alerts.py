"""Alerts page: the session's alert rules, where each stands now, every change of state, and where
notifications go.

Rules, states and history come from the session's `obs.alerting.manager.AlertManager`
(`rules`, `states()`, `history`), which the process's alert evaluator
evaluates in the background whether a page is open or not: the page reads,
it never evaluates, so an alert that fired while no tab was open is here
when one opens. `app.alerting` only shapes them into tables. The thresholds
are set in the sidebar. The tables are a fragment that redraws itself at the
dashboard's refresh interval.
"""

from __future__ import annotations

import time

import streamlit as st

from app import alerting, sidebar, state
from app.state import AppSession
from obs.alerting.manager import WebhookNotifier

_STATUS_BADGES = {"ok": ":green-badge[ok]", "pending": ":orange-badge[pending]",
                  "firing": ":red-badge[firing]", "resolved": ":blue-badge[resolved]"}
_TIME = st.column_config.DatetimeColumn
_SECONDS = "%.0f s"


def _rules(app: AppSession) -> None:
    st.subheader("Rules")
    st.dataframe(
        alerting.rules_frame(app.alerts.rules), hide_index=True, key="alerts_rules",
        column_config={
            "name": "Name", "metric": "Metric", "op": "Op", "threshold": "Threshold",
            "clears_at": "Clears at",
            "window_s": st.column_config.NumberColumn("Window", format=_SECONDS),
            "min_requests": st.column_config.NumberColumn("Min requests"),
            "for_s": st.column_config.NumberColumn("For", format=_SECONDS),
            "cooldown_s": st.column_config.NumberColumn("Cooldown", format=_SECONDS),
        },
    )
    st.caption("Thresholds and the minimum number of requests are set in the sidebar. A rule fires once "
               "its value has breached the threshold for its 'For' time, and resolves once the value is "
               "back past 'Clears at'.")


def _states(app: AppSession) -> None:
    states = app.alert_states()
    evaluator = state.alert_evaluator()
    st.subheader("Current state")
    st.caption(alerting.evaluation_text(evaluator.interval_s, evaluator.last_pass_at, time.time()))
    st.markdown(" · ".join(f"{sidebar.md_escape(s.name)} {_STATUS_BADGES[s.status]}" for s in states))
    st.dataframe(
        alerting.states_frame(states), hide_index=True, key="alerts_states",
        column_config={
            "name": "Rule", "status": "Status", "value": "Value",
            "since": _TIME("Since (UTC)", format="HH:mm:ss"),
            "requests": st.column_config.NumberColumn("Requests in window"),
            "evaluated_at": _TIME("Evaluated (UTC)", format="HH:mm:ss"),
        },
    )


def _history(app: AppSession) -> None:
    history = app.alerts.history
    st.subheader("History")
    if not history:
        st.info("No rule has changed state yet.")
        return
    st.caption(f"{len(history)} change(s) of state, newest first.")
    st.dataframe(
        alerting.history_frame(history), hide_index=True, key="alerts_history",
        column_config={
            "time": _TIME("Time (UTC)", format="HH:mm:ss"), "rule": "Rule", "from_status": "From",
            "to_status": "To", "value": "Value", "condition": "Condition",
            "requests": st.column_config.NumberColumn("Requests in window"),
        },
    )


def _notifications(app: AppSession) -> None:
    st.subheader("Notifications")
    hook = next((n for n in app.alerts.notifiers if isinstance(n, WebhookNotifier)), None)
    if hook is None:
        text = alerting.notification_text(None, problem=state.alert_webhook()[1] or None)
    else:
        text = alerting.notification_text(hook.url, hook.sent, hook.failures, hook.last_error)
    st.caption(sidebar.md_escape(text))


def _panel(app: AppSession) -> None:
    _states(app)
    _history(app)
    _notifications(app)


def main() -> None:
    """Draw the page."""
    app = state.get_app()
    st.title("Alerts")
    _rules(app)
    interval = None if app.settings.paused else app.settings.refresh_s
    st.fragment(run_every=interval)(_panel)(app)


main()
