"""What the client knows of its server from `/props`: read on the first call, retried now and then.

`PropsReader` (for `httpx.Client`) and `AsyncPropsReader` (for
`httpx.AsyncClient`) read `/props` once (the model name names the spans),
and again at most every 30 s while they have no answer. The read is held to
5 s and 1 MiB, so a server that trickles or floods `/props` cannot stall a
chat; a failed or odd answer just leaves the props unknown. Both share
`_PropsState`; they differ only in how the bytes are fetched and how
concurrent first calls wait for one read (a thread lock, an asyncio lock).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import weakref
from collections.abc import Mapping
from typing import Any

import httpx

from obs.clock import Clock
from obs.llm._limits import Budget, DeadlinePassed, Limits, TooLarge, aread_body, read_body
from obs.llm.llama.props import ServerProps

_RETRY_MS = 30_000.0
_TIMEOUT_S = 5.0
_MAX_BYTES = 1024 * 1024
# What a failed read of `/props` may raise: each leaves the props as they were.
_READ_FAILURES = (httpx.HTTPError, ValueError, TooLarge, DeadlinePassed)


class _PropsState:
    """The props known so far and when they were last tried; the I/O is the subclass's."""

    def __init__(self, url: str, headers: Mapping[str, str], limits: Limits, clock: Clock) -> None:
        self._url = url
        self._headers = dict(headers)
        self._limits = dataclasses.replace(
            limits, deadline_s=min(_TIMEOUT_S, limits.deadline_s or _TIMEOUT_S)
        )
        self._clock = clock
        self._tried_at: float | None = None
        self.props: ServerProps | None = None

    def _begin(self) -> Budget:
        """The budget of one read, starting now."""
        return self._limits.start()

    def _request_options(self, budget: Budget) -> dict[str, Any]:
        return {"headers": self._headers, "timeout": budget.timeout(stream=False)}

    def _take(self, data: Any) -> ServerProps | None:
        """Keep what a read found (a JSON object), else the props known before; return them.

        The attempt counts from its end: calls that came while it was under
        way waited for it (`get`) rather than going on without the props.
        """
        self._tried_at = self._clock.monotonic_ms()
        if isinstance(data, Mapping):
            self.props = ServerProps.from_json(data)
        return self.props

    def _due(self) -> bool:
        return self._tried_at is None or self._clock.monotonic_ms() - self._tried_at >= _RETRY_MS


class PropsReader(_PropsState):
    """The server's `/props`, read through a client's `httpx.Client` pool. Thread-safe."""

    def __init__(
        self, http: httpx.Client, url: str, headers: Mapping[str, str], limits: Limits, clock: Clock
    ) -> None:
        """Read `url` (the server's `/props`) with `headers`, within `limits` and at most 5 s."""
        super().__init__(url, headers, limits, clock)
        self._http = http
        self._lock = threading.Lock()

    def read(self) -> ServerProps | None:
        """Read `/props` now; the props (the last good ones if this read fails), None if never read."""
        budget = self._begin()
        try:
            with self._http.stream("GET", self._url, **self._request_options(budget)) as r:
                data = json.loads(read_body(r, budget, _MAX_BYTES)) if r.status_code == 200 else None
        except _READ_FAILURES:
            data = None
        return self._take(data)

    def get(self) -> ServerProps | None:
        """The props, reading them first if never tried or the last try is 30 s old."""
        if self.props is not None or not self._due():
            return self.props
        with self._lock:
            if self.props is None and self._due():
                self.read()
        return self.props


class AsyncPropsReader(_PropsState):
    """The server's `/props`, read through a client's `httpx.AsyncClient` pool.

    Safe for many tasks at once: concurrent first calls wait for one read.
    """

    def __init__(
        self, http: httpx.AsyncClient, url: str, headers: Mapping[str, str], limits: Limits, clock: Clock
    ) -> None:
        """Read `url` (the server's `/props`) with `headers`, within `limits` and at most 5 s."""
        super().__init__(url, headers, limits, clock)
        self._http = http
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    async def read(self) -> ServerProps | None:
        """Read `/props` now; the props (the last good ones if this read fails), None if never read."""
        budget = self._begin()
        try:
            async with self._http.stream("GET", self._url, **self._request_options(budget)) as r:
                data = json.loads(await aread_body(r, budget, _MAX_BYTES)) if r.status_code == 200 else None
        except _READ_FAILURES:
            data = None
        return self._take(data)

    async def get(self) -> ServerProps | None:
        """The props, reading them first if never tried or the last try is 30 s old."""
        if self.props is not None or not self._due():
            return self.props
        async with self._lock():
            if self.props is None and self._due():
                await self.read()
        return self.props

    def _lock(self) -> asyncio.Lock:
        # An asyncio lock belongs to one event loop; a client may outlive a loop (asyncio.run twice).
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock
