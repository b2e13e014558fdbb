"""AppTest of the Export & receive page's proxy switch, in front of the real embedded llama-server.

The panel is filled in as a user does (its upstream is the dashboard's own
server), the proxy starts on the chosen port, a program (raw httpx) chats
through it, and the call lands in the dashboard's history file as the
proxy's service with the server's own token counts; the page shows the
address, the lines to copy, and the counters; the switch turns it off and
the port is free again. Bad input is refused with a message.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app import proxying
from obs import semconv
from obs.llm.llama.server import find_free_port
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.traces import Trace
from tests.app.conftest import open_app
from tests.receive.support import wait_until

PAGE = "app/pages/export.py"


@pytest.fixture(autouse=True)
def _no_proxy_left() -> Iterator[None]:
    yield
    proxying.dashboard_proxy().stop(10.0)


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _start(at, upstream: str | None, port: int) -> None:
    if upstream is not None:
        at.text_input(key="w_proxy_upstream").set_value(upstream)
    at.number_input(key="w_proxy_port").set_value(port)
    next(b for b in at.button if b.label == "Start the proxy").click().run()
    assert not at.exception, at.exception


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _proxied_traces(db: Path) -> list[Trace]:
    with SqliteTraceStore(str(db)) as store:
        return [t for t in store.all() if t.metadata.get("service.name") == proxying.PROXY_SERVICE]


def test_the_switch_starts_the_proxy_in_front_of_the_dashboards_server_and_records_into_its_file(
    real_server: str, history_db: Path
) -> None:
    at = open_app(PAGE)
    assert at.text_input(key="w_proxy_upstream").value == real_server  # the dashboard's own server
    port = find_free_port()
    _start(at, None, port)
    url = f"http://127.0.0.1:{port}"
    shown = "\n".join(m.value for m in at.markdown)
    assert f"Proxy at `{url}` → `{real_server}`" in shown
    codes = [c.value for c in at.code]
    assert any(code.startswith(f"curl -s {url}/v1/chat/completions") for code in codes)
    assert f"OPENAI_BASE_URL={url}/v1\nOPENAI_API_KEY=not-needed" in codes

    answer = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
        "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "temperature": 0})
    assert answer.status_code == 200 and answer.headers["traceparent"].startswith("00-")
    trace_id = answer.headers["traceparent"].split("-")[1]
    usage = answer.json()["usage"]

    assert wait_until(lambda: [t.id for t in _proxied_traces(history_db)] == [trace_id], 20.0)
    span = _proxied_traces(history_db)[0].spans[0]
    assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == usage["prompt_tokens"]
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == usage["completion_tokens"]
    assert semconv.GEN_AI_INPUT_MESSAGES in span.attributes  # "Record prompts and answers" was on

    at.run()
    metrics = _metrics(at)
    assert metrics["Requests relayed"] == "1" and metrics["Model calls recorded"] == "1"
    assert metrics["Upstream unreachable"] == "0"

    next(b for b in at.button if b.label == "Stop the proxy").click().run()
    assert proxying.dashboard_proxy().status() is None
    assert not _listening(port)
    assert any(b.label == "Start the proxy" for b in at.button)
    assert "Requests relayed" not in _metrics(at)


def test_a_proxy_in_front_of_nothing_answers_502_and_the_page_counts_it(history_db: Path) -> None:
    at = open_app(PAGE)
    dead = f"http://127.0.0.1:{find_free_port()}"
    port = find_free_port()
    _start(at, dead, port)
    answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                        json={"messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 502 and "no server answers" in answer.json()["error"]["message"]
    at.run()
    assert _metrics(at)["Upstream unreachable"] == "1"
    assert wait_until(lambda: len(_proxied_traces(history_db)) == 1, 20.0)
    assert _proxied_traces(history_db)[0].status == "error"


def test_a_taken_port_and_a_bad_upstream_are_refused_with_what_to_do() -> None:
    at = open_app(PAGE)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _start(at, "http://127.0.0.1:9", port)
        assert f"cannot listen on 127.0.0.1:{port}" in at.error[0].value
        assert "choose another port" in at.error[0].value
    assert proxying.dashboard_proxy().status() is None
    _start(at, "ftp://example", find_free_port())
    assert "must start with http:// or https://" in at.error[0].value
    assert proxying.dashboard_proxy().status() is None
