"""What the proxy changes on the wire: hop-by-hop headers out, `traceparent` in, credentials known."""

from __future__ import annotations

import asyncio
import json
import socket

from obs.proxy._wire import error_body, header_map, request_headers, response_headers, secrets_of
from obs.proxy.server import bind_socket


def test_a_request_keeps_its_end_to_end_headers_in_order() -> None:
    raw = [(b"host", b"proxy:8033"), (b"authorization", b"Bearer k"),
           (b"connection", b"keep-alive, x-hop"), (b"x-hop", b"1"), (b"content-length", b"12"),
           (b"accept-encoding", b"gzip"), (b"te", b"trailers"), (b"traceparent", b"00-a-b-01"),
           (b"x-conversation-id", b"c"), (b"x-custom", b"1"), (b"x-custom", b"2"),
           (b"proxy-authorization", b"Basic p"), (b"expect", b"100-continue")]
    assert request_headers(raw) == [
        (b"authorization", b"Bearer k"), (b"accept-encoding", b"gzip"), (b"traceparent", b"00-a-b-01"),
        (b"x-conversation-id", b"c"), (b"x-custom", b"1"), (b"x-custom", b"2"),
    ]


def test_an_answer_loses_hop_by_hop_headers_and_gains_the_calls_traceparent() -> None:
    raw = [(b"Server", b"llama.cpp"), (b"Content-Type", b"text/event-stream"),
           (b"Transfer-Encoding", b"chunked"), (b"Keep-Alive", b"timeout=5, max=100"),
           (b"Connection", b"close"), (b"traceparent", b"00-up-stream-01"), (b"Set-Cookie", b"a=1"),
           (b"Set-Cookie", b"b=2")]
    assert response_headers(raw, "00-mine-01") == [
        (b"server", b"llama.cpp"), (b"content-type", b"text/event-stream"), (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"), (b"traceparent", b"00-mine-01"),
    ]
    # Not recorded: the upstream's own traceparent, if any, passes as it came.
    assert (b"traceparent", b"00-up-stream-01") in response_headers(raw, None)


def test_credentials_are_the_whole_values_and_the_tokens() -> None:
    raw = [(b"Authorization", b"Bearer sk-123"), (b"x-api-key", b"k-456"), (b"accept", b"*/*")]
    assert secrets_of(raw) == ["Bearer sk-123", "sk-123", "k-456"]
    found = header_map([(b"X-Conversation-Id", b"a"), (b"x-conversation-id", b"b")])
    assert found == {"x-conversation-id": "a"}


def test_the_proxys_own_errors_speak_llama_servers_json() -> None:
    assert json.loads(error_body(502, "no server", "unavailable_error")) == {
        "error": {"code": 502, "message": "no server", "type": "unavailable_error"}}


def test_connections_the_proxy_accepts_send_without_waiting_for_acks() -> None:
    # Without TCP_NODELAY a small write waits for the peer's delayed ACK: 40 ms on every kept-alive answer.
    sock = bind_socket("127.0.0.1", 0)

    async def accepted_nodelay() -> int:
        found: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted = writer.get_extra_info("socket")
            found.set_result(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)  # as the proxy serves its socket
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            value = await asyncio.wait_for(found, 10)
            writer.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0
