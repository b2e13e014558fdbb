"""WebhookNotifier against hostile receivers and secret-bearing URLs, on real loopback sockets.

A receiver that trickles its answer one byte every half second must not
stall delivery past the notifier's timeout, nor `close()` past its own; a
URL's secrets (user info, query values, a token in the path) must reach the
receiver and nowhere else: not the messages, the repr, the logs or the
logger's entries.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from obs.alerting.notifiers import AlertEvent, WebhookNotifier
from obs.logs import LLMLogger

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@dataclass
class _Trickler:
    """A raw HTTP receiver on loopback that reads each request, then sends its answer slowly.

    `head_gap_s` is the pause before each byte of the status line and
    headers, `body_gap_s` before each byte of the body. `finished` is set
    once an answer has been sent whole; `requests` holds what arrived.
    """

    head_gap_s: float
    body_gap_s: float = 0.0
    body: bytes = b""
    requests: list[bytes] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.getsockname()[1])

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append(head + b"\r\n\r\n" + body)
            head_out = ANSWER if not self.body else (
                b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(self.body)).encode() + b"\r\n\r\n"
            )  # fmt: skip
            for gap, payload in ((self.head_gap_s, head_out), (self.body_gap_s, self.body)):
                for index in range(len(payload)):
                    if self.stop.wait(gap):
                        return
                    conn.sendall(payload[index : index + 1])
            self.finished.set()

    def close(self) -> None:
        self.stop.set()
        self.server.close()
        self.thread.join(5)


@pytest.fixture
def trickler_factory() -> Iterator[type[_Trickler]]:
    made: list[_Trickler] = []

    class Made(_Trickler):
        def __post_init__(self) -> None:
            super().__post_init__()
            made.append(self)

    yield Made
    for trickler in made:
        trickler.close()


def _event(rule: str = "r") -> AlertEvent:
    return AlertEvent(
        rule=rule, status="firing", metric="error_rate", op=">", threshold=0.1, value=0.5,
        window_s=60.0, request_count=10, at=1.0, since=1.0, message=f"{rule} firing",
    )  # fmt: skip


def _wait_for(condition: object, within_s: float = 20.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


# ---------------------------------------------------------------------------
# Deadlines


def test_headers_trickled_byte_by_byte_end_the_attempt_at_its_timeout(
    trickler_factory: type[_Trickler],
) -> None:
    # The whole answer would take 0.5 s * 70 bytes = 35 s; each byte comes well within the timeout.
    receiver = trickler_factory(head_gap_s=0.5)
    hook = WebhookNotifier(f"http://127.0.0.1:{receiver.port}/hook", timeout=1.0, retries=1, backoff=0.0)
    assert hook.deliver(_event()) is False
    assert not receiver.finished.is_set()  # given up while the receiver was still trickling
    assert len(receiver.requests) == 2  # both attempts were made, each cut at its deadline
    assert hook.failures == 1 and hook.sent == 0
    assert hook.last_error is not None and "Timeout" in hook.last_error and "1 s" in hook.last_error
    hook.close()


def test_a_trickled_body_does_not_hold_up_a_delivery_that_was_answered(
    trickler_factory: type[_Trickler],
) -> None:
    receiver = trickler_factory(head_gap_s=0.0, body_gap_s=0.5, body=b"x" * 100)
    hook = WebhookNotifier(f"http://127.0.0.1:{receiver.port}/hook", timeout=1.0, retries=0)
    assert hook.deliver(_event()) is True  # the 200 arrived: the body does not matter
    assert not receiver.finished.is_set()
    assert hook.sent == 1 and hook.failures == 0
    hook.close()


def test_close_returns_within_its_timeout_and_ends_the_stuck_delivery(
    trickler_factory: type[_Trickler],
) -> None:
    receiver = trickler_factory(head_gap_s=0.5)
    hook = WebhookNotifier(f"http://127.0.0.1:{receiver.port}/hook", timeout=30.0, retries=0, max_queue=1)
    for rule in ("first", "second", "third"):  # one in flight, one queued (the queue is full), one dropped
        hook.notify(_event(rule))
    assert _wait_for(lambda: len(receiver.requests) == 1)
    worker = hook._thread
    assert worker is not None
    started = time.monotonic()
    hook.close(timeout_s=1.0)
    took = time.monotonic() - started
    # A deadline, not a speed: close() is bounded by its own timeout (before: twice it, and more).
    assert took < 2.5, f"close(timeout_s=1.0) took {took:.1f} s"
    assert not receiver.finished.is_set()
    assert _wait_for(lambda: not worker.is_alive()), "the delivery thread is still stuck on the receiver"
    assert _wait_for(lambda: hook.failures == 3)
    assert hook.sent == 0 and len(receiver.requests) == 1
    assert hook.flush(5)


# ---------------------------------------------------------------------------
# Secrets in the URL

SECRETS = ("hunter2pass", "s3cr3t-query-value", "T0k3nInThePathAbCdEf123", "alertbot")


def _secret_url(port: int) -> str:
    return (
        f"http://alertbot:hunter2pass@127.0.0.1:{port}/hooks/T0k3nInThePathAbCdEf123?key=s3cr3t-query-value"
    )


def _assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked into: {text}"


def test_url_secrets_reach_the_receiver_and_nothing_else(
    trickler_factory: type[_Trickler], caplog: pytest.LogCaptureFixture
) -> None:
    receiver = trickler_factory(head_gap_s=0.0)
    logger = LLMLogger()
    hook = WebhookNotifier(_secret_url(receiver.port), timeout=2.0, retries=0, logger=logger)
    with caplog.at_level(logging.DEBUG):  # httpx itself logs every request at INFO
        assert hook.deliver(_event()) is True
    _assert_clean(caplog.text)
    request = receiver.requests[0].decode()
    assert request.startswith("POST /hooks/T0k3nInThePathAbCdEf123?key=s3cr3t-query-value HTTP/1.1")
    assert base64.b64encode(b"alertbot:hunter2pass").decode() in request  # user info as Basic auth
    assert hook.url == f"http://127.0.0.1:{receiver.port}/hooks/***?key=***"
    _assert_clean(repr(hook))
    _assert_clean(hook.url)
    hook.close()


def test_url_secrets_stay_out_of_failures_logs_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    logger = LLMLogger()
    hook = WebhookNotifier(_secret_url(port), timeout=2.0, retries=1, backoff=0.0, logger=logger)
    with caplog.at_level(logging.DEBUG):
        assert hook.deliver(_event()) is False
        assert "ConnectError" in (hook.last_error or "")
        _assert_clean(hook.last_error or "")
        hook.close()
        hook.notify(_event("late"))  # refused: closed
        quiet = WebhookNotifier(_secret_url(port), timeout=2.0, retries=0)  # no logger: Python logging
        assert quiet.deliver(_event()) is False
        quiet.close()
    assert hook.failures == 2 and hook.last_error == "the notifier is closed"
    _assert_clean(caplog.text)
    entries = logger.get_logs()
    assert entries and all(f"127.0.0.1:{port}/hooks/***?key=***" in e.message for e in entries)
    for entry in entries:
        _assert_clean(entry.message)
        _assert_clean(str(entry.data))
    with pytest.raises(ValueError) as caught:
        WebhookNotifier("ftp://alertbot:hunter2pass@example.com/x?key=s3cr3t-query-value")
    _assert_clean(str(caught.value))
    assert "url must be an http:// or https:// URL" in str(caught.value)
