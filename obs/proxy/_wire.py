"""What the proxy changes on the wire, and nothing more: hop-by-hop headers, its own answers.

A proxy forwards end-to-end headers and drops the hop-by-hop ones (RFC 9110
section 7.6.1: `Connection` and the headers it lists, `Keep-Alive`,
`Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`), which describe
one connection and not the message. `Host` and `Content-Length` of a request
are set again for the upstream connection (the body is sent as it came).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

__all__ = [
    "HOP_BY_HOP",
    "charset_of",
    "error_body",
    "header_map",
    "request_headers",
    "response_headers",
    "secrets_of",
]

Headers = Iterable[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"transfer-encoding", b"upgrade",
})  # fmt: skip
# Set again by the HTTP client for the upstream connection; `expect` is answered by the proxy's server.
_REQUEST_ONLY = frozenset({b"host", b"content-length", b"expect"})
# Headers whose values are credentials: never recorded (the request itself carries them on unchanged).
_CREDENTIAL_HEADERS = (b"authorization", b"x-api-key", b"api-key")
_TRACEPARENT = b"traceparent"


def _listed_in_connection(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    listed: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            listed.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return listed


def request_headers(raw: Headers) -> list[tuple[bytes, bytes]]:
    """The request's headers to send upstream: all but the hop-by-hop ones, `Host` and `Content-Length`."""
    headers = list(raw)
    dropped = HOP_BY_HOP | _REQUEST_ONLY | _listed_in_connection(headers)
    return [(name, value) for name, value in headers if name.lower() not in dropped]


def response_headers(
    raw: Headers, traceparent: str | None, chunked: bool = False
) -> list[tuple[bytes, bytes]]:
    """The answer's headers to send back: all but the hop-by-hop ones, plus the call's `traceparent`.

    Names are lowercased, as ASGI asks. A `traceparent` the upstream sent is
    replaced by the one naming the recorded span (when there is one). For a
    `chunked` answer a `Content-Length` beside it is dropped: the chunks
    delimit the body (RFC 9112 section 6.3), and the length may not be sent on.
    """
    headers = [(name.lower(), value) for name, value in raw]
    dropped = HOP_BY_HOP | _listed_in_connection(headers)
    if chunked:
        dropped = dropped | {b"content-length"}
    if traceparent is not None:
        dropped = dropped | {_TRACEPARENT}
    kept = [(name, value) for name, value in headers if name not in dropped]
    if traceparent is not None:
        kept.append((_TRACEPARENT, traceparent.encode("ascii")))
    return kept


def header_map(raw: Headers) -> dict[str, str]:
    """The headers as a dict of lowercase names to values (the first of repeated ones)."""
    found: dict[str, str] = {}
    for name, value in raw:
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def secrets_of(raw: Headers) -> list[str]:
    """The credentials a request carries: whole `Authorization`/`X-Api-Key`/`Api-Key` values and tokens.

    For `Authorization: Bearer <token>` both the whole value and the token
    are secrets, so neither (nor a part of one) is recorded.
    """
    found: list[str] = []
    for name, value in raw:
        if name.lower() in _CREDENTIAL_HEADERS:
            text = value.decode("latin-1").strip()
            found.append(text)
            _, _, credential = text.partition(" ")
            if credential.strip():
                found.append(credential.strip())
    return found


def error_body(status: int, message: str, kind: str) -> bytes:
    """An error answer in llama-server's own JSON shape: `{"error": {"code", "message", "type"}}`."""
    return json.dumps({"error": {"code": status, "message": message, "type": kind}}).encode("utf-8")


def charset_of(content_type: str | None) -> str | None:
    """The `charset` parameter of a Content-Type, if it names one."""
    if not content_type:
        return None
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"'):
            return value.strip().strip('"')
    return None
