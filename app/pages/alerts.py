"""Alerts page: the session's alert rules, where each stands now, and every change of state.

Rules, states and history come from the session's `obs.alerting.manager.AlertManager`
(`rules`, `evaluate()`, `history`); `app.alerting` only shapes them into
tables. The thresholds are set in the sidebar. The tables are a fragment that
re-evaluates and redraws itself at the dashboard's refresh interval.
"""

from __future__ import annotations

import streamlit as st

from app import alerting, sidebar, state
from app.state import AppSession

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
               "back past 'Clears at'. Firing and resolving are written to the Logs page.")


def _states(app: AppSession) -> None:
    states = app.evaluate_alerts()
    st.subheader("Current state")
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


def _panel(app: AppSession) -> None:
    _states(app)
    _history(app)


def main() -> None:
    """Draw the page."""
    app = state.get_app()
    st.title("Alerts")
    _rules(app)
    interval = None if app.settings.paused else app.settings.refresh_s
    st.fragment(run_every=interval)(_panel)(app)


main()
