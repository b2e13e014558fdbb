"""The sidebar: server connection and health on every page, chat settings on the chat page.

Each input is a proposal: it is validated (by `app.backend` or by the obs
object that will use it) before it reaches `AppSession.settings`. A bad value
shows an inline error naming the value still in use, which stays in force.
"""

from __future__ import annotations

import streamlit as st

from app import backend, state
from app.state import AppSession

__all__ = ["HEALTH_EVERY_S", "md_escape", "render_chat_controls", "render_connection"]

HEALTH_EVERY_S = 5
_HEALTH_TIMEOUT_S = 0.5
_BADGES = {"ok": ":green-badge[:material/check_circle: ok]",
           "loading": ":orange-badge[:material/hourglass_top: loading]",
           "unreachable": ":red-badge[:material/error: unreachable]"}
_MD_SPECIALS = "\\`*_{}[]()<>#+-.!|~:$"


def md_escape(text: str) -> str:
    """`text` with Markdown's special characters escaped, so it shows exactly as written."""
    return "".join("\\" + ch if ch in _MD_SPECIALS else ch for ch in text)


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


def render_chat_controls(app: AppSession) -> None:
    """Draw the chat settings: system prompt, sampling, prices, content capture, new conversation."""
    settings = app.settings
    with st.sidebar:
        st.subheader("Chat settings")
        state.init_widget(state.W_SYSTEM_PROMPT, settings.system_prompt)
        state.init_widget(state.W_TEMPERATURE, settings.temperature)
        state.init_widget(state.W_MAX_TOKENS, settings.max_tokens)
        state.init_widget(state.W_PROMPT_PRICE, settings.prompt_price)
        state.init_widget(state.W_COMPLETION_PRICE, settings.completion_price)
        state.init_widget(state.W_CAPTURE, settings.capture_content)
        system_prompt = st.text_area("System prompt", key=state.W_SYSTEM_PROMPT, height=90)
        temperature = st.slider("Temperature", 0.0, 2.0, step=0.05, key=state.W_TEMPERATURE)
        max_tokens = st.number_input("Max tokens", min_value=1, max_value=8192, step=32,
                                     key=state.W_MAX_TOKENS)
        app.update(system_prompt=system_prompt, temperature=float(temperature), max_tokens=int(max_tokens))

        st.markdown("**Prices** (dollars per 1K tokens)")
        left, right = st.columns(2)
        prompt_price = left.number_input("Prompt", step=0.0005, format="%.4f", key=state.W_PROMPT_PRICE)
        completion_price = right.number_input("Completion", step=0.0005, format="%.4f",
                                              key=state.W_COMPLETION_PRICE)
        try:
            app.set_prices(prompt_price, completion_price)
        except ValueError as exc:
            kept = app.settings
            st.error(f"{exc}. Still using ${kept.prompt_price:.4f} / ${kept.completion_price:.4f}.",
                     icon=":material/error:")

        capture = st.toggle("Capture message contents", key=state.W_CAPTURE,
                            help="Record prompts and answers on the spans (OpenTelemetry opt-in content).")
        app.update(capture_content=bool(capture))
        st.button("New conversation", icon=":material/add_comment:", on_click=app.new_conversation,
                  help="End this conversation's trace and start a new one.", width="stretch")
