"""Alerts in a real browser: a low p95 threshold, one chat answer, the banner, the line, the Alerts page;
and an alert that fires while no tab is open.

The first tests run in order on one page of one app process (module
fixtures): set the p95 latency alert to 1 ms with one request enough, chat
once with the embedded model, see the banner name the rule, find the
threshold line and the breached point on the Dashboard's latency chart, read
the rule's state and history on the Alerts page; then set the sampling rate
to 0% and see the Dashboard count a kept and a dropped turn. The last test
runs an app of its own with a webhook: an answer that ends after its tab was
closed fires the rule in the background, the webhook hears of it, and the
Alerts page shows it when a tab opens again. Screenshots go to
tests/artifacts/.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.app.fake_server import FakeLlamaServer
from tests.browser.conftest import run_app
from tests.browser.pages import (
    ANSWER_CAPTION,
    CHAT_MESSAGE,
    PLOT,
    PLOTS,
    grid,
    open_page,
    send,
    set_number,
    shot,
    wait_for_grid_records,
    wait_idle,
)
from tests.llm.servers import Handler, serve

pytestmark = pytest.mark.browser

BANNER = '[data-testid="stAlertContentError"]'
THRESHOLD_MS = 1

# Threshold lines, annotations, trace names and drawn points of the latency chart.
_LATENCY_CHART = """() => {
  const gd = Array.from(document.querySelectorAll('.js-plotly-plot')).find(
    gd => gd.layout && gd.layout.title && String(gd.layout.title.text).includes('Latency per request'));
  if (!gd) return null;
  return {
    lines: (gd.layout.shapes || []).filter(s => s.y0 === s.y1).map(s => s.y0),
    labels: (gd.layout.annotations || []).map(a => String(a.text)),
    traces: gd.data.map(t => t.name),
    points: gd.querySelectorAll('.point').length,
  };
}"""


def test_a_low_p95_threshold_fires_after_one_answer_and_shows_a_banner(
    page: Any, app_url: str, artifacts: Path,
) -> None:
    page.goto(app_url)
    page.get_by_test_id("stChatInputTextArea").wait_for(timeout=120_000)
    page.get_by_text("Model:").first.wait_for(timeout=60_000)  # the sidebar saw a healthy server
    page.get_by_text("Sampling & alerts").wait_for()
    set_number(page, "Max tokens", "24")
    set_number(page, "p95 latency above (ms)", str(THRESHOLD_MS))
    set_number(page, "Min requests in window", "1")
    assert page.locator(BANNER).count() == 0
    send(page, "Say hello.", 0)
    assert page.locator(ANSWER_CAPTION, has_text="latency").count() == 1
    # The banner is a fragment that evaluates the rules every few seconds on its own.
    banner = page.locator(BANNER, has_text="Alert firing: slow_p95_latency")
    banner.wait_for(timeout=60_000)
    text = banner.inner_text()
    assert f"> {THRESHOLD_MS} ms over the last 300 s (1 request)" in text
    assert "p95 latency is" in text
    # The link is drawn after the banner's text, by the same run of the fragment: wait for it, then
    # check there is exactly one.
    link = page.get_by_role("link", name="Open the Alerts page")
    link.first.wait_for(timeout=30_000)
    assert link.count() == 1
    shot(page, artifacts, "alerts-banner")


def test_the_latency_chart_draws_the_threshold_and_the_breached_request(page: Any, artifacts: Path) -> None:
    open_page(page, "Dashboard")
    page.wait_for_function(f"() => document.querySelectorAll('{PLOT}').length >= 9")
    page.locator(BANNER, has_text="Alert firing: slow_p95_latency").wait_for()
    chart = page.evaluate(_LATENCY_CHART)
    assert chart is not None
    assert THRESHOLD_MS in chart["lines"]
    assert any(f"slow_p95_latency &gt; {THRESHOLD_MS} ms" in label or f"slow_p95_latency > {THRESHOLD_MS} ms"
               in label for label in chart["labels"]), chart["labels"]
    assert chart["traces"] == ["breached"]
    assert chart["points"] == 1
    shot(page, artifacts, "dashboard-alerts")


def test_the_alerts_page_shows_the_rules_the_firing_state_and_its_history(page: Any, artifacts: Path) -> None:
    page.get_by_role("link", name="Open the Alerts page").click()
    page.get_by_role("heading", name="Alerts", exact=True).wait_for()
    page.get_by_role("heading", name="Rules").wait_for()
    page.get_by_role("heading", name="Current state").wait_for()
    page.get_by_role("heading", name="History").wait_for()
    # Rules, states and history.
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stDataFrame\"]').length === 3")
    assert page.get_by_text("1 change(s) of state, newest first.").count() == 1
    assert page.get_by_text("No rule has changed state yet.").count() == 0
    rules = {row["Name"]: row for row in wait_for_grid_records(grid(page, 0), 2)}
    latency = rules["slow_p95_latency"]
    assert (latency["Metric"], latency["Op"]) == ("p95_latency_ms", ">")
    assert latency["Threshold"] == f"{THRESHOLD_MS} ms"
    assert latency["Min requests"] == "1"
    states = {row["Rule"]: row for row in wait_for_grid_records(grid(page, 1), 2)}
    assert (states["slow_p95_latency"]["Status"], states["slow_p95_latency"]["Requests in window"]) == (
        "firing", "1")
    assert (states["high_error_rate"]["Status"], states["high_error_rate"]["Value"]) == ("ok", "0.0%")
    [change] = wait_for_grid_records(grid(page, 2), 1)
    assert (change["Rule"], change["From"], change["To"]) == ("slow_p95_latency", "ok", "firing")
    assert (change["Condition"], change["Requests in window"]) == (f"p95_latency_ms > {THRESHOLD_MS} ms", "1")
    shot(page, artifacts, "alerts")


def test_a_zero_sampling_rate_drops_the_next_turn_and_the_dashboard_counts_it(
    page: Any, artifacts: Path,
) -> None:
    from playwright.sync_api import expect

    open_page(page, "Chat")
    # The first turn began, and ended, at 100%: head sampling kept it.
    page.get_by_role("button", name="New conversation").click()
    page.wait_for_function(f"() => document.querySelectorAll('{CHAT_MESSAGE}').length === 0")
    slider = page.get_by_test_id("stSlider").filter(has_text="Sampling rate").get_by_role("slider")
    slider.focus()
    slider.press("Home")
    expect(slider).to_have_attribute("aria-valuetext", "0%")
    wait_idle(page)
    send(page, "Say goodbye.", 0)  # a turn begun at 0%: dropped when its answer is in
    open_page(page, "Dashboard")
    tiles = {}
    for label in ("Total Requests", "Traces seen", "Kept by head sampling", "Kept by tail rules", "Dropped"):
        tile = page.locator('[data-testid="stMetric"]', has_text=label)
        tiles[label] = tile.locator('[data-testid="stMetricValue"]').inner_text().strip()
    # The tiles count the stored requests (the kept turn's); the sampling tiles count both turns.
    assert tiles == {"Total Requests": "1", "Traces seen": "2", "Kept by head sampling": "1",
                     "Kept by tail rules": "0", "Dropped": "1"}
    page.get_by_text("Head sampling keeps 0% of new traces").wait_for()
    plots = {plot["title"]: plot for plot in page.evaluate(PLOTS)}
    assert plots["Traces kept and dropped"]["points"] >= 1  # the line of traces seen
    shot(page, artifacts, "dashboard-sampling")


ANSWER_WORDS = 24
WORD_DELAY_S = 0.25  # the fake model's answer takes about 6 s: it ends after its tab has closed


WEBHOOK_WAIT_S = 90.0


def test_an_alert_that_fires_with_no_tab_open_reaches_the_webhook_and_shows_when_a_tab_opens(
    page: Any, tmp_path: Path, artifacts: Path,
) -> None:
    heard = threading.Event()

    def accept(handler: Handler) -> None:
        handler.send_json(200, {})
        heard.set()

    with serve(accept) as hook, FakeLlamaServer(reply=" ".join(["slow"] * ANSWER_WORDS)) as fake:
        fake.chunk_delay_s = WORD_DELAY_S
        env = {"LLAMA_SERVER_URL": fake.url, "OBS_EMBEDDED_SERVER": "0", "OBS_ALERT_INTERVAL_S": "1",
               "OBS_ALERT_WEBHOOK_URL": f"{hook.url}/alerts"}
        with run_app(tmp_path, env, name="streamlit-alerts-no-tab") as url:
            context = page.context  # the same browser (its cookies); its other tab shows another app
            tab = context.new_page()
            tab.set_default_timeout(60_000)
            tab.goto(url)
            tab.get_by_test_id("stChatInputTextArea").wait_for()
            set_number(tab, "p95 latency above (ms)", "1")
            set_number(tab, "Min requests in window", "1")
            session = parse_qs(urlsplit(tab.url).query)["session"][0]
            box = tab.get_by_test_id("stChatInputTextArea")
            box.fill("Take your time.")
            box.press("Enter")
            tab.locator(CHAT_MESSAGE, has_text="slow").wait_for()  # the answer has begun streaming in
            tab.close()
            closed_at = time.time()
            assert [p for p in context.pages if p.url.startswith(url)] == []  # no tab of this app
            # Nobody looks; the answer ends, the rule fires in the background and the webhook hears it.
            assert heard.wait(WEBHOOK_WAIT_S), "the webhook heard nothing"
            posts = [r for r in hook.requests if r.method == "POST"]
            event = posts[0].json
            assert posts[0].path == "/alerts"
            assert (event["rule"], event["status"]) == ("slow_p95_latency", "firing")
            assert event["request_count"] == 1
            assert event["at"] > closed_at
            assert event["value"] > 1000 * WORD_DELAY_S * (ANSWER_WORDS - 2)
            # A tab opened now, in the same browser, shows what fired while none was open.
            tab = context.new_page()
            tab.set_default_timeout(60_000)
            tab.goto(f"{url}/alerts?session={session}")
            tab.get_by_role("heading", name="Alerts", exact=True).wait_for()
            tab.get_by_text("1 change(s) of state, newest first.").wait_for()
            [change] = wait_for_grid_records(grid(tab, 2), 1)
            assert (change["Rule"], change["From"], change["To"]) == ("slow_p95_latency", "ok", "firing")
            tab.locator(BANNER, has_text="Alert firing: slow_p95_latency").wait_for()
            tab.get_by_text("POSTed to").wait_for()
            assert "(1 sent, 0 failed)" in tab.get_by_text("POSTed to").inner_text()
            shot(tab, artifacts, "alerts-fired-with-no-tab")
            tab.close()
