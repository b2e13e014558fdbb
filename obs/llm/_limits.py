"""How long and how much one call may take, and the readers that hold a response to it.

`Limits` is the client's validated configuration (as httpx's `Timeout` and
`Limits` are): the timeout of each connect, read and write, the deadline of
a whole call, the longest a stream may go without an event, and the most
bytes an answer may have. `Budget` is one call's share of them, measured on
the real monotonic clock because it bounds real waits on the network (the
injected clock times what is recorded). `BodyReader` (behind `read_body` and
`aread_body`) and `LineSplitter` read a response under a budget, whoever does
the I/O: they raise `TooLarge` past the byte cap and `DeadlinePassed` once
the deadline has gone by.
"""

from __future__ import annotations

import codecs
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_DEADLINE_S = 600.0
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MIN_RESPONSE_BYTES = 1024
# A socket read may end this early (timers round); closer than this to the deadline counts as past it.
_SLACK_S = 0.05
_LINE_END = re.compile(r"\r\n|\r|\n")


class TooLarge(Exception):
    """The response went past `limit` bytes."""

    def __init__(self, limit: int) -> None:
        """Remember the cap that was passed."""
        super().__init__(f"the response is larger than {limit} bytes")
        self.limit = limit


class DeadlinePassed(Exception):
    """The call's deadline went by while the response was still arriving."""


def _seconds(name: str, value: Any, none_means: str) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be None ({none_means}) or seconds > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Limits:
    """The time and size limits of every call a client makes; build with `Limits.validated`."""

    timeout_s: float
    deadline_s: float | None
    stream_idle_timeout_s: float
    max_response_bytes: int

    @classmethod
    def validated(
        cls,
        timeout: Any,
        deadline_s: Any,
        stream_idle_timeout_s: Any,
        max_response_bytes: Any,
    ) -> Limits:
        """Check each value; ValueError names the argument, its accepted range and the fix."""
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (timeout > 0 and math.isfinite(timeout))
        ):
            raise ValueError(f"timeout must be seconds > 0, got {timeout!r}")
        deadline = _seconds("deadline_s", deadline_s, "no deadline")
        idle = _seconds("stream_idle_timeout_s", stream_idle_timeout_s, "the timeout")
        if (
            isinstance(max_response_bytes, bool)
            or not isinstance(max_response_bytes, int)
            or max_response_bytes < MIN_RESPONSE_BYTES
        ):
            raise ValueError(
                f"max_response_bytes must be an int >= {MIN_RESPONSE_BYTES} (bytes of one answer), "
                f"got {max_response_bytes!r}"
            )
        return cls(float(timeout), deadline, idle if idle is not None else float(timeout), max_response_bytes)

    def start(self, now: Callable[[], float] = time.monotonic) -> Budget:
        """One call's budget, starting now."""
        return Budget(self, now)


class Budget:
    """One call against its limits: how long is left, and the httpx timeouts that keep within it."""

    __slots__ = ("_ends_at", "_now", "limits")

    def __init__(self, limits: Limits, now: Callable[[], float] = time.monotonic) -> None:
        """Start the call's deadline (if any) at `now()`, in seconds."""
        self.limits = limits
        self._now = now
        self._ends_at = None if limits.deadline_s is None else now() + limits.deadline_s

    def now(self) -> float:
        """The budget's clock reading, in seconds."""
        return self._now()

    def remaining_s(self) -> float | None:
        """Seconds left before the deadline (0 once passed); None without a deadline."""
        return None if self._ends_at is None else max(0.0, self._ends_at - self._now())

    def expired(self) -> bool:
        """True once the deadline has (all but) gone by."""
        return self._ends_at is not None and self._now() >= self._ends_at - _SLACK_S

    def timeout(self, *, stream: bool) -> httpx.Timeout:
        """httpx timeouts for the call's request: each wait at most the timeout and what is left.

        A stream's reads also wait at most the idle timeout.
        """
        limits = self.limits
        each = limits.timeout_s
        read = min(each, limits.stream_idle_timeout_s) if stream else each
        left = self.remaining_s()
        if left is not None:
            left = max(left, 0.001)  # 0 would mean "never wait" to some transports
            each, read = min(each, left), min(read, left)
        return httpx.Timeout(each, read=read)


class BodyReader:
    """A body taken piece by piece under a byte cap and a deadline; the caller does the reading.

    Sync and async readers share it (`read_body`, `aread_body`), so both hold
    a response to the same rules: past `limit` bytes TooLarge (or, with
    `truncate`, the first `limit` bytes and an end), DeadlinePassed when the
    deadline goes by between two pieces, and a body that announces a larger
    Content-Length refused before it is read.
    """

    __slots__ = ("_budget", "_limit", "_parts", "_size", "_truncate")

    def __init__(
        self, response: httpx.Response, budget: Budget, limit: int, *, truncate: bool = False
    ) -> None:
        """Check the announced length of `response` (TooLarge unless `truncate`) and start empty."""
        declared = response.headers.get("content-length", "")
        if not truncate and declared.isdigit() and int(declared) > limit:
            raise TooLarge(limit)
        self._budget = budget
        self._limit = limit
        self._truncate = truncate
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> bool:
        """Take the next piece; True once no more is wanted (the cap reached with `truncate`)."""
        self._size += len(chunk)
        if self._size > self._limit:
            if not self._truncate:
                raise TooLarge(self._limit)
            self._parts.append(chunk[: len(chunk) - (self._size - self._limit)])
            return True
        self._parts.append(chunk)
        if self._budget.expired():
            raise DeadlinePassed
        return False

    def body(self) -> bytes:
        """The bytes taken so far."""
        return b"".join(self._parts)


def read_body(response: httpx.Response, budget: Budget, limit: int, *, truncate: bool = False) -> bytes:
    """The body of `response`, read as it arrives, never more than `limit` bytes (see `BodyReader`)."""
    reader = BodyReader(response, budget, limit, truncate=truncate)
    for chunk in response.iter_bytes():
        if reader.feed(chunk):
            break
    return reader.body()


async def aread_body(
    response: httpx.Response, budget: Budget, limit: int, *, truncate: bool = False
) -> bytes:
    """`read_body` for a response of an `httpx.AsyncClient`: the same rules, awaited."""
    reader = BodyReader(response, budget, limit, truncate=truncate)
    async for chunk in response.aiter_bytes():
        if reader.feed(chunk):
            break
    return reader.body()


class LineSplitter:
    """Cuts a byte stream into the lines of server-sent events (ended by CRLF, LF or CR).

    Counts the bytes fed and raises TooLarge past `limit`. Unlike
    `str.splitlines`, it does not cut at the other Unicode line breaks, which
    may appear inside a JSON string of a `data:` line.
    """

    __slots__ = ("_decoder", "_pending", "limit", "size")

    def __init__(self, limit: int) -> None:
        """Start empty, with `limit` bytes allowed in all."""
        self.limit = limit
        self.size = 0
        self._pending = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, chunk: bytes) -> list[str]:
        """The lines that `chunk` completes (a CRLF cut in two may add one empty line, as SSE allows)."""
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLarge(self.limit)
        lines = _LINE_END.split(self._pending + self._decoder.decode(chunk))
        self._pending = lines.pop()
        return lines

    def close(self) -> list[str]:
        """The last line, if the stream ended without a line break after it."""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return [rest] if rest else []
