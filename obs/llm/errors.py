"""The errors a call to an LLM server can end in: one small hierarchy.

Every error the InstrumentedClient raises for a server problem is an
`LLMServerError`. Each message says what happened and what to do about it,
and `error_type` is the value recorded as the span's `error.type` attribute
(the class name, or the HTTP status code for HTTP errors). No message ever
carries a secret: the client redacts the API key, URL credentials and query
values (whole or in part) before building one.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BadResponse",
    "ClientDisconnected",
    "HTTPStatusError",
    "LLMServerError",
    "ServerLoading",
    "ServerTimeout",
    "ServerUnavailable",
    "StreamInterrupted",
]


class LLMServerError(Exception):
    """A call to the LLM server failed; `url` is the server it was sent to."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        """Keep the message and the server URL (already free of credentials)."""
        super().__init__(message)
        self.message = message
        self.url = url

    @property
    def error_type(self) -> str:
        """The `error.type` attribute value for this error: the class name."""
        return type(self).__name__


class ServerUnavailable(LLMServerError):
    """No server answers at the URL: connection refused, unknown host or bad address."""


class ServerTimeout(LLMServerError):
    """The server was too slow: past the timeout (connecting, or between bytes), the call's
    deadline, or the longest a stream may go without an event."""


class BadResponse(LLMServerError):
    """The server answered, but not with a chat completion this client can read (or one too large)."""


class ClientDisconnected(LLMServerError):
    """The caller went away before any answer came (what a proxy in front of the server records).

    Its request to the server was stopped. Often the caller's own timeout
    running out on a server that was stuck or slow.
    """


class StreamInterrupted(LLMServerError):
    """A streamed answer ended before `data: [DONE]`; `partial_text` is what arrived."""

    def __init__(self, message: str, *, url: str | None = None, partial_text: str = "") -> None:
        """Keep the message, the server URL and the text received before the cut."""
        super().__init__(message, url=url)
        self.partial_text = partial_text


class HTTPStatusError(LLMServerError):
    """The server answered with an HTTP error status (4xx or 5xx).

    `server_message` and `server_error_type` come from llama-server's error JSON
    (`{"error": {"code", "message", "type"}}`) when the body has one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        url: str | None = None,
        server_message: str | None = None,
        server_error_type: str | None = None,
    ) -> None:
        """Keep the message, the HTTP status and what the server said about it."""
        super().__init__(message, url=url)
        self.status_code = status_code
        self.server_message = server_message
        self.server_error_type = server_error_type

    @property
    def error_type(self) -> str:
        """The HTTP status code as a string, e.g. "500" (OpenTelemetry's `error.type`)."""
        return str(self.status_code)


class ServerLoading(HTTPStatusError):
    """503 while the server is still loading its model: retry in a moment."""


class AuthenticationError(HTTPStatusError):
    """401 or 403: the server wants an API key, or a different one."""
