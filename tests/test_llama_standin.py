"""The benchmarks' llama-server stand-in keeps and drops connections as the real llama-server does.

A relay's cost depends on whether it must open a new upstream connection for
a call: llama-server closes its connection after every streamed answer and
keeps it after a plain one. The stand-in must do the same, or the proxy
benchmark measures a server that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from benchmarks.bench_proxy import _retrying, _standin
from obs.llm.llama.server import EmbeddedServer

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0}


@pytest.fixture(scope="module")
def standin() -> Iterator[str]:
    with _standin() as url:
        yield url


def _ports(base: str, stream: bool, calls: int = 3) -> list[int]:
    """The local port each of `calls` chats went out on, one kept-alive client for all of them.

    A call that finds its kept connection closed by the server (llama-server
    closes it after a stream without saying so, and the client may not have
    noticed yet) is sent again, once, as the OpenAI client and the benchmark do.
    """
    ports = []
    with httpx.Client(timeout=60) as client:

        def call() -> tuple[int, int, bytes]:
            request = {**CHAT, "stream": stream}
            with client.stream("POST", base + "/v1/chat/completions", json=request) as answer:
                port = answer.extensions["network_stream"].get_extra_info("client_addr")[1]
                return port, answer.status_code, answer.read()

        for _ in range(calls):
            port, status, body = _retrying(call)
            ports.append(port)
            assert status == 200 and body
            assert (b"data: [DONE]" in body) is stream
    return ports


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "plain"])
def test_the_standin_keeps_and_drops_connections_as_llama_server_does(
    embedded_server: EmbeddedServer, standin: str, stream: bool
) -> None:
    real, scripted = _ports(embedded_server.url, stream), _ports(standin, stream)
    # Streamed: a new connection for every call; plain: one connection for all of them.
    assert len(set(real)) == (3 if stream else 1)
    assert len(set(scripted)) == len(set(real))
