"""Drawing a chat message's text, the same way on every page that shows one.

The text of users and models is untrusted: it is drawn as Markdown with
HTML off and every image made inert (`app.untrusted`), so nothing in it runs
or makes the browser fetch anything; fenced code is drawn as code, exactly
as written.
"""

from __future__ import annotations

import streamlit as st

from app import untrusted

__all__ = ["draw_text"]


def draw_text(text: str) -> None:
    """Draw `text` as inert Markdown blocks and code blocks, in order."""
    for block in untrusted.markdown_blocks(text):
        if block.kind == "code":
            st.code(block.text, language=block.language)
        else:
            st.markdown(block.text, unsafe_allow_html=False)
