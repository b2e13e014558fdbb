"""Every way a server can fail a non-streamed chat, each against a real misbehaving loopback server.

Each failure must give a span with status "error", `error.type` and the
message; an error in the metrics; an error log entry with the trace id; a
typed exception whose message says what to do; and a trace that is kept.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from obs import semconv
from obs.llm.errors import (
    AuthenticationError,
    BadResponse,
    HTTPStatusError,
    LLMServerError,
    ServerLoading,
    ServerTimeout,
    ServerUnavailable,
)
from tests.llm import servers
from tests.llm.client_support import MESSAGES, Rig, make_rig


@contextmanager
def _refused() -> Iterator[servers.LoopbackServer]:
    yield servers.LoopbackServer(url=servers.refused_url())


@contextmanager
def _unknown_host() -> Iterator[servers.LoopbackServer]:
    yield servers.LoopbackServer(url="http://no-such-host.invalid:8033")


@contextmanager
def _serving(behaviour: servers.Behaviour) -> Iterator[servers.LoopbackServer]:
    with servers.serve(behaviour) as server:
        yield server


CASES: dict[str, tuple[Callable[[], Any], type[LLMServerError], str, str, int | None]] = {
    # name: (server, exception, error.type, message fragment, HTTP status on the span)
    "refused": (
        _refused,
        ServerUnavailable,
        "ServerUnavailable",
        "no llama-server answers at {url}: "
        "start one with `python -m obs.llm.llama.server` or set LLAMA_SERVER_URL",
        None,
    ),
    "unknown host": (
        _unknown_host,
        ServerUnavailable,
        "ServerUnavailable",
        "no llama-server answers at http://no-such-host.invalid:8033: start one with",
        None,
    ),
    "timeout": (
        lambda: _serving(servers.hang),
        ServerTimeout,
        "ServerTimeout",
        "llama-server at {url} did not answer within 0.3 s (waiting)",
        None,
    ),
    "500 with llama error json": (
        lambda: _serving(servers.error_status(500, "slot unavailable")),
        HTTPStatusError,
        "500",
        "llama-server at {url} failed with HTTP 500: slot unavailable: see the server's log",
        500,
    ),
    "400 bad request": (
        lambda: _serving(
            servers.error_status(400, "Expected 'messages' to be an array", "invalid_request_error")
        ),
        HTTPStatusError,
        "400",
        "rejected the request (400: Expected 'messages' to be an array): check the messages and parameters",
        400,
    ),
    "503 while loading": (
        lambda: _serving(servers.loading),
        ServerLoading,
        "503",
        "llama-server at {url} is not ready (503: Loading model): "
        "it is still loading its model; retry shortly",
        503,
    ),
    "401 wants a key": (
        lambda: _serving(servers.unauthorized),
        AuthenticationError,
        "401",
        "refused the request (401: Invalid API Key): pass api_key= matching the server's --api-key",
        401,
    ),
    "non-JSON body": (
        lambda: _serving(servers.garbage),
        BadResponse,
        "BadResponse",
        "the server at {url} answered with something that is not JSON (text/html: '<html><body>surprise",
        200,
    ),
    "JSON without choices": (
        lambda: _serving(servers.no_choices),
        BadResponse,
        "BadResponse",
        "answered JSON that is not a chat completion (the JSON has no choices (keys: id, model, object))",
        200,
    ),
    "500 with a non-JSON body": (
        lambda: _serving(lambda h: h.send_raw(500, b"Internal Server Error")),
        HTTPStatusError,
        "500",
        "failed with HTTP 500: Internal Server Error",
        500,
    ),
}


def _assert_recorded(rig: Rig, error: LLMServerError, error_type: str, status: int | None) -> None:
    span = rig.only_span()
    assert span.status == "error"
    assert span.attributes[semconv.ERROR_TYPE] == error_type
    assert span.attributes[semconv.ERROR_MESSAGE] == str(error)
    assert span.attributes.get(semconv.HTTP_RESPONSE_STATUS_CODE) == status
    assert span.attributes[semconv.OBS_CACHE_HIT] is False
    exception_events = [e for e in span.events if e.name == "exception"]
    assert len(exception_events) == 1
    assert exception_events[0].attributes[semconv.EXCEPTION_TYPE] == type(error).__name__
    assert rig.only_trace().status == "error"
    metrics = rig.client.get_metrics()
    assert (metrics.request_count, metrics.error_count) == (1, 1)
    errors = [e for e in rig.logger.get_logs_by_level("error") if e.trace_id == span.trace_id]
    assert len(errors) == 1
    assert errors[0].span_id == span.id
    assert errors[0].message == f"{span.name} failed: {error}"
    assert errors[0].data["error_type"] == error_type


@pytest.mark.parametrize("case", list(CASES))
def test_failure_is_typed_recorded_and_explained(case: str) -> None:
    make_server, exc_type, error_type, message, status = CASES[case]
    with make_server() as server:
        rig = make_rig(server.url, timeout=0.3)
        with pytest.raises(exc_type) as caught:
            rig.client.chat(MESSAGES)
    error = caught.value
    assert message.format(url=server.url) in str(error)
    assert error.url == server.url.rstrip("/")
    assert error.error_type == error_type
    _assert_recorded(rig, error, error_type, status)


def test_http_error_keeps_what_the_server_said() -> None:
    with servers.serve(servers.loading) as server:
        rig = make_rig(server.url)
        with pytest.raises(ServerLoading) as caught:
            rig.client.chat(MESSAGES)
    assert caught.value.status_code == 503
    assert caught.value.server_message == "Loading model"
    assert caught.value.server_error_type == "unavailable_error"


def test_secret_echoed_by_a_server_is_redacted() -> None:
    secret = "sk-echo-456"
    with servers.serve(servers.echo_secret) as server:
        rig = make_rig(server.url, api_key=secret)
        with pytest.raises(HTTPStatusError) as caught:
            rig.client.chat(MESSAGES)
    assert secret not in str(caught.value)
    assert "Bearer ***" in str(caught.value)
    assert secret not in (caught.value.server_message or "")
    assert secret not in rig.everything_recorded()


def test_a_wrong_key_says_so() -> None:
    with servers.serve(servers.unauthorized) as server:
        rig = make_rig(server.url, api_key="sk-wrong")
        with pytest.raises(
            AuthenticationError, match="the API key given to the client is not one the server"
        ):
            rig.client.chat(MESSAGES)
    assert "sk-wrong" not in rig.everything_recorded()


def test_the_app_s_own_interrupt_passes_through_and_is_recorded() -> None:
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with servers.serve(servers.hang) as server:
            rig = make_rig(server.url, timeout=10, read_props=False)
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(KeyboardInterrupt):
                rig.client.chat(MESSAGES)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    span = rig.only_span()
    assert span.status == "error"
    assert span.attributes[semconv.ERROR_TYPE] == "KeyboardInterrupt"
    assert rig.client.get_metrics().error_count == 1


def test_failed_requests_in_a_conversation_keep_the_trace() -> None:
    with servers.serve(servers.error_status(500, "boom")) as server:
        rig = make_rig(server.url)
        rig.client.start_trace("conversation")
        for _ in range(2):
            with pytest.raises(HTTPStatusError):
                rig.client.chat(MESSAGES)
        trace = rig.client.end_current_trace()
    assert trace is not None and trace.status == "error"
    assert [s.status for s in trace.spans] == ["error", "error"]
    assert rig.store.get(trace.id) == trace
    assert rig.client.get_metrics().error_count == 2


def test_a_slow_server_is_fine_within_the_timeout_and_a_timeout_beyond_it() -> None:
    with servers.serve(servers.slow(0.2)) as server:
        patient = make_rig(server.url, timeout=5, read_props=False)
        response, span = patient.client.chat(MESSAGES)
        hasty = make_rig(server.url, timeout=0.05, read_props=False)
        with pytest.raises(ServerTimeout, match=r"did not answer within 0\.05 s"):
            hasty.client.chat(MESSAGES)
    assert response.content == servers.CONTENT and span.status == "success"
    assert hasty.only_span().attributes[semconv.ERROR_TYPE] == "ServerTimeout"
