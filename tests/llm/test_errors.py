"""The client's error hierarchy and what each error reports as `error.type`."""

from __future__ import annotations

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


def test_every_error_is_an_llm_server_error_with_its_type() -> None:
    for cls in (ServerUnavailable, ServerTimeout, BadResponse):
        error = cls("what happened", url="http://h:1")
        assert isinstance(error, LLMServerError)
        assert error.error_type == cls.__name__
        assert (str(error), error.url) == ("what happened", "http://h:1")
    cut = StreamInterrupted("cut", partial_text="Hel")
    assert (cut.partial_text, cut.error_type) == ("Hel", "StreamInterrupted")


def test_http_errors_report_their_status() -> None:
    error = HTTPStatusError("bad", status_code=500, server_message="boom", server_error_type="server_error")
    assert (error.error_type, error.status_code, error.server_message) == ("500", 500, "boom")
    assert ServerLoading("x", status_code=503).error_type == "503"
    assert isinstance(ServerLoading("x", status_code=503), HTTPStatusError)
    assert isinstance(AuthenticationError("x", status_code=401), HTTPStatusError)
