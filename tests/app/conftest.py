"""Fixtures for the app tests: AppTest on the real router, loopback servers, the embedded model.

Every app test keeps its history in a SQLite file of its own (`OBS_DB_PATH`
in the test's temporary directory), and runs with `OBS_EMBEDDED_SERVER=0` and `LLAMA_SERVER_URL` at a
port where nothing listens, unless a fixture points it at a server: no test
starts a llama-server by accident. The real embedded server is started once
per test session (tests/conftest.py), only for tests that ask for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from obs import semconv
from obs.llm.conversation import conversation_attributes
from obs.llm.llama.server import EmbeddedServer, find_free_port
from tests.app.fake_server import FakeLlamaServer

ROOT = Path(__file__).resolve().parents[2]
APP_SCRIPT = ROOT / "streamlit_app.py"
RUN_TIMEOUT_S = 60


@pytest.fixture(autouse=True)
def _served_on_loopback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """AppTests see the bind address of .streamlit/config.toml (127.0.0.1) wherever pytest runs from."""
    monkeypatch.delenv("OBS_ACCESS_TOKEN", raising=False)
    previous = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    yield
    config.set_option("server.address", previous)


@pytest.fixture(autouse=True)
def _no_server_by_default(monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"http://127.0.0.1:{find_free_port()}"
    monkeypatch.setenv("LLAMA_SERVER_URL", url)
    monkeypatch.setenv("OBS_EMBEDDED_SERVER", "0")
    return url


@pytest.fixture(autouse=True)
def history_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The app's history file: a fresh SQLite file per test, never the repository's .obs/."""
    path = tmp_path / "history" / "obs.db"
    monkeypatch.setenv("OBS_DB_PATH", str(path))
    return path


@pytest.fixture
def dead_url(_no_server_by_default: str) -> str:
    """The URL the app is configured with, where nothing listens."""
    return _no_server_by_default


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLlamaServer]:
    """A loopback OpenAI-compatible server the app is configured to use."""
    with FakeLlamaServer() as fake:
        monkeypatch.setenv("LLAMA_SERVER_URL", fake.url)
        yield fake


@pytest.fixture
def real_server(embedded_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The app configured to use the real embedded server; returns its URL."""
    monkeypatch.setenv("LLAMA_SERVER_URL", embedded_server.url)
    return embedded_server.url


def open_app(page: str | None = None) -> AppTest:
    """Run the router once (Chat is the default page), then switch to `page` if given."""
    at = AppTest.from_file(str(APP_SCRIPT), default_timeout=RUN_TIMEOUT_S)
    at.run()
    if page is not None:
        at.switch_page(page).run()
    return at


def record_request(app, *, latency_ms: float, prompt_tokens: int = 10, completion_tokens: int = 20,
                   error: bool = False, name: str = "chat test-model") -> str:
    """Record one LLM request in `app`'s obs objects the way the client does; return its trace id.

    Used by page tests that need data without a model: the span carries the
    semconv attributes the dashboard reads, and the collector gets the request.
    """
    cost = app.collector.cost_for(prompt_tokens, completion_tokens)
    conversation = app.conversation_id()  # as a chat turn's request, so "this browser session" holds it
    if conversation not in app.conversations:
        app.conversations.append(conversation)
    with app.tracer.start_span(name, kind="client") as span:
        span.set_attributes({
            **conversation_attributes(conversation),
            semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_CHAT,
            semconv.GEN_AI_REQUEST_MODEL: "test-model",
            semconv.GEN_AI_USAGE_INPUT_TOKENS: prompt_tokens,
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS: completion_tokens,
            semconv.OBS_LATENCY_MS: latency_ms,
            semconv.OBS_TTFT_MS: latency_ms / 4,
            semconv.OBS_COST_USD: cost,
            semconv.LLAMA_CPP_TIMINGS_PROMPT_MS: latency_ms / 4,
            semconv.LLAMA_CPP_TIMINGS_PREDICTED_MS: latency_ms / 2,
            semconv.OBS_NON_MODEL_MS: latency_ms / 4,
        })
        span.add_event(semconv.EVENT_REQUEST_START)
        if error:
            span.record_error("the server failed")
        trace_id = span.trace_id
    app.collector.record_request(latency_ms, prompt_tokens, completion_tokens, error=error,
                                 model="test-model", ttft_ms=latency_ms / 4)
    app.logger.log("error" if error else "info", f"{name} finished", trace_id=trace_id)
    app.flush()  # in the history file before the next page run reads it
    return trace_id


def plain(markdown: str) -> str:
    """Markdown source with backslash escapes removed: the text a reader sees."""
    return re.sub(r"\\(.)", r"\1", markdown)
