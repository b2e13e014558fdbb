"""Selectors and page actions shared by the browser tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAT_MESSAGE = '[data-testid="stChatMessage"]'
ANSWER_CAPTION = f'{CHAT_MESSAGE} [data-testid="stCaptionContainer"]'
PLOT = ".js-plotly-plot"

# Title (without the markup Streamlit's theme adds) and number of drawn points or bars of every chart.
PLOTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({
  title: gd.layout && gd.layout.title ? String(gd.layout.title.text).replace(/<[^>]*>/g, '') : null,
  points: gd.querySelectorAll('.point').length,
  ticktext: gd.layout && gd.layout.yaxis ? gd.layout.yaxis.ticktext || null : null,
}))"""

# Streamlit scrolls inside its own container, so a "full page" screenshot needs a viewport that tall.
_CONTENT_HEIGHT = """() => Math.max(...['stMain', 'stAppViewContainer'].map(id => {
  const element = document.querySelector(`[data-testid="${id}"]`);
  return element ? element.scrollHeight : 0;
}), document.documentElement.scrollHeight)"""


def open_page(page: Any, name: str) -> None:
    """Click `name` in the sidebar navigation and wait for its title."""
    page.locator('[data-testid="stSidebarNav"] a', has_text=name).click()
    page.get_by_role("heading", name=name, exact=True).wait_for()


def wait_idle(page: Any) -> None:
    """Wait until Streamlit's "running" widget is gone."""
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")


def set_number(page: Any, label: str, value: str) -> None:
    """Type `value` into the number input labelled `label` and wait for the rerun."""
    box = page.get_by_role("spinbutton", name=label)
    box.fill(value)
    box.press("Enter")
    wait_idle(page)


def send(page: Any, text: str, answers_before: int) -> None:
    """Send a chat message and wait for its answer's caption (the answer after `answers_before`)."""
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(text)
    box.press("Enter")
    page.locator(ANSWER_CAPTION, has_text="latency").nth(answers_before).wait_for(timeout=120_000)


def shot(page: Any, artifacts: Path, name: str) -> Path:
    """Screenshot the whole page content to `artifacts/name.png`."""
    path = artifacts / f"{name}.png"
    size = page.viewport_size
    height = max(size["height"], page.evaluate(_CONTENT_HEIGHT))
    page.set_viewport_size({"width": size["width"], "height": height})
    page.wait_for_timeout(800)  # let charts resize to the new viewport
    page.screenshot(path=str(path))
    page.set_viewport_size(size)
    return path
