"""Tests of app.sessions: the browser's secret from Streamlit's XSRF cookie, and the per-browser registry."""

from __future__ import annotations

import os

import pytest

from app.sessions import XSRF_COOKIE, SessionRegistry, browser_owner, browser_token

KEY = b"k" * 32


def xsrf_cookie(token: bytes, mask: bytes | None = None) -> dict[str, str]:
    """A `_streamlit_xsrf` cookie as Streamlit writes it: version 2, masked token, timestamp."""
    mask = os.urandom(4) if mask is None else mask
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(token))
    return {XSRF_COOKIE: f"2|{mask.hex()}|{masked.hex()}|1700000000"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_token_is_the_same_under_every_mask_and_differs_per_browser() -> None:
    token, other = os.urandom(16), os.urandom(16)
    assert browser_token(xsrf_cookie(token, b"\x01\x02\x03\x04")) == token
    assert browser_token(xsrf_cookie(token, b"\xff\x00\xaa\x55")) == token
    first, again = browser_owner(xsrf_cookie(token), KEY), browser_owner(xsrf_cookie(token), KEY)
    assert first == again and len(first) == 64
    assert browser_owner(xsrf_cookie(other), KEY) != first
    assert browser_owner(xsrf_cookie(token), b"another process" * 2) != first
    assert token.hex() not in first


@pytest.mark.parametrize("cookies", [
    {}, {XSRF_COOKIE: ""}, {XSRF_COOKIE: "not a token"}, {XSRF_COOKIE: "1|aa|bb|1"},
    {XSRF_COOKIE: "2|zz|00112233445566778899aabbccddeeff|1"}, {XSRF_COOKIE: "2|00112233|0011|1"},
    {"other": "2|00112233|00112233445566778899aabbccddeeff|1"},
])
def test_no_usable_cookie_gives_no_token(cookies: dict[str, str]) -> None:
    assert browser_token(cookies) is None
    assert browser_owner(cookies, KEY) is None


def test_a_session_id_finds_nothing_for_another_browser() -> None:
    registry: SessionRegistry[str] = SessionRegistry()
    assert registry.put("alice", "s1", "alice's data")
    assert registry.get("alice", "s1") == "alice's data"
    assert registry.get("bob", "s1") is None
    assert registry.get("alice", "s2") is None


def test_sessions_are_bounded_per_browser_and_one_browsers_loads_evict_only_its_own() -> None:
    registry: SessionRegistry[int] = SessionRegistry(per_browser=3)
    registry.put("alice", "a", 0)
    for n in range(100):
        registry.put("mallory", f"m{n}", n)
    assert registry.get("alice", "a") == 0
    assert registry.sessions_of("mallory") == ["m97", "m98", "m99"]
    registry.get("mallory", "m97")  # used: now the most recent
    registry.put("mallory", "m100", 100)
    assert registry.sessions_of("mallory") == ["m99", "m97", "m100"]
    assert len(registry) == 4


def test_new_browsers_push_out_only_browsers_idle_past_the_grace_time() -> None:
    clock = Clock()
    registry: SessionRegistry[str] = SessionRegistry(max_browsers=2, grace_s=60, clock=clock)
    registry.put("alice", "a", "A")
    registry.put("bob", "b", "B")
    # Both were active just now: a newcomer is not filed, and nobody is pushed out.
    assert registry.put("carol", "c", "C") is False
    assert registry.get("carol", "c") is None
    clock.now += 50
    registry.touch("alice", "a")
    clock.now += 20  # bob idle 70 s, alice 20 s
    for n in range(50):
        registry.put(f"visitor{n}", "v", "V")
    assert registry.get("alice", "a") == "A"
    assert registry.get("bob", "b") is None
    assert registry.get("visitor0", "v") == "V"


def test_a_session_unused_for_the_idle_time_is_forgotten() -> None:
    clock = Clock()
    registry: SessionRegistry[str] = SessionRegistry(idle_s=3600, clock=clock)
    registry.put("alice", "old", "O")
    clock.now += 3000
    registry.put("alice", "new", "N")
    clock.now += 3000
    assert registry.get("alice", "old") is None
    assert registry.get("alice", "new") == "N"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"per_browser": 0}, "per_browser must be an integer >= 1, got 0"),
    ({"max_browsers": 2.5}, "max_browsers must be an integer >= 1, got 2.5"),
    ({"idle_s": -1}, "idle_s must be a number of seconds >= 0, got -1"),
    ({"grace_s": float("nan")}, "grace_s must be a number of seconds >= 0, got nan"),
])
def test_bad_bounds_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionRegistry(**kwargs)
