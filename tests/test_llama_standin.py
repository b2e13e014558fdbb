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

from benchmarks.bench_proxy import _standin
from obs.llm.llama.server import EmbeddedServer

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0}


@pytest.fixture(scope="module")
def standin() -> Iterator[str]:
    with _standin() as url:
        yield url


def _ports(base: str, stream: bool, calls: int = 3) -> list[int]:
    """The local port each of `calls` chats went out on, one kept-alive client for all of them."""
    ports = []
    with httpx.Client(timeout=60) as client:
        for _ in range(calls):
            request = {**CHAT, "stream": stream}
            with client.stream("POST", base + "/v1/chat/completions", json=request) as answer:
                ports.append(answer.extensions["network_stream"].get_extra_info("client_addr")[1])
                body = answer.read()
            assert answer.status_code == 200 and body
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
