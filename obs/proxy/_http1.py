"""HTTP/1.1 framing for both of the proxy's sides: message heads parsed, chunked bodies unframed.

The proxy reads requests from its callers (`obs.proxy._serve`) and answers
from its upstream (`obs.proxy._upstream`) with the same rules (RFC 9112):
a head is a start line and `name: value` lines ending in an empty line; a
body is delimited by `Transfer-Encoding: chunked` (whose framing is taken
off here, a piece at a time, wherever the bytes were split), else
`Content-Length`, else (answers only) the connection's end. A message that
breaks these rules raises `FramingError`, which each side turns into its own
answer (400 to a caller, httpx's RemoteProtocolError from the upstream).
"""

from __future__ import annotations

import re
from http import HTTPStatus

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEAD_BYTES",
    "TOKEN",
    "ChunkedBody",
    "FramingError",
    "RequestRefused",
    "answer_framing",
    "answer_head",
    "content_length",
    "header_value",
    "is_chunked",
    "parse_head",
    "parse_status_head",
    "request_head",
    "says_close",
    "whole_chunk",
]

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 100 * 1024 * 1024  # a request body past this gets 413
_MAX_LINE_BYTES = 4 * 1024
_HEX = frozenset(b"0123456789abcdefABCDEF")
# A chunk's size line: hex digits, then extensions (ignored) up to CRLF.
_SIZE_LINE = re.compile(rb"([0-9a-fA-F]{1,15})(?:;[^\r\n]*)?\r\n")
# The characters of a token (RFC 9110 section 5.6.2): header names, methods.
TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

Headers = list[tuple[bytes, bytes]]
_REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


class FramingError(ValueError):
    """A message that does not follow HTTP/1.1's framing (the text says what is wrong)."""


def parse_head(head: bytes) -> tuple[bytes, Headers]:
    """The start line and the header lines (names as sent, values without surrounding blanks) of a head.

    `head` ends before its final empty line. FramingError for a header line
    without a name and colon, a name with blanks or other characters HTTP
    does not allow, or a folded (continued) line.
    """
    lines = head.split(b"\r\n")
    headers: Headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or not TOKEN.issuperset(name):
            raise FramingError("a malformed header line")
        headers.append((name, value.strip(b" \t")))
    return lines[0], headers


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header `name` (lowercase), or None."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def says_close(headers: Headers) -> bool:
    """True when a `Connection` header asks to close the connection after this message."""
    return any(key.lower() == b"connection" and b"close" in value.lower() for key, value in headers)


def is_chunked(headers: Headers) -> bool | None:
    """Whether the body is chunked: True, False (another transfer coding is last), None (no such header)."""
    encoding = header_value(headers, b"transfer-encoding")
    if encoding is None:
        return None
    return encoding.split(b",")[-1].strip().lower() == b"chunked"


def content_length(headers: Headers) -> int | None:
    """The body's `Content-Length` (None when absent); FramingError for a bad or ambiguous one."""
    lengths = {value.strip() for key, value in headers if key.lower() == b"content-length"}
    if not lengths:
        return None
    if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
        raise FramingError("a bad Content-Length")
    return int(lengths.pop())


def parse_status_head(head: bytes) -> tuple[bytes, int, Headers]:
    """(version, status, headers) of an answer's head; FramingError if it is not HTTP/1.x."""
    line, headers = parse_head(head)
    version, _, rest = line.partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise FramingError("an answer not in HTTP/1.x")
    return version, int(code), headers


def answer_framing(verb: bytes, status: int, headers: Headers) -> tuple[str, int]:
    """How an answer's body ends (RFC 9112 section 6.3): ("none" | "chunked" | "length" | "close", length)."""
    if verb == b"HEAD" or status in (204, 304) or 100 <= status < 200:
        return "none", 0
    chunked = is_chunked(headers)
    if chunked is not None:
        return ("chunked", 0) if chunked else ("close", 0)
    length = content_length(headers)
    return ("close", 0) if length is None else ("length", length)


def answer_head(status: int, headers: Headers, chunked: bool, keep: bool) -> bytes:
    """An answer's head as the proxy writes it to a caller: the status line (HTTP/1.1, the standard
    reason), `headers`, then `transfer-encoding: chunked` if `chunked` and `connection: close` unless
    `keep`."""
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    if not keep:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def whole_chunk(data: bytes | bytearray) -> int | None:
    """Where the data starts when `data` is exactly one whole chunk, not the last; else None.

    One whole chunk is a size line (extensions allowed), that many bytes
    (at least one) and CRLF: its data is `data[start:-2]`. This is how a
    stream's pieces usually arrive, each as it was written, so it is checked
    with one regular expression match and no copy.
    """
    line = _SIZE_LINE.match(data)
    if line is None:
        return None
    start = line.end()
    # The chunk's CRLF ends `data` exactly, and the chunk holds data (size 0 is the last chunk).
    if start + int(line[1], 16) + 2 == len(data) > start + 2 and data.endswith(b"\r\n"):
        return start
    return None


class ChunkedBody:
    """A chunked body being unframed: `take(buffer)` as bytes arrive, until `done`."""

    __slots__ = ("_left", "done")

    def __init__(self) -> None:
        """Nothing read yet."""
        self.done = False
        self._left = -1  # -1: a chunk's size line is next; -2: the CRLF after a chunk's data

    def take(self, buffer: bytearray) -> bytes:
        """The data `buffer` holds, its framing taken off; what was used is removed from `buffer`.

        Stops at a line that is not complete yet (the rest stays in
        `buffer`), or at the end of the body (`done`: the last chunk and its
        trailers are in). FramingError for a bad size line or missing CRLF.
        """
        if self._left == -1:
            # A stream's usual case first: `buffer` holds exactly one whole chunk, as it was written.
            start = whole_chunk(buffer)
            if start is not None:
                data = bytes(buffer[start:-2])
                buffer.clear()
                return data
        pieces: list[bytes] = []
        while buffer and not self.done:
            left = self._left
            if left > 0:
                n = min(len(buffer), left)
                pieces.append(bytes(buffer[:n]))
                del buffer[:n]
                self._left = -2 if n == left else left - n
            elif left == -2:
                if len(buffer) < 2:
                    break
                if buffer[0] != 13 or buffer[1] != 10:
                    raise FramingError("a chunked body without CRLF after a chunk")
                del buffer[:2]
                self._left = -1
            else:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > _MAX_LINE_BYTES:
                        raise FramingError("a chunk size line that is too long")
                    break
                size = bytes(buffer[:end]).split(b";", 1)[0].strip()
                if not size or not _HEX.issuperset(size):
                    raise FramingError("a chunked body with a bad chunk size")
                if int(size, 16) == 0:
                    trailer_end = buffer.find(b"\r\n\r\n", end) if buffer[end + 2:end + 4] != b"\r\n" else end
                    if trailer_end < 0:
                        if len(buffer) > MAX_HEAD_BYTES:
                            raise FramingError("trailers that are too large")
                        break  # trailers still coming
                    del buffer[:trailer_end + 4]
                    self.done = True
                    break
                del buffer[:end + 2]
                self._left = int(size, 16)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class RequestRefused(Exception):
    """A request the proxy answers itself with `status` (the text says why), then closing the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def request_head(head: bytes) -> tuple[str, str, bool, list[tuple[bytes, bytes]], int]:
    """(method, target, HTTP/1.1?, headers, body length; -1: chunked) of a request head (ending before its
    empty line); RequestRefused if it is bad."""
    try:
        line, headers = parse_head(head)
    except FramingError as exc:
        raise RequestRefused(400, f"the request has {exc}") from None
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[0] or not TOKEN.issuperset(parts[0]) or not parts[1] \
            or any(c < 0x21 or c == 0x7f for c in parts[1]):  # fmt: skip
        raise RequestRefused(400, "the request line is not `METHOD target HTTP/1.1`")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version.startswith(b"HTTP/"):
            raise RequestRefused(505, "only HTTP/1.1 and HTTP/1.0 are served")
        raise RequestRefused(400, "the request line is not `METHOD target HTTP/1.1`")
    chunked = is_chunked(headers)
    try:
        length = content_length(headers)
    except FramingError as exc:
        raise RequestRefused(400, f"the request has {exc}") from None
    if chunked is not None:
        if not chunked or length is not None:
            raise RequestRefused(400, "the request's Transfer-Encoding must end in chunked, without "
                                      "Content-Length")
        length = -1
    elif length is not None and length > MAX_BODY_BYTES:
        raise RequestRefused(413, "the request body is larger than 100 MiB")
    return method.decode("ascii"), target.decode("latin-1"), version == b"HTTP/1.1", headers, length or 0
