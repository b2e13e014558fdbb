"""What the proxy tells a caller, and records, when the upstream gives no answer: llama-server's errors."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from obs.llm._redaction import Redactor
from obs.llm.errors import LLMServerError, ServerTimeout, ServerUnavailable

__all__ = ["no_answer_error", "upstream_timeout"]


def upstream_timeout(url: str, timeout_s: float | None, connect_timeout_s: float, *, mid_answer: bool = False,
                     connecting: bool = False) -> ServerTimeout:  # fmt: skip
    """The error for an upstream at `url` that did not accept a connection within `connect_timeout_s`
    (`connecting`), or sent nothing for `timeout_s` before (or in the middle of) its answer."""
    if connecting:
        message = (f"the server at {url} did not accept a connection within "
                   f"{connect_timeout_s:g} s: it may be overloaded or unreachable; check it, or "
                   "raise the proxy's connect timeout")
    else:
        where = "in the middle of its answer" if mid_answer else "before answering"
        message = (f"the server at {url} sent nothing for {timeout_s:g} s {where}: it may be stuck; "
                   "check it, or raise the proxy's timeout (--timeout)")
        if mid_answer:
            message += "; the partial answer is kept on the span"
    return ServerTimeout(message, url=url)


def no_answer_error(exc: httpx.HTTPError, url: str, secrets: Sequence[str], timeout_s: float | None,
                    connect_timeout_s: float) -> tuple[int, str, LLMServerError]:  # fmt: skip
    """(status, llama-server's error type, the error) for a call to `url` that got no answer because of
    `exc`: 504 for a timeout, else 502; `secrets` are kept out of the message."""
    detail = Redactor(secrets).snippet(str(exc) or type(exc).__name__, 300)
    if isinstance(exc, httpx.TimeoutException):
        connecting = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
        timeout = upstream_timeout(url, timeout_s, connect_timeout_s, connecting=connecting)
        return 504, "timeout_error", timeout
    if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol):
        return 502, "unavailable_error", ServerUnavailable(
            f"no server answers at {url}: start llama-server there, or point the proxy's --upstream at one "
            f"({detail})", url=url)  # fmt: skip
    return 502, "unavailable_error", ServerUnavailable(
        f"the server at {url} closed the connection without answering ({detail}): check the server's log",
        url=url)  # fmt: skip
