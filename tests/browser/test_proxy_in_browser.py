"""A chat sent through the recording proxy by a program appears on the running dashboard, in Chromium.

The dashboard runs with `streamlit run` on a history file in a temporary
directory; `python -m obs.proxy` runs in front of the real embedded
llama-server, recording into the same file as its own service; the OpenAI
client (a program that knows nothing of obs) chats through the proxy.
Without a click, the Traces page lists the call on its next refresh, the
scope "Service: <the proxy's>" shows it alone, and the Sessions page shows
the conversation named by the OpenAI `user` field with its message.

The dashboard's own switch: a user starts the proxy on the Export & receive
page in front of the embedded llama-server the app started, copies its
address from the page, a program chats through it, the call shows on the
Traces page as the proxy's service, and the switch turns it off again.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from benchmarks._process import stop
from obs.llm.llama.server import EmbeddedServer, find_free_port
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, ROOT, run_app
from tests.browser.pages import (
    choose,
    open_page,
    shot,
    show_everything,
    trace_rows,
)
from tests.proxy.support import wait_until

pytestmark = pytest.mark.browser

SERVICE = "proxied-program"
QUESTION = "Hello through the proxy, name a colour."


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


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "history" / "obs.db"


@pytest.fixture
def proxy_url(embedded_server: EmbeddedServer, db: Path, tmp_path: Path) -> Iterator[str]:
    """`python -m obs.proxy` in front of the embedded server, recording into the dashboard's file."""
    port = find_free_port()
    log = (tmp_path / "proxy.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "obs.proxy", "--upstream", embedded_server.url, "--port", str(port),
         "--db", str(db), "--service-name", SERVICE, "--capture-content"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            return True
        try:
            return httpx.get(url + "/health", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    try:
        assert wait_until(up, 60.0) and process.poll() is None, (tmp_path / "proxy.log").read_text()
        yield url
    finally:
        stop(process)  # as Ctrl-C does, so the proxy stores what it holds
        log.close()








def test_a_chat_sent_through_the_proxy_by_a_program_appears_on_the_dashboard(
    embedded_server: EmbeddedServer, db: Path, proxy_url: str, tmp_path: Path, chromium: Any,
    artifacts: Path,
) -> None:
    env = {"LLAMA_SERVER_URL": embedded_server.url, "OBS_EMBEDDED_SERVER": "0", "OBS_DB_PATH": str(db)}
    (tmp_path / "app").mkdir()
    with run_app(tmp_path / "app", env, name="proxy-dashboard") as url:
        tab = chromium.new_context(viewport={"width": 1440, "height": 1000}).new_page()
        tab.set_default_timeout(60_000)
        tab.goto(url)
        tab.get_by_test_id("stChatInputTextArea").wait_for()
        show_everything(tab, "Traces")
        tab.get_by_text("No traces yet in this time range and scope.").wait_for()

        program = OpenAI(base_url=proxy_url + "/v1", api_key="not-needed", timeout=120)
        raw = program.chat.completions.with_raw_response.create(
            model="smollm2", messages=[{"role": "user", "content": QUESTION}], max_tokens=8, seed=1,
            temperature=0.0, user="browser-conversation")
        assert raw.parse().choices[0].message.content
        trace_id = raw.headers["traceparent"].split("-")[1]

        # Nothing clicked: the page's next refresh lists the call, and offers the proxy's service.
        rows = trace_rows(tab, 1)
        assert [r[-1] for r in rows] == [trace_id]
        assert SERVICE in rows[0] and "chat smollm2" in rows[0]
        choose(tab, "Scope", f"Service: {SERVICE}")
        rows = trace_rows(tab, 1)
        assert [r[-1] for r in rows] == [trace_id]
        shot(tab, artifacts, "proxy-traces")

        show_everything(tab, "Sessions")
        tab.get_by_text(QUESTION).first.wait_for()
        shot(tab, artifacts, "proxy-sessions")
        tab.context.close()


def test_the_dashboards_proxy_switch_records_a_programs_chat_and_turns_off(
    tmp_path: Path, chromium: Any, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    # Nothing answers at the configured URL: the app starts its own embedded llama-server.
    env = {"LLAMA_SERVER_URL": f"http://127.0.0.1:{find_free_port()}", "OBS_EMBEDDED_SERVER": "1"}
    (tmp_path / "app").mkdir()
    with run_app(tmp_path / "app", env, name="proxy-switch") as url:
        tab = chromium.new_context(viewport={"width": 1440, "height": 1000}).new_page()
        tab.set_default_timeout(120_000)
        tab.goto(url)
        tab.get_by_test_id("stChatInputTextArea").wait_for()
        open_page(tab, "Export & receive")
        field = tab.get_by_role("textbox", name="Upstream llama-server")
        expect(field).to_have_value(re.compile(r"^http://127\.0\.0\.1:\d+$"))  # once the page has filled it
        upstream = field.input_value()
        assert httpx.get(upstream + "/health", timeout=5).json()["status"] == "ok"  # the embedded server
        port = find_free_port()
        box = tab.get_by_role("spinbutton", name="Proxy port")
        box.fill(str(port))
        tab.get_by_role("button", name="Start the proxy").click()
        code = tab.get_by_test_id("stCode").filter(has_text="OPENAI_BASE_URL=")
        code.wait_for()
        lines = code.inner_text().splitlines()
        base = next(line for line in lines if line.startswith("OPENAI_BASE_URL=")).split("=", 1)[1]
        assert base == f"http://127.0.0.1:{port}/v1"
        shot(tab, artifacts, "proxy-switch-on")

        answer = httpx.post(base + "/chat/completions", timeout=120, json={
            "model": "smollm2", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8,
            "temperature": 0})
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
        trace_id = answer.headers["traceparent"].split("-")[1]

        show_everything(tab, "Traces")
        rows = trace_rows(tab, 1)
        assert [r[-1] for r in rows] == [trace_id]
        assert "obs-proxy" in rows[0] and "chat smollm2" in rows[0]
        shot(tab, artifacts, "proxy-switch-traces")

        open_page(tab, "Export & receive")
        tab.get_by_role("button", name="Stop the proxy").click()
        tab.get_by_role("button", name="Start the proxy").wait_for()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        tab.context.close()
