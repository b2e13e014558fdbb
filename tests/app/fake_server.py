"""A loopback OpenAI-compatible server for app tests: answers with whatever a test asks for.

It speaks just enough of llama-server (`/health`, `/props`,
`/v1/chat/completions` streamed and not) to stand in where a test needs a
reply the real model would never give (an HTML payload) or a failure on
demand (HTTP 500, a loading server). Runs in a daemon thread on port 0.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeLlamaServer:
    """A real HTTP server on 127.0.0.1 whose answers are set through attributes.

    `reply` is the assistant text; `chunk_delay_s` the pause before each
    streamed chunk (a slow model); `health_status` the /health HTTP status;
    `fail_status` makes chat completions fail with that status and llama-server's
    error JSON carrying `fail_message`. `requests` collects the JSON bodies received.
    """

    def __init__(self, reply: str = "Hello from the fake server.") -> None:
        self.reply = reply
        self.health_status = 200
        self.chunk_delay_s = 0.0
        self.fail_status: int | None = None
        self.fail_message = "the fake server failed on purpose"
        self.model = "fake-model"
        self.requests: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeLlamaServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeLlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _completion(self, stream: bool) -> list[bytes] | bytes:
        words = self.reply.split(" ")
        usage = {"prompt_tokens": 12, "completion_tokens": len(words), "total_tokens": 12 + len(words),
                 "prompt_tokens_details": {"cached_tokens": 0}}
        timings = {"cache_n": 0, "prompt_n": 12, "prompt_ms": 4.0, "prompt_per_second": 3000.0,
                   "predicted_n": len(words), "predicted_ms": 8.0, "predicted_per_second": 500.0}
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": self.model}
        if not stream:
            return json.dumps({
                **base, "object": "chat.completion",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": self.reply}}],
                "usage": usage, "timings": timings,
            }).encode()
        chunks = []
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            chunks.append({**base, "object": "chat.completion.chunk",
                           "choices": [{"index": 0, "finish_reason": None, "delta": {"content": piece}}]})
        chunks.append({**base, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "finish_reason": "stop", "delta": {}}], "timings": timings})
        chunks.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage,
                       "timings": timings})
        return [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/health":
                    if fake.health_status == 200:
                        self._json(200, {"status": "ok"})
                    else:
                        self._json(fake.health_status, {"error": {"code": fake.health_status,
                                                                  "message": "Loading model",
                                                                  "type": "unavailable_error"}})
                elif self.path == "/props":
                    self._json(200, {"model_alias": fake.model, "build_info": "b1-fake",
                                     "default_generation_settings": {"n_ctx": 512}})
                else:
                    self._json(404, {"error": {"code": 404, "message": "not found", "type": "not_found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(body)
                if fake.fail_status is not None:
                    self._json(fake.fail_status, {"error": {"code": fake.fail_status,
                                                            "message": fake.fail_message,
                                                            "type": "server_error"}})
                    return
                answer = fake._completion(bool(body.get("stream")))
                if isinstance(answer, bytes):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for chunk in answer:
                    if fake.chunk_delay_s:
                        time.sleep(fake.chunk_delay_s)
                    self.wfile.write(chunk)
                    self.wfile.flush()
                self.close_connection = True

        return Handler
