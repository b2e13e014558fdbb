"""Fixtures the proxy tests share: the SQLite file a proxy records into, and a well-behaved upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.llm.servers import LoopbackServer, good, serve


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The SQLite file a proxy records into (created by the proxy)."""
    return tmp_path / "obs.db"


@pytest.fixture
def upstream() -> Iterator[LoopbackServer]:
    """A loopback server answering like llama-server (`tests.llm.servers.good`)."""
    with serve(good) as server:
        yield server
