"""The upstream's `/props` (model name, context size, build), read for recording by the proxy.

Read once at startup (given at most 2 s) and, while unknown, in the
background at a model call (with the caller's credentials), at most every
30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from obs.llm.llama.props import ServerProps
from obs.proxy._upstream import UpstreamResponse

__all__ = ["PropsReader"]

_log = logging.getLogger("obs.proxy.app")

_PROPS_RETRY_MS = 30_000.0
_PROPS_TIMEOUT_S = 5.0
_PROPS_MAX_BYTES = 1024 * 1024
_STARTUP_PROPS_S = 2.0

# Sends `GET /props` upstream with these headers and read timeout; returns the answer once its head is in.
GetProps = Callable[[list[tuple[bytes, bytes]], float], Awaitable[UpstreamResponse]]


class PropsReader:
    """The upstream's `/props` as last read (`props`, None until read), read through `get`."""

    def __init__(self, now_ms: Callable[[], float], get: GetProps) -> None:
        """Nothing is read yet."""
        self.props: ServerProps | None = None
        self._now_ms = now_ms
        self._get = get
        self._tried_at: float | None = None
        self._background: set[asyncio.Task[Any]] = set()

    async def startup(self) -> None:
        """Read `/props`, giving it at most 2 s."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._read(None), _STARTUP_PROPS_S)

    def refresh(self, authorization: str | None) -> None:
        """Read `/props` in the background if it is unknown and not tried in the last 30 s."""
        now = self._now_ms()
        if self.props is not None:
            return
        if self._tried_at is not None and now - self._tried_at < _PROPS_RETRY_MS:
            return
        self._tried_at = now
        task = asyncio.ensure_future(self._read(authorization))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _read(self, authorization: str | None) -> None:
        """Read the upstream's `/props` (model name, context size, build) with the caller's credentials."""
        self._tried_at = self._now_ms()
        headers = [(b"authorization", authorization.encode("latin-1"))] if authorization else []
        try:
            async with asyncio.timeout(_PROPS_TIMEOUT_S):
                response = await self._get(headers, _PROPS_TIMEOUT_S)
                try:
                    body = b""
                    while chunk := await response.read():
                        body += chunk
                        if len(body) > _PROPS_MAX_BYTES:
                            return
                finally:
                    await response.aclose()
            data = json.loads(body) if response.status == 200 else None
            if isinstance(data, dict):
                self.props = ServerProps.from_json(data)
        except (httpx.HTTPError, TimeoutError, ValueError, UnicodeError) as exc:
            _log.debug("obs.proxy: /props not read: %s", type(exc).__name__)
