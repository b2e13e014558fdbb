"""obs dashboard entry point: page config, the access check, and navigation."""

import streamlit as st

from app import access, state

st.set_page_config(page_title="obs", page_icon="🔭", layout="wide")
access.require_access()
st.navigation([
    st.Page(state.CHAT_PAGE, title="Chat", icon=":material/chat:", default=True),
    st.Page(state.DASHBOARD_PAGE, title="Dashboard", icon=":material/monitoring:"),
    st.Page(state.TRACES_PAGE, title="Traces", icon=":material/account_tree:"),
    st.Page(state.LOGS_PAGE, title="Logs", icon=":material/receipt_long:"),
    st.Page(state.ALERTS_PAGE, title="Alerts", icon=":material/notifications:"),
]).run()
