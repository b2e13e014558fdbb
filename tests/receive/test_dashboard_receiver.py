"""The receiver the dashboard runs (app.receiving): port setting, token, file, stop, forwarding."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app import receiving
from obs.storage.sqlite import SqliteTraceStore
from tests.export.receivers import receive
from tests.receive.support import TRACE_ID, chat_trace, protobuf_body, wait_until

TOKEN = "a-dashboard-token-of-24-chars"
PROTOBUF = {"content-type": "application/x-protobuf"}


@pytest.mark.parametrize(("value", "port"),
                         [("", 4318), ("  ", 4318), ("0", 0), ("4319", 4319), (" 65535 ", 65535)])
def test_receiver_port_from_env(value: str, port: int) -> None:
    assert receiving.receiver_port_from_env({receiving.RECEIVER_PORT_ENV: value}) == port
    assert receiving.receiver_port_from_env({}) == receiving.DEFAULT_RECEIVER_PORT


@pytest.mark.parametrize("value", ["-1", "65536", "http", "43.18"])
def test_a_bad_port_names_the_variable_and_the_range(value: str) -> None:
    with pytest.raises(ValueError, match=r"OBS_RECEIVER_PORT must be a port in \[0, 65535\] \(0 turns"):
        receiving.receiver_port_from_env({receiving.RECEIVER_PORT_ENV: value})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteTraceStore]:
    """A real SQLite history file."""
    with SqliteTraceStore(str(tmp_path / "obs.db")) as opened:
        yield opened


def test_with_a_token_both_routes_require_it_and_traces_reach_the_file(store: SqliteTraceStore) -> None:
    info = receiving.start_receiver("127.0.0.1", 0, TOKEN, store)
    try:
        assert info.running and info.token_required and info.endpoint == f"http://127.0.0.1:{info.port}"
        assert "OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token>" in receiving.sdk_settings(info)
        body = protobuf_body([chat_trace()])
        url = f"{info.endpoint}/v1/traces"
        assert httpx.post(url, content=body, headers=PROTOBUF).status_code == 401
        assert httpx.get(f"{info.endpoint}/metrics").status_code == 401
        wrong = {**PROTOBUF, "authorization": "Bearer not-the-token-at-all-0000"}
        assert httpx.post(url, content=body, headers=wrong).status_code == 401
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert httpx.post(url, content=body, headers={**PROTOBUF, **bearer}).status_code == 200
        assert wait_until(lambda: store.get(TRACE_ID) is not None)
        assert httpx.get(f"{info.endpoint}/metrics", headers=bearer).status_code == 200
    finally:
        info.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.post(url, content=body, headers={**PROTOBUF, **bearer})


def test_without_a_token_the_loopback_receiver_is_open(store: SqliteTraceStore) -> None:
    info = receiving.start_receiver("127.0.0.1", 0, None, store)
    try:
        assert receiving.sdk_settings(info) == [f"OTEL_EXPORTER_OTLP_ENDPOINT={info.endpoint}",
                                                "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"]
        response = httpx.post(f"{info.endpoint}/v1/traces", content=protobuf_body([chat_trace()]),
                              headers=PROTOBUF)
        assert response.status_code == 200
    finally:
        info.stop()
    assert store.get(TRACE_ID) is not None  # stopping stores what was queued


def test_a_port_in_use_is_a_problem_to_show_not_an_exception(store: SqliteTraceStore) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        info = receiving.start_receiver("127.0.0.1", port, None, store)
    assert not info.running and f"could not listen on 127.0.0.1:{port}" in info.problem
    assert "OBS_RECEIVER_PORT" in info.problem and receiving.sdk_settings(info) == []


def test_received_traces_are_forwarded_when_forwarding_is_on(store: SqliteTraceStore) -> None:
    forwarder = receiving.forwarder()
    info = receiving.start_receiver("127.0.0.1", 0, None, store)
    try:
        with receive() as peer:
            forwarder.configure(peer.base, "http/protobuf", {"x-team": "search"})
            httpx.post(f"{info.endpoint}/v1/traces", content=protobuf_body([chat_trace()]), headers=PROTOBUF)
            assert peer.wait_for(1, 20.0)
            request = peer.requests[0]
            assert request.headers.get("x-team") == "search"
            assert {s.trace_id.hex() for rs in request.message.resource_spans for ss in rs.scope_spans
                    for s in ss.spans} == {TRACE_ID}
            assert wait_until(lambda: forwarder.status().exported == 1)
    finally:
        forwarder.stop()
        info.stop()
