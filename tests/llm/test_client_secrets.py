"""No secret reaches anything obs records, whatever a server echoes back.

The API key (and any 12 characters of it), the password in a URL's user
info and the values of its query string must stay out of error messages,
span attributes and events, LLMLogger entries and the `obs` logging
records, against real loopback servers that echo the Authorization header
everywhere they can.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from obs.llm.client import InstrumentedClient
from obs.llm.errors import BadResponse, HTTPStatusError, LLMServerError, ServerUnavailable
from tests.llm import servers
from tests.llm.client_support import MESSAGES, Rig, make_rig

KEY = "sk-live-4f9a2c7e1b8d6053aa91c4e2"
PIECE = KEY[:12]


@pytest.fixture
def obs_logging(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything the `obs` loggers emit, from debug up."""
    with caplog.at_level(logging.DEBUG, logger="obs"):
        yield caplog


def _assert_nothing_leaked(rig: Rig, error: BaseException | None, caplog: pytest.LogCaptureFixture) -> None:
    texts = [rig.everything_recorded(), caplog.text]
    if error is not None:
        texts.append(str(error))
        if isinstance(error, HTTPStatusError):
            texts.append(error.server_message or "")
    for text in texts:
        assert KEY not in text
        assert PIECE not in text


def test_a_key_echoed_in_a_stream_line_is_not_recorded(obs_logging: pytest.LogCaptureFixture) -> None:
    with servers.serve(servers.echo_secret_in_stream_line) as server:
        rig = make_rig(server.url, api_key=KEY, read_props=False)
        with pytest.raises(BadResponse, match="carried a line that is not a chat chunk") as caught:
            list(rig.client.chat_stream(MESSAGES))
    assert "Bearer ***" in str(caught.value)
    _assert_nothing_leaked(rig, caught.value, obs_logging)


def test_a_key_echoed_as_a_json_key_is_not_recorded(obs_logging: pytest.LogCaptureFixture) -> None:
    with servers.serve(servers.echo_secret_as_json_key) as server:
        rig = make_rig(server.url, api_key=KEY, read_props=False)
        with pytest.raises(BadResponse, match="no choices") as caught:
            rig.client.chat(MESSAGES)
    _assert_nothing_leaked(rig, caught.value, obs_logging)


@pytest.mark.parametrize("status", [200, 500])
@pytest.mark.parametrize("at", [0, 100, 110, 115])
def test_a_key_echoed_in_a_text_body_is_not_recorded_even_in_part(
    status: int, at: int, obs_logging: pytest.LogCaptureFixture
) -> None:
    with servers.serve(servers.echo_secret_in_text(status, at=at)) as server:
        rig = make_rig(server.url, api_key=KEY, read_props=False)
        with pytest.raises(LLMServerError) as caught:
            rig.client.chat(MESSAGES)
    _assert_nothing_leaked(rig, caught.value, obs_logging)


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "chat_stream"])
def test_a_key_echoed_in_every_field_is_not_recorded(
    stream: bool, obs_logging: pytest.LogCaptureFixture
) -> None:
    with servers.serve(servers.echo_secret_everywhere) as server:
        rig = make_rig(server.url, api_key=KEY, capture_content=True)
        if stream:
            text = "".join(rig.client.chat_stream(MESSAGES))
        else:
            text = rig.client.chat(MESSAGES).response.content
    assert KEY in text  # the application gets the answer as it came...
    span = rig.only_span()
    assert span.status == "success"
    assert "***" in span.name
    _assert_nothing_leaked(rig, None, obs_logging)  # ...obs records none of it


def test_credentials_and_query_secrets_in_base_url_are_used_but_never_shown(
    obs_logging: pytest.LogCaptureFixture,
) -> None:
    password, token = "hunter2-pw-secret", "qs-token-8c1d5e"
    with servers.serve(servers.good) as server:
        url = server.url.replace("http://", f"http://ann:{password}@") + f"/?key={token}&v=2"
        rig = make_rig(url)
        response, _ = rig.client.chat(MESSAGES)
        list(rig.client.chat_stream(MESSAGES))
        shown = rig.client.base_url
        described = repr(rig.client)
    assert response.content == servers.CONTENT
    chat = [r for r in server.requests if r.path.startswith("/v1/chat/completions")]
    assert len(chat) == 2
    assert all(r.path == f"/v1/chat/completions?key={token}&v=2" for r in chat)  # the server still gets them
    assert all(r.headers["Authorization"].startswith("Basic ") for r in chat)
    assert shown == server.url + "?key=***&v=***"
    for text in (shown, described, rig.everything_recorded(), obs_logging.text):
        assert password not in text and token not in text


def test_query_secrets_stay_out_of_failures(obs_logging: pytest.LogCaptureFixture) -> None:
    token = "qs-token-8c1d5e"
    url = servers.refused_url() + f"/v1?api_key={token}"
    rig = make_rig(url)
    with pytest.raises(ServerUnavailable) as caught:
        rig.client.chat(MESSAGES)
    assert token not in str(caught.value) and token not in (caught.value.url or "")
    assert token not in rig.everything_recorded() and token not in obs_logging.text
    assert token not in repr(InstrumentedClient(url))
