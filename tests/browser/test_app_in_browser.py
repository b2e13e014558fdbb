"""The dashboard in a real browser: chat with the embedded model, then every page, then an HTML payload.

The tests run in order on one page of one app process (module fixtures), as
a user would click through: two chat messages, the Dashboard counting them
and pricing them per model, each answer's trace and its waterfall, the Logs'
entries and their links to traces, a reply carrying `<script>` and `<img
onerror>` from a loopback fake server, which must not run, a row of the
Traces table picked from the keyboard, and compute prices set in the
sidebar. Tables are read from the accessible table each data grid keeps in
step with its canvas. Each page is screenshotted under tests/artifacts/.
With `OBS_DOCS_SCREENSHOT=1` the dashboard screenshot is also written to
docs/dashboard.png for the README.
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
    GRID_TABLE,
    PLOT,
    PLOTS,
    grid,
    grid_records,
    open_page,
    select_row,
    send,
    set_number,
    shot,
    wait_for_grid_records,
)

pytestmark = pytest.mark.browser

QUESTIONS = ("Write two sentences about the sea.", "Name three colours.")
XSS_FLAG = "__obsXss"
PAYLOAD = (
    f'Look: <script>window.{XSS_FLAG} = "script"</script> '
    f'<img src="x" onerror="window.{XSS_FLAG} = \'img\'"> '
    f'<a href="javascript:window.{XSS_FLAG}=\'link\'">link</a> end.'
)

# Every element of the app's content with an event-handler attribute (onerror=, onclick=, ...) or a
# javascript: link: what an injected payload would need in order to run. Streamlit's own UI has none.
_HANDLERS = """() => Array.from(
    document.querySelectorAll('[data-testid="stMain"] *, [data-testid="stSidebar"] *'))
  .filter(e => Array.from(e.attributes).some(a => a.name.startsWith('on'))
               || (e.getAttribute('href') || '').trim().toLowerCase().startsWith('javascript:'))
  .map(e => e.outerHTML.slice(0, 120))"""

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
    # A turn's caption can be drawn in the run before the one that marks it done and adds its link.
    links = page.locator('[data-testid="stPageLink-NavLink"]', has_text="Trace")
    links.nth(1).wait_for(timeout=30_000)
    assert links.count() == 2
    shot(page, artifacts, "chat")


def _cost_rows(page: Any) -> dict[str, dict[str, str]]:
    """The Dashboard's Cost by model table: model -> its row, {column header: cell text}."""
    section = page.get_by_test_id("stVerticalBlock").filter(
        has=page.get_by_role("heading", name="Cost by model")).last
    table = section.get_by_test_id("stDataFrame").locator(GRID_TABLE)
    table.locator("tbody tr").first.wait_for(state="attached")
    return {row["Model"]: row for row in grid_records(table)}


def _cells(row: dict[str, str], *columns: str) -> tuple[str, ...]:
    return tuple(row[column] for column in columns)


def test_dashboard_draws_plotly_charts_counting_the_two_requests(page: Any, artifacts: Path) -> None:
    open_page(page, "Dashboard")
    page.wait_for_function(f"() => document.querySelectorAll('{PLOT}').length >= 9")
    total = page.locator('[data-testid="stMetric"]', has_text="Total Requests")
    assert total.locator('[data-testid="stMetricValue"]').inner_text().strip() == "2"
    plots = {plot["title"]: plot for plot in page.evaluate(PLOTS)}
    assert plots["Latency per request"]["points"] == 2
    assert plots["Tokens per request"]["points"] == 4  # prompt and completion bars of two requests
    # Both answers came from the embedded model, priced by the default per-1K-token prices.
    [(model, row)] = _cost_rows(page).items()
    assert model.startswith("SmolLM2")
    assert _cells(row, "Requests", "Priced by", "Not priced") == ("2", "tokens", "0")
    assert row["Cost"].startswith("$0.0") and row["Cost"] != "$0"
    page.get_by_text("New requests are priced per 1K tokens: $0.0010 prompt, $0.0020 completion.").wait_for()
    path = shot(page, artifacts, "dashboard")
    if os.environ.get("OBS_DOCS_SCREENSHOT") == "1":
        docs = ROOT / "docs" / "dashboard.png"
        docs.parent.mkdir(exist_ok=True)
        docs.write_bytes(path.read_bytes())


def test_traces_page_shows_each_answer_as_a_trace_with_its_waterfall(page: Any, artifacts: Path) -> None:
    open_page(page, "Traces")
    rows = wait_for_grid_records(grid(page), 2)  # newest first
    assert [_cells(row, "Name", "Status", "Spans") for row in rows] == [("chat turn", "success", "2")] * 2
    newest = rows[0]["Trace id"]
    page.get_by_text(f"trace {newest} · 2 span(s) · status success").wait_for()
    page.wait_for_function(f"() => document.querySelectorAll('{PLOT}').length >= 1")
    waterfall = next(plot for plot in page.evaluate(PLOTS) if plot["title"] == "Waterfall")
    labels = [label.strip("\u00a0") for label in waterfall["ticktext"]]
    assert labels[0] == "chat turn" and labels[1].startswith("chat SmolLM2") and len(labels) == 2
    shot(page, artifacts, "traces")


def test_logs_page_lists_each_answers_entries_and_links_to_their_trace(page: Any, artifacts: Path) -> None:
    open_page(page, "Logs")
    caption = page.get_by_text(re.compile(r"^\d+ entries, newest first"))
    count = int(caption.inner_text().split()[0])
    rows = wait_for_grid_records(grid(page), count)  # newest first
    assert len(rows) == count
    messages = [row["Message"] for row in rows]
    finished = [row for row in rows if re.fullmatch(r"chat SmolLM2\S* finished", row["Message"])]
    assert len(finished) == 2, messages
    assert all(row["Level"] == "info" and re.fullmatch(r"[0-9a-f]{32}", row["Trace id"]) for row in finished)
    assert all('"latency_ms"' in row["Data"] for row in finished)
    assert len({row["Trace id"] for row in finished}) == 2  # one trace per answer
    shot(page, artifacts, "logs")
    # Picking an entry of a trace offers a link to it, which opens that trace.
    first_answer = finished[-1]["Trace id"]
    select_row(page, grid(page), rows.index(finished[-1]))
    link = page.get_by_role("link", name=f"Open trace {first_answer}")
    link.click()
    page.get_by_role("heading", name="Traces", exact=True).wait_for()
    page.get_by_text(f"trace {first_answer} · 2 span(s)").wait_for()


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
        assert fake.requests, "the app did not call the fake server"
        last = page.locator(CHAT_MESSAGE).last
        assert "Look:" in last.inner_text()
        assert "<script>" in last.inner_text()  # shown as the text it is
        # Nothing on the page can run the payload: no script in the answer, no element with an event
        # handler, no javascript: link. (So no handler can fire later either: nothing to wait for.)
        assert last.locator("script, img").count() == 0
        assert page.evaluate(_HANDLERS) == []
        assert page.evaluate(f"window.{XSS_FLAG}") is None
        shot(page, artifacts, "html-payload")
        open_page(page, "Traces")
        page.wait_for_function(f"() => document.querySelectorAll('{PLOT}').length >= 1")
        assert page.evaluate(_HANDLERS) == []
        assert page.evaluate(f"window.{XSS_FLAG}") is None


def test_a_new_conversation_starts_afresh_and_a_table_row_picked_from_the_keyboard_selects_it(
    page: Any, artifacts: Path,
) -> None:
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
    table = grid(page)
    # Newest first: this answer, the HTML reply, the model's two answers; each turn a trace of 2 spans.
    rows = wait_for_grid_records(table, 4)
    assert [_cells(row, "Name", "Spans") for row in rows] == [("chat turn", "2")] * 4
    for row in (1, 0):  # the HTML reply's turn, then the newest
        select_row(page, table, row)
        page.get_by_text(f"trace {rows[row]['Trace id']} · 2 span(s)").wait_for()
    assert [row["Trace id"] for row in grid_records(table)] == [row["Trace id"] for row in rows]
    shot(page, artifacts, "traces-selected")


def test_a_compute_price_set_in_the_sidebar_prices_answers_by_server_time_and_zero_is_free(
    page: Any, artifacts: Path,
) -> None:
    open_page(page, "Chat")
    for model, per_hour in (("laptop-model", "0"), ("rented-gpu", "0.9")):
        with FakeLlamaServer(reply="Priced.") as fake:
            fake.model = model
            url_box = page.get_by_role("textbox", name="llama-server URL")
            url_box.fill(fake.url)
            url_box.press("Enter")
            page.get_by_text(f"Talking to {fake.url}").wait_for()
            set_number(page, "Compute ($ per hour of server time)", per_hour)
            answers = page.locator(ANSWER_CAPTION, has_text="latency").count()
            send(page, f"What does an answer of {model} cost?", answers)
    open_page(page, "Dashboard")
    rows = _cost_rows(page)
    # The fake server reports prompt_ms 4 + predicted_ms 8: 12 ms of server time per answer.
    columns = ("Requests", "Cost", "Priced by", "Not priced")
    assert _cells(rows["laptop-model"], *columns) == ("1", "free", "free", "0")
    assert _cells(rows["rented-gpu"], *columns) == ("1", "$0.000003", "server time", "0")
    page.get_by_text("New requests are priced by server time: $0.9000 per hour").wait_for()
    shot(page, artifacts, "dashboard-cost")
