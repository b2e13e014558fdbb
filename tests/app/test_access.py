"""Who may open the dashboard: loopback by default, wider only with an access token (app.access)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from app import access, state
from obs.llm.llama.server import find_free_port
from tests.app.conftest import APP_SCRIPT, ROOT, RUN_TIMEOUT_S
from tests.app.test_sessions import xsrf_cookie

TOKEN = "correct-horse-battery-staple"


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.53", True), ("localhost", True), ("::1", True), ("[::1]", True),
    (None, False), ("", False), ("0.0.0.0", False), ("::", False), ("192.0.2.7", False),
    ("dashboard.example.org", False),
])
def test_only_loopback_addresses_count_as_this_machine(address: str | None, loopback: bool) -> None:
    assert access.is_loopback(address) is loopback


def test_loopback_needs_no_token_and_a_token_set_is_required_anywhere() -> None:
    assert access.required_token("127.0.0.1", {}) is None
    assert access.required_token("127.0.0.1", {"OBS_ACCESS_TOKEN": TOKEN}) == TOKEN
    assert access.required_token("0.0.0.0", {"OBS_ACCESS_TOKEN": TOKEN}) == TOKEN


@pytest.mark.parametrize(("address", "environ", "message"), [
    ("0.0.0.0", {}, "refusing to serve the dashboard on address 0.0.0.0 without an access token"),
    (None, {}, "on every network interface without an access token: .* Set OBS_ACCESS_TOKEN"),
    ("127.0.0.1", {"OBS_ACCESS_TOKEN": "short"}, "OBS_ACCESS_TOKEN must be at least 16 characters, got 5"),
])
def test_serving_wide_without_a_good_token_is_refused(address: str | None, environ: dict[str, str],
                                                      message: str) -> None:
    with pytest.raises(ValueError, match=message):
        access.required_token(address, environ)


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = access.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", spy)
    assert access.token_matches(TOKEN, TOKEN)
    assert not access.token_matches(TOKEN[:-1], TOKEN)
    assert not access.token_matches("", TOKEN)
    assert calls == [(TOKEN.encode(), TOKEN.encode()), (TOKEN[:-1].encode(), TOKEN.encode()),
                     (b"", TOKEN.encode())]


@pytest.fixture
def served_wide() -> Iterator[None]:
    config.set_option("server.address", "0.0.0.0")
    yield
    config.set_option("server.address", "127.0.0.1")


def _visit(monkeypatch: pytest.MonkeyPatch, browser: bytes) -> AppTest:
    monkeypatch.setattr(state, "_cookies", lambda: xsrf_cookie(browser))
    at = AppTest.from_file(str(APP_SCRIPT), default_timeout=RUN_TIMEOUT_S)
    at.run()
    return at


def test_served_wide_without_a_token_the_app_shows_only_why(served_wide: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    at = _visit(monkeypatch, b"a visitor's token")
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Refusing to serve the dashboard on address 0.0.0.0 without an access token: other machines could "
        "read every prompt and answer. Set OBS_ACCESS_TOKEN (at least 16 characters; make one with "
        "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`), or serve on 127.0.0.1 "
        "(server.address in .streamlit/config.toml)."]
    assert not at.title and not at.chat_input and not at.sidebar.text_input
    assert state.APP not in at.session_state


def test_served_wide_the_token_is_asked_once_per_browser(served_wide: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBS_ACCESS_TOKEN", TOKEN)
    at = _visit(monkeypatch, b"alice's browser!")
    assert state.APP not in at.session_state and not at.chat_input
    at.text_input[0].input("guess-guess-guess-guess")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["That is not the access token."]
    assert state.APP not in at.session_state and not at.chat_input
    at.text_input[0].input(TOKEN)
    at.button[0].click().run()
    assert not at.exception
    assert at.title[0].value == "Chat" and len(at.chat_input) == 1
    # A reload in the same browser is not asked again; another browser is.
    again = _visit(monkeypatch, b"alice's browser!")
    assert again.title[0].value == "Chat"
    stranger = _visit(monkeypatch, b"mallory's browser")
    assert stranger.text_input[0].label == "Access token" and not stranger.chat_input


def _preflight(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMLIT_", "OBS_ACCESS"))}
    return subprocess.run([sys.executable, "-m", "app.access"], cwd=ROOT, env={**full, **env},
                          capture_output=True, text=True, timeout=60)


def test_the_preflight_refuses_to_start_wide_without_a_token() -> None:
    assert _preflight({}).returncode == 0
    refused = _preflight({"STREAMLIT_SERVER_ADDRESS": "0.0.0.0"})
    assert refused.returncode == 2
    assert "refusing to serve the dashboard on address 0.0.0.0 without an access token" in refused.stderr
    assert _preflight({"STREAMLIT_SERVER_ADDRESS": "0.0.0.0", "OBS_ACCESS_TOKEN": TOKEN}).returncode == 0


def _outside_address() -> str | None:
    """An address of this machine that other machines use to reach it, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if access.is_loopback(address) else address


def test_streamlit_run_listens_on_loopback_only_by_default(tmp_path) -> None:
    outside = _outside_address()
    if outside is None:
        pytest.skip("this machine has no non-loopback address to try")
    port = find_free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env.update({"OBS_EMBEDDED_SERVER": "0", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"})
    log = (tmp_path / "app.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "app.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, (tmp_path / "app.log").read_text()
                time.sleep(0.2)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{outside}:{port}/_stcore/health", timeout=2.0)
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
