"""Selectors and page actions shared by the browser tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAT_MESSAGE = '[data-testid="stChatMessage"]'
ANSWER_CAPTION = f'{CHAT_MESSAGE} [data-testid="stCaptionContainer"]'
PLOT = ".js-plotly-plot"
GRID_TABLE = "table[role=grid]"  # kept off the accessibility tree, so found by CSS rather than by role

# Title (without the markup Streamlit's theme adds) and number of drawn points or bars of every chart.
PLOTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({
  title: gd.layout && gd.layout.title ? String(gd.layout.title.text).replace(/<[^>]*>/g, '') : null,
  points: gd.querySelectorAll('.point').length,
  ticktext: gd.layout && gd.layout.yaxis ? gd.layout.yaxis.ticktext || null : null,
}))"""

# The text of each row of a data grid (st.dataframe), read from the accessible table the grid keeps in
# step with its canvas: one list of cell texts per row drawn, in the order shown.
_GRID_ROWS = """table => Array.from(table.querySelectorAll('tbody tr')).map(
  row => Array.from(row.querySelectorAll('td')).map(cell => cell.innerText))"""
_GRID_HEADERS = """table => Array.from(table.querySelectorAll('thead th')).map(cell => cell.innerText)"""

# True once every Plotly chart is drawn at the width of its container (after a resize, say).
_PLOTS_FIT = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).every(gd =>
  gd._fullLayout && Math.abs(gd._fullLayout.width - gd.getBoundingClientRect().width) < 2)"""

# Resolves after the browser has drawn two more frames: what changed before it is on screen.
_TWO_FRAMES = """() => new Promise(
  done => requestAnimationFrame(() => requestAnimationFrame(() => done(true))))"""

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


def grid(page: Any, index: int = 0) -> Any:
    """The accessible table of the `index`-th data grid (st.dataframe) on the page (or in a locator)."""
    return page.get_by_test_id("stDataFrame").nth(index).locator(GRID_TABLE)


def grid_rows(table: Any) -> list[list[str]]:
    """The cell texts of each row `table` (from `grid`) shows, top to bottom."""
    return table.evaluate(_GRID_ROWS)


def grid_records(table: Any) -> list[dict[str, str]]:
    """The rows `table` shows, each as {column header as shown: cell text}, top to bottom."""
    headers = table.evaluate(_GRID_HEADERS)
    return [dict(zip(headers, row, strict=True)) for row in grid_rows(table)]


def wait_for_grid_rows(table: Any, count: int) -> list[list[str]]:
    """Wait until `table` shows `count` rows; return them."""
    table.locator("tbody tr").nth(count - 1).wait_for(state="attached")
    return grid_rows(table)


def wait_for_grid_records(table: Any, count: int) -> list[dict[str, str]]:
    """Wait until `table` shows `count` rows; return them as {column header: cell text}."""
    wait_for_grid_rows(table, count)
    return grid_records(table)


def select_row(page: Any, table: Any, row: int) -> None:
    """Select row `row` (0 = top) of `table` from the keyboard, as a user can.

    Into the grid, to its first cell (Ctrl+Home: focusing a cell does not make it the grid's current
    one), down `row` rows, and Shift+Space selects the row.
    """
    table.get_by_test_id("glide-cell-1-0").focus()
    page.keyboard.press("Control+Home")
    for _ in range(row):
        page.keyboard.press("ArrowDown")
    page.keyboard.press("Shift+Space")


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
    page.wait_for_function(_PLOTS_FIT)
    page.evaluate(_TWO_FRAMES)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)
    return path


def choose(tab: Any, label: str, option: str) -> None:
    """Pick `option` in the select box labelled `label`, as a user does: open it, click the option."""
    tab.get_by_test_id("stSelectbox").filter(has_text=label).click()
    tab.get_by_role("option", name=option, exact=True).click()
    wait_idle(tab)


def show_everything(tab: Any, page: str) -> None:
    """Open `page` with the whole history in view: time range All, scope Everything."""
    open_page(tab, page)
    choose(tab, "Time range", "All")
    choose(tab, "Scope", "Everything")


def trace_rows(tab: Any, count: int) -> list[list[str]]:
    """The Traces page's table rows, as a user reads them, once at least `count` are there."""
    table = grid(tab)
    tab.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length >= n",
        arg=['[data-testid="stDataFrame"] table[role=grid] tbody tr', count])
    return grid_rows(table)
