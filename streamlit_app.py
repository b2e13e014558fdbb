"""obs dashboard entry point: page config, the access check, navigation, and the sidebar every page shares.

The sidebar is drawn here rather than by each page: a widget's identity
includes the page that draws it, so a sidebar drawn by the pages would be a
new widget, with its value lost, on every page switch. Drawn here, each
sidebar field is one widget across all pages.
"""

import streamlit as st

from app import access, receiving, sidebar, state

st.set_page_config(page_title="obs", page_icon="🔭", layout="wide")
access.require_access()
chat = st.Page(state.CHAT_PAGE, title="Chat", icon=":material/chat:", default=True)
alerts = st.Page(state.ALERTS_PAGE, title="Alerts", icon=":material/notifications:")
page = st.navigation([
    chat,
    st.Page(state.DASHBOARD_PAGE, title="Dashboard", icon=":material/monitoring:"),
    st.Page(state.SESSIONS_PAGE, title="Sessions", icon=":material/forum:"),
    st.Page(state.TRACES_PAGE, title="Traces", icon=":material/account_tree:"),
    st.Page(state.LOGS_PAGE, title="Logs", icon=":material/receipt_long:"),
    alerts,
    st.Page(state.LOADTEST_PAGE, title="Load test", icon=":material/speed:"),
    st.Page("app/pages/export.py", title="Export & receive", icon=":material/swap_horiz:"),
])
receiving.receiver()  # started once per process: other programs' traces arrive from the first page load
receiving.attach_forwarder(state.get_app().tracer)
sidebar.render(state.get_app(), chat_controls=page.url_path == chat.url_path,
               alerts_link=page.url_path != alerts.url_path)
page.run()
