"""obs dashboard entry point: page config and navigation only."""

import streamlit as st

st.set_page_config(page_title="obs", page_icon="🔭", layout="wide")
st.title("obs")
st.write("Observability for llama-server applications. The dashboard pages are being built.")
