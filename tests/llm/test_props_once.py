"""Calls that start together, before `/props` is known, wait for one read of it: every span is named
after the model, and the server is asked once (threads on the sync client, tasks on the async one)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from tests.llm import servers
from tests.llm.async_support import make_async_rig
from tests.llm.client_support import MESSAGES, make_rig

CALLS = 8


def _slow_props(handler: servers.Handler) -> None:
    if handler.path == "/props":
        time.sleep(0.3)  # every call has started before the first read ends
    servers.good(handler)


def test_threads_wait_for_one_read() -> None:
    with servers.serve(_slow_props) as server:
        rig = make_rig(server.url)
        with ThreadPoolExecutor(CALLS) as pool:
            spans = [span for _, span in pool.map(lambda _: rig.client.chat(MESSAGES), range(CALLS))]
    assert [s.name for s in spans] == ["chat test-model"] * CALLS
    assert [r.path for r in server.requests].count("/props") == 1


def test_tasks_wait_for_one_read() -> None:
    async def run(url: str) -> list[str]:
        rig = make_async_rig(url)
        async with rig.client:
            results = await asyncio.gather(*(rig.client.chat(MESSAGES) for _ in range(CALLS)))
        return [span.name for _, span in results]

    with servers.serve(_slow_props) as server:
        names = asyncio.run(run(server.url))
    assert names == ["chat test-model"] * CALLS
    assert [r.path for r in server.requests].count("/props") == 1
