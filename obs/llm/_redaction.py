"""Keeping secrets out of what obs records: the API key, URL credentials and query-string values.

A `Redactor` knows the secrets of one client and replaces them with `***`
in any text: whole, JSON- or URL-escaped, and cut short (a run of at least
8 characters that begins like a secret). `snippet` quotes the start of a
long text without ever cutting through a secret, so no part of one slips
past the redaction at the cut. `public_url` is how a configured URL is
shown: no user info, and every query value masked.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import httpx

MASK = "***"
# URL parts shorter than this are not searched for in texts (a `v=2` would mask every "2").
_MIN_URL_SECRET = 4
# A cut-short secret is redacted from this many leading characters on.
_MIN_PREFIX = 8


def url_secrets(url: httpx.URL) -> list[str]:
    """The secrets a URL carries: user name and password, their Basic credential, query values."""
    found = [url.username, url.password]
    if url.username or url.password:
        found.append(base64.b64encode(f"{url.username}:{url.password}".encode()).decode("ascii"))
    found.extend(value for _, value in url.params.multi_items())
    return [s for s in found if len(s) >= _MIN_URL_SECRET]


def public_url(url: httpx.URL) -> str:
    """`url` as obs shows it: without user info or fragment, every query value replaced by `***`."""
    base = str(url.copy_with(username=None, password=None, query=None, fragment=None)).rstrip("/")
    masked = [f"{quote(name, safe='')}={MASK}" for name, _ in url.params.multi_items()]
    return f"{base}?{'&'.join(masked)}" if masked else base


class Redactor:
    """Replaces a client's secrets with `***` in any text it is given. Immutable; thread-safe."""

    __slots__ = ("_forms", "_longest")

    def __init__(self, secrets: Iterable[str | None]) -> None:
        """Take the secrets to hide (None and empty ones are skipped)."""
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms.update((secret, json.dumps(secret)[1:-1], quote(secret, safe="")))
        # Longest first, so a secret that contains another is replaced whole.
        self._forms = tuple(sorted(forms, key=len, reverse=True))
        self._longest = len(self._forms[0]) if self._forms else 0

    def __bool__(self) -> bool:
        return bool(self._forms)

    def __call__(self, text: str) -> str:
        """`text` with every secret, whole or cut short, replaced by `***`."""
        if not self._forms or not text:
            return text
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        for form in self._forms:
            if len(form) > _MIN_PREFIX and form[:_MIN_PREFIX] in text:
                text = _mask_prefix_runs(text, form)
        return text

    def snippet(self, text: str, limit: int) -> str:
        """At most `limit` characters from the start of `text`, redacted before the cut is made."""
        window = text[: limit + self._longest]
        redacted = self(window)
        if len(window) < len(text):
            # The window may end inside a secret that goes on past it: drop that beginning.
            for form in self._forms:
                for size in range(min(len(form), len(redacted)), 0, -1):
                    if redacted.endswith(form[:size]):
                        redacted = redacted[:-size]
                        break
        return redacted[:limit]

    def attributes(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """`attrs` with every string value (and each string in a list) redacted; `attrs` if no secrets."""
        if not self._forms:
            return attrs
        clean: dict[str, Any] = {}
        for key, value in attrs.items():
            if isinstance(value, str):
                value = self(value)
            elif isinstance(value, list | tuple):
                value = [self(v) if isinstance(v, str) else v for v in value]
            clean[key] = value
        return clean


def _mask_prefix_runs(text: str, secret: str) -> str:
    """Replace every run of text that matches the start of `secret` for 8 characters or more."""
    head = secret[:_MIN_PREFIX]
    parts: list[str] = []
    pos = 0
    start = text.find(head)
    while start >= 0:
        end = start + len(head)
        while end < len(text) and end - start < len(secret) and text[end] == secret[end - start]:
            end += 1
        parts += [text[pos:start], MASK]
        pos = end
        start = text.find(head, end)
    parts.append(text[pos:])
    return "".join(parts)
