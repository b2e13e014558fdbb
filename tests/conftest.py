"""Fixtures shared by every test folder: the real embedded llama-server, started once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from obs.llm.llama.server import EmbeddedServer, start_embedded_server


@pytest.fixture(scope="session")
def embedded_server() -> Iterator[EmbeddedServer]:
    """One real llama-server child process (SmolLM2-135M) on a free port for the whole
    test session, started on first use and stopped at the end."""
    server = start_embedded_server(port=0)
    try:
        yield server
    finally:
        server.stop()
