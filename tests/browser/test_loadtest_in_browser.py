"""The Load test page in real Chromium, against the embedded llama-server the app starts itself.

A user sets a tiny load (2 at once, 4 requests, at most 8 tokens, streamed),
runs it, and reads the summary tiles and caption: they are the figures the
traces stored in the app's history file give. The Dashboard then counts the
4 requests in this browser session's scope.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from obs import semconv
from obs.llm.llama.server import find_free_port
from obs.loadgen.results import percentile
from obs.storage.sqlite import SqliteTraceStore
from tests.browser.conftest import run_app
from tests.browser.pages import open_page, shot, wait_idle

pytestmark = pytest.mark.browser

_TILES = """() => Object.fromEntries(Array.from(document.querySelectorAll('[data-testid="stMetric"]')).map(
  m => [m.querySelector('[data-testid="stMetricLabel"]').innerText.trim(),
        m.querySelector('[data-testid="stMetricValue"]').innerText.trim()]))"""


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the app under test keeps its history file (obs.db) and log."""
    return tmp_path_factory.mktemp("loadtest-app")


@pytest.fixture(scope="module")
def app_url(app_dir: Path) -> Iterator[str]:
    """The dashboard, which starts its own embedded llama-server (nothing answers at its configured URL)."""
    env = {"LLAMA_SERVER_URL": f"http://127.0.0.1:{find_free_port()}", "OBS_EMBEDDED_SERVER": "1"}
    with run_app(app_dir, env, name="streamlit-loadtest") as url:
        yield url


def _set(page: Any, label: str, value: str) -> None:
    box = page.get_by_test_id("stForm").get_by_role("spinbutton", name=label, exact=True)
    box.fill(value)
    box.press("Tab")  # leaves the box (Enter would send the form)


def _request_spans(db: Path) -> list:
    with SqliteTraceStore(str(db)) as store:
        return [s for t in store.all() for s in t.spans if semconv.GEN_AI_OPERATION_NAME in s.attributes]


def test_a_tiny_load_shows_the_summary_the_stored_traces_give(
    page: Any, app_url: str, app_dir: Path, artifacts: Path
) -> None:
    page.goto(app_url)
    open_page(page, "Load test")
    _set(page, "Concurrency", "2")
    _set(page, "Requests", "4")
    _set(page, "Max tokens", "8")
    assert page.get_by_role("switch", name="Stream").is_checked()
    page.get_by_role("button", name="Run load test").click()
    page.get_by_test_id("stMetric").filter(has_text="Requests/s").wait_for(timeout=180_000)
    wait_idle(page)
    tiles = page.evaluate(_TILES)
    caption = page.get_by_test_id("stCaptionContainer").filter(has_text="requests in").inner_text()
    shot(page, artifacts, "loadtest")

    spans = _request_spans(app_dir / "obs.db")
    assert len(spans) == 4 and all(s.status == "success" for s in spans)
    latency, ttft = semconv.OBS_LATENCY_MS, semconv.OBS_TTFT_MS

    def shown(key: str, q: float) -> str:
        return f"{percentile([s.attributes[key] for s in spans], q):.0f} ms"

    assert (tiles["Latency p50"], tiles["Latency p95"], tiles["Latency p99"]) == (
        shown(latency, 0.5), shown(latency, 0.95), shown(latency, 0.99))
    assert (tiles["TTFT p50"], tiles["TTFT p95"]) == (shown(ttft, 0.5), shown(ttft, 0.95))
    assert tiles["Errors"] == "0" and float(tiles["Requests/s"]) > 0 and float(tiles["Output tokens/s"]) > 0
    tokens = sum(s.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] for s in spans)
    assert re.match(r"4 requests in [\d.]+ s at concurrency 2: 4 answered, 0 failed; "
                    rf"{tokens} output tokens\.", caption), caption
    # Rates are per second of the run: requests/s times the run's seconds gives back the 4 requests.
    elapsed = float(re.search(r"in ([\d.]+) s", caption).group(1))
    assert float(tiles["Requests/s"]) * elapsed == pytest.approx(4, abs=0.2)

    open_page(page, "Dashboard")
    total = page.get_by_test_id("stMetric").filter(has_text="Total Requests").get_by_test_id("stMetricValue")
    page.wait_for_function("el => el.innerText.trim() === '4'", arg=total.element_handle(), timeout=30_000)


_CAPACITY = """() => {
  const plot = Array.from(document.querySelectorAll('.js-plotly-plot'))
    .find(p => p.layout && p.layout.title
               && String(p.layout.title.text).replace(/<[^>]*>/g, '') === 'Capacity curve');
  if (!plot) return null;
  return {x: Array.from(plot.data[0].x), y: Array.from(plot.data[0].y),
          labels: Array.from(plot.querySelectorAll('.textpoint text')).map(t => t.textContent)};
}"""


def test_a_sweep_draws_the_capacity_curve_the_stored_traces_give(
    page: Any, app_url: str, app_dir: Path, artifacts: Path
) -> None:
    page.goto(app_url)
    open_page(page, "Load test")
    page.get_by_text("Sweep", exact=True).click()
    levels = page.get_by_test_id("stForm").get_by_role("textbox", name="Sweep levels", exact=True)
    levels.fill("1,2")
    levels.press("Tab")
    _set(page, "Requests", "2")
    _set(page, "Max tokens", "8")
    started_ms = time.time() * 1000.0
    page.get_by_role("button", name="Run load test").click()
    page.get_by_test_id("stAlert").filter(has_text="knee").wait_for(timeout=240_000)
    wait_idle(page)
    page.wait_for_function(f"({_CAPACITY})() !== null", timeout=30_000)
    curve = page.evaluate(_CAPACITY)
    shot(page, artifacts, "loadtest_sweep")

    # The sweep's requests, in the order they began: level 1 sends its two one after the other, then
    # level 2 sends its two at once. With two requests a level, the nearest-rank p95 is the slower one.
    spans = sorted((s for s in _request_spans(app_dir / "obs.db") if s.start_time >= started_ms - 1000.0),
                   key=lambda s: s.start_time)  # fmt: skip
    assert len(spans) == 4 and all(s.status == "success" for s in spans)
    slowest = [max(s.attributes[semconv.OBS_LATENCY_MS] for s in level) for level in (spans[:2], spans[2:])]
    assert curve["labels"] == ["c=1", "c=2"]
    assert curve["y"] == pytest.approx(slowest)
    assert all(rate > 0 for rate in curve["x"])
