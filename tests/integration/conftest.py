"""The real embedded llama-server (SmolLM2-135M), started once per test session on a free port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from obs.client import InstrumentedClient
from obs.llama.server import EmbeddedServer, start_embedded_server


@pytest.fixture(scope="session")
def embedded_server() -> Iterator[EmbeddedServer]:
    """One llama-server child process for the whole session; stopped at the end."""
    server = start_embedded_server(port=0)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(embedded_server: EmbeddedServer) -> Iterator[InstrumentedClient]:
    """A fresh client (own store, collector, logger) on the embedded server."""
    with InstrumentedClient(embedded_server.url, timeout=60) as fresh:
        yield fresh
