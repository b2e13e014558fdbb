"""The sidebar and the alert banner: what every page has around its own content.

The entry point (streamlit_app.py) draws them before running the page, so
each sidebar field is one widget on every page and keeps its value across
page switches. Every page shows the server connection and health, the
sampling and alert settings, and a banner while an alert rule fires; the
chat page adds the chat settings. Each input is a proposal: it is validated (by `app.backend` or by
the obs object that will use it) before it reaches `AppSession.settings`. A
bad value shows an inline error naming the value still in use, which stays
in force.
"""

from __future__ import annotations

import contextlib

import streamlit as st

from app import alerting, backend, state
from app.state import AppSession
from obs.storage.results import RetentionPolicy

__all__ = [
    "ALERT_CHECK_S",
    "HEALTH_EVERY_S",
    "md_escape",
    "render",
    "render_alert_banner",
    "render_chat_controls",
    "render_connection",
    "render_sampling_alert_controls",
]

HEALTH_EVERY_S = 5
ALERT_CHECK_S = 5
_HEALTH_TIMEOUT_S = 0.5
_BADGES = {"ok": ":green-badge[:material/check_circle: ok]",
           "loading": ":orange-badge[:material/hourglass_top: loading]",
           "unreachable": ":red-badge[:material/error: unreachable]"}
_MD_SPECIALS = "\\`*_{}[]()<>#+-.!|~:$"


def md_escape(text: str) -> str:
    """`text` with Markdown's special characters escaped, so it shows exactly as written."""
    return "".join("\\" + ch if ch in _MD_SPECIALS else ch for ch in text)


def render(app: AppSession, *, chat_controls: bool = False, alerts_link: bool = True) -> None:
    """Draw what every page has around its content: server, (chat settings,) sampling, alerts, banner.

    Call it from the entry point, not from a page: a widget drawn by a page is
    another widget on the next page, and its value would be lost.
    """
    render_connection(app)
    if chat_controls:
        render_chat_controls(app)
    render_sampling_alert_controls(app)
    render_history_settings()
    render_alert_banner(app, link=alerts_link)


def render_connection(app: AppSession) -> None:
    """Draw the server URL input, how the server was chosen, and its live health."""
    with st.sidebar:
        st.subheader("Server")
        state.init_widget(state.W_SERVER_URL, app.settings.server_url)
        proposed = st.text_input(
            "llama-server URL", key=state.W_SERVER_URL,
            help="Any OpenAI-compatible server; llama-server gives the most detail.",
        )
        try:
            url = backend.validate_server_url(proposed)
        except ValueError as exc:
            st.error(f"{exc}. Still using {app.settings.server_url}.", icon=":material/error:")
        else:
            app.update(server_url=url)
        if app.connection_note:
            st.caption(md_escape(app.connection_note))
        _health_panel(app.settings.server_url)


@st.fragment(run_every=HEALTH_EVERY_S)
def _health_panel(url: str) -> None:
    # A fragment: the check reruns on its own every few seconds without redrawing the page,
    # and its short timeout keeps an unreachable server from holding the page up.
    health = backend.check_health(url, timeout_s=_HEALTH_TIMEOUT_S)
    st.markdown(f"Health: {_BADGES[health.status]}")
    if health.status == "ok":
        facts = [
            f"Model: {md_escape(health.model or 'unknown')}",
            f"Context: {health.n_ctx if health.n_ctx is not None else 'unknown'} tokens",
            f"Build: {md_escape(health.build or 'unknown')}",
        ]
        st.caption("  \n".join(facts))
    else:
        st.caption(md_escape(health.detail))


_CHAT_KEYS = (state.W_SYSTEM_PROMPT, state.W_TEMPERATURE, state.W_MAX_TOKENS, state.W_PROMPT_PRICE,
              state.W_COMPLETION_PRICE, state.W_CAPTURE)


def render_chat_controls(app: AppSession) -> None:
    """Draw the chat settings: system prompt, sampling, prices (per 1K tokens, per hour of server time),
    content capture, new conversation.

    Each change is applied by a callback as well, which Streamlit runs at the
    start of the next run whatever page that run draws: a setting changed
    just before leaving the Chat page is kept, though the next page has no
    chat settings to apply it.
    """
    settings = app.settings
    apply = {"on_change": _chat_settings_changed, "args": (app,)}
    with st.sidebar:
        st.subheader("Chat settings")
        for key, value in zip(_CHAT_KEYS, (settings.system_prompt, settings.temperature, settings.max_tokens,
                                           settings.prompt_price, settings.completion_price,
                                           settings.capture_content), strict=True):
            state.init_widget(key, value)
        st.text_area("System prompt", key=state.W_SYSTEM_PROMPT, height=90, **apply)
        st.slider("Temperature", 0.0, 2.0, step=0.05, key=state.W_TEMPERATURE, **apply)
        st.number_input("Max tokens", min_value=1, max_value=8192, step=32, key=state.W_MAX_TOKENS, **apply)
        st.markdown("**Prices** (dollars per 1K tokens)")
        left, right = st.columns(2)
        left.number_input("Prompt", step=0.0005, format="%.4f", key=state.W_PROMPT_PRICE, **apply)
        right.number_input("Completion", step=0.0005, format="%.4f", key=state.W_COMPLETION_PRICE, **apply)
        # value=None makes an emptied field None (price by tokens); `value=<the price>` would bring the
        # price back instead, as Streamlit reads an empty field as the widget's default.
        state.init_widget(state.W_COMPUTE_PRICE, settings.compute_price)
        st.number_input("Compute ($ per hour of server time)", value=None, step=0.05, format="%.4f",
                        key=state.W_COMPUTE_PRICE, placeholder="off: price by tokens", **apply,
                        help="What an hour of your hardware costs. When set, every request is priced by the "
                             "time llama.cpp spent on it (prompt_ms + predicted_ms) instead of by tokens; "
                             "0 makes it free. Empty: price by tokens.")
        st.toggle("Capture message contents", key=state.W_CAPTURE, **apply,
                  help="Record prompts and answers on the spans (OpenTelemetry opt-in content).")
        try:
            _apply_chat_settings(app)
        except ValueError as exc:
            kept = app.settings
            compute = ("" if kept.compute_price is None
                       else f", and \\${kept.compute_price:.4f} per hour of server time")
            st.error(f"{exc}. Still using ${kept.prompt_price:.4f} / ${kept.completion_price:.4f}{compute}.",
                     icon=":material/error:")
        st.button("New conversation", icon=":material/add_comment:", on_click=app.new_conversation,
                  help="Start a new conversation: the next turns get a new conversation id "
                       "(each turn is its own trace). The turns so far stay on the Sessions page.",
                  width="stretch")


def _chat_settings_changed(app: AppSession) -> None:
    # A bad price keeps the last good prices; the sidebar says why when it draws the prices.
    with contextlib.suppress(ValueError):
        _apply_chat_settings(app)


def _apply_chat_settings(app: AppSession) -> None:
    # Reads the widgets' values from session state, so it works in a callback (before anything is
    # drawn) and after drawing alike. A bad price raises the collector's ValueError, changing no price.
    values = st.session_state
    settings = app.settings
    app.update(system_prompt=str(values.get(state.W_SYSTEM_PROMPT, settings.system_prompt)),
               temperature=float(values.get(state.W_TEMPERATURE, settings.temperature)),
               max_tokens=int(values.get(state.W_MAX_TOKENS, settings.max_tokens)),
               capture_content=bool(values.get(state.W_CAPTURE, settings.capture_content)))
    app.set_prices(values.get(state.W_PROMPT_PRICE, settings.prompt_price),
                   values.get(state.W_COMPLETION_PRICE, settings.completion_price))
    app.set_compute_price(values.get(state.W_COMPUTE_PRICE, settings.compute_price))


def render_sampling_alert_controls(app: AppSession) -> None:
    """Draw the sampling rate, tail-sampling toggles and alert thresholds, and apply the good values."""
    settings = app.settings
    # `value=` (the last good setting) only seeds a widget when it is first drawn: drawn by the
    # entry point, it stays the same widget on every page afterwards.
    with st.sidebar:
        st.subheader("Sampling & alerts")
        percent = st.slider(
            "Sampling rate", 0, 100, value=round(settings.sample_rate * 100), step=1, format="%d%%",
            key=state.W_SAMPLE_PCT,
            help="Share of new traces kept by head sampling (by trace id). Metrics count every request.",
        )
        keep_errors = st.toggle("Keep every error", value=settings.keep_errors, key=state.W_KEEP_ERRORS,
                                help="Tail sampling: keep a failed trace even if head sampling let it go.")
        keep_slow = st.toggle("Keep slow traces", value=settings.keep_slow, key=state.W_KEEP_SLOW,
                              help="Tail sampling: keep a trace lasting at least the threshold below.")
        slow_ms = st.number_input("Slow from (ms)", value=settings.slow_ms, step=100.0, format="%.0f",
                                  key=state.W_SLOW_MS)
        try:
            app.set_sampling(percent / 100, bool(keep_errors), bool(keep_slow), slow_ms)
        except ValueError as exc:
            st.error(f"{exc}. Still using {app.settings.slow_ms:,.0f} ms.", icon=":material/error:")

        st.markdown("**Alert when**")
        error_pct = st.number_input("Error rate above (%)", value=settings.alert_error_rate * 100, step=1.0,
                                    format="%.1f", key=state.W_ALERT_ERROR_PCT)
        p95_ms = st.number_input("p95 latency above (ms)", value=settings.alert_p95_ms, step=100.0,
                                 format="%.0f", key=state.W_ALERT_P95_MS)
        min_requests = st.number_input("Min requests in window", value=settings.alert_min_requests, step=1,
                                       key=state.W_ALERT_MIN_REQUESTS, placeholder="rule defaults",
                                       help=_min_requests_help())
        minimum = None if min_requests is None else int(min_requests)
        try:
            app.set_alert_thresholds(error_pct / 100, p95_ms, minimum)
        except ValueError as exc:
            kept = app.settings
            st.error(f"{exc}. Still alerting above {kept.alert_error_rate:.1%} errors / "
                     f"{kept.alert_p95_ms:,.0f} ms p95.", icon=":material/error:")


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:,.1f} GB"


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def _ask_to_clear() -> None:
    st.session_state[state.CLEAR_ASKED] = True


def _cancel_clear() -> None:
    st.session_state[state.CLEAR_ASKED] = False


def _clear_history() -> None:
    st.session_state[state.CLEAR_ASKED] = False
    try:
        state.history_file().store.clear(vacuum=True)
    except Exception as exc:  # a file another program holds, a full disk: say so, keep the app up
        st.session_state[state.CLEAR_RESULT] = f"The history was not cleared: {exc}"
    else:
        st.session_state[state.CLEAR_RESULT] = "History cleared."


def render_history_settings() -> None:
    """Draw the history file's settings: where it is, its size and traces, retention, and "clear history".

    Retention (by age and by count) is kept in the file and applied in the
    background; clearing asks for confirmation first. A file that could not be
    used is explained here, and history is then kept in memory for this run.
    """
    history = state.history_file()
    store = history.store
    with st.sidebar, st.expander("History & retention", icon=":material/database:"):
        if history.problem:
            st.warning(f"History is kept in memory for this run only: {md_escape(history.problem)}",
                       icon=":material/warning:")
        try:
            info = store.file_info()
        except Exception as exc:
            st.error(f"The history file cannot be read: {md_escape(str(exc))}", icon=":material/error:")
            return
        where = "in memory (nothing is kept after the app stops)" if history.in_memory else f"`{info.path}`"
        st.markdown(f"File: {where}")
        counts = (_count(info.trace_count, "trace"), _count(info.request_count, "request"),
                  _count(info.log_count, "log entry", "log entries"))
        st.caption(" · ".join((_size(info.size_bytes), *counts)))
        policy = info.retention
        state.init_widget(state.W_KEEP_DAYS, None if policy.max_age_s is None else policy.max_age_s / 86400)
        state.init_widget(state.W_KEEP_TRACES, policy.max_traces)
        days = st.number_input("Keep traces for (days)", value=None, min_value=0.01, step=1.0, format="%g",
                               key=state.W_KEEP_DAYS, placeholder="forever",
                               help="Older traces, log entries and alert transitions are removed in the "
                                    "background, every minute. Empty: no age limit.")
        count = st.number_input("Keep at most (traces)", value=None, min_value=1, step=1000,
                                key=state.W_KEEP_TRACES, placeholder="no limit",
                                help="Beyond this many, the oldest are removed.")
        try:
            wanted = RetentionPolicy(max_age_s=None if days is None else float(days) * 86400,
                                     max_traces=None if count is None else int(count),
                                     max_log_entries=policy.max_log_entries)
        except ValueError as exc:
            st.error(md_escape(str(exc)), icon=":material/error:")
        else:
            if wanted != policy:
                try:
                    store.set_retention(wanted)
                except Exception as exc:
                    st.error(f"Retention not saved: {md_escape(str(exc))}", icon=":material/error:")
        age = "no age limit" if policy.max_age_s is None else f"{policy.max_age_s / 86400:g} days"
        most = "no count limit" if policy.max_traces is None else f"at most {policy.max_traces:,} traces"
        st.caption(f"Retention: {age}, {most}; applied in the background.")
        result = st.session_state.pop(state.CLEAR_RESULT, None)
        if result:
            st.info(result)
        if st.session_state.get(state.CLEAR_ASKED):
            st.warning("Delete every trace, log entry and alert transition in the history file, for every "
                       "session and program that writes it? This cannot be undone.")
            yes, no = st.columns(2)
            yes.button("Yes, clear", type="primary", on_click=_clear_history, key="history_clear_yes")
            no.button("Cancel", on_click=_cancel_clear, key="history_clear_no")
        else:
            st.button("Clear history…", icon=":material/delete:", on_click=_ask_to_clear,
                      key="history_clear", width="stretch")


def _min_requests_help() -> str:
    defaults = alerting.dashboard_rules(0.0, 0.0)
    windows = ", ".join(sorted({f"{rule.window_s:g} s" for rule in defaults}))
    minimums = ", ".join(f"{rule.min_requests} for {rule.name}" for rule in defaults)
    return (f"A rule stays quiet while its window ({windows}) holds fewer requests than this. "
            f"Empty: each rule's default ({minimums}).")


@st.fragment(run_every=ALERT_CHECK_S)
def render_alert_banner(app: AppSession, link: bool = True) -> None:
    """Evaluate the alert rules and show a banner per firing (error) or pending (warning) rule.

    A fragment: it evaluates again every few seconds on its own, so a rule
    that starts firing shows on whichever page is open. The banner names the
    rule and its value; with `link`, it links to the Alerts page.
    """
    state.keep_alive()  # an open page keeps its session from being pushed out of the registry
    active = [s for s in app.evaluate_alerts() if s.status in ("firing", "pending")]
    for alert in active:
        head, detail = alerting.banner_text(alert)
        text = f"**{md_escape(head)}** — {md_escape(detail)}"
        if alert.status == "firing":
            st.error(text, icon=":material/notifications_active:")
        else:
            st.warning(text, icon=":material/hourglass_top:")
    if active and link:
        st.page_link(state.ALERTS_PAGE, label="Open the Alerts page", icon=":material/notifications:",
                     query_params={state.QUERY_SESSION: st.session_state.get(state.SESSION_ID, "")})
