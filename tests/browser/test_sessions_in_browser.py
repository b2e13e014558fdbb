"""Conversations as sessions, in real Chromium: two chat turns, the Sessions page, the session, its traces.

One app process (module fixture) talks to a loopback fake llama-server,
whose answer is set before each question. A user chats twice, follows the
Chat page's link to the conversation's session, starts a new conversation,
opens the Sessions page, reads the first conversation's row (2 turns, its
tokens) as the page shows it, opens that session, reads both questions and
answers in order with their captions and waterfalls, and follows a turn's
link to its trace on the Traces page. An image in an answer fetches nothing
there either. The Sessions page is screenshotted under tests/artifacts/;
with `OBS_DOCS_SCREENSHOT=1` also to docs/sessions.png for the README.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.app.fake_server import FakeLlamaServer
from tests.browser.conftest import ROOT, run_app
from tests.browser.pages import ANSWER_CAPTION, CHAT_MESSAGE, PLOT, PLOTS, open_page, wait_idle
from tests.browser.tracker import Tracker

pytestmark = pytest.mark.browser

# (question, the fake server's answer). Tokens: 12 in per request, one out per space-separated word.
FIRST = ("Write two sentences about the sea.", "The sea covers most of the planet. Its waves never rest.")
SECOND = ("Name three colours.", "Red, green and blue.")
THIRD = ("What is a span?", "A timed step of a trace. ![pixel]({tracker}/pixel.png?leak=span)")
PAGE_LINK = '[data-testid="stPageLink-NavLink"]'

# The data grid draws on a canvas; it also keeps an accessible table of the cells it shows (what a
# screen reader reads). Rows as {column header: cell text}, and whether the row is selected.
_GRID_ROWS = """(grid) => {
  const text = element => element.textContent.trim();
  const headers = Array.from(grid.querySelectorAll('th[role="columnheader"]')).map(text);
  return Array.from(grid.querySelectorAll('tbody tr[role="row"]')).map(row => Object.fromEntries([
    ...Array.from(row.querySelectorAll('td[role="gridcell"]')).map((cell, i) => [headers[i], text(cell)]),
    ['selected', row.getAttribute('aria-selected') === 'true']]));
}"""
_CONTENT_HEIGHT = """() => Math.max(...['stMain', 'stAppViewContainer'].map(id => {
  const element = document.querySelector(`[data-testid="${id}"]`);
  return element ? element.scrollHeight : 0;
}))"""
# Every chart has been laid out at its container's current width.
_CHARTS_FIT = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).every(
  gd => gd._fullLayout && Math.abs(gd._fullLayout.width - gd.getBoundingClientRect().width) < 2)"""




@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLlamaServer]:
    with FakeLlamaServer() as server:
        yield server


@pytest.fixture(scope="module")
def tracker() -> Iterator[Tracker]:
    server = Tracker()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def url(fake: FakeLlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"LLAMA_SERVER_URL": fake.url, "OBS_EMBEDDED_SERVER": "0"}
    with run_app(tmp_path_factory.mktemp("sessions-app"), env, name="streamlit-sessions") as app_url:
        yield app_url


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    yield tab
    context.close()


def _ask(page: Any, fake: FakeLlamaServer, question: str, answer: str) -> None:
    """Send `question` with the fake server set to answer `answer`; wait for the answer's caption."""
    fake.reply = answer
    answers = page.locator(ANSWER_CAPTION, has_text="latency").count()
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(question)
    box.press("Enter")
    page.locator(ANSWER_CAPTION, has_text="latency").nth(answers).wait_for()


def _tile(page: Any, label: str) -> Any:
    return page.locator('[data-testid="stMetric"]', has_text=label).locator('[data-testid="stMetricValue"]')


# The page is drawn and settled: no run going on, nothing left over from the previous run.
_SETTLED = """() => !document.querySelector('[data-testid="stStatusWidget"]')
  && !document.querySelector('[data-stale="true"]')"""


def _open_session_shows(page: Any, turns: int) -> None:
    """Wait until the open session is one of `turns` turns, all drawn (and nothing else) and settled."""
    page.get_by_role("heading", name="Sessions", exact=True).wait_for()
    _tile(page, "Turns").filter(has_text=re.compile(rf"^{turns}$")).wait_for()
    titles = [f"Turn {n} waterfall" for n in range(1, turns + 1)]
    page.wait_for_function(
        f"""([titles, messages]) => ({_SETTLED})()
          && document.querySelectorAll('{CHAT_MESSAGE}').length === messages
          && JSON.stringify(({PLOTS})().map(plot => plot.title)) === JSON.stringify(titles)""",
        arg=[titles, 2 * turns])


def _messages(page: Any) -> list[str]:
    """The text of every chat message drawn, in order (without the avatars)."""
    content = page.locator(CHAT_MESSAGE).locator('[data-testid="stChatMessageContent"]')
    return [text.strip() for text in content.all_inner_texts()]


def _screenshot(page: Any, path: Path) -> None:
    """The whole page content, with the viewport made as tall as it and the charts laid out again."""
    size = page.viewport_size
    height = max(size["height"], page.evaluate(_CONTENT_HEIGHT))
    page.set_viewport_size({"width": size["width"], "height": height})
    page.wait_for_function(_CHARTS_FIT)
    wait_idle(page)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def test_two_turns_make_a_session_that_opens_with_both_turns_and_links_to_their_traces(
    url: str, fake: FakeLlamaServer, tracker: Tracker, page: Any, artifacts: Path,
) -> None:
    page.goto(url)
    page.get_by_test_id("stChatInputTextArea").wait_for()
    _ask(page, fake, *FIRST)
    _ask(page, fake, *SECOND)

    # The Chat page links to its conversation's session.
    page.locator(PAGE_LINK, has_text="This conversation on the Sessions page").click()
    _open_session_shows(page, turns=2)

    open_page(page, "Chat")
    page.get_by_role("button", name="New conversation").click()
    page.wait_for_function(f"() => document.querySelectorAll('{CHAT_MESSAGE}').length === 0")
    _ask(page, fake, THIRD[0], THIRD[1].format(tracker=tracker.url))

    open_page(page, "Sessions")
    _open_session_shows(page, turns=1)  # the most recently active session is open
    grid = page.get_by_test_id("stDataFrame").first
    page.wait_for_function(f"grid => ({_GRID_ROWS})(grid).length === 2", arg=grid.element_handle())
    newest, first = grid.evaluate(_GRID_ROWS)
    assert (newest["First message"], newest["selected"], first["selected"]) == (THIRD[0], True, False)
    tokens_out = str(len(FIRST[1].split(" ")) + len(SECOND[1].split(" ")))
    read = [first[column] for column in ("First message", "Turns", "Tokens in", "Tokens out", "Errors")]
    assert read == [FIRST[0], "2", "24", tokens_out, "0"]

    page.get_by_role("combobox", name="Open session").click()
    page.get_by_role("option", name=re.compile(re.escape(FIRST[0]))).click()
    _open_session_shows(page, turns=2)
    assert _tile(page, "Tokens in → out").inner_text() == f"24 → {tokens_out}"
    # The table marks the row of the session now open.
    page.wait_for_function(f"grid => ({_GRID_ROWS})(grid).map(row => row.selected).join() === 'false,true'",
                           arg=page.get_by_test_id("stDataFrame").first.element_handle())
    messages = _messages(page)
    assert [messages[0], messages[2]] == [FIRST[0], SECOND[0]]
    for answer, (_, expected) in zip((messages[1], messages[3]), (FIRST, SECOND), strict=True):
        assert answer.startswith(expected) and "latency" in answer and "TTFT" in answer
    _screenshot(page, artifacts / "sessions.png")
    if os.environ.get("OBS_DOCS_SCREENSHOT") == "1":
        docs = ROOT / "docs" / "sessions.png"
        docs.parent.mkdir(exist_ok=True)
        docs.write_bytes((artifacts / "sessions.png").read_bytes())

    # Each turn links to its own trace; the second one opens on the Traces page.
    links = page.locator(CHAT_MESSAGE).locator(PAGE_LINK, has_text="Trace")
    assert links.count() == 2
    trace_ids = [parse_qs(urlsplit(link.get_attribute("href")).query)["trace"][0] for link in links.all()]
    assert trace_ids[0] != trace_ids[1]
    links.nth(1).click()
    page.get_by_role("heading", name="Traces", exact=True).wait_for()
    page.get_by_text(f"trace {trace_ids[1]} · 2 span(s) · status success").wait_for()
    page.wait_for_function(f"() => document.querySelectorAll('{PLOT}').length >= 1")
    waterfall = next(plot for plot in page.evaluate(PLOTS) if plot["title"] == "Waterfall")
    assert [label.strip("\u00a0") for label in waterfall["ticktext"]] == ["chat turn", "chat fake-model"]
    assert tracker.paths == []  # the image in the third answer was drawn as text everywhere
