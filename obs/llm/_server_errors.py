"""What went wrong with a chat request, as `obs.llm.errors` exceptions whose messages say what to do.

The client and its streams turn failed connections, HTTP error statuses,
bodies that are not chat completions and errors reported mid-stream into
the one hierarchy of `obs.llm.errors`. Every text that came from the server or
from httpx passes through `redact` first, so an API key never reaches a
message.
"""

from __future__ import annotations

from typing import Any

import httpx

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


def redact(text: str, api_key: str | None) -> str:
    """`text` with every occurrence of `api_key` replaced by `***`."""
    if api_key and api_key in text:
        text = text.replace(api_key, "***")
    return text


def transport_error(exc: httpx.HTTPError, url: str, timeout: float, api_key: str | None) -> LLMServerError:
    """The error for a request to `url` that got no HTTP answer: a timeout or a connection failure."""
    detail = redact(str(exc) or type(exc).__name__, api_key)
    if isinstance(exc, httpx.TimeoutException):
        phase = "connecting" if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) else "waiting"
        return ServerTimeout(
            f"llama-server at {url} did not answer within {timeout:g} s ({phase}): it may be busy "
            "or stuck; raise the client's timeout or check the server",
            url=url,
        )
    if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol | httpx.InvalidURL):
        return ServerUnavailable(f"no llama-server answers at {url}: {START_HINT} ({detail})", url=url)
    return ServerUnavailable(
        f"the connection to llama-server at {url} broke ({detail}): check that the server is running",
        url=url,
    )


def status_error(response: httpx.Response, url: str, api_key: str | None) -> HTTPStatusError:
    """The error for an HTTP error status, with the server's own message when its body has one."""
    status = response.status_code
    parsed = parse_error_body(response.content)
    said = redact(parsed.message if parsed is not None else response.text[:SNIPPET].strip(), api_key)
    what = f"{status}: {said}" if said else str(status)
    kwargs: dict[str, Any] = {
        "status_code": status,
        "url": url,
        "server_message": said or None,
        "server_error_type": parsed.type if parsed is not None else None,
    }
    if status == 503:
        return ServerLoading(
            f"llama-server at {url} is not ready ({what}): it is still loading its model; retry shortly",
            **kwargs,
        )
    if status in (401, 403):
        hint = (
            "pass api_key= matching the server's --api-key"
            if not api_key
            else "the API key given to the client is not one the server accepts"
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


def parse_body(response: httpx.Response, url: str, api_key: str | None) -> ChatCompletion:
    """The chat completion in a successful response; BadResponse when the body is not one."""
    try:
        data = response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type")
        snippet = redact(response.text[:SNIPPET], api_key)
        raise BadResponse(
            f"the server at {url} answered with something that is not JSON "
            f"({kind}: {snippet!r}): {URL_HINT}",
            url=url,
        ) from None
    try:
        return parse_chat_response(data)
    except ResponseFormatError as exc:
        raise BadResponse(
            f"the server at {url} answered JSON that is not a chat completion ({exc}): {URL_HINT}",
            url=url,
        ) from None


def stream_error(item: StreamError, url: str, api_key: str | None) -> HTTPStatusError:
    """The error for an error event the server sent in the middle of a stream."""
    said = redact(item.message, api_key)
    status = item.code if item.code is not None and 400 <= item.code <= 599 else 500
    return HTTPStatusError(
        f"llama-server at {url} reported an error mid-stream ({status}: {said}): "
        "see the server's log; the partial answer is kept on the span",
        status_code=status,
        url=url,
        server_message=said,
        server_error_type=item.type,
    )


class ServerErrors:
    """The errors that calls to one server end in, with its URL, its timeout and its API key bound.

    The client makes one and hands it to its streams, so neither passes the
    key around: every text from the server or httpx is redacted here.
    """

    def __init__(self, url: str, timeout: float, api_key: str | None) -> None:
        """`url` is the server's URL already free of credentials; `api_key` is redacted from every message."""
        self.url = url
        self.timeout = timeout
        self._api_key = api_key

    def redact(self, text: str) -> str:
        """`text` with the API key replaced by `***`."""
        return redact(text, self._api_key)

    def transport(self, exc: httpx.HTTPError) -> LLMServerError:
        """The error for a request that got no HTTP answer: a timeout or a connection failure."""
        return transport_error(exc, self.url, self.timeout, self._api_key)

    def status(self, response: httpx.Response) -> HTTPStatusError:
        """The error for an HTTP error status (the response body already read)."""
        return status_error(response, self.url, self._api_key)

    def parse_body(self, response: httpx.Response) -> ChatCompletion:
        """The chat completion in a successful response; BadResponse when the body is not one."""
        return parse_body(response, self.url, self._api_key)

    def stream_event(self, item: StreamError) -> HTTPStatusError:
        """The error for an error event the server sent mid-stream."""
        return stream_error(item, self.url, self._api_key)

    def stream_silent(self, chunks: int) -> ServerTimeout:
        """The error for a stream that stopped sending for longer than the timeout."""
        return ServerTimeout(
            f"llama-server at {self.url} stopped sending mid-stream (nothing for "
            f"{self.timeout:g} s after {chunks} chunks): it may be stuck; "
            "the partial answer is kept on the span",
            url=self.url,
        )

    def stream_ended(self, chunks: int, partial_text: str) -> StreamInterrupted:
        """The error for a stream whose body ended cleanly but before `[DONE]`."""
        return StreamInterrupted(
            f"the stream from {self.url} ended before [DONE] after {chunks} chunks; "
            "the partial answer is kept on the span",
            url=self.url,
            partial_text=partial_text,
        )

    def stream_cut(self, exc: httpx.HTTPError, chunks: int, partial_text: str) -> StreamInterrupted:
        """The error for a stream whose connection broke mid-body."""
        detail = self.redact(str(exc) or type(exc).__name__)
        return StreamInterrupted(
            f"the stream from {self.url} was cut after {chunks} chunks "
            f"({detail}); the partial answer is kept on the span",
            url=self.url,
            partial_text=partial_text,
        )

    def stream_line(self, exc: ResponseFormatError) -> BadResponse:
        """The error for a stream line that is not a chat chunk."""
        return BadResponse(
            f"the stream from {self.url} carried a line that is not a chat chunk "
            f"({self.redact(str(exc))}): {URL_HINT}",
            url=self.url,
        )
