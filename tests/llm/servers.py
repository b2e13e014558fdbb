"""Real HTTP servers on loopback that answer like llama-server, well or badly.

Each runs in a thread on a free port and records the requests it gets, so
tests exercise the client's real HTTP path (no mocks of httpx). Use as
`with serve(behaviour) as server: ... server.url ...`; the behaviours below
cover the failures the client must survive: a refused connection, HTTP
errors with llama-server's error JSON, 503 while loading, 401, a non-JSON
body, JSON without choices, a stream cut before `[DONE]`, a stream that
hangs, and a slow answer; and the hostile ones: servers that echo the API
key back, report impossible token counts, trickle their answer a byte at a
time, keep a stream alive with comments only, or answer far too much.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "test-model"
CONTENT = "Hello there, friend"
DELTAS = ("Hello", " there", ",", " friend")
PROMPT_TOKENS = 21
CACHED_TOKENS = 5
COMPLETION_TOKENS = 4
TIMINGS = {
    "cache_n": 5,
    "prompt_n": 16,
    "prompt_ms": 40.0,
    "prompt_per_token_ms": 2.5,
    "prompt_per_second": 400.0,
    "predicted_n": 4,
    "predicted_ms": 20.0,
    "predicted_per_token_ms": 5.0,
    "predicted_per_second": 200.0,
}

Behaviour = Callable[["Handler"], None]


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The body decoded as JSON (None when empty)."""
        return json.loads(self.body) if self.body else None


@dataclass
class LoopbackServer:
    """A running test server: its URL, what it received, and a switch to stop it."""

    url: str
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class Handler(BaseHTTPRequestHandler):
    """Reads the request, records it, and lets the server's behaviour answer."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small writes would otherwise wait ~40 ms for delayed ACKs
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read `requests`, not stderr."""

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        self.received = Received(self.command, self.path, dict(self.headers.items()), self.body)
        self.server.state.requests.append(self.received)
        # The client may give up mid-answer; some tests do that on purpose.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.server.behaviour(self)

    do_GET = _handle
    do_POST = _handle

    @property
    def wants_stream(self) -> bool:
        """True when the request body asks for `"stream": true`."""
        try:
            return bool(json.loads(self.body or b"{}").get("stream"))
        except ValueError:
            return False

    def send_json(self, status: int, payload: Any) -> None:
        """Answer with `payload` as JSON."""
        self.send_raw(status, json.dumps(payload).encode(), "application/json")

    def send_raw(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        """Answer with `body` as is."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def start_stream(self, chunked: bool = True) -> None:
        """Send the headers of an SSE response (chunked, or delimited by closing)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self._chunked = chunked

    def send_event(self, line: str) -> None:
        """Send one SSE line (a blank line follows it)."""
        payload = (line + "\n\n").encode()
        if self._chunked:
            self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        else:
            self.wfile.write(payload)
        self.wfile.flush()

    def end_stream(self) -> None:
        """Finish a chunked body properly."""
        if self._chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's backlog of 5 resets connections when many clients connect at once (asyncio tests).
    request_queue_size = 128

    def __init__(self, behaviour: Behaviour, state: LoopbackServer) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.behaviour = behaviour
        self.state = state


@contextmanager
def serve(behaviour: Behaviour) -> Iterator[LoopbackServer]:
    """Run `behaviour` behind a loopback HTTP server for the duration of the block."""
    state = LoopbackServer(url="")
    server = _Server(behaviour, state)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()  # lets hanging handlers finish
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def refused_url() -> str:
    """A loopback URL where nothing listens (a port that was just free)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- bodies ---------------------------------------------------------------------------------------


def completion_body(content: str = CONTENT, *, model: str = MODEL, timings: bool = True) -> dict[str, Any]:
    """A non-streamed chat completion shaped like llama-server's."""
    body: dict[str, Any] = {
        "choices": [
            {"finish_reason": "stop", "index": 0, "message": {"role": "assistant", "content": content}}
        ],
        "created": 1700000000,
        "model": model,
        "system_fingerprint": "b1234-test",
        "object": "chat.completion",
        "usage": {
            "completion_tokens": COMPLETION_TOKENS,
            "prompt_tokens": PROMPT_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS},
        },
        "id": "chatcmpl-test",
    }
    if timings:
        body["timings"] = dict(TIMINGS)
    return body


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    payload = {
        "choices": [{"finish_reason": finish, "index": 0, "delta": delta}],
        "created": 1700000000,
        "id": "chatcmpl-stream",
        "model": MODEL,
        "system_fingerprint": "b1234-test",
        "object": "chat.completion.chunk",
        **extra,
    }
    return "data: " + json.dumps(payload)


def stream_lines(deltas: tuple[str, ...] = DELTAS, *, usage: bool = True) -> list[str]:
    """The SSE lines of a complete llama-server stream, `[DONE]` included."""
    lines = [_chunk({"role": "assistant", "content": None})]
    lines += [_chunk({"content": d}) for d in deltas]
    lines.append(_chunk({}, "stop"))
    if usage:
        final = {
            "choices": [],
            "created": 1700000000,
            "id": "chatcmpl-stream",
            "model": MODEL,
            "object": "chat.completion.chunk",
            "usage": {
                "completion_tokens": len(deltas),
                "prompt_tokens": PROMPT_TOKENS,
                "total_tokens": PROMPT_TOKENS + len(deltas),
                "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS},
            },
            "timings": dict(TIMINGS),
        }
        lines.append("data: " + json.dumps(final))
    lines.append("data: [DONE]")
    return lines


def llama_error(code: int, message: str, type_: str) -> dict[str, Any]:
    """llama-server's error JSON."""
    return {"error": {"code": code, "message": message, "type": type_}}


# -- behaviours -----------------------------------------------------------------------------------


def good(handler: Handler) -> None:
    """A healthy llama-server: /health, /props, chat (streamed or not)."""
    if handler.path == "/health":
        handler.send_json(200, {"status": "ok"})
    elif handler.path == "/props":
        handler.send_json(
            200,
            {
                "model_path": f"/models/{MODEL}.gguf",
                "model_alias": MODEL,
                "total_slots": 2,
                "build_info": "b1234-test",
                "default_generation_settings": {"n_ctx": 1024},
            },
        )
    elif handler.wants_stream:
        handler.start_stream()
        for line in stream_lines():
            handler.send_event(line)
        handler.end_stream()
    else:
        handler.send_json(200, completion_body())


def error_status(status: int, message: str, type_: str = "server_error") -> Behaviour:
    """Chat answers `status` with llama-server's error JSON; /props works."""

    def behaviour(handler: Handler) -> None:
        if handler.path == "/props":
            good(handler)
        else:
            handler.send_json(status, llama_error(status, message, type_))

    return behaviour


def loading(handler: Handler) -> None:
    """Every endpoint says 503 Loading model, as llama-server does while it loads."""
    handler.send_json(503, llama_error(503, "Loading model", "unavailable_error"))


def unauthorized(handler: Handler) -> None:
    """Every endpoint wants a (different) API key."""
    handler.send_json(401, llama_error(401, "Invalid API Key", "authentication_error"))


def garbage(handler: Handler) -> None:
    """200 with a body that is not JSON."""
    handler.send_raw(200, b"<html><body>surprise</body></html>", "text/html")


def no_choices(handler: Handler) -> None:
    """200 with JSON that has no choices."""
    handler.send_json(200, {"object": "chat.completion", "id": "chatcmpl-x", "model": MODEL})


def stream_cut(after: int = 2, *, chunked: bool = True) -> Behaviour:
    """A stream that stops after `after` content chunks without `[DONE]`.

    chunked=True breaks the HTTP body itself (the peer closes mid-message);
    chunked=False ends the body cleanly, just too early.
    """

    def behaviour(handler: Handler) -> None:
        handler.start_stream(chunked=chunked)
        for line in stream_lines()[: 1 + after]:
            handler.send_event(line)
        handler.close_connection = True
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)

    return behaviour


def hang_mid_stream(after: int = 2) -> Behaviour:
    """A stream that sends `after` content chunks and then goes silent until the server stops.

    `/props` and `/health` answer normally: the server is up, one request is stuck.
    """

    def behaviour(handler: Handler) -> None:
        if handler.path in ("/props", "/health"):
            good(handler)
            return
        handler.start_stream()
        for line in stream_lines()[: 1 + after]:
            handler.send_event(line)
        handler.server.state.release.wait(30)

    return behaviour


def hang(handler: Handler) -> None:
    """Accept the request and never answer (until the server stops)."""
    handler.server.state.release.wait(30)


def slow(delay_s: float) -> Behaviour:
    """A healthy server that waits `delay_s` before each answer."""

    def behaviour(handler: Handler) -> None:
        time.sleep(delay_s)
        good(handler)

    return behaviour


def error_in_stream(handler: Handler) -> None:
    """A stream that starts and then reports an error event, as llama-server does mid-generation."""
    handler.start_stream()
    for line in stream_lines()[:2]:
        handler.send_event(line)
    handler.send_event("error: " + json.dumps(llama_error(500, "slot crashed", "server_error")))
    handler.end_stream()


def echo_secret(handler: Handler) -> None:
    """A careless server that puts the Authorization header it got into its error message."""
    handler.send_json(500, llama_error(500, f"cannot use {handler.headers.get('Authorization')}", "x"))


# -- hostile servers ------------------------------------------------------------------------------


def _authorization(handler: Handler) -> str:
    return handler.headers.get("Authorization") or "no Authorization header"


def echo_secret_everywhere(handler: Handler) -> None:
    """A server that puts the Authorization header it got into every field it answers with.

    `/props` names the model after it; a streamed answer carries it in the
    response id, the model, the fingerprint and the text; a plain answer too.
    """
    secret = _authorization(handler)
    if handler.path == "/props":
        props = {"model_alias": secret, "model_path": f"/m/{secret}.gguf", "build_info": secret}
        handler.send_json(200, props)
        return
    if handler.wants_stream:
        handler.start_stream()
        for line in stream_lines((f"you sent {secret}", " ok")):
            payload = line.removeprefix("data: ")
            if payload != "[DONE]":
                data = json.loads(payload)
                data.update(id=secret, model=secret, system_fingerprint=secret)
                line = "data: " + json.dumps(data)
            handler.send_event(line)
        handler.end_stream()
        return
    body = completion_body(f"you sent {secret}", model=secret)
    body["id"] = secret
    handler.send_json(200, body)


def echo_secret_in_stream_line(handler: Handler) -> None:
    """A stream whose second line is `data: ` and the Authorization header: not a chat chunk."""
    handler.start_stream()
    handler.send_event(stream_lines()[1])
    handler.send_event(f"data: {_authorization(handler)}")
    handler.end_stream()


def echo_secret_as_json_key(handler: Handler) -> None:
    """200 with a JSON object whose only key is the Authorization header (no choices)."""
    handler.send_json(200, {_authorization(handler): 1})


def echo_secret_in_text(status: int, *, at: int = 100) -> Behaviour:
    """`status` with a text body that has the Authorization header at offset `at` (so a snippet cuts it)."""

    def behaviour(handler: Handler) -> None:
        text = "x" * at + _authorization(handler) + " is what you sent"
        handler.send_raw(status, text.encode())

    return behaviour


def usage_out_of_range(usage: dict[str, Any]) -> Behaviour:
    """A healthy server whose answers (streamed or not) report `usage` as given."""

    def behaviour(handler: Handler) -> None:
        if handler.path == "/props":
            good(handler)
        elif handler.wants_stream:
            handler.start_stream()
            for line in stream_lines():
                if '"usage"' in line:
                    data = json.loads(line.removeprefix("data: "))
                    data["usage"] = usage
                    line = "data: " + json.dumps(data)
                handler.send_event(line)
            handler.end_stream()
        else:
            body = completion_body()
            body["usage"] = usage
            handler.send_json(200, body)

    return behaviour


def trickle(interval_s: float = 0.5) -> Behaviour:
    """A server that sends a complete answer one byte every `interval_s` (streamed or not).

    Each byte comes well within any read timeout, so only a deadline ends
    the wait. Stops when the server stops.
    """

    def behaviour(handler: Handler) -> None:
        if handler.wants_stream:
            body = "".join(line + "\n\n" for line in stream_lines()).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream")
        else:
            body = json.dumps(completion_body()).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for i in range(len(body)):
            handler.wfile.write(body[i : i + 1])
            handler.wfile.flush()
            if handler.server.state.release.wait(interval_s):
                return

    return behaviour


def pings_only(interval_s: float = 0.1, *, after: int = 1) -> Behaviour:
    """A stream that sends `after` content chunks and then only `: ping` comments, forever."""

    def behaviour(handler: Handler) -> None:
        handler.start_stream()
        for line in stream_lines()[: 1 + after]:
            handler.send_event(line)
        while not handler.server.state.release.wait(interval_s):
            handler.send_event(": ping")

    return behaviour


def huge_answer(size: int, *, stream: bool, chunked: bool = True) -> Behaviour:
    """An answer with about `size` characters of text, streamed in 4 KiB deltas or as one JSON body.

    chunked=False sends a plain body with its Content-Length; chunked=True
    sends it chunked, so the client cannot know its size in advance.
    """

    def behaviour(handler: Handler) -> None:
        if handler.path == "/props":
            good(handler)
            return
        if stream:
            piece = "y" * 4096
            handler.start_stream()
            handler.send_event(stream_lines()[0])
            for _ in range(size // len(piece)):
                handler.send_event(_chunk({"content": piece}))
            handler.send_event(_chunk({}, "stop"))
            handler.send_event("data: [DONE]")
            handler.end_stream()
            return
        body = json.dumps(completion_body("y" * size)).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if chunked:
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for start in range(0, len(body), 65536):
                part = body[start : start + 65536]
                handler.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
        else:
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        handler.wfile.flush()

    return behaviour
