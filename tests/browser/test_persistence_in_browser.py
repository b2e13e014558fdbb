"""The history file in real Chromium: it survives a restart of the app, and other programs write into it.

The app is started with `streamlit run` on a history file in a temporary
directory, talking to a loopback fake llama-server. (1) A user chats, reads
the dashboard's tiles and the trace; the app process is stopped and started
again on the same file; in a fresh browser the earlier trace, the
conversation and the same tiles show. (2) While the app runs, a separate
Python process (a user's script: `obs.configure(db=<the file>,
service_name="my-script")` and an InstrumentedClient) makes a chat; it
appears on the running Traces page within one refresh, and the scope
"Service: my-script" shows it alone. Values are read as a user reads them:
from the tiles, the grid's cells and the captions on screen.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app.fake_server import FakeLlamaServer
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, ROOT, run_app
from tests.browser.pages import (
    choose,
    send,
    shot,
    show_everything,
    trace_rows,
    wait_idle,
)

pytestmark = pytest.mark.browser

_TILES = """() => Object.fromEntries(Array.from(document.querySelectorAll('[data-testid="stMetric"]')).map(
  m => [m.querySelector('[data-testid="stMetricLabel"]').innerText.trim(),
        m.querySelector('[data-testid="stMetricValue"]').innerText.trim()]))"""
_REQUEST_TILES = ("Total Requests", "Total Tokens", "Total Cost", "Avg Latency", "P95 Latency", "Error Rate",
                  "Cache Hit Rate", "Throughput")


@pytest.fixture
def fake() -> Iterator[FakeLlamaServer]:
    with FakeLlamaServer(reply="Persistence keeps every trace.") as server:
        yield server


@pytest.fixture
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def _tab(browser: Any, url: str) -> Any:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    tab.goto(url)
    tab.get_by_test_id("stChatInputTextArea").wait_for()
    return tab




def _tiles(tab: Any) -> dict[str, str]:
    tab.get_by_test_id("stMetric").first.wait_for()
    wait_idle(tab)
    tiles = tab.evaluate(_TILES)
    return {label: tiles[label] for label in _REQUEST_TILES}






def test_after_a_restart_the_earlier_traces_session_and_tiles_show(
    tmp_path: Path, fake: FakeLlamaServer, chromium: Any, artifacts: Path,
) -> None:
    db = tmp_path / "history" / "obs.db"
    env = {"LLAMA_SERVER_URL": fake.url, "OBS_EMBEDDED_SERVER": "0", "OBS_DB_PATH": str(db)}
    (tmp_path / "first").mkdir()
    with run_app(tmp_path / "first", env, name="persistence-first") as url:
        tab = _tab(chromium, url)
        send(tab, "Does the history survive a restart?", 0)
        show_everything(tab, "Dashboard")
        tab.wait_for_function(f"() => ({_TILES})()['Total Requests'] === '1'")
        before = _tiles(tab)
        assert before["Total Requests"] == "1"
        show_everything(tab, "Traces")
        [row] = trace_rows(tab, 1)
        trace_id = row[-1]
        tab.context.close()
    (tmp_path / "second").mkdir()
    with run_app(tmp_path / "second", env, name="persistence-second") as url:
        tab = _tab(chromium, url)
        show_everything(tab, "Dashboard")
        # The tiles are redrawn after the scope changes: wait until they count the earlier request.
        tab.wait_for_function(f"() => ({_TILES})()['Total Requests'] === '{before['Total Requests']}'")
        assert _tiles(tab) == before
        shot(tab, artifacts, "persistence-dashboard-after-restart")
        show_everything(tab, "Traces")
        rows = trace_rows(tab, 1)
        assert [r[-1] for r in rows] == [trace_id]
        assert "chat turn" in rows[0]
        show_everything(tab, "Sessions")
        tab.get_by_text("Does the history survive a restart?").first.wait_for()
        shot(tab, artifacts, "persistence-sessions-after-restart")
        tab.context.close()


_SCRIPT = textwrap.dedent("""
    import sys
    import obs
    from obs.config import shutdown

    obs.configure(db=sys.argv[1], service_name="my-script")
    with obs.InstrumentedClient(sys.argv[2]) as client:
        response, span = client.chat([{"role": "user", "content": "Hello from my script"}], max_tokens=16)
    print(span.trace_id)
    shutdown()
""")


def test_a_user_scripts_chat_appears_on_the_running_dashboard_by_service(
    tmp_path: Path, fake: FakeLlamaServer, chromium: Any, artifacts: Path,
) -> None:
    db = tmp_path / "history" / "obs.db"
    env = {"LLAMA_SERVER_URL": fake.url, "OBS_EMBEDDED_SERVER": "0", "OBS_DB_PATH": str(db)}
    (tmp_path / "app").mkdir()
    with run_app(tmp_path / "app", env, name="persistence-script") as url:
        tab = _tab(chromium, url)
        show_everything(tab, "Traces")
        tab.get_by_text("No traces yet in this time range and scope.").wait_for()
        done = subprocess.run([sys.executable, "-c", _SCRIPT, str(db), fake.url], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        trace_id = done.stdout.strip().splitlines()[-1]
        # Nothing clicked: the page's next refresh lists the script's trace, and offers its service.
        rows = trace_rows(tab, 1)
        assert [r[-1] for r in rows] == [trace_id]
        choose(tab, "Scope", "Service: my-script")
        rows = trace_rows(tab, 1)
        assert [r[-1] for r in rows] == [trace_id]
        assert "my-script" in rows[0]
        shot(tab, artifacts, "persistence-user-script")
        tab.context.close()
