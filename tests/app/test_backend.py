"""Tests of app.backend: URL validation, health checks against loopback servers, the start-up rule."""

from __future__ import annotations

import pytest

from app import backend
from app.backend import ServerHealth
from obs.llm.llama.server import find_free_port
from tests.app.fake_server import FakeLlamaServer


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:8033", "http://127.0.0.1:8033"),
    ("  https://example.org/  ", "https://example.org"),
    ("http://[::1]:8080", "http://[::1]:8080"),
])
def test_valid_urls_are_normalised(url: str, expected: str) -> None:
    assert backend.validate_server_url(url) == expected


@pytest.mark.parametrize(("url", "message"), [
    ("", "must not be empty"),
    ("   ", "must not be empty"),
    ("ftp://127.0.0.1:8033", "http:// or https://"),
    ("127.0.0.1:8033", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("http://", "no host"),
    ("http://127.0.0.1:99999", "not a valid URL"),
])
def test_bad_urls_are_refused_with_a_reason(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        backend.validate_server_url(url)


def test_configured_url_comes_from_the_environment_or_the_default() -> None:
    assert backend.configured_server_url({}) == "http://127.0.0.1:8033"
    assert backend.configured_server_url({"LLAMA_SERVER_URL": " "}) == "http://127.0.0.1:8033"
    assert backend.configured_server_url({"LLAMA_SERVER_URL": "http://h:1/"}) == "http://h:1"
    with pytest.raises(ValueError):
        backend.configured_server_url({"LLAMA_SERVER_URL": "h:1"})


@pytest.mark.parametrize(("value", "allowed"), [(None, True), ("1", True), ("0", False), ("off", False)])
def test_embedded_server_is_on_unless_turned_off(value: str | None, allowed: bool) -> None:
    env = {} if value is None else {"OBS_EMBEDDED_SERVER": value}
    assert backend.embedded_allowed(env) is allowed


def test_health_of_a_ready_server_carries_the_props_facts() -> None:
    with FakeLlamaServer() as fake:
        health = backend.check_health(fake.url)
    assert health == ServerHealth(fake.url, "ok", "ready", "fake-model", 512, "b1-fake")


def test_a_loading_server_is_reported_as_loading() -> None:
    with FakeLlamaServer() as fake:
        fake.health_status = 503
        assert backend.check_health(fake.url).status == "loading"


def test_a_server_answering_500_is_unreachable_with_the_status() -> None:
    with FakeLlamaServer() as fake:
        fake.health_status = 500
        health = backend.check_health(fake.url)
    assert (health.status, health.detail) == ("unreachable", "/health answered HTTP 500")


def test_nothing_listening_is_unreachable() -> None:
    url = f"http://127.0.0.1:{find_free_port()}"
    health = backend.check_health(url)
    assert health.status == "unreachable"
    assert url in health.detail


def _probe(status: str):
    return lambda url: ServerHealth(url, status, "")  # type: ignore[arg-type]


def test_start_up_keeps_a_configured_server_that_answers() -> None:
    started = []
    url, how = backend.choose_server_url("http://a:1", allow_embedded=True,
                                         start_embedded=lambda: started.append(1) or "http://b:2",
                                         probe=_probe("loading"))
    assert (url, started) == ("http://a:1", [])
    assert "http://a:1" in how


def test_start_up_falls_back_to_the_embedded_server() -> None:
    url, how = backend.choose_server_url("http://a:1", allow_embedded=True,
                                         start_embedded=lambda: "http://b:2", probe=_probe("unreachable"))
    assert url == "http://b:2"
    assert how.startswith("embedded llama-server, started because nothing answered at http://a:1")


def test_start_up_without_embedded_server_keeps_the_configured_url() -> None:
    url, how = backend.choose_server_url("http://a:1", allow_embedded=False,
                                         start_embedded=lambda: pytest.fail("must not start"),
                                         probe=_probe("unreachable"))
    assert url == "http://a:1"
    assert "OBS_EMBEDDED_SERVER=0" in how


def test_a_failing_embedded_start_is_reported_not_raised() -> None:
    def boom() -> str:
        raise RuntimeError("model file missing")

    url, how = backend.choose_server_url("http://a:1", allow_embedded=True, start_embedded=boom,
                                         probe=_probe("unreachable"))
    assert url == "http://a:1"
    assert "model file missing" in how
