"""AppTest of the Export & receive page's forwarding panel, against real loopback OTLP receivers.

The panel is filled in as a user does; the dashboard's own traces then
reach obs's receiver (`make_receiver_app`, served by uvicorn in a thread,
requiring a bearer token, so the header must really be sent), and the
page's counters say so. A receiver that refuses (400) shows as a failure
with its reason. Header values never appear on the page.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app import receiving, state
from obs.receive.app import make_receiver_app
from obs.trace.processors import InMemoryExporter
from tests.app.conftest import open_app, record_request
from tests.export.receivers import Reply, receive
from tests.receive.support import serving, wait_until

PAGE = "app/pages/export.py"
SECRET = "s3cret-token-value-0123456789"


@pytest.fixture(autouse=True)
def _no_forwarding_left() -> Iterator[None]:
    yield
    receiving.forwarder().stop(5.0)


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _page_text(at) -> str:
    kinds = ("markdown", "caption", "code", "error", "info", "warning", "text_input", "text_area")
    parts = [e.value for kind in kinds for e in at.get(kind) if isinstance(getattr(e, "value", None), str)]
    return "\n".join(parts)


def _forward(at, endpoint: str, protocol: str, headers: str) -> None:
    at.text_input[0].set_value(endpoint)
    at.selectbox[0].set_value(protocol)
    at.text_area[0].set_value(headers)
    at.button[0].click().run()  # the form's submit button
    assert not at.exception, at.exception


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_traces_are_forwarded_with_the_headers_and_counted(protocol: str) -> None:
    exporter = InMemoryExporter()
    app_ = make_receiver_app(exporter, token=SECRET)
    try:
        with serving(app_) as base:
            at = open_app(PAGE)
            assert at.title[0].value == "Export & receive"
            assert receiving.forwarder().status() is None
            _forward(at, base, protocol, f"Authorization=Bearer {SECRET}\n")
            status = receiving.forwarder().status()
            assert status is not None and status.endpoint == f"{base}/v1/traces"
            trace_id = record_request(at.session_state[state.APP], latency_ms=25)
            assert wait_until(lambda: any(t.id == trace_id for t in exporter.traces), 20.0)
            assert wait_until(lambda: receiving.forwarder().status().exported >= 1, 10.0)
            at.run()
            metrics = _metrics(at)
            assert metrics["Exported traces"] == "1" and metrics["Failed traces"] == "0"
            text = _page_text(at)
            assert f"`{base}/v1/traces` ({protocol})" in text and "headers: Authorization" in text
            assert SECRET not in text  # the value is sent, never shown back
            assert at.text_area[0].value == ""  # the form was cleared
    finally:
        app_.state.ingest.shutdown(5.0)


def test_a_refusing_endpoint_shows_the_failure_and_its_reason() -> None:
    with receive(Reply(status=400, body=b"")) as peer:
        at = open_app(PAGE)
        _forward(at, peer.url, "http/json", "x-api-key: abcdefghijkl-secret")
        record_request(at.session_state[state.APP], latency_ms=10)
        assert peer.wait_for(1, 20.0)
        assert wait_until(lambda: receiving.forwarder().status().failed >= 1, 10.0)
        at.run()
        assert _metrics(at)["Failed traces"] == "1"
        assert "400" in at.error[0].value and at.error[0].value.startswith("Last error")
        assert "abcdefghijkl-secret" not in _page_text(at)


def test_a_bad_header_line_is_refused_without_quoting_it() -> None:
    at = open_app(PAGE)
    _forward(at, "http://127.0.0.1:9/v1/traces", "http/protobuf", "just-a-secret-value")
    assert "headers line 1 must be name=value" in at.error[0].value
    assert "just-a-secret-value" not in _page_text(at)
    assert receiving.forwarder().status() is None


def test_stop_forwarding() -> None:
    with receive() as peer:
        at = open_app(PAGE)
        _forward(at, peer.url, "http/protobuf", "")
        assert receiving.forwarder().status() is not None
        next(b for b in at.button if b.label == "Stop forwarding").click().run()
        assert receiving.forwarder().status() is None
        assert "Exported traces" not in _metrics(at)


def test_without_a_served_app_the_page_says_the_receiver_is_not_running() -> None:
    at = open_app(PAGE)
    assert "runs only in a served dashboard" in at.warning[0].value


def test_an_empty_endpoint_is_refused_rather_than_defaulted() -> None:
    at = open_app(PAGE)
    _forward(at, "  ", "http/protobuf", "")
    assert "endpoint must be the URL of an OTLP/HTTP receiver" in at.error[0].value
    assert receiving.forwarder().status() is None
