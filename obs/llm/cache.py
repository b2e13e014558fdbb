"""An exact-match response cache: least recently used, bounded in size and age.

The InstrumentedClient uses it (when switched on) to answer a request it has
seen before without calling the server; such answers count as cache hits in
the metrics. Keys are canonical JSON of everything that shapes an answer
(model, messages, sampling parameters), so only identical requests match.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from obs.clock import SYSTEM_CLOCK, Clock

__all__ = ["ResponseCache", "cache_key"]

_V = TypeVar("_V")


def cache_key(request: Mapping[str, Any]) -> str:
    """The canonical JSON of `request`: equal for equal requests, whatever the key order."""
    return json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)


class ResponseCache(Generic[_V]):
    """LRU cache of at most `max_size` entries, each valid for `ttl_s` seconds; thread-safe.

    `get` counts hits and misses (an expired entry is a miss and is dropped).
    Ages are measured on the clock's monotonic reading, so tests can inject a
    FakeClock.
    """

    def __init__(
        self, max_size: int = 256, ttl_s: float | None = 300.0, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        """Raises ValueError unless 1 <= max_size <= 1_000_000 and ttl_s is None or > 0."""
        if isinstance(max_size, bool) or not isinstance(max_size, int) or not 1 <= max_size <= 1_000_000:
            raise ValueError(f"ResponseCache: max_size must be an int in [1, 1000000], got {max_size!r}")
        valid_ttl = isinstance(ttl_s, int | float) and not isinstance(ttl_s, bool) and ttl_s > 0
        if ttl_s is not None and not (valid_ttl and math.isfinite(ttl_s)):
            raise ValueError(f"ResponseCache: ttl_s must be None (no expiry) or seconds > 0, got {ttl_s!r}")
        self.max_size = max_size
        self.ttl_s = None if ttl_s is None else float(ttl_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, _V]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> _V | None:
        """The cached value for `key` (now the most recently used), or None if absent or expired."""
        now = self._clock.monotonic_ms()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._expired(entry[0], now):
                del self._entries[key]
                entry = None
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: str, value: _V) -> None:
        """Store `value` under `key`, evicting the least recently used entry beyond `max_size`."""
        now = self._clock.monotonic_ms()
        with self._lock:
            self._entries[key] = (now, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry and reset the hit and miss counts."""
        with self._lock:
            self._entries.clear()
            self.hits = 0
            self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        now = self._clock.monotonic_ms()
        with self._lock:
            entry = self._entries.get(key)  # type: ignore[call-overload]
            return entry is not None and not self._expired(entry[0], now)

    def _expired(self, stored_ms: float, now_ms: float) -> bool:
        return self.ttl_s is not None and now_ms - stored_ms > self.ttl_s * 1000.0

    def __repr__(self) -> str:
        return f"ResponseCache(max_size={self.max_size}, ttl_s={self.ttl_s}, entries={len(self)})"
