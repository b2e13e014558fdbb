"""Which browser a session belongs to, and the bounded registry that lets a reload find it again.

A session id in the URL (`?session=...`) is not a key: it only says which of
*your* sessions a page wants. What makes a session yours is a secret only
your browser holds: Streamlit's XSRF cookie (`_streamlit_xsrf`), 16 random
bytes the server sets once per browser and the browser sends with every
connection. `browser_owner` turns it into an owner id (an HMAC under a key
that lives only in this process), and `SessionRegistry` files sessions by
owner: the same id from another browser finds nothing, so a shared link
neither shows the sender's data nor pulls the receiver into it.

Sessions are bounded per browser (opening more tabs than that forgets that
browser's least recently used session, nobody else's). Across browsers,
sessions unused for `idle_s` expire, and a browser is only ever pushed out
to make room for a new one after `grace_s` without activity: no number of
page loads by others removes a session in use. Pure: no streamlit import;
time comes from an injectable clock.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["XSRF_COOKIE", "SessionRegistry", "browser_owner", "browser_token"]

XSRF_COOKIE = "_streamlit_xsrf"
_TOKEN_BYTES = 16

T = TypeVar("T")


def browser_token(cookies: Mapping[str, str]) -> bytes | None:
    """The browser's secret token from Streamlit's XSRF cookie, or None when there is no usable one.

    The cookie reads `2|<mask>|<masked token>|<timestamp>` (hex; the mask
    changes with every response, the token does not), so the token is the
    masked bytes XOR the repeated 4-byte mask. Any other shape gives None.
    """
    raw = cookies.get(XSRF_COOKIE, "").strip("\"'")
    parts = raw.split("|")
    if len(parts) != 4 or parts[0] != "2":
        return None
    try:
        mask = binascii.a2b_hex(parts[1])
        masked = binascii.a2b_hex(parts[2])
    except (binascii.Error, ValueError):
        return None
    if len(mask) != 4 or len(masked) < _TOKEN_BYTES:
        return None
    return bytes(byte ^ mask[i % 4] for i, byte in enumerate(masked))


def browser_owner(cookies: Mapping[str, str], key: bytes) -> str | None:
    """An id for the browser that sent `cookies`: HMAC-SHA256 of its token under `key`; None without one.

    The id is only ever compared and stored, never shown, and reveals nothing
    of the token.
    """
    token = browser_token(cookies)
    if token is None:
        return None
    return hmac.new(key, token, hashlib.sha256).hexdigest()


@dataclass
class _Browser(Generic[T]):
    last_seen: float
    sessions: OrderedDict[str, tuple[T, float]] = field(default_factory=OrderedDict)


class SessionRegistry(Generic[T]):
    """Sessions filed by (owner, session id); thread-safe.

    `per_browser` sessions are kept per owner (the least recently used goes
    first); a session unused for `idle_s` seconds is forgotten; at most
    `max_browsers` owners are kept, and one is pushed out for a newcomer only
    if it has been inactive for `grace_s` seconds (else the newcomer's
    session is simply not filed: it works, but a reload starts afresh).
    Raises ValueError for a bound below 1 or a negative time.
    """

    def __init__(self, *, per_browser: int = 8, max_browsers: int = 256, idle_s: float = 24 * 3600.0,
                 grace_s: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        for name, value in (("per_browser", per_browser), ("max_browsers", max_browsers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name, value in (("idle_s", idle_s), ("grace_s", grace_s)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        self._per_browser = per_browser
        self._max_browsers = max_browsers
        self._idle_s = float(idle_s)
        self._grace_s = float(grace_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._browsers: OrderedDict[str, _Browser[T]] = OrderedDict()

    def get(self, owner: str, sid: str) -> T | None:
        """The session `sid` of `owner` if it is still kept (and mark it used), else None."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            browser = self._browsers.get(owner)
            if browser is None or sid not in browser.sessions:
                return None
            value, _ = browser.sessions[sid]
            browser.sessions[sid] = (value, now)
            browser.sessions.move_to_end(sid)
            self._seen(owner, browser, now)
            return value

    def put(self, owner: str, sid: str, value: T) -> bool:
        """File `value` as session `sid` of `owner`; False if no room could be made for a new owner."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            browser = self._browsers.get(owner)
            if browser is None:
                if len(self._browsers) >= self._max_browsers and not self._make_room(now):
                    return False
                browser = self._browsers[owner] = _Browser(now)
            browser.sessions[sid] = (value, now)
            browser.sessions.move_to_end(sid)
            while len(browser.sessions) > self._per_browser:
                browser.sessions.popitem(last=False)
            self._seen(owner, browser, now)
            return True

    def touch(self, owner: str, sid: str) -> None:
        """Mark session `sid` of `owner` as in use now (an open page calls this while it is open)."""
        self.get(owner, sid)

    def sessions_of(self, owner: str) -> list[str]:
        """The session ids kept for `owner`, least recently used first."""
        with self._lock:
            self._expire(self._clock())
            browser = self._browsers.get(owner)
            return list(browser.sessions) if browser is not None else []

    def __len__(self) -> int:
        """The number of sessions kept, all owners together."""
        with self._lock:
            return sum(len(b.sessions) for b in self._browsers.values())

    def _seen(self, owner: str, browser: _Browser[T], now: float) -> None:
        browser.last_seen = now
        self._browsers.move_to_end(owner)

    def _expire(self, now: float) -> None:
        for owner in list(self._browsers):
            browser = self._browsers[owner]
            for sid in [sid for sid, (_, used) in browser.sessions.items() if now - used > self._idle_s]:
                del browser.sessions[sid]
            if not browser.sessions:
                del self._browsers[owner]

    def _make_room(self, now: float) -> bool:
        # Least recently seen first; only a browser idle past the grace time may go.
        for owner, browser in self._browsers.items():
            if now - browser.last_seen >= self._grace_s:
                del self._browsers[owner]
                return True
        return False
