"""The exact-match response cache: LRU order, expiry, counts, validation."""

from __future__ import annotations

import pytest

from obs.clock import FakeClock
from obs.llm.cache import ResponseCache, cache_key


def test_cache_key_ignores_key_order_and_separates_values() -> None:
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})
    assert cache_key({"t": "é"}) == '{"t":"é"}'


def test_lru_eviction_and_counts() -> None:
    cache: ResponseCache[str] = ResponseCache(max_size=2, ttl_s=None)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # a is now the most recently used
    cache.put("c", "C")  # evicts b
    assert cache.get("b") is None
    assert cache.get("a") == "A"
    assert cache.get("c") == "C"
    assert (cache.hits, cache.misses, len(cache)) == (3, 1, 2)
    assert "a" in cache and "b" not in cache
    cache.clear()
    assert (cache.hits, cache.misses, len(cache)) == (0, 0, 0)


def test_entries_expire_after_ttl() -> None:
    clock = FakeClock()
    cache: ResponseCache[str] = ResponseCache(max_size=4, ttl_s=10, clock=clock)
    cache.put("k", "v")
    clock.advance(10_000)
    assert cache.get("k") == "v"  # exactly at the limit: still valid
    clock.advance(1)
    assert "k" not in cache
    assert cache.get("k") is None
    assert len(cache) == 0
    assert cache.misses == 1
    cache.put("k", "v2")  # a new put restarts the age
    clock.advance(5_000)
    assert cache.get("k") == "v2"


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"max_size": 0}, "max_size must be an int in [1, 1000000], got 0"),
        ({"max_size": True}, "max_size"),
        ({"ttl_s": 0}, "ttl_s must be None (no expiry) or seconds > 0, got 0"),
        ({"ttl_s": float("inf")}, "ttl_s"),
        ({"ttl_s": "10"}, "ttl_s"),
    ],
)
def test_validation(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError) as caught:
        ResponseCache(**kwargs)  # type: ignore[arg-type]
    assert says in str(caught.value)
