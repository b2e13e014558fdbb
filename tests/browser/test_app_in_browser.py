"""The dashboard in a real browser: chat with the embedded model, then every page, then an HTML payload.

The tests run in order on one page of one app process (module fixtures), as
a user would click through: two chat messages, the Dashboard counting them,
the Traces waterfall, the Logs, and last a reply carrying `<script>` and
`<img onerror>` from a loopback fake server, which must not run. Each page
is screenshotted under tests/artifacts/. With `OBS_DOCS_SCREENSHOT=1` the
dashboard screenshot is also written to docs/dashboard.png for the README.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.app.fake_server import FakeLlamaServer
from tests.browser.conftest import ROOT
from tests.browser.pages import (
    ANSWER_CAPTION,
    CHAT_MESSAGE,
    PLOT,
    PLOTS,
    open_page,
    send,
    set_number,
    shot,
)

pytestmark = pytest.mark.browser

QUESTIONS = ("Write two sentences about the sea.", "Name three colours.")
XSS_FLAG = "__obsXss"
PAYLOAD = (
    f'Look: <script>window.{XSS_FLAG} = "script"</script> '
    f'<img src="x" onerror="window.{XSS_FLAG} = \'img\'"> '
    f'<a href="javascript:window.{XSS_FLAG}=\'link\'">link</a> end.'
)

# Records the text length of the last chat message on every DOM change, to see an answer grow.
_WATCH_STREAM = """() => {
  window.__obsLengths = [];
  const observer = new MutationObserver(() => {
    const messages = document.querySelectorAll('[data-testid="stChatMessage"]');
    if (messages.length) window.__obsLengths.push(messages[messages.length - 1].innerText.length);
  });
  observer.observe(document.body, {subtree: true, childList: true, characterData: true});
  window.__obsObserver = observer;
}"""

def test_two_chat_messages_stream_answers_with_captions(page: Any, app_url: str, artifacts: Path) -> None:
    page.goto(app_url)
    page.get_by_test_id("stChatInputTextArea").wait_for(timeout=120_000)
    page.get_by_text("Model:").first.wait_for(timeout=60_000)  # the sidebar saw a healthy server
    set_number(page, "Max tokens", "48")  # short answers keep the test quick on a busy machine
    page.evaluate(_WATCH_STREAM)
    send(page, QUESTIONS[0], 0)
    lengths = page.evaluate("window.__obsLengths")
    page.evaluate("window.__obsObserver.disconnect()")
    send(page, QUESTIONS[1], 1)
    messages = page.locator(CHAT_MESSAGE)
    assert messages.count() == 4
    for index in (1, 3):
        answer = messages.nth(index).inner_text()
        caption = messages.nth(index).locator('[data-testid="stCaptionContainer"]').inner_text()
        assert answer.replace(caption, "").strip(), "the model's answer is empty"
        assert "TTFT" in caption and "tok/s" in caption
    # The first answer grew through several sizes before it was complete: it streamed.
    assert len(set(lengths)) >= 3, lengths
    assert page.locator('[data-testid="stPageLink-NavLink"]', has_text="Trace").count() == 2
    shot(page, artifacts, "chat")


def test_dashboard_draws_plotly_charts_counting_the_two_requests(page: Any, artifacts: Path) -> None:
    open_page(page, "Dashboard")
    page.wait_for_function(f"() => document.querySelectorAll('{PLOT}').length >= 9")
    total = page.locator('[data-testid="stMetric"]', has_text="Total Requests")
    assert total.locator('[data-testid="stMetricValue"]').inner_text().strip() == "2"
    plots = {plot["title"]: plot for plot in page.evaluate(PLOTS)}
    assert plots["Latency per request"]["points"] == 2
    assert plots["Tokens per request"]["points"] == 4  # prompt and completion bars of two requests
    path = shot(page, artifacts, "dashboard")
    if os.environ.get("OBS_DOCS_SCREENSHOT") == "1":
        docs = ROOT / "docs" / "dashboard.png"
        docs.parent.mkdir(exist_ok=True)
        docs.write_bytes(path.read_bytes())


def test_traces_page_shows_the_conversation_waterfall(page: Any, artifacts: Path) -> None:
    open_page(page, "Traces")
    page.wait_for_function(f"() => document.querySelectorAll('{PLOT}').length >= 1")
    plots = page.evaluate(PLOTS)
    waterfall = next(plot for plot in plots if plot["title"] == "Waterfall")
    labels = [label.strip("\u00a0") for label in waterfall["ticktext"]]
    assert len([label for label in labels if label.startswith("chat ")]) == 2
    page.get_by_test_id("stDataFrame").first.wait_for()
    shot(page, artifacts, "traces")


def test_logs_page_lists_entries(page: Any, artifacts: Path) -> None:
    open_page(page, "Logs")
    page.get_by_test_id("stDataFrame").first.wait_for()
    shot(page, artifacts, "logs")


def test_bad_url_is_refused_and_html_in_a_reply_does_not_run(page: Any, artifacts: Path) -> None:
    open_page(page, "Chat")
    url_box = page.get_by_role("textbox", name="llama-server URL")
    url_box.fill("ftp://127.0.0.1:1")
    url_box.press("Enter")
    page.get_by_text("must start with http:// or https://").wait_for()
    with FakeLlamaServer(reply=PAYLOAD) as fake:
        url_box.fill(fake.url)
        url_box.press("Enter")
        page.get_by_text(f"Talking to {fake.url}").wait_for()
        answers = page.locator(ANSWER_CAPTION, has_text="latency").count()
        send(page, f'<img src="x" onerror="window.{XSS_FLAG} = \'prompt\'"> what is this?', answers)
        page.wait_for_timeout(500)  # give any injected handler time to fire
        assert fake.requests, "the app did not call the fake server"
        assert page.evaluate(f"window.{XSS_FLAG}") is None
        last = page.locator(CHAT_MESSAGE).last
        assert last.locator("script, img[onerror]").count() == 0
        assert "Look:" in last.inner_text()
        shot(page, artifacts, "html-payload")
        open_page(page, "Traces")
        page.wait_for_function(f"() => document.querySelectorAll('{PLOT}').length >= 1")
        page.wait_for_timeout(500)
        assert page.evaluate(f"window.{XSS_FLAG}") is None


def test_a_new_conversation_is_a_new_trace_and_a_table_row_selects_it(page: Any, artifacts: Path) -> None:
    with FakeLlamaServer(reply="A short answer.") as fake:
        open_page(page, "Chat")
        url_box = page.get_by_role("textbox", name="llama-server URL")
        url_box.fill(fake.url)
        url_box.press("Enter")
        page.get_by_text(f"Talking to {fake.url}").wait_for()
        page.get_by_role("button", name="New conversation").click()
        page.wait_for_function(f"() => document.querySelectorAll('{CHAT_MESSAGE}').length === 0")
        send(page, "A new topic.", 0)
    open_page(page, "Traces")
    # The newest trace, the new conversation's turn (its root span and the request), is shown.
    caption = page.get_by_text(re.compile(r"^trace [0-9a-f]{32} · 2 span\(s\) · status success$"))
    newest = caption.inner_text().split()[1]
    table = page.get_by_test_id("stDataFrame").first
    box = table.bounding_box()
    assert box is not None
    # Click the second row's selection cell (the grid is a canvas: rows are about 35 px high).
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 35 + 17)
    # The turn before it, of the first conversation.
    page.get_by_text(re.compile(rf"^trace (?!{newest})[0-9a-f]{{32}} · 2 span\(s\)")).wait_for()
    shot(page, artifacts, "traces-selected")
