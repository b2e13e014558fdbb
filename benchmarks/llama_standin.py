"""A scripted llama-server stand-in on loopback: the bytes a real llama-server streams, at a fixed pace.

A model's own speed swings with whatever else the machine runs, which hides
what a relay in front of it costs. This server answers
`POST /v1/chat/completions` the way llama-server does, byte for byte in
shape (its headers, one HTTP chunk per token, the role and the first token
in the first, `finish_reason` and `usage` + `timings` in one after the last
token, then `data: [DONE]`; and like llama-server it closes the connection
after every streamed answer, though its head says keep-alive), but on a
clock: the first token `first_ms` after
the request arrived, then one every `interval_ms`, `max_tokens` of them
(scheduled on absolute times, so a late one does not delay the rest). A
non-streamed request is answered whole when its last token would have
been. `timings` add up to that time: `prompt_ms` is the wait for the first
token, `predicted_ms` the rest. `GET /health` and `GET /props` answer as
llama-server's do.

It runs as its own process, so its CPU is apart from the caller's and the
relay's:

    python -m benchmarks.llama_standin --port 0 [--first-ms 20] [--interval-ms 5]

prints `listening on http://127.0.0.1:PORT` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence

MODEL = "SmolLM2-135M-Instruct.Q4_1"
_WORDS = ("1", ".", " Red", "\n", "2", ".", " Blue", "\n", "3", ".", " Green", "\n")
_HEAD = (b"HTTP/1.1 200 OK\r\nServer: llama.cpp\r\nAccess-Control-Allow-Origin: \r\n"
         b"X-Accel-Buffering: no\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
         b"Keep-Alive: timeout=5, max=100\r\n\r\n")  # fmt: skip
_PROPS = {"model_path": f"/models/{MODEL}.gguf", "n_ctx": 2048, "total_slots": 2,
          "build_info": "b0-unknown", "default_generation_settings": {"n_ctx": 2048}}  # fmt: skip


def _event(payload: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _plain(status: int, body: bytes) -> bytes:
    return (b"HTTP/1.1 %d %s\r\nServer: llama.cpp\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\nKeep-Alive: timeout=5, max=100\r\n\r\n%s") % (
        status, b"OK" if status == 200 else b"Error", len(body), body)  # fmt: skip


class _Answer:
    """The bytes of one answer of `tokens` tokens: the head, then one piece per token, then the end."""

    def __init__(self, tokens: int, prompt_tokens: int, first_ms: float, interval_ms: float) -> None:
        created = int(time.time())
        ident = f"chatcmpl-standin{time.monotonic_ns() % 10**12:012d}"
        base = {"created": created, "id": ident, "model": MODEL, "system_fingerprint": "b0-unknown",
                "object": "chat.completion.chunk"}  # fmt: skip
        words = [_WORDS[i % len(_WORDS)] for i in range(tokens)]

        def delta(d: dict[str, object], finish: str | None = None) -> dict[str, object]:
            return {"choices": [{"finish_reason": finish, "index": 0, "delta": d}], **base}

        predicted_ms = interval_ms * (tokens - 1)  # after the first token, which ends the prompt's time
        self.timings = {"cache_n": 0, "prompt_n": prompt_tokens, "prompt_ms": first_ms,
                        "prompt_per_token_ms": first_ms / prompt_tokens,
                        "prompt_per_second": 1000.0 * prompt_tokens / first_ms, "predicted_n": tokens,
                        "predicted_ms": predicted_ms, "predicted_per_token_ms": predicted_ms / tokens,
                        "predicted_per_second": 1000.0 * tokens / predicted_ms if predicted_ms else 0.0,
                        }  # fmt: skip
        self.usage = {"completion_tokens": tokens, "prompt_tokens": prompt_tokens,
                      "total_tokens": tokens + prompt_tokens, "prompt_tokens_details": {"cached_tokens": 0}}
        pieces = [_event(delta({"content": w})) for w in words]
        pieces[0] = _event(delta({"role": "assistant", "content": None})) + pieces[0]
        # One write per token; the last token's write is followed at once by the finish and usage
        # event, `[DONE]` and the body's end, each written apart as llama-server writes them.
        self.writes: list[list[bytes]] = [[_chunk(p)] for p in pieces]
        ending = _event(delta({}, "length")) + _event({"choices": [], **base, "usage": self.usage,
                                                       "timings": self.timings})  # fmt: skip
        self.writes[-1] += [_chunk(ending), _chunk(b"data: [DONE]\n\n"), b"0\r\n", b"\r\n"]
        self.text = "".join(words)
        self.ident, self.created = ident, created


class _Connection(asyncio.Protocol):
    def __init__(self, first_ms: float, interval_ms: float) -> None:
        self.first_ms, self.interval_ms = first_ms, interval_ms
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.timers: list[asyncio.TimerHandle] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self.timers:
            timer.cancel()  # the caller left: stop generating, as llama-server does

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            method, target = head[0].split(" ")[:2]
            self._answer(method, target, body)

    def _answer(self, method: str, target: str, body: bytes) -> None:
        assert self.transport is not None
        path = target.split("?")[0]
        if method == "GET" and path == "/health":
            self.transport.write(_plain(200, b'{"status":"ok"}'))
            return
        if method == "GET" and path == "/props":
            self.transport.write(_plain(200, json.dumps(_PROPS).encode()))
            return
        if method != "POST" or path not in ("/v1/chat/completions", "/chat/completions"):
            self.transport.write(_plain(404, b'{"error":{"code":404,"message":"File Not Found",'
                                             b'"type":"not_found_error"}}'))  # fmt: skip
            return
        request = json.loads(body or b"{}")
        tokens = max(1, int(request.get("max_tokens") or 64))
        prompt = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", [])) or 1
        answer = _Answer(tokens, prompt, self.first_ms, self.interval_ms)
        loop = asyncio.get_running_loop()
        start = loop.time()
        if request.get("stream"):
            self.transport.write(_HEAD)
            last = len(answer.writes) - 1
            at = [start + (self.first_ms + i * self.interval_ms) / 1000.0 for i in range(last + 1)]
            self.timers = [loop.call_at(at[i], self._send, writes, i == last)
                           for i, writes in enumerate(answer.writes)]  # fmt: skip
            return
        whole = {"choices": [{"finish_reason": "length", "index": 0,
                              "message": {"role": "assistant", "content": answer.text}}],
                 "created": answer.created, "model": MODEL, "system_fingerprint": "b0-unknown",
                 "object": "chat.completion", "usage": answer.usage, "id": answer.ident,
                 "timings": answer.timings}  # fmt: skip
        done = start + (self.first_ms + (tokens - 1) * self.interval_ms) / 1000.0
        self.timers = [loop.call_at(done, self._send, [_plain(200, json.dumps(whole).encode())])]

    def _send(self, writes: list[bytes], close: bool = False) -> None:
        if self.transport is not None and not self.transport.is_closing():
            for data in writes:
                self.transport.write(data)
            if close:
                self.transport.close()  # after a streamed answer, as llama-server does


async def _serve(port: int, first_ms: float, interval_ms: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(first_ms, interval_ms), "127.0.0.1", port,
                                      backlog=256)  # fmt: skip
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM ends it); the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.llama_standin", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--first-ms", type=float, default=20.0, help="ms from request to first token")
    parser.add_argument("--interval-ms", type=float, default=5.0, help="ms between tokens")
    args = parser.parse_args(argv)
    if not (args.first_ms > 0 and args.interval_ms > 0):
        parser.error("--first-ms and --interval-ms must be > 0")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.first_ms, args.interval_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
