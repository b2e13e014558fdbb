"""What went wrong with a chat request, as `obs.llm.errors` exceptions whose messages say what to do.

`ServerErrors` turns failed connections, HTTP error statuses, bodies that
are not chat completions, errors reported mid-stream, missed deadlines,
silent streams and answers over the size cap into the one hierarchy of
`obs.llm.errors`. It binds one server's public URL, the client's limits and
its `Redactor`: every text that came from the server or from httpx is
redacted first, and quoted only in short snippets cut after redaction, so
no secret (nor a piece of one) reaches a message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from obs.llm._limits import Budget, DeadlinePassed, Limits, TooLarge
from obs.llm._redaction import Redactor
from obs.llm.errors import (
    AuthenticationError,
    BadResponse,
    HTTPStatusError,
    LLMServerError,
    ServerLoading,
    ServerTimeout,
    ServerUnavailable,
    StreamInterrupted,
)
from obs.llm.llama.responses import (
    ChatCompletion,
    ResponseFormatError,
    StreamError,
    parse_chat_response,
    parse_error_body,
)

START_HINT = "start one with `python -m obs.llm.llama.server` or set LLAMA_SERVER_URL"
URL_HINT = "check that LLAMA_SERVER_URL points at a llama-server (or another OpenAI-compatible API)"
# How much of a body that is not the expected JSON is quoted in a message.
SNIPPET = 120
# How much of what the server says about an error is kept.
SERVER_MESSAGE = 500
_KEPT = "the partial answer is kept on the span"


def _text(body: bytes, encoding: str | None) -> str:
    try:
        return body.decode(encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", errors="replace")


class ServerErrors:
    """The errors that calls to one server end in, with its URL, the client's limits and redactor bound.

    The client makes one and hands it to its streams, so neither passes a
    secret around.
    """

    def __init__(self, url: str, limits: Limits, redactor: Redactor, *, api_key_given: bool) -> None:
        """`url` is the server's URL as shown (`obs.llm._redaction.public_url`)."""
        self.url = url
        self.limits = limits
        self.redact = redactor
        self.api_key_given = api_key_given

    def snippet(self, text: str, limit: int = SNIPPET) -> str:
        """The start of `text`, redacted, at most `limit` characters."""
        return self.redact.snippet(text, limit)

    # -- no answer, or too slow -------------------------------------------------------------------

    def transport(
        self, exc: httpx.HTTPError, budget: Budget | None = None, *, stream: bool = False
    ) -> LLMServerError:
        """The error for a request that got no HTTP answer: a timeout or a connection failure.

        A stream's request waits for its answer at most the idle timeout when that is the shorter.
        """
        detail = self.snippet(str(exc) or type(exc).__name__, 300)
        url = self.url
        if isinstance(exc, httpx.TimeoutException):
            connecting = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            phase = "connecting" if connecting else "waiting"
            if budget is not None and budget.expired():
                return self.deadline(phase)
            limits = self.limits
            idle = stream and not connecting and limits.stream_idle_timeout_s < limits.timeout_s
            waited, setting = (
                (limits.stream_idle_timeout_s, "stream_idle_timeout_s")
                if idle
                else (limits.timeout_s, "timeout")
            )
            return ServerTimeout(
                f"llama-server at {url} did not answer within {waited:g} s ({phase}): "
                f"it may be busy or stuck; raise the client's {setting} or check the server",
                url=url,
            )
        if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol | httpx.InvalidURL):
            return ServerUnavailable(f"no llama-server answers at {url}: {START_HINT} ({detail})", url=url)
        return ServerUnavailable(
            f"the connection to llama-server at {url} broke ({detail}): check that the server is running",
            url=url,
        )

    def deadline(self, what: str, *, chunks: int | None = None) -> ServerTimeout:
        """The error for a call still unfinished at its deadline (`what` it was doing then)."""
        where = f"{what} after {chunks} chunks; {_KEPT}" if chunks is not None else what
        return ServerTimeout(
            f"llama-server at {self.url} did not finish within the call's deadline of "
            f"{self.limits.deadline_s:g} s ({where}): raise deadline_s= on the client, lower max_tokens, "
            "or check the server",
            url=self.url,
        )

    def stream_silent(self, chunks: int, budget: Budget) -> ServerTimeout:
        """The error for a stream that sent nothing at all for longer than it may."""
        if budget.expired():
            return self.deadline("mid-stream", chunks=chunks)
        limits = self.limits
        if limits.stream_idle_timeout_s < limits.timeout_s:
            return self.stream_idle(chunks)
        return ServerTimeout(
            f"llama-server at {self.url} stopped sending mid-stream (nothing for {limits.timeout_s:g} s "
            f"after {chunks} chunks): it may be stuck; raise the client's timeout or check the server; "
            f"{_KEPT}",
            url=self.url,
        )

    def stream_idle(self, chunks: int) -> ServerTimeout:
        """The error for a stream that sent no event (only comments or partial lines) for too long."""
        return ServerTimeout(
            f"llama-server at {self.url} stopped sending mid-stream (no event for "
            f"{self.limits.stream_idle_timeout_s:g} s after {chunks} chunks): it may be stuck; raise "
            f"stream_idle_timeout_s= on the client or check the server; {_KEPT}",
            url=self.url,
        )

    def too_large(self, limit: int, *, stream: bool = False) -> BadResponse:
        """The error for an answer larger than the client's `max_response_bytes`."""
        return BadResponse(
            f"the answer from {self.url} is larger than the client's max_response_bytes ({limit:,} bytes): "
            f"raise max_response_bytes= on the client or lower max_tokens" + (f"; {_KEPT}" if stream else ""),
            url=self.url,
        )

    def reading(self, exc: BaseException, budget: Budget) -> LLMServerError | None:
        """The error for a failure while reading a (non-streamed) body; None if it is not one of ours."""
        if isinstance(exc, TooLarge):
            return self.too_large(exc.limit)
        if isinstance(exc, DeadlinePassed):
            return self.deadline("the answer was still arriving")
        if isinstance(exc, httpx.HTTPError):
            return self.transport(exc, budget)
        return None

    # -- an answer that is an error, or not an answer -------------------------------------------------

    def status(self, status: int, body: bytes, encoding: str | None = None) -> HTTPStatusError:
        """The error for an HTTP error status, with the server's own message when its body has one."""
        url = self.url
        parsed = parse_error_body(body)
        if parsed is not None:
            said = self.snippet(parsed.message, SERVER_MESSAGE)
        else:
            said = self.snippet(_text(body, encoding)).strip()
        what = f"{status}: {said}" if said else str(status)
        kwargs: dict[str, Any] = {
            "status_code": status,
            "url": url,
            "server_message": said or None,
            "server_error_type": self.snippet(parsed.type, 100)
            if parsed is not None and parsed.type
            else None,
        }
        if status == 503:
            return ServerLoading(
                f"llama-server at {url} is not ready ({what}): it is still loading its model; retry shortly",
                **kwargs,
            )
        if status in (401, 403):
            hint = (
                "the API key given to the client is not one the server accepts"
                if self.api_key_given
                else "pass api_key= matching the server's --api-key"
            )
            return AuthenticationError(
                f"llama-server at {url} refused the request ({what}): {hint}", **kwargs
            )
        if status < 500:
            return HTTPStatusError(
                f"llama-server at {url} rejected the request ({what}): check the messages and parameters",
                **kwargs,
            )
        return HTTPStatusError(
            f"llama-server at {url} failed with HTTP {what}: see the server's log", **kwargs
        )

    def completion(
        self,
        body: bytes,
        content_type: str | None,
        encoding: str | None = None,
        *,
        parse: Callable[[Any], ChatCompletion] = parse_chat_response,
        what: str = "a chat completion",
    ) -> ChatCompletion:
        """The completion in a successful body, read by `parse`; BadResponse when it is not `what`."""
        try:
            data = json.loads(body)
        except ValueError:
            snippet = self.snippet(_text(body, encoding))
            raise BadResponse(
                f"the server at {self.url} answered with something that is not JSON "
                f"({content_type or 'no content type'}: {snippet!r}): {URL_HINT}",
                url=self.url,
            ) from None
        try:
            return parse(data)
        except ResponseFormatError as exc:
            raise BadResponse(
                f"the server at {self.url} answered JSON that is not {what} "
                f"({self.snippet(str(exc), 300)}): {URL_HINT}",
                url=self.url,
            ) from None

    # -- a stream that breaks -------------------------------------------------------------------------

    def stream_event(self, item: StreamError) -> HTTPStatusError:
        """The error for an error event the server sent in the middle of a stream."""
        said = self.snippet(item.message, SERVER_MESSAGE)
        status = item.code if item.code is not None and 400 <= item.code <= 599 else 500
        return HTTPStatusError(
            f"llama-server at {self.url} reported an error mid-stream ({status}: {said}): "
            f"see the server's log; {_KEPT}",
            status_code=status,
            url=self.url,
            server_message=said,
            server_error_type=self.snippet(item.type, 100) if item.type else None,
        )

    def stream_ended(self, chunks: int, partial_text: str) -> StreamInterrupted:
        """The error for a stream whose body ended cleanly but before `[DONE]`."""
        return StreamInterrupted(
            f"the stream from {self.url} ended before [DONE] after {chunks} chunks; {_KEPT}",
            url=self.url,
            partial_text=partial_text,
        )

    def stream_cut(self, exc: httpx.HTTPError, chunks: int, partial_text: str) -> StreamInterrupted:
        """The error for a stream whose connection broke mid-body."""
        detail = self.snippet(str(exc) or type(exc).__name__, 300)
        return StreamInterrupted(
            f"the stream from {self.url} was cut after {chunks} chunks ({detail}); {_KEPT}",
            url=self.url,
            partial_text=partial_text,
        )

    def stream_line(self, line: str) -> BadResponse:
        """The error for a stream line that is not a chat chunk (quoted in part, redacted)."""
        return BadResponse(
            f"the stream from {self.url} carried a line that is not a chat chunk "
            f"({self.snippet(line, 80)!r}): {URL_HINT}",
            url=self.url,
        )
