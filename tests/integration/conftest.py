"""Integration fixtures: a fresh client on the real embedded llama-server (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from obs.llm.client import InstrumentedClient
from obs.llm.llama.server import EmbeddedServer


@pytest.fixture
def client(embedded_server: EmbeddedServer) -> Iterator[InstrumentedClient]:
    """A fresh client (own store, collector, logger) on the embedded server."""
    with InstrumentedClient(embedded_server.url, timeout=60) as fresh:
        yield fresh
