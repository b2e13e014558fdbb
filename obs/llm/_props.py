"""What the client knows of its server from `/props`: read on the first call, retried now and then.

`PropsReader` reads `/props` once (the model name names the spans), and
again at most every 30 s while it has no answer. The read is held to 5 s
and 1 MiB, so a server that trickles or floods `/props` cannot stall a
chat; a failed or odd answer just leaves the props unknown.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Mapping

import httpx

from obs.clock import Clock
from obs.llm._limits import DeadlinePassed, Limits, TooLarge, read_body
from obs.llm.llama.props import ServerProps

_RETRY_MS = 30_000.0
_TIMEOUT_S = 5.0
_MAX_BYTES = 1024 * 1024


class PropsReader:
    """The server's `/props`, read through the client's connection pool. Thread-safe."""

    def __init__(
        self, http: httpx.Client, url: str, headers: Mapping[str, str], limits: Limits, clock: Clock
    ) -> None:
        """Read `url` (the server's `/props`) with `headers`, within `limits` and at most 5 s."""
        self._http = http
        self._url = url
        self._headers = dict(headers)
        self._limits = dataclasses.replace(
            limits, deadline_s=min(_TIMEOUT_S, limits.deadline_s or _TIMEOUT_S)
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._tried_at: float | None = None
        self.props: ServerProps | None = None

    def read(self) -> ServerProps | None:
        """Read `/props` now; the props (the last good ones if this read fails), None if never read."""
        self._tried_at = self._clock.monotonic_ms()
        budget = self._limits.start()
        try:
            with self._http.stream(
                "GET", self._url, headers=self._headers, timeout=budget.timeout(stream=False)
            ) as r:
                data = json.loads(read_body(r, budget, _MAX_BYTES)) if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, TooLarge, DeadlinePassed):
            data = None
        if isinstance(data, Mapping):
            self.props = ServerProps.from_json(data)
        return self.props

    def get(self) -> ServerProps | None:
        """The props, reading them first if never tried or the last try is 30 s old."""
        if self.props is not None or not self._due():
            return self.props
        with self._lock:
            if self.props is None and self._due():
                self.read()
        return self.props

    def _due(self) -> bool:
        return self._tried_at is None or self._clock.monotonic_ms() - self._tried_at >= _RETRY_MS
